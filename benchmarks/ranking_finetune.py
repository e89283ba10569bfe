"""Subnets scored after a short fine-tune of their inherited weights: does it undo weight sharing's bias?

A supernet's order carries weight sharing's bias (RESULTS.md: every supernet prefers the large stage-0
kernel, which stand-alone training at every budget does not). Here each of the ranking benchmark's
subnets, on each kept supernet of a ``ranking.py`` run (``--from``: its JSON, whose settings are
used; ``--work``: its work dir, whose weights are), is scored as the search scores it (exact BN
recalibration, top-1 on search_val) after ``K`` SGD steps of the subnet alone, from its inherited
weights: batch 64, cosine from ``--lr`` over the K steps, label smoothing 0.1 as the stand-alone
truth trains, the same batches for every subnet of one supernet (their order's noise is common to
all of them, not a ranker's).
``K = 0`` scores the inherited weights as they are: the supernet's own scores, checked against the
``--from`` JSON's. ``--init scratch`` trains the same K steps from a fresh init instead: how much
of a fine-tune's ranking K steps of stand-alone training would give alone.

Judged as ``ranking_table.py`` judges: against the ``--truth`` JSON's seed-mean (all, stratified,
band) and, with ``--longer``, on the band's subnets against the longer runs too.

    cd benchmarks && python ranking_finetune.py \\
        --from results/ranking_t2000_s7_nr1_cl_deep_teachers_b128_steps1200_s8.json \\
        --work ~/.cache/elastic-nas/ranking-v2-t2000-nr1-cl \\
        --variant entangled_sandwich_deep_rteacher_b128 --seeds 4 --finetune-steps 0,100 \\
        --truth results/ranking_t2000_s7_nr1_cl_steps1970.json \\
        --longer results/standalone_noise_band_t4000_cl.json,results/standalone_noise_band_t4000_cl_s3.json

Each (K, supernet seed) is one job, cached in the work dir as it ends (``finetune_*.json``); ``--procs``
at a time, one thread each. Writes ``results/<--name>.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from ranking import BATCH, cached, finetuned, supernet_batch, weights_path
from ranking_bias import arch_features, preferences
from ranking_ceiling import subset_indices
from ranking_table import (
    Refused,
    check_same_subnets,
    exits_on_refusal,
    judged,
    load,
    load_truth,
    longer_runs,
    per_seed,
)

from _common import run_jobs, write_result
from elastic_nas.search.ranking import kendall_tau


def add_supernet_args(ap: argparse.ArgumentParser, seeds: int) -> None:
    """The kept supernets a rescoring reads (``kept_supernets``), the truth it is judged against, its procs."""
    ap.add_argument("--from", dest="source", required=True, metavar="JSON",
                    help="a ranking.py results JSON whose supernets (weights in its --work) are rescored")
    ap.add_argument("--variant", required=True)
    ap.add_argument("--seeds", type=int, default=seeds, help="supernet seeds 0..N-1")
    ap.add_argument("--truth", required=True, help="a ranking.py results JSON: its subnets' stand-alone seeds")
    ap.add_argument("--work", required=True, help="the --from run's work dir (its supernets' weights)")
    ap.add_argument("--procs", type=int, default=2)


def kept_supernets(a) -> tuple[dict, np.ndarray, dict, dict]:
    """``(truth, runs, settings, kept)``: the ``--truth`` JSON and its stand-alone top-1 ``[subnet,
    seed]``, the ``--from`` run's settings with ``--work`` and the shared data cache, and its
    ``--variant``'s record; refused unless that run scored the truth's subnets and the work dir holds
    the weights of ``--seeds`` of its supernets."""
    source, (truth, runs) = load(Path(a.source)), load_truth(a.truth)
    check_same_subnets(truth, source, a.source)
    if a.variant not in source.get("variants", {}):
        raise Refused(f"{a.source} has no variant {a.variant!r}")
    kept = source["variants"][a.variant]
    if not 1 <= a.seeds <= len(kept["scores"]):
        raise Refused(f"{a.source} kept {len(kept['scores'])} seeds of {a.variant}, --seeds asks {a.seeds}")
    settings = {**source["settings"], "work": str(Path(a.work).expanduser()), "data": ""}  # the shared data cache
    missing = [s for s in range(a.seeds) if not weights_path(settings["work"], a.variant, s, kept["steps"]).exists()]
    if missing:
        raise Refused(f"{settings['work']} has no weights of {a.variant} seeds {missing} at {kept['steps']} steps")
    return truth, runs, settings, kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_supernet_args(ap, seeds=4)
    ap.add_argument("--finetune-steps", default="0,100", help="K, comma-separated")
    ap.add_argument("--lr", type=float, default=0.02, help="the fine-tune's starting LR (cosine to 0 over K)")
    ap.add_argument("--init", choices=("inherited", "scratch"), default="inherited")
    ap.add_argument("--longer", default="", help="standalone_noise.py JSONs of the band at more steps (as ranking_table.py)")
    ap.add_argument("--name", default="ranking_finetune")
    a = ap.parse_args()
    with exits_on_refusal(ap, "ranking_finetune"):
        ks = [int(k) for k in a.finetune_steps.split(",") if k.strip()]
        if not ks or min(ks) < 0:
            raise Refused(f"--finetune-steps takes step counts >= 0, got {a.finetune_steps!r}")
        truth, runs, settings, kept = kept_supernets(a)
        longer = longer_runs(a.longer, truth) if a.longer else None
    work, archs, steps = Path(settings["work"]), [s["arch"] for s in truth["subnets"]], kept["steps"]
    batch, sn_lr = supernet_batch(SimpleNamespace(**settings), a.variant)
    tag = "" if a.init == "inherited" else "scratch_"

    def key(k: int, s: int) -> str:  # K = 0 is the same job at every LR
        return f"finetune_{tag}k{k}{f'_lr{a.lr}' if k else ''}_{a.variant}_s{s}_{steps}"

    jobs = [(work, key(k, s), finetuned, SimpleNamespace(**settings), a.variant, s, steps, archs, k, a.lr, a.init)
            for k in ks for s in range(a.seeds)]
    done = dict(zip((j[1] for j in jobs), run_jobs(cached, jobs, a.procs)))
    subsets = subset_indices(truth)
    feats = [arch_features(x) for x in archs]
    stage0 = {f: np.array([x[f] for x in feats]) for f in ("kernel s0", "expansion s0")}
    band = subsets["band"]
    prefers = {"truth": preferences(runs.mean(1), stage0, band)}  # what the truths reward in stage 0
    if longer is not None:
        _, idx, longer_top1 = longer
        longer_mean = longer_top1.mean(1)
        prefers["longer"] = preferences(longer_mean, {f: v[idx] for f, v in stage0.items()}, list(range(len(idx))))
    figures = {}
    for k in ks:
        preds = [done[key(k, s)]["scores"] for s in range(a.seeds)]
        row = judged(preds, runs, subsets)
        if longer is not None:
            row["longer"] = per_seed([kendall_tau(np.asarray(p)[idx], longer_mean) for p in preds])
        if k == 0 and a.init == "inherited":  # the inherited weights must score as the supernet did
            diff = np.abs(np.array(preds) - np.array(kept["scores"][:a.seeds])).max()
            row["max_abs_diff_vs_supernet_scores"] = round(float(diff), 4)
        # weight sharing's bias: what the band's scores reward in stage 0, beside the truth's preference
        seeds_prefer = [preferences(p, stage0, band) for p in preds]
        row["band_prefers"] = {f: round(float(np.mean([x[f] for x in seeds_prefer])), 4) for f in stage0}
        figures[str(k)] = {"scores": preds, **row}
        print(f"K={k}: tau all {row['all']['mean']:.2f} stratified {row['stratified']['mean']:.2f} band "
              f"{row['band']['mean']:.2f}" + (f" band vs longer {row['longer']['mean']:.2f}" if "longer" in row else "")
              + f"; the band prefers {row['band_prefers']} (the truths {prefers})", flush=True)
    write_result(a.name, {"source": a.source, "variant": a.variant, "supernet_steps": steps, "supernet_batch": batch,
                          "supernet_lr": sn_lr, "seeds": a.seeds, "finetune_lr": a.lr, "finetune_batch": BATCH,
                          "init": a.init, "truth": a.truth, "truth_seeds": runs.shape[1], "longer": a.longer,
                          "subsets": subsets, "band_prefers": prefers,
                          "by_finetune_steps": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
