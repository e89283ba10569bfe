"""Does compound scaling buy accuracy? The EfficientNet family of a found arch, retrained.

The family (phi = 0..``--phi-max``, EfficientNet's alpha, beta, gamma) of the arch the
default pipeline picked (``--arch``, the README's run) in the laptop space, each member
trained stand-alone from scratch with the same budget (``--steps`` SGD steps of batch 64,
cosine LR, the trainer's step: the recipe of the ranking benchmark's ground truth) and
scored on the synthetic test split, over ``--seeds`` seeds, ``--procs`` at a time.
The synthetic images are 32x32: a larger input is an upsampled one, so resolution can add
no detail here, only compute.

    python benchmarks/scaling.py --steps 1500 --seeds 2
    python benchmarks/scaling.py --macs-only     # the published archs' families, seconds

Writes ``benchmarks/results/scaling.json``. ``--macs-only`` trains nothing: for every
published arch at its size, the family's MACs over the base at phi = 1..3 with EfficientNet's
gamma and with gamma fitted on the cost model (``fit_gamma``), into ``results/scaling_macs.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics

from _common import run_jobs, write_result
from elastic_nas.config import DataConfig, SpaceConfig
from elastic_nas.spaces.scaling import ALPHA, BETA, family, fit_gamma

LAPTOP = SpaceConfig(name="cream", input_size=32, stem_stride=2, width_mult=0.5, max_depths=[2, 3, 3, 3, 2])
PICK = [[2], [3, 0], [2, 0, 0], [5, 4], [1, 0]]  # the README's pipeline run: 1.41M MACs, 61.04 % test top-1
DATA = dict(num_train=20000, num_test=5000, search_val_size=2000)


def member_top1(space: dict, arch, steps: int, seed: int, data_path: str) -> float:
    import time

    import torch

    from _nas import retrain
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    torch.set_num_threads(1)
    cfg = SpaceConfig(**space)
    t0 = time.perf_counter()
    splits = build_dataset(DataConfig(path=data_path, **DATA), cfg.input_size)
    space_ = build_space(cfg)
    top1 = retrain(space_, space_.validate(arch), splits, steps, 64, 0.1, seed, warmup=steps // 20)
    print(f"scaling: input {cfg.input_size}, seed {seed}: test top-1 {top1:.2f}% ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    return top1


def published_families() -> dict:
    """MACs growth per phi of every published arch's family, paper gamma and fitted gamma."""
    from elastic_nas.spaces import PUBLISHED

    out = {}
    for name, (space, arch, size) in PUBLISHED.items():
        cfg = SpaceConfig(name=space, input_size=size, stem_stride=2)
        if space == "cream":  # room for the arch's deepest stages
            cfg.max_depths = [max(d, len(s)) for d, s in zip(cfg.max_depths, arch[1:6])]
        fitted = fit_gamma(cfg, arch, ALPHA, BETA)
        out[name] = {"input_size": size}
        for key, gamma in (("paper", 1.15), ("fitted", fitted)):
            rows = family(cfg, arch, range(4), gamma=gamma)
            growth = [round(r["macs"] / rows[0]["macs"], 3) for r in rows[1:]]
            out[name][key] = {"gamma": gamma, "macs_over_base": growth,
                              "worst_vs_2_pow_phi": round(max(abs(g / 2 ** (i + 1) - 1) for i, g in enumerate(growth)), 3)}
        print(f"scaling: {name:>10} at {size}: paper {out[name]['paper']['macs_over_base']}, fitted gamma {fitted} "
              f"{out[name]['fitted']['macs_over_base']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default=json.dumps(PICK))
    ap.add_argument("--phi-max", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--data", default="", help="synthetic cache dir (default: the shared one)")
    ap.add_argument("--macs-only", action="store_true", help="the published archs' MACs growth; no training")
    a = ap.parse_args()
    if a.macs_only:
        write_result("scaling_macs", {"alpha": ALPHA, "beta": BETA, "families": published_families()})
        return
    rows = family(LAPTOP, json.loads(a.arch), range(a.phi_max + 1))
    # Longest jobs first, so the pool ends together.
    jobs = sorted([(r["space"], r["arch"], a.steps, s, a.data) for r in rows for s in range(a.seeds)],
                  key=lambda j: -j[0]["input_size"] * j[0]["width_mult"])
    results = dict(zip([(j[0]["input_size"], j[0]["width_mult"], j[3]) for j in jobs],
                       run_jobs(member_top1, jobs, a.procs)))
    members = []
    for r in rows:
        tops = [results[(r["input_size"], r["space"]["width_mult"], s)] for s in range(a.seeds)]
        members.append({"phi": r["phi"], "arch": r["arch"], "input_size": r["input_size"],
                        "width_mult": r["width_mult"], "macs": r["macs"], "params": r["params"],
                        "test_top1_seeds": [round(t, 2) for t in tops],
                        "test_top1_mean": round(statistics.mean(tops), 2)})
    write_result("scaling", {"space": LAPTOP.__dict__, "alpha": rows[0]["alpha"], "beta": rows[0]["beta"],
                             "gamma": rows[0]["gamma"], "steps": a.steps, "batch": 64, "seeds": a.seeds,
                             "members": members})


if __name__ == "__main__":
    main()
