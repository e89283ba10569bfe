"""Where does the stand-alone truth's seed noise come from: the end point of a run, or its path?

The ranking benchmark's truth (each subnet trained stand-alone, several seeds) has a seed SD of
about 3.6 points at 2,000 steps, so a truth of 12-24 seeds would be needed before a ranker's CI
could clear the MACs proxy (``ranking_ceiling.py``). This reruns some of its subnets with the
same recipe and seeds and reads each run several ways (``_nas.retrain_views``): as trained, with
BN statistics recomputed over train images, and as exponential moving averages of the weights.
A view whose within-subnet SD is half the trained one's would make a 3-seed truth worth 12.

    python benchmarks/standalone_noise.py --from benchmarks/results/ranking_t2000_s4_nr1_cl_steps1970.json \\
        --subnets 24,25,26,27,28,29 --seeds 2
    python benchmarks/standalone_noise.py --from ... --subnets 24 --seeds 2 --ema "" --calib-images 0 \\
        --curve-every 100 --name standalone_noise_curves    # where two runs part ways
    python benchmarks/standalone_noise.py --from ... --subnets 24,25,26,27,28,29 --seeds 3 --ema "" \\
        --calib-images 0 --channels-last --lr 0.05 --control benchmarks/results/standalone_noise_control_cl.json
        # a recipe probe against the truth's recipe run here (the control: the same command without --lr)
    python benchmarks/standalone_noise.py --from benchmarks/results/ranking_t2000_s7_nr1_cl_deep_search5.json \\
        --picks largest_macs,evolution --seeds 3 --ema "" --calib-images 0    # a search pick's retrains, rerun here
    python benchmarks/standalone_noise.py --from ... --subnets 6,7,8 --seeds 2 --first-seed 3 --steps 4000 \\
        --ema "" --calib-images 0 --device cuda --procs 12 --name band_t4000_gpu_s3
        # more seeds of a CPU run, on a GPU (fp32, TF32 off: the same math); ranking_table.py --longer pools them

Each run is cached in ``--work`` as it ends (an interrupted run resumes). Its ``final`` view
is the truth's own reading; the JSON sets it beside the ranking JSON's recorded top-1 of that
subnet and seed (the same recipe and seeds: equal only on the CPU type that recorded it).
Writes ``benchmarks/results/<--name>.json`` (and, with ``--curve-every``, ``<--name>.png``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from _common import RESULTS, cpu_model, run_jobs, write_result


def job(work: str, settings: dict, arch, seed: int, steps: int, lr: float, batch: int, ema: tuple, calib: int,
        curve_every: int, warmup: int, channels_last: bool, device: str = "cpu") -> dict:
    from ranking import cached, supernet_cfg

    from _nas import retrain_views
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    def run() -> dict:
        cfg = supernet_cfg(SimpleNamespace(**settings), "independent_spos", 0)
        space, splits = build_space(cfg.space), build_dataset(cfg.data, cfg.space.input_size)
        t0 = time.perf_counter()
        views = retrain_views(space, space.validate(arch), splits, steps, batch, lr, seed, warmup, ema, calib,
                              curve_every, channels_last, device)
        return {"views": views, "seconds": round(time.perf_counter() - t0, 1), "cpu_model": cpu_model(),
                **({"device": torch.cuda.get_device_name()} if device != "cpu" else {})}

    recipe = (f"_cv{curve_every}" if curve_every else "") + (f"_w{warmup}" if warmup != steps // 20 else "") + \
        ("_lr" + str(lr) if lr != 0.1 else "") + ("_cl" if channels_last else "") + \
        ("" if device == "cpu" else "_" + device)
    key = f"noise_{json.dumps(arch, separators=(',', ':'))}_s{seed}_t{steps}_ema{','.join(map(str, ema))}_c{calib}{recipe}"
    return cached(Path(work), key.replace(" ", ""), run)


def search_picks(quality: dict, names: list[str]) -> dict[str, dict]:
    """The ranking JSON's search picks by name (search seed 0's); ``all``: the largest-MACs arch and every
    search seed's picks (``evolution@3``), each arch once (a pick two searches share is retrained once)."""
    if "all" not in names:
        return {n: quality["picks"][n] for n in names}
    every = {"largest_macs": quality["picks"]["largest_macs"]}
    every |= {f"{m}@{i}": s[m] for i, s in enumerate(quality.get("search_seeds", [])) for m in ("evolution", "random")}
    out, seen = {}, set()
    for label, pick in every.items():
        if (arch := json.dumps(pick["arch"])) not in seen:
            seen.add(arch)
            out[label] = pick
    return out


def pooled_sd(runs: np.ndarray) -> float:
    """Within-subnet SD pooled over subnets (rows: subnets, columns: seeds)."""
    return float(np.sqrt(np.mean(np.var(runs, axis=1, ddof=1))))


def figures(top1: dict[str, np.ndarray], seed: int = 0, resamples: int = 2000) -> dict:
    """Per view: pooled SD, its ratio to ``final``'s with a bootstrap 95 % CI over subnets
    (paired: the same runs), and the truth seeds it is worth per seed of ``final``."""
    rng = np.random.default_rng(seed)
    n = len(top1["final"])
    idx = rng.integers(0, n, size=(resamples, n))
    final_sd = pooled_sd(top1["final"])
    final_sds = [pooled_sd(top1["final"][i]) for i in idx]  # the same resamples for every view: paired
    out = {}
    for view, runs in top1.items():
        sd = pooled_sd(runs)
        ratios = [pooled_sd(runs[i]) / b for i, b in zip(idx, final_sds) if b > 0]  # (resamples of one subnet may tie)
        ratio = sd / final_sd if final_sd > 0 else float("nan")
        out[view] = {"pooled_sd": round(sd, 3), "mean_top1": round(float(runs.mean()), 2),
                     "sd_ratio_to_final": round(ratio, 3),
                     "sd_ratio_ci95": [round(float(q), 3) for q in np.percentile(ratios or [np.nan], [2.5, 97.5])],
                     "seeds_worth_per_final_seed": round(1 / ratio**2, 2)}
    return out


def set_against(final: np.ndarray, other: np.ndarray, name: str, seed: int = 0, resamples: int = 2000) -> dict:
    """This run's ``final`` reading against ``other`` runs of the same subnets (rows; any seeds):
    pooled SD and mean, and the SD ratio with a bootstrap 95 % CI over subnets. What a recipe probe
    (``--warmup``, ``--lr``) is judged on: less seed noise at a similar spread between subnets."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(final), size=(resamples, len(final)))
    pairs = [(pooled_sd(final[i]), pooled_sd(other[i])) for i in idx]
    ratios = [f / o for f, o in pairs if o > 0]
    sd, other_sd = pooled_sd(final), pooled_sd(other)
    return {f"{name}_seeds": other.shape[1], f"{name}_pooled_sd": round(other_sd, 3),
            f"{name}_mean_top1": round(float(other.mean()), 2), "pooled_sd": round(sd, 3),
            "mean_top1": round(float(final.mean()), 2),
            "sd_ratio": round(sd / other_sd, 3),
            "sd_ratio_ci95": [round(float(q), 3) for q in np.percentile(ratios, [2.5, 97.5])],
            "subnet_means_sd": round(float(final.mean(1).std(ddof=1)), 3),
            f"{name}_subnet_means_sd": round(float(other.mean(1).std(ddof=1)), 3)}


def control_runs(path: str, subnets: list[int], seeds: int, steps: int) -> np.ndarray:
    """The ``final`` top-1 of a control run (another ``standalone_noise`` JSON of the same subnets,
    seeds and steps, normally the truth's recipe on this machine): the fair baseline for a recipe
    probe, since the truth's recorded seeds ran on other machines and layouts."""
    control = json.loads(Path(path).read_text())
    if (control["subnets"], control["seeds"], control["truth_steps"]) != (subnets, seeds, steps):
        raise ValueError(f"{path} ran subnets {control['subnets']}, {control['seeds']} seeds, "
                         f"{control['truth_steps']} steps; this run {subnets}, {seeds}, {steps}")
    return np.array(control["top1"]["final"], dtype=float)


def plot_curves(curves: list, labels: list[str], path: Path) -> None:
    """Train top-1 per interval, one line per run: where the seeds of a subnet part ways."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in zip(labels, curves):
        for seed, curve in enumerate(runs):
            ax.plot([c[0] for c in curve], [c[2] for c in curve], label=f"{label}, seed {seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("train top-1 over the interval (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="source", required=True, help="a ranking.py results JSON (subnets, recipe)")
    ap.add_argument("--subnets", type=lambda v: [int(x) for x in v.split(",") if x], default=[])
    ap.add_argument("--picks", type=lambda v: [x for x in v.split(",") if x], default=[],
                    help="also the JSON's search picks by name (largest_macs, evolution, random: search seed 0's; "
                         "all: every search seed's and the largest-MACs arch, each arch once), their retrained "
                         "seeds as the recorded runs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed .. first-seed + seeds - 1 (more seeds of an earlier run, in another run)")
    ap.add_argument("--device", default="cpu", help="where each run trains: cpu, or cuda (fp32, TF32 off)")
    ap.add_argument("--ema", type=lambda v: tuple(float(x) for x in v.split(",") if x), default=(0.99, 0.995, 0.998))
    ap.add_argument("--calib-images", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=0, help="training steps (default: the JSON's truth steps)")
    ap.add_argument("--curve-every", type=int, default=0, help="also record each run's train loss / top-1 every N steps")
    ap.add_argument("--warmup", type=int, default=-1, help="LR warm-up steps (default: the truth's, steps / 20)")
    ap.add_argument("--lr", type=float, default=0.0, help="peak LR (default: the JSON's truth LR)")
    ap.add_argument("--channels-last", action="store_true", help="train in fp32 channels_last (same math, faster)")
    ap.add_argument("--control", default="", metavar="JSON",
                    help="a standalone_noise JSON of the same subnets and seeds (the truth's recipe here) to set this run against")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "elastic-nas" / "standalone-noise"))
    ap.add_argument("--name", default="standalone_noise")
    a = ap.parse_args()
    try:
        ranking = json.loads(Path(a.source).read_text())
        subnets = [ranking["subnets"][i] for i in a.subnets]
        picks = search_picks(ranking["search_quality"], a.picks)
    except (OSError, ValueError, KeyError, IndexError) as e:
        ap.exit(2, f"standalone_noise: cannot take subnets {a.subnets} and picks {a.picks} from {a.source}: {e!r}\n")
    subnets += [{"arch": p["arch"], "test_top1_seeds": p["retrained_top1_seeds"]} for p in picks.values()]
    if not subnets:
        ap.exit(2, "standalone_noise: name --subnets or --picks\n")
    if a.device != "cpu" and not (a.device == "cuda" and torch.cuda.is_available()):
        ap.exit(2, f"standalone_noise: --device {a.device}: torch sees no such device here\n")
    if a.seeds < 2:
        ap.exit(2, "standalone_noise: --seeds takes 2 or more (an SD needs two runs)\n")
    settings = {**ranking["settings"], "data": ""}  # the shared synthetic cache, as ranking.py's default
    steps, lr, batch = a.steps or ranking["truth_steps"], a.lr or ranking["settings"]["truth_lr"], ranking["batch"]
    warmup = steps // 20 if a.warmup < 0 else a.warmup
    truth_recipe = (steps, lr, warmup) == (ranking["truth_steps"], ranking["settings"]["truth_lr"], steps // 20) \
        and a.device == "cpu"
    try:
        control = control_runs(a.control, a.subnets, a.seeds, steps) if a.control else None
    except (OSError, ValueError, KeyError) as e:
        ap.exit(2, f"standalone_noise: --control: {e}\n")
    Path(a.work).mkdir(parents=True, exist_ok=True)
    from ranking import ensure_data

    ensure_data(SimpleNamespace(**settings))  # generated once here, not by every job process at once
    jobs = [(a.work, settings, s["arch"], seed, steps, lr, batch, a.ema, a.calib_images, a.curve_every, warmup,
             a.channels_last, a.device)
            for s in subnets for seed in range(a.first_seed, a.first_seed + a.seeds)]
    t0 = time.time()
    results = run_jobs(job, jobs, a.procs)
    views = [v for v in results[0]["views"] if v != "curve"]
    runs = [[r["views"] for r in results[i * a.seeds:(i + 1) * a.seeds]] for i in range(len(subnets))]  # [subnet][seed]
    top1 = {v: np.array([[r[v]["top1"] for r in seeds] for seeds in runs]) for v in views}
    # seed by seed where recorded (NaN past a pick's 3 retrains); the set comparison on the seeds all have
    first, last = a.first_seed, a.first_seed + a.seeds
    recorded = np.array([(s["test_top1_seeds"] + [np.nan] * last)[first:last] for s in subnets], dtype=float)
    common = min(len(s["test_top1_seeds"]) for s in subnets)
    out = {"source": a.source, "subnets": a.subnets, "picks": list(picks), "archs": [s["arch"] for s in subnets],
           "seeds": a.seeds, "first_seed": a.first_seed, "device": a.device, "truth_steps": steps, "truth_lr": lr,
           "warmup": warmup, "channels_last": a.channels_last, "batch": batch, "ema_decays": list(a.ema), "calib_images": a.calib_images,
           "top1": {v: t.tolist() for v, t in top1.items()},
           "test_loss": {v: [[r[v]["loss"] for r in seeds] for seeds in runs] for v in views},
           "recorded_top1": recorded.tolist(),
           **({"curves": [[r["curve"] for r in seeds] for seeds in runs]} if a.curve_every else {}),
           # the same recipe and seeds, another run where another CPU type recorded it
           "final_vs_recorded_max_abs_diff": (round(float(np.nanmax(np.abs(top1["final"] - recorded))), 3)
                                              if truth_recipe else None),
           "against_recorded": set_against(top1["final"], np.array([s["test_top1_seeds"][:common] for s in subnets],
                                                                   dtype=float), "recorded"),
           **({"control": a.control, "against_control": set_against(top1["final"], control, "control")}
              if control is not None else {}),
           "views": figures(top1), "run_seconds": [r["seconds"] for r in results],
           "wall_seconds": round(time.time() - t0, 1)}
    for v, f in out["views"].items():
        print(f"{v:10s} mean {f['mean_top1']:6.2f}  pooled SD {f['pooled_sd']:.2f}  ratio {f['sd_ratio_to_final']:.2f} "
              f"(CI {f['sd_ratio_ci95'][0]:.2f}-{f['sd_ratio_ci95'][1]:.2f})")
    baselines = {"recorded": f"the truth's {out['against_recorded']['recorded_seeds']} recorded seeds",
                 "control": f"the control {a.control}"}
    for name, label in baselines.items():
        if r := out.get(f"against_{name}"):
            print(f"against {label}: pooled SD {r['pooled_sd']:.2f} vs {r[f'{name}_pooled_sd']:.2f} (ratio "
                  f"{r['sd_ratio']:.2f}, CI {r['sd_ratio_ci95'][0]:.2f}-{r['sd_ratio_ci95'][1]:.2f}); "
                  f"mean {r['mean_top1']:.2f} vs {r[f'{name}_mean_top1']:.2f}")
    if a.curve_every:
        plot_curves(out["curves"], [f"subnet {i}" for i in a.subnets] + [f"pick {p}" for p in picks],
                    RESULTS / f"{a.name}.png")
    write_result(a.name, out)


if __name__ == "__main__":
    main()
