"""Every supernet the ranking benchmark has scored, against one stand-alone truth.

Each ``ranking.py`` run kept its supernets' scores of the same 36 subnets, but judged them against
the truth of its day (3, 4, 5 ... stand-alone seeds), so figures from different days do not compare.
This reads the scores back from those JSONs (``ROWS``; ``LOSS_ROWS``: the runs' search_val losses,
as the laptop search orders) and judges every supernet, the MACs and params proxies and one held-out
stand-alone run against one truth: the ``--truth`` JSON's seeds, normally the newest run with the
most. It also recomputes every ranker against the truth of its first 2, 3, ... seeds (``growth``):
how far each figure moved as seeds were added, and for every supernet setting with 2+ seeds the tau
of their averaged scores (``seeds_averaged``): whether the supernets' disagreement with the truth is
seed noise that an ensemble averages out, or shared bias. Per supernet seed, each ranker's lead over
the MACs proxy (its tau less MACs') gets a paired bootstrap CI on the stratified and band subnets
(``lead_over_macs``): whether it beats MACs on subnets like these, not only on these 36. One row adds
a MACs prior to the shipped supernet's scores (``WITH_MACS``).

    python benchmarks/ranking_table.py --truth benchmarks/results/ranking_t2000_s11_nr1_cl_steps1970.json

Writes ``benchmarks/results/<--name>.json`` and ``<--name>.png`` (tau against the truth's seed
count for the rankers of ``--plot``), and prints the tables as Markdown.

``--longer JSON`` (a ``standalone_noise.py`` run of some of the truth's subnets at more steps, the
same recipe and seeds) adds a third table on those subnets: whether the truth's order holds at the
longer budget (tau of the two means, with a bootstrap CI, beside the longer runs' own seed
agreement), and every ranker's tau against each. Several such JSONs, comma-separated (one batch's
seeds run in several runs with ``--first-seed``), are pooled seed by seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
from ranking_ceiling import SUBSETS, subset_indices

from _common import RESULTS, write_result
from elastic_nas.search.ranking import bootstrap_ci, held_out_tau, kendall_tau, lead_ci, seed_agreement

# label -> (results JSON in benchmarks/results, variant): the supernets of README's ranking table.
# Minutes are the supernet's training time on the 2-core machine of its run.
ROWS = {
    "independent weights + uniform archs (SPOS), 12 min": ("ranking_t2000_s3_m12.json", "independent_spos"),
    "entangled + uniform archs, 12 min": ("ranking_t2000_s3_m12.json", "entangled_spos"),
    "entangled + sandwich (2 random archs), 12 min": ("ranking_t2000_s3_m12.json", "entangled_sandwich"),
    "entangled + uniform archs, 40 min": ("ranking_t2000_s3_m40.json", "entangled_spos"),
    "entangled + sandwich (2 random archs), 40 min": ("ranking_t2000_s3_m40.json", "entangled_sandwich"),
    "the same with OFA's kernel-transform matrices, 40 min": ("ranking_t2000_s3_m40.json",
                                                              "entangled_sandwich_transform"),
    "sandwich (2 random), supernet LR 0.05": ("ranking_t2000_s3_lr0.05.json", "entangled_sandwich"),
    "sandwich, 4 random archs a step": ("ranking_t2000_s3_nr4.json", "entangled_sandwich"),
    "sandwich, 1 random arch a step": ("ranking_t2000_s3_nr1.json", "entangled_sandwich"),
    "sandwich (1 random), the 40 minutes' compute": ("ranking_t2000_s3_nr1_steps4580.json", "entangled_sandwich"),
    "sandwich (1 random), 40 min of a faster machine": ("ranking_t2000_s3_nr1_m40.json", "entangled_sandwich"),
    "faster machine, 12 min: entangled + uniform archs": ("ranking_t2000_s3_nr1_m12.json", "entangled_spos"),
    "faster machine, 12 min: sandwich (1 random)": ("ranking_t2000_s3_nr1_m12.json", "entangled_sandwich"),
    "pipeline budget: uniform archs (the pipeline before the sandwich)": ("ranking_t2000_s3_nr1_pipeline_3seeds.json",
                                                                          "entangled_spos"),
    "pipeline budget in one core's step times: sandwich (1 random)": ("ranking_t2000_s3_nr1_pipeline_budget.json",
                                                                       "entangled_sandwich"),
    "sandwich (1 random), 1,406 steps (the pipeline before channels_last)": (
        "ranking_t2000_s3_nr1_pipeline_3seeds.json", "entangled_sandwich"),
    "sandwich (1 random), 4 epochs": ("ranking_t2000_s3_nr1_steps1125.json", "entangled_sandwich"),
    "sandwich (1 random), 1,406 steps in channels_last": ("ranking_t2000_s3_nr1_cl_steps1406.json",
                                                          "entangled_sandwich"),
    "**the pipeline's**: sandwich (1 random), 7 epochs in channels_last": ("ranking_t2000_s3_nr1_cl_steps1970.json",
                                                                           "entangled_sandwich"),
    "the same, 14 epochs (`--set supernet.optim.epochs=14`)": ("ranking_t2000_s3_nr1_cl_steps3938.json",
                                                                "entangled_sandwich"),
    "the pipeline's, its random archs drawn in the search band (`sandwich.random_macs_min/max`)": (
        "ranking_t2000_s7_nr1_cl_band_steps1970.json", "entangled_sandwich_band"),
    "the pipeline's without in-place distillation (`sandwich.distill: false`)": (
        "ranking_t2000_s7_nr1_cl_labels_steps1970.json", "entangled_sandwich_labels"),
    "the pipeline's, 6 more seeds on a Xeon": ("ranking_t2000_s7_nr1_cl_images20000.json", "entangled_sandwich"),
    "largest + smallest only (no random arch), the pipeline's time": ("ranking_t2000_s7_nr0_cl_steps2760.json",
                                                                      "entangled_sandwich"),
    "the lower path at full depth (`sandwich.smallest: deepest`), the pipeline's time": (
        "ranking_t2000_s7_nr1_cl_deep_steps1780.json", "entangled_sandwich_deep"),
    "the same at batch 128 (`elastic.per_worker_batch: 64`), the pipeline's time": (
        "ranking_t2000_s7_nr1_cl_deep_b128_steps1200.json", "entangled_sandwich_deep_b128"),
    "the same at batch 128, twice the time (`--set supernet.optim.epochs=17`)": (
        "ranking_t2000_s7_nr1_cl_deep_b128_steps2400.json", "entangled_sandwich_deep_b128"),
    "the same at batch 64, those samples (4,800 steps, about 15 min on 2 cores)": (
        "ranking_t2000_s7_nr1_cl_deep_steps4800.json", "entangled_sandwich_deep"),
    "the pipeline's with an offset of their own on k = 5 and 3 (`space.kernel_offsets`)": (
        "ranking_t2000_s7_nr1_cl_deep_offsets_b128_steps1200.json", "entangled_sandwich_deep_offsets_b128"),
    "the pipeline's with the lower path k3e6 at full depth (`sandwich.smallest: deepest_wide`), its time": (
        "ranking_t2000_s7_nr1_cl_deepwide_b128.json", "entangled_sandwich_deepwide_b128"),
    "the pipeline's with k3e4 and k3e6 lower paths on alternate steps (`deepest_alternate`)": (
        "ranking_t2000_s7_nr1_cl_deepalt_b128_steps1200.json", "entangled_sandwich_deepalt_b128"),
    "the pipeline's with the teacher's kernels drawn per step (`sandwich.largest: random_kernels`)": (
        "ranking_t2000_s7_nr1_cl_deep_rteacher_b128_steps1200.json", "entangled_sandwich_deep_rteacher_b128"),
    "the same teacher with the lower path k3e6 (`deepest_wide` + `random_kernels`)": (
        "ranking_t2000_s7_nr1_cl_deepwide_rteacher_b128_steps1200.json", "entangled_sandwich_deepwide_rteacher_b128"),
    "8 seeds: the shipped rule's k7e6 teacher, 1,200 steps of 128 (seeds 0-3 as above)": (
        "ranking_t2000_s7_nr1_cl_deep_teachers_b128_steps1200_s8.json", "entangled_sandwich_deep_b128"),
    "8 seeds: the teacher's kernels drawn (`random_kernels`, shipped), 1,200 steps of 128 (seeds 0-3 as above)": (
        "ranking_t2000_s7_nr1_cl_deep_teachers_b128_steps1200_s8.json", "entangled_sandwich_deep_rteacher_b128"),
    "the drawn teacher, few-shot (Zhao et al.): split by the first block's kernel at half time, 3 copies": (
        "ranking_t2000_s7_nr1_cl_deep_rteacher_fewshot_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_fewshot_b128"),
    "the same few-shot split, each copy the whole second half (twice the compute)": (
        "ranking_t2000_s7_nr1_cl_deep_rteacher_fewshot3_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_fewshot3_b128"),
    "the shipped rule, its random arch strictly fair (FairNAS, `sampling.method: fair`), 1,200 steps of 128": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_fair_b128_steps1200.json", "entangled_sandwich_deep_rteacher_fair_b128"),
    "FairNAS proper: 6 strictly fair random archs a step (`sandwich.num_random: 6`), the shipped rule's time": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_fair6_b128_m8.json", "entangled_sandwich_deep_rteacher_fair6_b128"),
    "the shipped rule again, seeds 0-3 on the fair rows' machine (their control)": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_b128_steps1200_xeon.json", "entangled_sandwich_deep_rteacher_b128"),
    "the shipped rule with landmark regularisation (12 landmarks apart from the truth), 1,200 steps of 128": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_landmarks_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_landmarks_b128"),
    "the same landmarks at a quarter of the weight (`landmarks.weight: 0.25`)": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_landmarks_w025_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_landmarks_w025_b128"),
    "the shipped rule again, 8 seeds on one Xeon (the progressive rows' control; seeds 0-3 as above)": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_b128_steps1200_xeon_s8.json", "entangled_sandwich_deep_rteacher_b128"),
    "the shipped rule under progressive shrinking (`sandwich.progressive: [0.2, 0.35, 0.5]`), 8 seeds": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_ps_b128_steps1200_s8.json", "entangled_sandwich_deep_rteacher_ps_b128"),
    "the same at about Once-for-All's own shares (`[0.3, 0.5, 0.75]`), 8 seeds": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps1200_s8.json",
        "entangled_sandwich_deep_rteacher_psofa_b128"),
    "the same, later (`[0.4, 0.6, 0.8]`), seeds 0-3": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_pslate_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_pslate_b128"),
    "the shipped schedule at twice the steps (2,400 of 128), seeds 0-3": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps2400_s4.json",
        "entangled_sandwich_deep_rteacher_psofa_b128"),
    "the shipped rule with Cream's prioritized paths as its teacher (`sandwich.largest: prioritized`), seeds 0-3": (
        "ranking_t2000_s11_nr1_cl_deep_prioritized_psofa_b128_steps1200_s4.json",
        "entangled_sandwich_deep_prioritized_psofa_b128"),
    "the shipped rule again, seeds 0-1 on an AVX-512 Xeon (the own-kernel and k3e6-teacher rows' control)": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps1200_xeon_avx512.json",
        "entangled_sandwich_deep_rteacher_psofa_b128"),
    "the shipped rule, stage 0's k = 5 and 3 kernels their own (`space.own_kernel_stages: [0]`), seeds 0-1": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_own_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_psofa_own0_b128"),
    "the same in stages 0 and 1 (`[0, 1]`), seeds 0-1": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_own_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_psofa_own01_b128"),
    "the shipped rule with the teacher's kernels all the smallest (`sandwich.largest: small_kernels`), seeds 0-1": (
        "ranking_t2000_s11_nr1_cl_deep_k3teacher_psofa_b128_steps1200.json",
        "entangled_sandwich_deep_k3teacher_psofa_b128"),
}
# label -> (results JSON, variant): supernets whose per-subnet search_val losses the JSON keeps
LOSS_ROWS = {
    "the pipeline's (1 random arch), 6 seeds on a Xeon, by the loss": ("ranking_t2000_s7_nr1_cl_images20000.json",
                                                                       "entangled_sandwich"),
    "largest + smallest only (no random arch), the pipeline's time, by the loss": (
        "ranking_t2000_s7_nr0_cl_steps2760.json", "entangled_sandwich"),
    "the lower path at full depth (`sandwich.smallest: deepest`), the pipeline's time, by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_steps1780.json", "entangled_sandwich_deep"),
    "the same at batch 128 (the pipeline's now), by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_b128_steps1200.json", "entangled_sandwich_deep_b128"),
    "the same at batch 64, 4,800 steps, by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_steps4800.json", "entangled_sandwich_deep"),
    "the pipeline's with kernel offsets (`space.kernel_offsets`), by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_offsets_b128_steps1200.json", "entangled_sandwich_deep_offsets_b128"),
    "the pipeline's with the lower path k3e6 at full depth (`deepest_wide`), by the loss": (
        "ranking_t2000_s7_nr1_cl_deepwide_b128.json", "entangled_sandwich_deepwide_b128"),
    "the pipeline's with the lower paths on alternate steps (`deepest_alternate`), by the loss": (
        "ranking_t2000_s7_nr1_cl_deepalt_b128_steps1200.json", "entangled_sandwich_deepalt_b128"),
    "the pipeline's with the teacher's kernels drawn per step (`random_kernels`), by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_rteacher_b128_steps1200.json", "entangled_sandwich_deep_rteacher_b128"),
    "the same teacher with the lower path k3e6 (`deepest_wide` + `random_kernels`), by the loss": (
        "ranking_t2000_s7_nr1_cl_deepwide_rteacher_b128_steps1200.json", "entangled_sandwich_deepwide_rteacher_b128"),
    "the drawn teacher, few-shot: split by the first block's kernel at half time, by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_rteacher_fewshot_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_fewshot_b128"),
    "the same few-shot split at twice the compute, by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_rteacher_fewshot3_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_fewshot3_b128"),
    "8 seeds: the shipped rule's k7e6 teacher, by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_teachers_b128_steps1200_s8.json", "entangled_sandwich_deep_b128"),
    "8 seeds: the teacher's kernels drawn (`random_kernels`, shipped), by the loss": (
        "ranking_t2000_s7_nr1_cl_deep_teachers_b128_steps1200_s8.json", "entangled_sandwich_deep_rteacher_b128"),
    "the shipped rule, its random arch strictly fair (`sampling.method: fair`), by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_fair_b128_steps1200.json", "entangled_sandwich_deep_rteacher_fair_b128"),
    "FairNAS proper (6 fair random archs a step), the shipped rule's time, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_fair6_b128_m8.json", "entangled_sandwich_deep_rteacher_fair6_b128"),
    "the shipped rule again on the fair rows' machine (their control), by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_b128_steps1200_xeon.json", "entangled_sandwich_deep_rteacher_b128"),
    "the shipped rule with landmark regularisation (12 landmarks), by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_landmarks_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_landmarks_b128"),
    "the same landmarks at a quarter of the weight, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_landmarks_w025_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_landmarks_w025_b128"),
    "the shipped rule again, 8 seeds on one Xeon (the progressive rows' control), by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_b128_steps1200_xeon_s8.json", "entangled_sandwich_deep_rteacher_b128"),
    "the shipped rule under progressive shrinking, 8 seeds, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_ps_b128_steps1200_s8.json", "entangled_sandwich_deep_rteacher_ps_b128"),
    "the same at about Once-for-All's own shares, 8 seeds, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps1200_s8.json",
        "entangled_sandwich_deep_rteacher_psofa_b128"),
    "the same, later (`[0.4, 0.6, 0.8]`), seeds 0-3, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_pslate_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_pslate_b128"),
    "the shipped schedule at twice the steps (2,400 of 128), seeds 0-3, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps2400_s4.json",
        "entangled_sandwich_deep_rteacher_psofa_b128"),
    "the shipped rule with Cream's prioritized paths as its teacher, seeds 0-3, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_prioritized_psofa_b128_steps1200_s4.json",
        "entangled_sandwich_deep_prioritized_psofa_b128"),
    "the shipped rule again, seeds 0-1 on an AVX-512 Xeon (the own-kernel and k3e6-teacher rows' control), by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps1200_xeon_avx512.json",
        "entangled_sandwich_deep_rteacher_psofa_b128"),
    "the shipped rule, stage 0's k = 5 and 3 kernels their own, seeds 0-1, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_own_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_psofa_own0_b128"),
    "the same in stages 0 and 1, seeds 0-1, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_own_b128_steps1200.json",
        "entangled_sandwich_deep_rteacher_psofa_own01_b128"),
    "the shipped rule with a k3e6 teacher, seeds 0-1, by the loss": (
        "ranking_t2000_s11_nr1_cl_deep_k3teacher_psofa_b128_steps1200.json",
        "entangled_sandwich_deep_k3teacher_psofa_b128"),
}
# --plot's names for the rankers it can draw
PLOTTED = {"macs": "MACs alone", "pipeline": "**the pipeline's**: sandwich (1 random), 7 epochs in channels_last",
           "14 epochs": "the same, 14 epochs (`--set supernet.optim.epochs=14`)",
           "40 min": "sandwich (1 random), 40 min of a faster machine"}
# A MACs prior on a supernet's scores, as the CVPR'22 NAS track's FLOPs-prior rank loss and RD-NAS
# build into training: each seed's scores and log MACs z-scored and summed (no weight to tune on
# the truth). Where it does no better than the supernet alone, training the prior in will not either.
WITH_MACS = {"8 seeds: the shipped supernet's loss + log MACs (z-scores summed)":
             "8 seeds: the teacher's kernels drawn (`random_kernels`, shipped), by the loss"}
# the subsets on which each ranker's lead over the MACs proxy gets a paired CI
LEAD_SUBSETS = ("stratified", "band")
# the truth recipe a row's scores must have been judged against (the same subnets, data and training)
SAME = ("truth_steps", "batch", "space", "data")


class Refused(ValueError):
    """Input this script cannot judge: one line, exit code 2."""


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Refused(f"cannot read {path}: {e}") from None


def check_same_subnets(truth: dict, other: dict, name: str) -> None:
    """Scores only compare on the truth's own subnets, data and stand-alone recipe."""
    if [s["arch"] for s in other["subnets"]] != [s["arch"] for s in truth["subnets"]]:
        raise Refused(f"{name} scored other subnets than the truth's")
    for key in SAME:
        if other.get(key) != truth.get(key):
            raise Refused(f"{name} has {key} {other.get(key)!r}, the truth {truth.get(key)!r}")


def zscore(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return (x - x.mean()) / x.std()


def with_macs(scores: list, macs: np.ndarray) -> list[np.ndarray]:
    """Each seed's scores plus the log-MACs prior, both z-scored (``WITH_MACS``)."""
    return [zscore(s) + zscore(np.log(macs)) for s in scores]


def taus(pred, target: np.ndarray, subsets: dict[str, list[int]]) -> dict[str, float]:
    pred = np.asarray(pred, dtype=float)
    return {name: kendall_tau(pred[idx], target[idx]) for name, idx in subsets.items()}


def per_seed(values: list[float]) -> dict:
    """One figure per supernet seed, rounded, with their mean and range."""
    values = [round(v, 4) for v in values]
    return {"per_seed": values, "mean": round(float(np.mean(values)), 4), "min": min(values), "max": max(values)}


def judged(preds: list, runs: np.ndarray, subsets: dict[str, list[int]], macs: np.ndarray | None = None) -> dict:
    """One ranker (one prediction per supernet seed) against the mean of ``runs``' seeds: each
    subset's tau per seed, their mean and range, the stratified CI's lower bound per seed, the
    lead over ``macs``' tau with its paired CI per seed (stratified and band), the mean held-out
    tau (as one stand-alone run is judged) and the mean tau against the truth of the first k
    seeds for every k >= 2."""
    preds = [np.asarray(p, dtype=float) for p in preds]
    target, strat = runs.mean(1), subsets["stratified"]
    reports = [taus(p, target, subsets) for p in preds]
    out = {}
    for name in SUBSETS:
        out[name] = per_seed([r[name] for r in reports])
    out["stratified"]["ci95_low_per_seed"] = [round(bootstrap_ci(kendall_tau, p[strat], target[strat])[0], 4)
                                              for p in preds]
    for name in LEAD_SUBSETS if macs is not None else ():
        idx = subsets[name]
        leads = [lead_ci(kendall_tau, p[idx], macs[idx], target[idx]) for p in preds]
        out[name]["lead_over_macs"] = per_seed([lead for lead, _, _ in leads]) | {
            "ci95_per_seed": [[round(lo, 4), round(hi, 4)] for _, lo, hi in leads]}
    # on the targets one stand-alone run is judged on (each seed held out against the others' mean)
    out["held_out"] = {name: round(float(np.mean([held_out_tau(runs[idx], p[idx]) for p in preds])), 4)
                       for name, idx in subsets.items()}
    out["growth"] = {name: [round(float(np.mean([taus(p, runs[:, :k].mean(1), subsets)[name] for p in preds])), 4)
                            for k in range(2, runs.shape[1] + 1)] for name in SUBSETS}
    if len(preds) > 1:  # the supernet seeds' scores averaged: what an ensemble of them would rank
        out["seeds_averaged"] = {name: round(t, 4) for name, t in taus(np.mean(preds, 0), target, subsets).items()}
    return out


def lead_markdown(rows: dict) -> str:
    """Per ranker: its tau less the MACs proxy's on the same subnets, and that lead's paired 95 %
    CI (the lowest lower and highest upper bound over the supernet seeds, and how many seeds'
    intervals lie above 0): whether it beats MACs on subnets like these, not only on these."""
    head = " | ".join(f"{n}: lead over MACs | its 95 % CIs | seeds above 0" for n in LEAD_SUBSETS)
    lines = [f"| ranker | {head} |", "| --- |" + " --- | --- | --- |" * len(LEAD_SUBSETS)]
    for label, r in rows.items():
        if "lead_over_macs" not in r["stratified"]:
            continue
        cells = []
        for n in LEAD_SUBSETS:
            lead = r[n]["lead_over_macs"]
            cis = lead["ci95_per_seed"]
            lows, highs = [lo for lo, _ in cis], [hi for _, hi in cis]
            cells.append(f"{lead['mean']:+.2f} | {min(lows):+.2f} to {max(highs):+.2f} | "
                         f"{sum(lo > 0 for lo in lows)} of {len(cis)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def averaged_markdown(rows: dict) -> str:
    """Per ranker with 2+ supernet seeds: the seeds' mean tau, then the tau of their averaged scores."""
    lines = ["| ranker | supernet seeds | " + " | ".join(f"tau {n}: mean of seeds → seeds averaged" for n in SUBSETS)
             + " |", "| --- | --- |" + " --- |" * len(SUBSETS)]
    for label, r in rows.items():
        if "seeds_averaged" in r:
            cells = " | ".join(f"{r[n]['mean']:.2f} → {r['seeds_averaged'][n]:.2f}" for n in SUBSETS)
            lines.append(f"| {label} | {len(r['all']['per_seed'])} | {cells} |")
    return "\n".join(lines)


def markdown(rows: dict, held_out: dict, seeds: int) -> str:
    """Each subset's mean tau over the supernet seeds, their range in brackets; and the taus on
    the targets one stand-alone run is judged on (the last row: that run's own)."""
    def cell(f: dict) -> str:
        return f"{f['mean']:.2f}" + (f" [{f['min']:.2f} to {f['max']:.2f}]" if len(f["per_seed"]) > 1 else "")

    def trio(taus: dict) -> str:
        return " / ".join(f"{taus[name]:.2f}" for name in SUBSETS)

    lines = [f"| ranker, against the mean of {seeds} stand-alone seeds | steps | supernet seeds | tau all | "
             "tau stratified | its 95 % CI lower bounds | tau band | held out: all / stratified / band |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in rows.items():
        lows = r["stratified"]["ci95_low_per_seed"]
        low = f"{min(lows):.2f}" + (f" to {max(lows):.2f}" if len(lows) > 1 else "")
        lines.append(f"| {label} | {r.get('steps', '')} | {len(r['all']['per_seed'])} | {cell(r['all'])} | "
                     f"{cell(r['stratified'])} | {low} | {cell(r['band'])} | {trio(r['held_out'])} |")
    lines.append(f"| one stand-alone run of each subnet | 2,000 | | | | | | {trio(held_out)} |")
    return "\n".join(lines)


def plot(rows: dict, names: list[str], first: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SUBSETS), figsize=(4.2 * len(SUBSETS), 3.6), sharey=True)
    for ax, name in zip(axes, SUBSETS):
        for short in names:
            r = rows[PLOTTED[short]]
            growth = r["growth"][name]
            steps = f" ({r['steps']} steps)" if "steps" in r else ""
            ax.plot(range(first, first + len(growth)), growth, "o-", label=f"{short}{steps}")
        ax.set_title(f"{name} subnets")
        ax.set_xlabel("stand-alone seeds in the truth")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Kendall tau (mean of supernet seeds)")
    axes[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextlib.contextmanager
def exits_on_refusal(ap: argparse.ArgumentParser, prog: str):
    """Input a report cannot judge: one line and exit code 2."""
    try:
        yield
    except KeyError as e:
        ap.exit(2, f"{prog}: a results JSON lacks the field {e}\n")
    except Refused as e:
        ap.exit(2, f"{prog}: {e}\n")


def load_truth(path: str) -> tuple[dict, np.ndarray]:
    """A ranking.py results JSON and its stand-alone top-1 per subnet and seed ``[subnet, seed]``."""
    truth = load(Path(path))
    runs = np.array([s["test_top1_seeds"] for s in truth["subnets"]], dtype=float)
    if runs.ndim != 2 or runs.shape[1] < 2:
        raise Refused(f"{path} has fewer than 2 stand-alone seeds for some subnet")
    return truth, runs


def read_rows(truth: dict) -> dict[str, dict]:
    """label -> {source, variant, score, steps, scores}: each row's supernet seeds' scores as its results
    JSON recorded them (``LOSS_ROWS``: the search_val loss negated, so higher ranks higher), refused
    unless it scored the truth's subnets. Each JSON is read and checked once, however many rows it holds."""
    runs: dict[str, dict] = {}
    out = {}
    for rows, score in ((ROWS, "top-1"), (LOSS_ROWS, "loss")):
        for label, (name, variant) in rows.items():
            if name not in runs:
                runs[name] = load(RESULTS / name)
                check_same_subnets(truth, runs[name], name)
            v = runs[name].get("variants", {}).get(variant)
            if v is None:
                raise Refused(f"{name} has no variant {variant!r}")
            scores = v["scores"]
            if score == "loss":
                if "val_losses" not in v:
                    raise Refused(f"{name} keeps no search_val losses (rerun its command with --report-only)")
                scores = [[-x for x in seed] for seed in v["val_losses"]]
            out[label] = {"source": name, "variant": variant, "score": score, "steps": v["steps"], "scores": scores}
    return out


def longer_runs(paths: str, truth: dict) -> tuple[dict, list[int], np.ndarray]:
    """``standalone_noise.py`` JSONs (comma-separated: seeds of one batch run in several runs,
    ``--first-seed``) that reran some of the truth's subnets: their indices among the truth's
    subnets and their final top-1 ``[subnet, seed]``, every file's seeds side by side."""
    files = [p for p in paths.split(",") if p]
    others = [load(Path(p)) for p in files]
    archs = [s["arch"] for s in truth["subnets"]]
    first = others[0]
    seeds: set[int] = set()
    blocks = []
    for path, other in zip(files, others):
        missing = [a for a in other["archs"] if a not in archs]
        if missing:
            raise Refused(f"{path} reran {len(missing)} arch(s) that are not the truth's subnets (search picks?)")
        if other.get("batch") != truth.get("batch"):  # steps differ by design; the recipe must not
            raise Refused(f"{path} trained at batch {other.get('batch')}, the truth at {truth.get('batch')}")
        if sorted(map(str, other["archs"])) != sorted(map(str, first["archs"])) or \
                other["truth_steps"] != first["truth_steps"]:
            raise Refused(f"{path} reran other subnets or steps than {files[0]}")
        top1 = np.array(other["top1"]["final"], dtype=float)
        ran = set(range(other.get("first_seed", 0), other.get("first_seed", 0) + top1.shape[1]))
        if ran & seeds:
            raise Refused(f"{path} repeats seeds {sorted(ran & seeds)} of another file")
        seeds |= ran
        blocks.append(top1[[other["archs"].index(a) for a in first["archs"]]])  # the first file's order
    runs = np.concatenate(blocks, axis=1)
    if runs.ndim != 2 or runs.shape[1] < 2 or len(runs) < 3:
        raise Refused(f"{paths} has fewer than 3 subnets or 2 seeds")
    return first, [archs.index(a) for a in first["archs"]], runs


def judged_longer(preds: dict[str, list], runs: np.ndarray, idx: list[int], longer: np.ndarray) -> dict:
    """On the subnets ``idx`` that ``longer`` reran: the truth's seed-mean against the longer runs'
    (tau, bootstrap 95 % CI), the longer runs' own seed agreement, and each ranker's tau (per
    supernet seed, their mean and range) against both."""
    short, long = runs[idx].mean(1), longer.mean(1)
    low, high = bootstrap_ci(kendall_tau, short, long)
    out = {"subnets": list(idx), "longer_seeds": longer.shape[1],
           "truth_vs_longer": {"tau": round(kendall_tau(short, long), 4), "ci95": [round(low, 4), round(high, 4)]},
           "longer_seed_agreement": seed_agreement(longer),
           "one_longer_run_held_out": round(held_out_tau(longer), 4), "rankers": {}}
    for label, p in preds.items():
        scores = [np.asarray(x, dtype=float)[idx] for x in p]
        out["rankers"][label] = {name: per_seed([kendall_tau(x, target) for x in scores])
                                 for name, target in (("truth", short), ("longer", long))}
    return out


def longer_markdown(r: dict, truth_seeds: int, steps: int, longer_steps: int) -> str:
    agree = r["truth_vs_longer"]
    lines = [f"{steps:,} against {longer_steps:,} steps on these subnets: tau {agree['tau']:.2f} (95 % CI "
             f"{agree['ci95'][0]:.2f} to {agree['ci95'][1]:.2f}); the {longer_steps:,}-step seeds agree at tau "
             f"{r['longer_seed_agreement']['pairwise_kendall_tau_mean']:.2f}, one run held out "
             f"{r['one_longer_run_held_out']:.2f}", "",
             f"| ranker | tau against the {steps:,}-step truth ({truth_seeds} seeds) | "
             f"tau against the {longer_steps:,}-step runs ({r['longer_seeds']} seeds) |", "| --- | --- | --- |"]
    for label, t in r["rankers"].items():
        cells = [f"{t[n]['mean'] + 0.0:.2f}" + (f" [{t[n]['min']:.2f} to {t[n]['max']:.2f}]"  # + 0.0: no "-0.00"
                                                if t[n]["min"] != t[n]["max"] else "") for n in ("truth", "longer")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="a ranking.py results JSON: its subnets' stand-alone seeds")
    ap.add_argument("--plot", default=",".join(PLOTTED),
                    help=f"rankers drawn against the truth's seed count, of: {', '.join(PLOTTED)}")
    ap.add_argument("--longer", default="", metavar="JSON",
                    help="a standalone_noise.py run of some of the truth's subnets at more steps (several, "
                         "comma-separated: their seeds pooled): judge on those too")
    ap.add_argument("--name", default="ranking_table")
    a = ap.parse_args()
    with exits_on_refusal(ap, "ranking_table"):
        names = [k.strip() for k in a.plot.split(",") if k.strip()]
        if set(names) - set(PLOTTED):
            raise Refused(f"--plot names {sorted(set(names) - set(PLOTTED))}; it draws {', '.join(PLOTTED)}")
        truth, runs = load_truth(a.truth)
        sources = read_rows(truth)
        longer = longer_runs(a.longer, truth) if a.longer else None
    subsets = subset_indices(truth)
    rows = {}
    macs = np.array([s["macs"] for s in truth["subnets"]], dtype=float)
    def about(v: dict) -> dict:  # where a row's scores came from
        return {k: v[k] for k in ("source", "variant", "score", "steps")}

    for label, v in sources.items():
        rows[label] = about(v) | judged(v["scores"], runs, subsets, macs)
    for label, base in WITH_MACS.items():
        rows[label] = about(sources[base]) | judged(with_macs(sources[base]["scores"], macs), runs, subsets, macs)
    for proxy, label in (("macs", "MACs alone"), ("params", "params alone")):  # MACs not judged against itself
        rows[label] = judged([[s[proxy] for s in truth["subnets"]]], runs, subsets, None if proxy == "macs" else macs)
    held_out = {name: round(held_out_tau(runs[idx]), 4) for name, idx in subsets.items()}
    table = markdown(rows, held_out, runs.shape[1])
    averaged = averaged_markdown(rows)
    leads = lead_markdown(rows)
    print(table + "\n\n" + leads + "\n\n" + averaged)
    extra = {}
    if longer is not None:
        other, idx, longer_top1 = longer
        preds = {label: v["scores"] for label, v in sources.items()}
        preds |= {label: [[s[proxy] for s in truth["subnets"]]] for proxy, label in (("macs", "MACs alone"),
                                                                                      ("params", "params alone"))}
        judged_l = judged_longer(preds, runs, idx, longer_top1)
        text = longer_markdown(judged_l, runs.shape[1], truth["truth_steps"], other["truth_steps"])
        print("\n" + text)
        extra = {"longer": {"source": a.longer, "steps": other["truth_steps"], **judged_l}, "longer_table": text}
    png = RESULTS / f"{a.name}.png"
    plot(rows, names, 2, png)
    write_result(a.name, {"truth": a.truth, "truth_seeds": runs.shape[1], "subsets": subsets,
                          "seed_agreement": seed_agreement(runs), "one_standalone_run_held_out": held_out,
                          "rows": rows, "table": table, "lead_over_macs_table": leads,
                          "seeds_averaged_table": averaged, "plot": str(png.relative_to(RESULTS.parent.parent)),
                          **extra})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
