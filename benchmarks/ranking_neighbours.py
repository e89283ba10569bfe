"""A supernet's score averaged over an arch's neighbours: does smoothing undo its sharp errors?

Evolution on the shipped supernet drives the search_val loss lower than random search does and
retrains no better (RESULTS.md, "The search at SPOS's size"): at 1,050 evaluations it converges on
the supernet's best arch, which retrains below random search's picks. If the supernet's errors are
arch-specific (an arch scored far better than its near relatives), the mean score of an arch and
its neighbours (each differing in one block's op, depths kept) damps them, while an order that
holds for a whole region of the space stays. This measures that on each kept supernet of a
``ranking.py`` run (``--from``: its JSON and settings; ``--work``: its weights): every subnet of the
``--truth`` JSON and (``--picks``) every arch those runs retrained (their searches' picks and the
largest arch under the budget), each scored as
the search scores it (exact BN recalibration, search_val loss) together with ``--neighbours`` of
its neighbours drawn at random (the same for every supernet; a neighbour that is the same network,
``space.canonical``, left out), judged as ``ranking_table.py`` judges a supernet and, on the
picks, as ``ranking_zero_cost.py --picks`` does.

    cd benchmarks && python ranking_neighbours.py \\
        --from results/ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps1200_avx512.json \\
        --work ~/.cache/elastic-nas/ranking-v2-t2000-nr1-cl \\
        --variant entangled_sandwich_deep_rteacher_psofa_b128 --seeds 2 --neighbours 8 \\
        --truth results/ranking_t2000_s11_nr1_cl_steps1970.json --picks <ranking.py runs with searches>

Each supernet seed is one job, cached in the work dir as it ends; ``--procs`` at a time, one
thread each. Writes ``results/<--name>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import search_picks
from ranking import cached, supernet_cfg, trained_supernet
from ranking_ceiling import subset_indices
from ranking_finetune import add_supernet_args, kept_supernets
from ranking_table import Refused, exits_on_refusal, judged, per_seed
from ranking_zero_cost import retrained_picks

from _common import run_jobs, write_result
from elastic_nas.search.evaluator import eval_data, evaluate_arch
from elastic_nas.search.ranking import held_out_tau

RANKERS = ("the arch alone", "the arch and its neighbours", "its neighbours alone")


def op_neighbours(space, arch, k: int, rng: np.random.Generator) -> list:
    """Up to ``k`` archs that differ from ``arch`` in one block's op (every stage's depth kept), each a
    network other than ``arch``'s and than each other (``space.canonical``), drawn without replacement."""
    own, seen, out = space.canonical(arch), set(), []
    for n in space.neighbours(arch):
        c = space.canonical(n)
        if [len(s) for s in n] == [len(s) for s in arch] and c != own and c not in seen:
            seen.add(c)
            out.append(n)
    return [out[i] for i in sorted(rng.choice(len(out), min(k, len(out)), replace=False))]


def neighbourhood(a, variant: str, seed: int, steps: int, archs: list, k: int) -> dict:
    """Every arch's search_val loss on the kept supernet ``seed``, and its neighbours' losses."""
    from elastic_nas.data import build_dataset

    cfg = supernet_cfg(a, variant, seed)
    space, model = trained_supernet(a, variant, seed, steps)
    data = eval_data(build_dataset(cfg.data, cfg.space.input_size), a.calib_images, a.val_images, 0,
                     channels_last=a.channels_last)
    memo, t0 = {}, time.perf_counter()

    def loss(arch) -> float:
        key = space.canonical(arch)  # one network, one evaluation
        if key not in memo:
            memo[key] = round(evaluate_arch(model, arch, data)["loss"], 5)
        return memo[key]

    out = []
    for i, arch in enumerate(space.validate(x) for x in archs):
        near = op_neighbours(space, arch, k, np.random.default_rng(i))  # the same draw for every supernet
        out.append({"loss": loss(arch), "neighbours": [space.to_json(n) for n in near],
                    "neighbour_losses": [loss(n) for n in near]})
    return {"archs": out, "evaluations": len(memo), "seconds": round(time.perf_counter() - t0, 1)}


def ranked(scored: list[dict]) -> dict[str, np.ndarray]:
    """Each ranker's score of every arch (higher ranks higher: losses negated)."""
    own = np.array([s["loss"] for s in scored])
    near = np.array([np.mean(s["neighbour_losses"]) for s in scored])
    count = np.array([len(s["neighbour_losses"]) for s in scored])
    return {RANKERS[0]: -own, RANKERS[1]: -(own + near * count) / (1 + count), RANKERS[2]: -near}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_supernet_args(ap, seeds=2)
    ap.add_argument("--neighbours", type=int, default=8, help="neighbours drawn per arch")
    ap.add_argument("--picks", default="", metavar="JSON[,JSON...]",
                    help="ranking.py runs with --search-seeds: also order their retrained picks")
    ap.add_argument("--name", default="ranking_neighbours")
    a = ap.parse_args()
    with exits_on_refusal(ap, "ranking_neighbours"):
        if a.neighbours < 1:
            raise Refused("--neighbours must be >= 1")
        truth, runs, settings, kept = kept_supernets(a)
        picks = retrained_picks([p for p in a.picks.split(",") if p], truth) if a.picks else {"archs": []}
    subnets, steps = [s["arch"] for s in truth["subnets"]], kept["steps"]
    archs = subnets + picks["archs"]
    which = hashlib.sha256(json.dumps(archs).encode()).hexdigest()[:10]  # the archs scored: part of the job
    key = f"neighbours{a.neighbours}_{which}_{a.variant}_s{{}}_{steps}"
    jobs = [(Path(settings["work"]), key.format(s), neighbourhood, SimpleNamespace(**settings), a.variant, s, steps,
             archs, a.neighbours) for s in range(a.seeds)]
    done = run_jobs(cached, jobs, a.procs)
    n, subsets = len(subnets), subset_indices(truth)
    scores = [ranked(d["archs"]) for d in done]
    macs = np.array([s["macs"] for s in truth["subnets"]], dtype=float)
    rows = {r: judged([s[r][:n] for s in scores], runs, subsets, macs) for r in RANKERS}
    lines = [f"- {r}: tau all {v['all']['mean']:.2f} / stratified {v['stratified']['mean']:.2f} / band "
             f"{v['band']['mean']:.2f} [{v['band']['min']:.2f} to {v['band']['max']:.2f}]" for r, v in rows.items()]
    # how smooth each supernet's scores are: an arch's loss against its neighbours' mean loss
    # (over the picks alone too: archs of about one MACs, where MACs no longer sets both)
    smooth = {what: per_seed([float(np.corrcoef(s[RANKERS[0]][idx], s[RANKERS[2]][idx])[0, 1]) for s in scores])
              for what, idx in (("all", slice(None)), ("picks", slice(n, None))) if len(archs[idx]) > 2}
    lines += [f"- Pearson r of an arch's loss and its neighbours' mean over {what}: {v['mean']:.2f} "
              f"[{v['min']:.2f} to {v['max']:.2f}]" for what, v in smooth.items()]
    figures = {"subnets": rows, "own_vs_neighbours_pearson": smooth}
    averaged = np.mean([s[RANKERS[0]] for s in scores], 0)  # the supernet seeds' mean loss, one ranker
    figures_avg = {"subnets": judged([averaged[:n]], runs, subsets, macs)}
    if picks["archs"]:
        figures_avg["picks"] = search_picks.order(averaged[n:], picks["retrains"])
        order = {r: [search_picks.order(s[r][n:], picks["retrains"]) for s in scores] for r in RANKERS}
        figures["picks"] = {r: {m: per_seed([o[m] for o in v]) for m in ("tau", "held_out")} for r, v in order.items()}
        figures["picks"]["one retrain"] = {"held_out": round(held_out_tau(picks["retrains"]), 4)}
        lines += [f"- over the {len(picks['archs'])} picks, {r}: tau {v['tau']['mean']:+.2f} "
                  f"[{v['tau']['min']:+.2f} to {v['tau']['max']:+.2f}], held out {v['held_out']['mean']:+.2f}"
                  for r, v in figures["picks"].items() if "tau" in v]
    lines.append(f"- the {a.seeds} supernet seeds' averaged loss: band tau {figures_avg['subnets']['band']['mean']:.2f}" +
                 (f", over the picks {figures_avg['picks']['tau']:+.2f}" if picks["archs"] else ""))
    figures["seeds_averaged"] = figures_avg
    print("\n".join(lines), flush=True)
    write_result(a.name, {"source": a.source, "variant": a.variant, "supernet_steps": steps, "seeds": a.seeds,
                          "neighbours": a.neighbours, "truth": a.truth, "truth_seeds": runs.shape[1],
                          "picks_runs": a.picks.split(",") if a.picks else [], "subsets": subsets,
                          "evaluations_per_supernet": [d["evaluations"] for d in done],
                          "seconds_per_supernet": [d.get("seconds") for d in done],
                          "archs": [json.dumps(x) for x in archs], "scored": done, **figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
