"""Does the supernet rank subnets as stand-alone training does? An honest ranking benchmark.

On the embedded synthetic set, the laptop Cream space (32x32, stem stride 2):

1. **Subnets.** 24 drawn stratified over the MACs range (one per equal-width MACs bin) and
   12 inside the search band (``--budget`` +- 15 %; default: the median MACs of random
   archs), fixed seeds.
2. **Ground truth.** Every subnet trained stand-alone (``_nas.train_task``: the project's
   step, SGD, cosine) for ``--truth-steps`` with ``--truth-seeds`` seeds (2), top-1 on the test
   split; the truth is their mean. The noise ceiling is Kendall tau between two seeds (every pair
   of seeds, with their mean); the budget check trains 8 subnets (spread
   over the MACs range) for twice the steps: the budget holds where tau >= 0.8 between the
   two (``budget_check.stable``).
3. **Supernets.** Each variant (weight sharing x strategy; batch 64 unless ``SUPERNET_BATCH``
   says otherwise, the LR scaled with it) x 2 seeds trained for equal
   time: each variant's step is timed first and its steps set to ``--supernet-minutes`` of
   one core (a 2-core machine gives it half that wall-clock, or runs two at once).
4. **Scores.** Each supernet scores every subnet as the search does (exact BN
   recalibration on ``--calib-images`` train images, top-1 on ``--val-images``
   search_val images), against the seed-mean stand-alone top-1: Kendall tau and Spearman
   rho with bootstrap 95 % CIs, tau inside the band, precision@5; the same for MACs,
   params and random order; with 2 or more supernet seeds also the seeds' mean score as one
   ranker (``seeds_mean_score``). With 2 or more truth seeds, ``held_out``: every ranker and one
   stand-alone run judged on the same targets (each seed held out against the others' mean),
   what a supernet must beat to be worth more than training every subnet once.
5. **Search quality.** On the best variant's seed-0 supernet, under ``--budget``:
   evolution's pick, random search's pick at equal evaluations, and the largest-MACs arch
   under the budget, each retrained stand-alone with 3 seeds; ``--search-seeds N`` runs each
   search N times (seeds 0..N-1) and reports each method's retrained mean over its N picks,
   and against chance: the picks minus the truth subnets of 0.85-1.0x the budget's MACs and
   ``--chance-archs N`` more random archs there (``against_random_archs``, a bootstrap 95 % CI).
   ``--finalists K``: a second opinion among each search's K best (by the supernet): each trained
   stand-alone ``--finalist-steps`` (a seed none of the retrains use) and read on search_val; the
   best is one more pick per method (``evolution_finalists``, ``random_finalists``), retrained
   like the others. Searches name candidates canonically (``space.canonical``; keys ``_c``).
6. **bf16 scores** (``--bf16 [CALIB,...]``). Each trained supernet scores the subnets again
   in bf16 autocast + channels_last (the evaluator's fast setting: 3.2x fp32 on an AMX CPU,
   ``gpu_check.py``), ranked beside the fp32 scores; with BN recalibrated on each given
   number of train images, so the recalibration size is measured at bf16's cost.
7. **More scoring images** (``--score-images N``). Each trained supernet scores the subnets
   again on search_val and then on blocks of as many fresh synthetic images (the train stream
   past ``--num-train``, never trained on), N in all: tau by the number of images, top-1 and
   loss as the score, and on each block alone, so the scoring images' share of a supernet's
   ranking noise is measured.
8. **The top of the band** (``--score-picks JSON``, a ranking JSON with ``--search-seeds``). Each
   trained supernet scores the archs that JSON's searches picked and retrained, as the search
   scores them: Kendall tau of its loss against their retrained top-1, held out per retrain
   seed, beside one retrain's own held-out tau and the MACs proxy's (``picks_order``). That is
   the order a search needs, among archs all near the best of the budget. ``--finetune-steps N``
   also scores each pick after N steps alone from the weights it inherits (``finetuned``, as
   ``ranking_finetune.py`` does on the 36 subnets), beside N steps from scratch: whether a short
   fine-tune of a search's finalists would order them better than the supernet does.

Every job (one stand-alone training, one supernet) is cached in ``--work`` as it ends, so
an interrupted run resumes where it was; ``--procs`` jobs run at once, one thread each. A job
being run is claimed (``<key>.running``, freed when its process dies), so a second ranking.py
on the same work dir runs the jobs the first has not taken, and reports the others as missing. The
work dir records the settings that decide its jobs and refuses a run with other ones; the truth
budget is not one of them (its jobs carry their steps), so ``--truth-steps 4000`` on a work dir
of 2,000-step truths adds the longer truth beside the same supernets.
Writes ``results/ranking.json`` and ``results/ranking.png``.

    python benchmarks/ranking.py --procs 2                # every figure (hours on 2 cores)
    python benchmarks/ranking.py --report-only            # the figures of the jobs done so far
    python benchmarks/ranking.py --quick --work /tmp/rq   # a few minutes, end to end

``--truth-from <results JSON>`` (repeatable) caches an earlier run's stand-alone results and
step times in a new work dir (same space, data, truth LR and subnets, or exit 2), so a machine
without the old work dir retrains only the supernets, the search and what was missing; with
``--no-search`` (and no ``--bf16``, which need the weights) also its supernets' scores where their
settings are this run's, so a new truth (``--truth-seeds 3``) ranks them without retraining; a budget
check's JSON gives its runs at both its budgets (a 4,000 vs 8,000 check's 8,000-step runs serve an
8,000 vs 16,000 check), and a ``--report-only`` JSON of a check cut short gives what it finished.

Jobs run in the order truth, supernets, bf16 scores, search, budget check, so an interrupted
run's ``--report-only`` has the ranking figures first; ``missing_jobs`` lists what is not done.
``--check-first`` runs the budget check first: whether a new truth budget is stable is known
before hours go into it; ``--check-only`` runs and reports the check alone; ``--check-seeds 2``
compares seed means at both budgets (as the truth is one) and reports how far the seeds agree;
``--no-search`` leaves the search out (a supernet setting's A/B: ``--supernet-lr``, ``--num-random``),
and ``--supernet-steps N`` trains N steps instead of ``--supernet-minutes`` (step times differ
between machines: an A/B against an earlier machine's run at the steps its minutes gave);
``--check-group band`` takes the 8 from the band subnets (where MACs cannot order them; of the 12,
the 8 with the fewest MACs); ``--check-subnets 34,35`` names the subnets instead. ``--num-train``
sets the synthetic images generated (the truth, supernets and search all train on them): on
2,000 train images the subnets stay about 12 points apart at 4,000 steps, where 18,000 crowd
into 3.4 points by 8,000 (``RESULTS.md``).

``--source cifar10`` runs all of it on CIFAR-10 instead (``--data``: its root, default
``~/.cache/elastic-nas/cifar10``; downloaded once, before any job, where the machine is online;
offline, one line and exit 2 unless the extracted files are there): the same space at the same
32x32 input, so a job costs what it costs on the synthetic set. On the synthetic sets every
budget check so far has failed (the subnets tie when trained out); a truth whose order holds
needs data on which these architectures differ when trained out.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
from search_picks import order, retrained_picks

from _common import RESULTS, cpu_model, run_jobs, write_result
from _nas import TOP_KEPT, cosine, search, train_task, warm_cosine
from elastic_nas.config import SpaceConfig, SupernetConfig, from_dict, load_config
from elastic_nas.errors import ArchError
from elastic_nas.io import atomic_write
from elastic_nas.search.evaluator import eval_data, evaluate_arch
from elastic_nas.search.evolution import EvolutionSettings
from elastic_nas.search.ranking import (
    bootstrap_ci,
    held_out_tau,
    kendall_tau,
    mean_difference_ci,
    rank_report,
    seed_agreement,
)
from elastic_nas.spaces import build_space
from elastic_nas.spaces.cream import OPS
from elastic_nas.spaces.precision import Precision, plain_state_dict

SPACE = {"name": "cream", "input_size": 32, "num_classes": 10, "stem_stride": 2, "width_mult": 0.5,
         "max_depths": [2, 3, 3, 3, 2]}
DATA = {"num_train": 20000, "num_test": 5000, "search_val_size": 2000}
RECIPE = 2  # bump when a job's recipe changes: cached results of another recipe are not reused
# name -> supernet config overrides
VARIANTS = {
    "independent_spos": ["space.weight_sharing=independent", "strategy=spos"],
    "entangled_spos": ["space.weight_sharing=entangled", "strategy=spos"],
    "entangled_sandwich": ["space.weight_sharing=entangled", "strategy=sandwich"],
    "entangled_sandwich_transform": ["space.weight_sharing=entangled", "space.kernel_transform=true",
                                     "strategy=sandwich"],
    # the sandwich without in-place distillation: every arch on the labels (the ablation)
    "entangled_sandwich_labels": ["space.weight_sharing=entangled", "strategy=sandwich", "sandwich.distill=false"],
    # the random archs drawn inside the search band (largest and smallest as before)
    "entangled_sandwich_band": ["space.weight_sharing=entangled", "strategy=sandwich",
                                "sandwich.random_macs_min={band_lo}", "sandwich.random_macs_max={band_hi}"],
    # the lower path at full depth (k3e4 in every block) instead of the one-block smallest arch
    "entangled_sandwich_deep": ["space.weight_sharing=entangled", "strategy=sandwich", "sandwich.smallest=deepest"],
}
BATCH = 64
# the shipped supernet's rule at twice the batch (the pipeline's per_worker_batch 64: more samples a
# second on a CPU), and variations of it; each variant's LR scales with its batch (--supernet-lr is at
# BATCH), as the trainer's batch_policy scale does against optim.reference_batch
AT_BATCH_128 = {
    "entangled_sandwich_deep_b128": VARIANTS["entangled_sandwich_deep"],
    # k = 5 and 3 each with a per-channel offset of their own on the shared centre
    "entangled_sandwich_deep_offsets_b128": VARIANTS["entangled_sandwich_deep"] + ["space.kernel_offsets=true"],
    # the lower path k3e6 at full depth instead of k3e4
    "entangled_sandwich_deepwide_b128": VARIANTS["entangled_sandwich"] + ["sandwich.smallest=deepest_wide"],
    # k3e4 and k3e6 at full depth on alternate steps
    "entangled_sandwich_deepalt_b128": VARIANTS["entangled_sandwich"] + ["sandwich.smallest=deepest_alternate"],
    # the teacher at full depth and width with each block's kernel drawn per step
    "entangled_sandwich_deep_rteacher_b128": VARIANTS["entangled_sandwich_deep"] + ["sandwich.largest=random_kernels"],
    # the same teacher with the k3e6 lower path
    "entangled_sandwich_deepwide_rteacher_b128": VARIANTS["entangled_sandwich"] + ["sandwich.smallest=deepest_wide",
                                                                                   "sandwich.largest=random_kernels"],
    # the shipped rule with its random arch drawn strictly fair (FairNAS): every block takes each of
    # the 6 ops once in every 6 steps; and FairNAS proper, 6 fair random archs a step
    "entangled_sandwich_deep_rteacher_fair_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "sampling.method=fair"],
    "entangled_sandwich_deep_rteacher_fair6_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "sampling.method=fair", "sandwich.num_random=6"],
    # the shipped rule with landmark regularisation: a pair of LANDMARKS a step, ordered by their
    # stand-alone top-1, the better one's loss held below the worse one's
    "entangled_sandwich_deep_rteacher_landmarks_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "landmarks.path={landmarks}"],
    # the same at a quarter of the hinge's weight
    "entangled_sandwich_deep_rteacher_landmarks_w025_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "landmarks.path={landmarks}", "landmarks.weight=0.25"],
    # the shipped rule under Once-for-All's progressive shrinking: the teacher alone for the first 20 %
    # of the samples, then the kernel, the depth (at 35 %) and the expansion (at 50 %) elastic
    "entangled_sandwich_deep_rteacher_ps_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "sandwich.progressive=[0.2,0.35,0.5]"],
    # the same at about Once-for-All's own shares (the full net some 180 of its ~590 epochs, the
    # kernel phase to about half, depth to three quarters): the teacher alone longer
    "entangled_sandwich_deep_rteacher_psofa_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "sandwich.progressive=[0.3,0.5,0.75]"],
    # the shipped rule with the first choice stage's (and the first two's) k = 5 and 3 depthwise kernels
    # tensors of their own, not the 7x7's centre: the supernets' preference for large stage-0 kernels
    "entangled_sandwich_deep_rteacher_psofa_own0_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "sandwich.progressive=[0.3,0.5,0.75]", "space.own_kernel_stages=[0]"],
    "entangled_sandwich_deep_rteacher_psofa_own01_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "sandwich.progressive=[0.3,0.5,0.75]", "space.own_kernel_stages=[0,1]"],
    # the shipped rule with the teacher's kernels all the smallest (k3e6 at full depth): does the
    # teacher's kernel set the kernel the supernet prefers?
    "entangled_sandwich_deep_k3teacher_psofa_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=small_kernels", "sandwich.progressive=[0.3,0.5,0.75]"],
    # the teacher alone longer still (Delayed eps-Shrinking, arXiv 2407.06167: shrink once the full
    # model is partly trained)
    "entangled_sandwich_deep_rteacher_pslate_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=random_kernels", "sandwich.progressive=[0.4,0.6,0.8]"],
    # the shipped rule with Cream's prioritized paths as its teacher: the random archs under the budget
    # in the band's lower half (where the search's picks lie) with the best batch top-1 enter a board
    # of 10 once the expansion opens, whose archs then teach in turn
    "entangled_sandwich_deep_prioritized_psofa_b128": VARIANTS["entangled_sandwich_deep"] + [
        "sandwich.largest=prioritized", "sandwich.progressive=[0.3,0.5,0.75]",
        "sandwich.board_macs_min={band_lo}", "sandwich.board_macs_max={budget}"],
}
# Few-shot supernets (Zhao et al. 2021) of the shipped rule: shared for half the steps, then split into
# one copy per kernel of the first choice block (stage 0, where the shared supernets' bias lies), each
# trained on its part of the space alone; a subnet is scored by its part's copy. The value: the copies'
# steps together as a multiple of the shared half (1: the compute of the unsplit supernet).
FEW_SHOT = {"entangled_sandwich_deep_rteacher_fewshot_b128": 1, "entangled_sandwich_deep_rteacher_fewshot3_b128": 3}
AT_BATCH_128.update(dict.fromkeys(FEW_SHOT, AT_BATCH_128["entangled_sandwich_deep_rteacher_b128"]))
VARIANTS.update(AT_BATCH_128)
SUPERNET_BATCH = dict.fromkeys(AT_BATCH_128, 128)  # a variant's batch where it is not BATCH
# Landmark regularisation's archs: drawn apart from the truth's subnets (other generator seeds, and
# none of them), spread over MACs and inside the search band, each trained stand-alone at the truth's
# budget with LANDMARK_SEEDS seeds: what a user pays for them, once.
LANDMARKS = {"stratified": 6, "band": 6}
LANDMARK_SEEDS = 1


def supernet_batch(a, variant: str) -> tuple[int, float]:
    """``variant``'s supernet batch and its learning rate."""
    batch = SUPERNET_BATCH.get(variant, BATCH)
    return batch, a.supernet_lr * batch / BATCH


# -- configs and subnets --------------------------------------------------------------


def data_cfg(a) -> dict:
    """DATA with ``--num-train`` (the images generated; search_val is carved from them) and
    ``--difficulty`` (named only when not standard: older work dirs keep their settings); on
    ``--source cifar10`` its own train and test split, search_val carved from train as here."""
    if a.source != "synthetic":
        return {"source": a.source, "search_val_size": DATA["search_val_size"]}
    return {**DATA, "num_train": a.num_train, **({"difficulty": a.difficulty} if a.difficulty != "standard" else {})}


def overrides(a, variant: str) -> list[str]:
    """``variant``'s config overrides, the search band (``--budget`` +- 15 %, millions) and the
    landmarks file filled in."""
    budget = search_budget(a.budget) / 1e6
    fill = {"band_lo": round(0.85 * budget, 4), "band_hi": round(1.15 * budget, 4), "budget": round(budget, 4)}
    if any("{landmarks}" in o for o in VARIANTS[variant]):  # the landmarks file in the work dir
        fill["landmarks"] = landmarks_path(a)
    return [o.format(**fill) for o in VARIANTS[variant]]


def supernet_cfg(a, variant: str, seed: int) -> SupernetConfig:
    sets = [f"space.{k}={json.dumps(v)}" for k, v in SPACE.items()] + [f"data.{k}={v}" for k, v in data_cfg(a).items()]
    sets += [f"data.path={a.data}", f"run.seed={seed}", f"sandwich.num_random={a.num_random}", *overrides(a, variant)]
    return load_config(SupernetConfig, None, sets)


def ensure_data(a) -> None:
    """The dataset there before any job starts (CIFAR-10 downloaded here once, not by every job
    process at the same time), or one line and exit 2."""
    from elastic_nas.data import build_dataset
    from elastic_nas.errors import UserError

    cfg = supernet_cfg(a, "independent_spos", 0)
    try:
        build_dataset(cfg.data, cfg.space.input_size)
    except UserError as e:
        print(f"ranking: {e}", file=sys.stderr)
        raise SystemExit(2) from None


@functools.lru_cache
def search_budget(millions: float) -> float:
    """The search's MACs budget, the band's centre: ``--budget``, or the median of 2,000 random archs."""
    if millions:
        return millions * 1e6
    space, rng = build_space(from_dict(SpaceConfig, SPACE)), np.random.default_rng(1234)
    return float(np.median([space.macs(space.sample(rng)) for _ in range(2000)]))


def distinct_arch(space, seed: int, lo: float, hi: float, seen: set[str]):
    """The first arch (JSON) of the generators ``[seed, t]`` (t = 0, 1, ...) with MACs in [lo, hi]
    and not in ``seen`` (its JSON text, added there), or None where no arch reaches the range."""
    for t in range(100):
        try:
            arch = space.to_json(space.sample_constrained(np.random.default_rng([seed, t]), lo, hi, 1, 2000))
        except ArchError:
            return None
        if json.dumps(arch) not in seen:
            seen.add(json.dumps(arch))
            return arch
    return None


def subnets(a) -> tuple[list, list[str], float]:
    """(arch JSON list, group of each: stratified / band, the band's centre in MACs)."""
    space = build_space(from_dict(SpaceConfig, SPACE))
    lo, hi = space.macs_range()
    budget = search_budget(a.budget)
    width = (hi - lo) / a.stratified
    ranges = [(i, lo + i * width, lo + (i + 1) * width, "stratified") for i in range(a.stratified)]
    ranges += [(999, 0.85 * budget, 1.15 * budget, "band")] * a.band  # the next distinct arch of one seed each
    archs, groups, seen = [], [], set()
    for seed, lo_i, hi_i, group in ranges:  # a bin no arch reaches is skipped
        arch = distinct_arch(space, seed, lo_i, hi_i, seen)
        if arch is not None:
            archs.append(arch)
            groups.append(group)
    return archs, groups, budget


def landmarks_path(a) -> Path:
    return Path(a.work).resolve() / f"landmarks_{sum(LANDMARKS.values())}x{LANDMARK_SEEDS}_{a.truth_steps}.json"


def landmark_archs(a, taken: list) -> list:
    """LANDMARKS' archs (JSON): the stratified ones one per equal MACs bin, the band's in the
    search band, none of them in ``taken`` (the truth's subnets)."""
    space = build_space(from_dict(SpaceConfig, SPACE))
    lo, hi = space.macs_range()
    budget, n = search_budget(a.budget), LANDMARKS["stratified"]
    ranges = [(lo + i * (hi - lo) / n, lo + (i + 1) * (hi - lo) / n) for i in range(n)]
    ranges += [(0.85 * budget, 1.15 * budget)] * LANDMARKS["band"]
    seen = {json.dumps(arch) for arch in taken}
    drawn = [distinct_arch(space, 7000 + i, lo_i, hi_i, seen) for i, (lo_i, hi_i) in enumerate(ranges)]
    return [arch for arch in drawn if arch is not None]  # a bin no arch reaches is skipped


def make_landmarks(a, work: Path, taken: list) -> dict | None:
    """The landmarks file (written once their stand-alone jobs are done) and its content, or None
    while a job is missing (``--report-only``)."""
    archs = landmark_archs(a, taken)
    jobs = [(work, f"lm_{i}_s{s}_{a.truth_steps}", standalone, a, arch, s, a.truth_steps)
            for i, arch in enumerate(archs) for s in range(LANDMARK_SEEDS)]
    ran = finished(a, work, jobs)
    if any(r is None for r in ran):
        return None
    space = build_space(from_dict(SpaceConfig, SPACE))
    top1 = np.array([r["test_top1"] for r in ran]).reshape(len(archs), LANDMARK_SEEDS)
    content = {"landmarks": [{"arch": arch, "score": round(float(t.mean()), 3), "test_top1_seeds": t.tolist(),
                              "macs": space.macs(arch)} for arch, t in zip(archs, top1)]}
    atomic_write(landmarks_path(a), json.dumps(content, indent=1))
    return content


# -- jobs (each in its own process, one thread; results cached by key) ----------------


def cached(work: Path, key: str, fn, *args):
    path = work / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    out = fn(*args)
    atomic_write(path, json.dumps(out))
    return out


def claimed(work: Path, key: str, fn, *args):
    """``cached``, unless another live process on this work dir runs the job (None then): a
    second ranking.py on the same work dir adds processes instead of repeating jobs."""
    if (work / f"{key}.json").exists():
        return cached(work, key, fn, *args)
    claim = work / f"{key}.running"
    if not take_claim(claim):
        return None
    try:
        return cached(work, key, fn, *args)
    finally:
        claim.unlink(missing_ok=True)


def take_claim(path: Path) -> bool:
    """Create ``path`` naming this process; False while a live process on this host holds it."""
    host = socket.gethostname()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):  # being written (free after a minute: its writer died at once)
            if time.time() - path.stat().st_mtime < 60:
                return False
        else:
            if owner["host"] != host or _alive(owner["pid"]):
                return False
        path.unlink(missing_ok=True)  # its process died: the job is free again
        return take_claim(path)
    with os.fdopen(fd, "w") as f:
        json.dump({"host": host, "pid": os.getpid()}, f)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# What decides a cached job's result (the keys name the job, not these): a work dir holds one set.
# The truth budget and the searches' population and generations are not among them: every job
# they decide has them in its key, so one work dir holds truths of several budgets and searches
# of several sizes beside the same supernets.
JOB_SETTINGS = ("stratified", "band", "budget", "truth_lr", "supernet_lr", "supernet_wd",
                "num_random", "calib_images", "val_images")


def check_work_dir(a) -> None:
    """Record the job settings in a new work dir; exit 2 on a work dir of other settings."""
    path = Path(a.work) / "settings.json"
    ours = {"space": SPACE, "data": data_cfg(a), "recipe": RECIPE, **{k: getattr(a, k) for k in JOB_SETTINGS}}
    if a.channels_last:  # named only when set: older work dirs keep their settings
        ours["channels_last"] = True
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(ours, indent=1))
        return
    theirs = json.loads(path.read_text())
    differ = sorted(k for k in ours.keys() | {"channels_last"} if ours.get(k) != theirs.get(k))
    if differ:
        print(f"ranking: {a.work} holds jobs of other settings ({', '.join(differ)}); pass another --work",
              file=sys.stderr)
        raise SystemExit(2)
    if theirs.keys() - ours.keys():  # an older work dir's truth_steps: it holds several truth budgets now
        atomic_write(path, json.dumps(ours, indent=1))


def standalone(a, arch, seed: int, steps: int, split: str = "test") -> dict:
    """Top-1 of ``arch`` trained from scratch, on the test split (or ``split``)."""
    from _nas import retrain_views
    from elastic_nas.data import build_dataset

    cfg = supernet_cfg(a, "independent_spos", 0)
    space, splits = build_space(cfg.space), build_dataset(cfg.data, cfg.space.input_size)
    t0 = time.perf_counter()
    top1 = retrain_views(space, space.validate(arch), splits, steps, BATCH, a.truth_lr, seed, warmup=steps // 20,
                         channels_last=a.truth_channels_last, split=split)["final"]["top1"]
    # the CPU model and layout: runs of one subnet and seed differ between machine types (RESULTS.md)
    return {f"{split}_top1": top1, "seconds": round(time.perf_counter() - t0, 1), "cpu_model": cpu_model(),
            "channels_last": a.truth_channels_last}


def step_seconds(a, variant: str) -> float:
    """Seconds of one supernet step of ``variant`` (12 steps after 3 of warm-up)."""
    from elastic_nas.data import build_dataset
    from elastic_nas.train.supernet import build_supernet_task

    cfg = supernet_cfg(a, variant, 0)
    task = build_supernet_task(cfg)
    split = build_dataset(cfg.data, cfg.space.input_size).train
    batch = supernet_batch(a, variant)[0]
    train_task(task, split, 3, batch, 0.01, 0, channels_last=a.channels_last)  # warm-up: allocations, first calls
    t0 = time.perf_counter()
    train_task(task, split, 12, batch, 0.01, 1, channels_last=a.channels_last)
    return (time.perf_counter() - t0) / 12


def supernet(a, variant: str, seed: int, steps: int, archs: list) -> dict:
    """Train one supernet, keep its weights, and score every subnet as the search does."""
    from elastic_nas.data import build_dataset
    from elastic_nas.train.supernet import build_supernet_task

    cfg = supernet_cfg(a, variant, seed)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    batch, lr = supernet_batch(a, variant)
    cfg.optim.epochs = steps * batch / len(splits.train)  # the run's length, which a strategy's schedule follows
    torch.manual_seed(seed)
    task = build_supernet_task(cfg)
    space = build_space(cfg.space)
    t0 = time.perf_counter()
    if variant in FEW_SHOT:
        copies = few_shot(a, variant, task, splits.train, steps, batch, lr, seed)
    else:
        train_task(task, splits.train, steps, batch, lr, seed, weight_decay=a.supernet_wd,
                   warmup=steps // 20, channels_last=a.channels_last)
        copies = {None: task}
    seconds = time.perf_counter() - t0
    for kernel, copy in copies.items():
        suffix = "" if kernel is None else f"_k{kernel}"
        torch.save(plain_state_dict(copy.model), weights_path(a.work, variant, seed, steps, suffix))
    data = eval_data(splits, a.calib_images, a.val_images, 0, channels_last=a.channels_last)
    archs = [space.validate(arch) for arch in archs]
    evals = [evaluate_arch(copies[first_kernel(arch) if variant in FEW_SHOT else None].model, arch, data)
             for arch in archs]
    return {"steps": steps, "train_seconds": round(seconds, 1), "scores": [e["accuracy"] for e in evals],
            "val_losses": [round(e["loss"], 5) for e in evals]}


def first_kernel(arch) -> int:
    """The kernel of the first choice block (stage 0's first): the few-shot supernets' split."""
    return OPS[arch[0][0]][0]


def with_first_kernel(arch, kernel: int):
    """``arch`` with its first choice block's kernel set to ``kernel`` (its expansion kept)."""
    first = arch[0]
    return ((OPS.index((kernel, OPS[first[0]][1])), *first[1:]), *arch[1:])


def split_archs(strategy, kernel: int, offset: int):
    """The sandwich's archs of step t + ``offset`` in the part of the space whose first choice block has
    ``kernel``: the teacher and lower path set to it, each random arch drawn again (its own streams,
    so a function of seed and step) until it lies in the part, as uniform over the part as before."""
    draw = strategy.archs

    def archs(step: int) -> list:
        out = []
        for i, arch in enumerate(draw(step + offset)):
            if i < 2:
                out.append(with_first_kernel(arch, kernel))
                continue
            tries = 1
            while first_kernel(arch) != kernel:
                arch = strategy.random_sampler(step + offset, stream=i - 1 + 100 * tries)
                tries += 1
            out.append(arch)
        return out

    return archs


def few_shot(a, variant: str, task, split, steps: int, batch: int, lr: float, seed: int) -> dict:
    """``task`` trained shared for half of ``steps`` (the first half of a cosine over ``steps``), then
    one copy per first-block kernel on its part for the second half's schedule in ``FEW_SHOT[variant]``
    x (half) / 3 steps each (fresh momentum); returns kernel -> copy."""
    import copy

    shared = steps // 2
    train_task(task, split, shared, batch, lr, seed, weight_decay=a.supernet_wd, channels_last=a.channels_last,
               lr_at=lambda t: warm_cosine(t, steps, lr, steps // 20))
    each = max(1, round((steps - shared) * FEW_SHOT[variant] / 3))
    kernels = sorted({k for k, _ in OPS})
    copies = {}
    for n, kernel in enumerate(kernels):
        part = copy.deepcopy(task)
        part.strategy.archs = split_archs(part.strategy, kernel, shared + n * each)
        train_task(part, split, each, batch, lr, seed + 1000 * kernel, weight_decay=a.supernet_wd,
                   channels_last=a.channels_last,
                   lr_at=lambda t: cosine(shared + t * (steps - shared) / each, steps, lr))
        copies[kernel] = part
    return copies


def weights_path(work: str, variant: str, seed: int, steps: int, suffix: str = "") -> Path:
    """Where a supernet job keeps its trained weights (``suffix``: a few-shot copy's)."""
    return Path(work) / f"supernet_{variant}_{seed}_{steps}{suffix}.pt"


def trained_supernet(a, variant: str, seed: int, steps: int):
    """``(space, supernet)`` of a supernet job's kept weights."""
    space = build_space(supernet_cfg(a, variant, seed).space)
    model = space.build_supernet()
    model.load_state_dict(torch.load(weights_path(a.work, variant, seed, steps), weights_only=True))
    return space, Precision(channels_last=a.channels_last).model(model)


def rescored(a, variant: str, seed: int, steps: int, archs: list, calib_images: int, bf16: bool = True) -> dict:
    """``archs`` scored again on a trained supernet, their BN statistics recalibrated on
    ``calib_images`` train images: in bf16 autocast + channels_last (the evaluator's fast setting on
    AMX CPUs and GPUs; BN statistics stay fp32), or (``bf16=False``) as the search scores them."""
    from elastic_nas.data import build_dataset

    cfg = supernet_cfg(a, variant, seed)
    space, model = trained_supernet(a, variant, seed, steps)
    if bf16:
        Precision(channels_last=True).model(model)
    data = eval_data(build_dataset(cfg.data, cfg.space.input_size), calib_images, a.val_images, 0,
                     precision="bf16" if bf16 else "fp32", channels_last=bf16 or a.channels_last)
    evals = [evaluate_arch(model, space.validate(arch), data) for arch in archs]
    return {"scores": [e["accuracy"] for e in evals], "val_losses": [round(e["loss"], 5) for e in evals]}


class _Fixed(torch.nn.Module):
    """A subnet behind the supernet's ``forward(x, arch)``, so ``evaluate_arch`` scores it as the search does."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, arch) -> torch.Tensor:
        return self.net(x)


def finetuned(a, variant: str, seed: int, steps: int, archs: list, k: int, lr: float, init: str) -> dict:
    """``archs`` scored as the search scores (exact BN recalibration, search_val) after ``k`` SGD
    steps of each alone, from the weights it inherits from ``variant``'s supernet ``seed`` (``init``
    ``inherited``) or from a fresh init (``scratch``): batch 64, cosine from ``lr`` over the k
    steps, label smoothing 0.1 as the truth trains, the same batches for every subnet of one
    supernet (their order's noise is common to all of them, not a ranker's)."""
    from types import SimpleNamespace

    from elastic_nas.data import build_dataset
    from elastic_nas.train.strategies import Strategy

    cfg = supernet_cfg(a, variant, seed)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    data = eval_data(splits, a.calib_images, a.val_images, 0, channels_last=a.channels_last)
    space, supernet = trained_supernet(a, variant, seed, steps)
    out = []
    for i, arch in enumerate(space.validate(x) for x in archs):
        torch.manual_seed(1000 * seed + i)  # a fresh init's (the inherited weights overwrite it)
        net = space.build_subnet(arch, supernet if init == "inherited" else None)
        if k:
            train_task(SimpleNamespace(model=net, strategy=Strategy(net, label_smoothing=0.1)), splits.train, k,
                       BATCH, lr, seed, channels_last=a.channels_last)
        out.append(evaluate_arch(Precision("fp32", a.channels_last).model(_Fixed(net)), None, data))
    return {"scores": [e["accuracy"] for e in out], "val_losses": [round(e["loss"], 5) for e in out]}


def bf16_key(a, variant: str, seed: int, steps: int, calib_images: int) -> str:
    calib = "" if calib_images == a.calib_images else f"c{calib_images}_"
    return f"bf16_{calib}{variant}_s{seed}_{steps}"


def bf16_figures(a, variants, target, subsets, results, steps, calib_images: int) -> dict:
    """How the bf16 + channels_last scores rank beside the fp32 ones of the same supernets
    (those recalibrated on ``--calib-images``: at another count the comparison mixes both)."""
    out = {"calib_images": calib_images, "fp32_calib_images": a.calib_images}
    for v in variants:
        seeds = []
        for s in range(a.supernet_seeds):
            fp32, bf16 = (np.array(results[k]["scores"])
                          for k in (f"sn_{v}_s{s}_{steps[v]}", bf16_key(a, v, s, steps[v], calib_images)))
            seeds.append(dict(seed_report(bf16, target, subsets), mean_score=round(float(np.mean(bf16)), 2),
                              bf16_scores=bf16.tolist(),
                              kendall_tau_vs_fp32_scores=round(kendall_tau(bf16, fp32), 4),
                              score_diff_points_mean=round(float(np.mean(bf16 - fp32)), 3),
                              score_diff_points_max_abs=round(float(np.max(np.abs(bf16 - fp32))), 3)))
        out[v] = {"seeds": seeds, **means(seeds, ("kendall_tau", "stratified_kendall_tau", "band_kendall_tau",
                                                  "kendall_tau_vs_fp32_scores"))}
    return out


def bf16_rescores(a, work: Path, variants, archs, target, subsets, results, steps) -> tuple[dict, list[str]]:
    """Every trained supernet's subnets scored again in bf16, once per calibration image count;
    and the rescoring jobs not done."""
    out, missing = {}, []
    for n in a.bf16:
        jobs = [(work, bf16_key(a, v, s, steps[v], n), rescored, a, v, s, steps[v], archs, n)
                for v in variants for s in range(a.supernet_seeds)]
        results.update({j[1]: r for j, r in zip(jobs, finished(a, work, jobs)) if r is not None})
        missing += [j[1] for j in jobs if j[1] not in results]
        scored = [v for v in variants if all(bf16_key(a, v, s, steps[v], n) in results
                                             for s in range(a.supernet_seeds))]
        out[str(n)] = bf16_figures(a, scored, target, subsets, results, steps, n)
    return out, missing


def fresh_images(a, n: int):
    """``n`` synthetic images of the train stream past ``--num-train``'s chunks: the same
    distribution, never trained on nor in search_val or test (each chunk is seeded by its index,
    so chunks past the last one the train set touches are new)."""
    from elastic_nas.data.base import ArrayStore, Split
    from elastic_nas.data.synthetic import _CHUNK, SYNTHETIC_MEAN, SYNTHETIC_STD, generate

    start = -(-a.num_train // _CHUNK) * _CHUNK
    images, labels = generate(start + n, 0, "train", a.difficulty)
    ids = np.arange(start, start + n)
    return Split(ArrayStore(images[start:]), np.arange(n), ids, labels[start:], SPACE["input_size"],
                 SYNTHETIC_MEAN, SYNTHETIC_STD, name="fresh")


def more_images(a, variant: str, seed: int, steps: int, archs: list, total: int) -> dict:
    """Every subnet scored on a trained supernet as the search scores it, once on its
    ``--val-images`` search_val images and once per further block of as many fresh images, up
    to ``total``: top-1 and loss per block, so the ranking is read at any number of images."""
    from elastic_nas.data import build_dataset

    cfg = supernet_cfg(a, variant, seed)
    space, model = trained_supernet(a, variant, seed, steps)
    data = eval_data(build_dataset(cfg.data, cfg.space.input_size), a.calib_images, a.val_images, 0,
                     channels_last=a.channels_last)
    fresh_x, fresh_y, _ = fresh_images(a, total - a.val_images).get_batch(np.arange(total - a.val_images))
    blocks = [data] + [dataclasses.replace(data, val_x=fresh_x[i:i + a.val_images].numpy(),
                                           val_y=fresh_y[i:i + a.val_images].numpy())
                       for i in range(0, total - a.val_images, a.val_images)]
    evals = [[evaluate_arch(model, space.validate(arch), b) for b in blocks] for arch in archs]
    return {"block_images": [len(b.val_y) for b in blocks],
            "top1": [[e["accuracy"] for e in row] for row in evals],
            "loss": [[round(e["loss"], 5) for e in row] for row in evals]}


def images_figures(a, variants, target, subsets, results, steps) -> dict:
    """Kendall tau per subset of each supernet's score on the first k blocks of images (block 0:
    search_val, as the search scores), top-1 and loss, and on each block alone: how much of a
    supernet's ranking is its scoring images' noise."""
    out = {"images": a.score_images, "block": a.val_images}
    for v in variants:
        runs = [results[score_images_key(a, v, s, steps[v])] for s in range(a.supernet_seeds)]
        sizes = np.array(runs[0]["block_images"])

        def taus(score: np.ndarray) -> dict:  # [subnet] -> tau per subset
            return {name: round(kendall_tau(score[idx], target[idx]), 4) for name, idx in subsets.items()}

        seeds = []
        for r in runs:
            row = {}
            for kind, sign in (("top1", 1), ("loss", -1)):  # lower loss ranks higher
                per_block = sign * np.array(r[kind])
                pooled = [per_block[:, :k] @ sizes[:k] / sizes[:k].sum() for k in range(1, len(sizes) + 1)]
                row[kind] = {"by_images": {int(sizes[:k].sum()): taus(p) for k, p in enumerate(pooled, 1)},
                             "each_block": [taus(per_block[:, b]) for b in range(len(sizes))],
                             "pooled": pooled[-1]}
            seeds.append(row)
        figures = {}
        for kind, sign in (("top1", 1), ("loss", -1)):
            figures[kind] = {
                "by_images": {n: {name: round(float(np.mean([s[kind]["by_images"][n][name] for s in seeds])), 4)
                                  for name in subsets} for n in seeds[0][kind]["by_images"]},
                "each_block_median": {name: round(float(np.median([b[name] for s in seeds for b in s[kind]["each_block"]])), 4)
                                      for name in subsets},
                "each_block_range": {name: [round(f(b[name] for s in seeds for b in s[kind]["each_block"]), 4)
                                            for f in (min, max)] for name in subsets},
                "seeds_mean_score": taus(np.mean([s[kind]["pooled"] for s in seeds], 0))}
            for s in seeds:  # each subnet's score over all the images (the mean loss, not negated)
                s[kind]["pooled"] = [round(float(sign * x), 4) for x in s[kind]["pooled"]]
        # the loss against top-1 on the same images: per supernet seed and block, tau(loss) - tau(top-1)
        # (the blocks of one seed share its supernet: the seeds' means are the independent figures)
        diffs = {name: np.array([[lo[name] - t1[name] for lo, t1 in zip(s["loss"]["each_block"], s["top1"]["each_block"])]
                                 for s in seeds]) for name in subsets}
        figures["loss_minus_top1_each_block"] = {
            name: {"mean": round(float(d.mean()), 4), "per_seed_mean": [round(float(x), 4) for x in d.mean(1)],
                   "loss_ahead": int((d > 0).sum()), "of": d.size} for name, d in diffs.items()}
        out[v] = {"seeds": seeds, **figures}
    return out


def score_images_key(a, variant: str, seed: int, steps: int) -> str:
    return f"images{a.score_images}_{variant}_s{seed}_{steps}"


def images_rescores(a, work: Path, variants, archs, target, subsets, results, steps) -> tuple[dict, list[str]]:
    """Every trained supernet's subnets scored on ``--score-images`` images; and the jobs not done."""
    jobs = [(work, score_images_key(a, v, s, steps[v]), more_images, a, v, s, steps[v], archs, a.score_images)
            for v in variants for s in range(a.supernet_seeds)]
    results.update({j[1]: r for j, r in zip(jobs, finished(a, work, jobs)) if r is not None})
    scored = [v for v in variants if all(score_images_key(a, v, s, steps[v]) in results
                                         for s in range(a.supernet_seeds))]
    return images_figures(a, scored, target, subsets, results, steps), [j[1] for j in jobs if j[1] not in results]


def picks_order(a, work: Path, variants, results, steps) -> tuple[dict, list[str]]:
    """Near the top of the band, where a search's picks lie: every trained supernet scores the
    archs that ``--score-picks``'s searches picked and retrained (the picks of every search seed and
    the largest arch under the budget), as the search scores them; Kendall tau of the loss against
    their retrained top-1 (3-seed means), and held out (each retrain seed against the others'
    mean) beside one retrain's own held-out tau and the MACs proxy's. The supernet that chose the
    picks (the JSON's variant, seed 0) is marked: its scores picked them."""
    source = json.loads(Path(a.score_picks).read_text())
    q = source["search_quality"]
    archs = retrained_picks(source)
    runs = [p["retrained_top1_seeds"] for p in archs]
    found = np.mean(runs, 1)
    picked = [p["arch"] for p in archs]
    key = hashlib.sha1(json.dumps(picked).encode()).hexdigest()[:10]
    jobs = [(work, f"picks_{key}_{v}_s{s}_{steps[v]}", rescored, a, v, s, steps[v], picked, a.calib_images, False)
            for v in variants for s in range(a.supernet_seeds)]
    n, init, ft_jobs = a.finetune_steps, "inherited", []
    if n:
        ft_jobs = [(work, f"picksft{n}_lr{a.finetune_lr:g}_{key}_{v}_s{s}_{steps[v]}", finetuned, a, v, s, steps[v],
                    picked, n, a.finetune_lr, init) for s in range(a.supernet_seeds) for v in variants]
        # the baseline at equal compute, second (an early read of both): the same steps from scratch at
        # the truth's LR (the space is every variant's)
        ft_jobs[1:1] = [(work, f"picksft{n}_lr{a.truth_lr:g}_{key}_scratch_s{s}", finetuned, a, variants[0], s,
                         steps[variants[0]], picked, n, a.truth_lr, "scratch") for s in range(a.finetune_scratch_seeds)]
    jobs += ft_jobs
    results.update({j[1]: r for j, r in zip(jobs, finished(a, work, jobs)) if r is not None})

    def judged(score) -> dict:  # higher ranks higher
        return {k: round(v, 4) for k, v in order(score, runs).items()}

    out = {"source": Path(a.score_picks).name, "chosen_by": f"{q['variant']} seed 0", "archs": len(archs),
           "retrain_steps": source.get("truth_steps"), "retrained_top1": [round(float(f), 2) for f in found],
           "macs": judged([p["macs"] for p in archs]), "one_retrain_held_out": round(held_out_tau(runs), 4)}

    def seeds_judged(keys: list[str]) -> dict:  # each seed's loss order judged; their means
        seeds = [judged(-np.array(results[k]["val_losses"])) for k in keys]
        return {"seeds": seeds, "tau_mean": round(float(np.mean([r["tau"] for r in seeds])), 4),
                "held_out_mean": round(float(np.mean([r["held_out"] for r in seeds])), 4),
                "val_losses": [results[k]["val_losses"] for k in keys]}

    for v in variants:
        keys = [f"picks_{key}_{v}_s{s}_{steps[v]}" for s in range(a.supernet_seeds)]
        if all(k in results for k in keys):
            out[v] = seeds_judged(keys)
    if ft_jobs:  # each pick trained on from its inherited weights, and the same steps from scratch
        out[f"finetuned_{a.finetune_steps}"] = {"lr": a.finetune_lr, **{
            name: seeds_judged(keys) for name, keys in
            [(v, [j[1] for j in ft_jobs if j[4] == v and j[10] == init]) for v in variants]
            + [("scratch", [j[1] for j in ft_jobs if j[10] == "scratch"])]
            if keys and all(k in results for k in keys)}}
    if q["variant"] in out:  # the chooser rescored: the same losses its searches saw (as the search scores)
        searched_loss = [(p.get("supernet_score"), loss) for p, loss in zip(archs, out[q["variant"]]["val_losses"][0])]
        out["chooser_max_abs_diff_to_search"] = max(abs(s - loss) for s, loss in searched_loss if s is not None)
    return out, [j[1] for j in jobs if j[1] not in results]


def searched(a, variant: str, steps: int, method: str, budget: float, search_seed: int = 0) -> dict:
    """The pick of ``method`` (seeded ``search_seed``) on ``variant``'s seed-0 supernet (``steps``)
    under ``budget`` MACs."""
    from elastic_nas.data import build_dataset

    cfg = supernet_cfg(a, variant, 0)
    space, model = trained_supernet(a, variant, 0, steps)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    data = eval_data(splits, a.calib_images, a.val_images, 0, channels_last=a.channels_last)
    settings = EvolutionSettings(population=a.population, top_k=a.population // 4, mutation_children=a.population // 2,
                                 crossover_children=a.population // 2, generations=a.generations)
    return search(method, space, model, data, budget, settings, seed=search_seed, score=a.search_score)


# -- the run ---------------------------------------------------------------------------


def run(a) -> dict:
    work = Path(a.work)
    check_work_dir(a)
    archs, groups, budget = subnets(a)
    space = build_space(from_dict(SpaceConfig, SPACE))
    print(f"{len(archs)} subnets ({groups.count('stratified')} stratified, {groups.count('band')} in "
          f"{budget / 1e6:.2f}M +- 15% MACs); work dir {work}", flush=True)

    # Ground truth: 2 seeds at the chosen budget; 8 subnets of --check-group at twice it, every
    # len(pool)//8-th by MACs (so in a group of under 16, the 8 with the fewest MACs).
    pool = [i for i in range(len(archs)) if a.check_group in ("all", groups[i])]
    check = sorted(pool, key=lambda i: space.macs(archs[i]))[:: max(1, len(pool) // a.check)][:a.check]
    if a.check_subnets:  # a probe of a few named subnets (e.g. two that swap places between budgets)
        if not set(a.check_subnets) <= set(range(len(archs))):
            print(f"ranking: --check-subnets takes subnet numbers 0-{len(archs) - 1}", file=sys.stderr)
            raise SystemExit(2)
        check = a.check_subnets
    copied = {key for source in a.truth_from for key in seed_work_dir(a, work, archs, source)}
    # The subnets with the most other seeds cached (a budget check's run at these steps) first: an
    # interrupted run's interim report then covers the most subnets.
    seeds = range(a.truth_seeds)
    pairs = sorted(((i, s) for i in range(len(archs)) for s in seeds),
                   key=lambda p: -sum((work / f"sa_{p[0]}_s{t}_{a.truth_steps}.json").exists() for t in seeds))
    jobs = [(work, f"sa_{i}_s{s}_{a.truth_steps}", standalone, a, archs[i], s, a.truth_steps) for i, s in pairs]
    # the budget check: last (after the search) unless --check-first or --check-only
    checks = [(work, f"sa_{i}_s{s}_{2 * a.truth_steps}", standalone, a, archs[i], s, 2 * a.truth_steps)
              for i in check for s in range(a.check_seeds)]
    if a.check_first or a.check_only:  # whether a truth budget is stable, before the hours of truth at it
        at_budget = [j for j in jobs if j[1] in {f"sa_{i}_s{s}_{a.truth_steps}" for i in check
                                                 for s in range(a.check_seeds)}]
        mine = sorted(checks + at_budget, key=lambda j: -j[6] * space.macs(j[4]))  # the longest first: soonest end
        ran = finished(a, work, mine)
        if a.check_only:
            results = {j[1]: r for j, r in zip(mine, ran) if r is not None}
            return {"space": SPACE, "data": data_cfg(a), "truth_steps": a.truth_steps, "batch": BATCH,
                    "missing_jobs": [j[1] for j in mine if j[1] not in results],
                    "budget_check": budget_check(a, space, archs, check, results, [], {})}
    landmarks = None  # the landmark variants' archs: trained before any supernet that learns from them
    if any("landmarks.path={landmarks}" in VARIANTS[v] for v in a.variants):
        landmarks = make_landmarks(a, work, archs)
        if landmarks is None:
            print("ranking: the landmarks' stand-alone jobs are not all done: no figures", flush=True)
            return {"space": SPACE, "data": data_cfg(a), "missing_jobs": ["landmarks"]}
    # Supernets at equal time: each variant's step timed alone, one at a time.
    per_step = {v: cached(work, f"step_{v}", step_seconds, a, v) for v in a.variants}
    steps = {v: a.supernet_steps.get(v) or a.supernet_steps.get("*") or max(10, int(a.supernet_minutes * 60 / per_step[v]))
             for v in a.variants}
    print(f"supernet steps {'as given' if a.supernet_steps else 'at equal time'}: " + ", ".join(f"{v} {steps[v]} ({per_step[v]:.3f} s/step)"
                                                       for v in a.variants), flush=True)
    jobs += [(work, f"sn_{v}_s{s}_{steps[v]}", supernet, a, v, s, steps[v], archs)
             for v in a.variants for s in range(a.supernet_seeds)]
    scores_only(a, work, [j[1] for j in jobs if j[1].startswith("sn_")], copied)
    if a.supernets_first:  # a new supernet variant's figures before the last truth jobs (an interim report)
        jobs.sort(key=lambda j: not j[1].startswith("sn_"))
    results = {j[1]: r for j, r in zip(jobs, finished(a, work, jobs)) if r is not None}
    missing = [j[1] for j in jobs if j[1] not in results]
    done = [v for v in a.variants if all(f"sn_{v}_s{s}_{steps[v]}" in results for s in range(a.supernet_seeds))]

    def checked_budget() -> tuple[dict, list[str]]:  # the check's jobs run (or read), their figures, what is missing
        results.update({j[1]: r for j, r in zip(checks, finished(a, work, checks)) if r is not None})
        return budget_check(a, space, archs, check, results, done, steps), [j[1] for j in checks if j[1] not in results]

    partial = checked = None
    if any(key.startswith("sa_") and key.endswith(f"_{a.truth_steps}") for key in missing):
        # An interim report on the subnets whose truth seeds are all done: every figure of it
        # is over fewer subnets, and says so; the budget check needs seed 0 of its 8 only, so
        # it is taken before the subnets are cut.
        checked, unchecked = checked_budget()
        missing += unchecked
        keep = [i for i in range(len(archs))
                if all(f"sa_{i}_s{s}_{a.truth_steps}" in results for s in seeds)]
        partial = {"subnets_with_truth": len(keep), "of": len(archs)}
        if not keep:
            print(f"ranking: no subnet has all {a.truth_seeds} truth seeds yet: no figures", flush=True)
            return {"space": SPACE, "data": data_cfg(a), "missing_jobs": missing, "interim": partial}
        print(f"ranking: interim report on the {len(keep)} of {len(archs)} subnets with all {a.truth_seeds} truth seeds", flush=True)
        results = {(f"sa_{keep.index(int(k.split('_')[1]))}_{k.split('_', 2)[2]}" if k.startswith("sa_") else k):
                   ({**r, **{f: [r[f][i] for i in keep] for f in ("scores", "val_losses") if f in r}}
                    if k.startswith("sn_") else r)
                   for k, r in results.items() if not k.startswith("sa_") or int(k.split("_")[1]) in keep}
        archs, groups = [archs[i] for i in keep], [groups[i] for i in keep]
    truth = np.array([[results[f"sa_{i}_s{s}_{a.truth_steps}"]["test_top1"] for s in seeds]
                      for i in range(len(archs))])
    agree = seed_agreement(truth)
    out = {"space": SPACE, "data": data_cfg(a), "recipe": RECIPE, "budget_macs": budget, "truth_steps": a.truth_steps,
           "batch": BATCH,
           "subnets": [{"arch": arch, "group": g, "macs": space.macs(arch), "params": space.params(arch),
                        "test_top1_seeds": truth[i].tolist(),  # and the CPU each ran on (None: not recorded)
                        "cpu_model_seeds": [results[f"sa_{i}_s{s}_{a.truth_steps}"].get("cpu_model") for s in seeds],
                        "channels_last_seeds": [results[f"sa_{i}_s{s}_{a.truth_steps}"].get("channels_last", False)
                                                for s in seeds]}
                       for i, (arch, g) in enumerate(zip(archs, groups))],
           "noise_ceiling_tau_seed0_vs_seed1": round(kendall_tau(truth[:, 0], truth[:, 1]), 4),
           "seed_to_seed_abs_diff_median": round(float(np.median(np.abs(truth[:, 0] - truth[:, 1]))), 2),  # seeds 0, 1
           # every pair of seeds' tau, and one run's seed SD (what a difference must exceed)
           "truth_seeds": a.truth_seeds, "noise_ceiling_tau_pairs": agree["pairwise_kendall_tau"],
           "noise_ceiling_tau_mean": agree["pairwise_kendall_tau_mean"], "standalone_seed_sd": agree["seed_sd"],
           "missing_jobs": missing, "interim": partial, **({"landmarks": landmarks} if landmarks else {})}
    out.update(rank_figures(a, done, archs, groups, budget, truth, results, steps, per_step, space))
    if a.bf16 and partial is None:  # keyed by the calibration images of the rescoring
        out["bf16_channels_last"], not_scored = bf16_rescores(a, work, done, archs, truth.mean(1),
                                                              subsets_of(archs, groups, budget, space), results, steps)
        out["missing_jobs"] += not_scored
    if a.score_images and partial is None:
        subsets = dict(subsets_of(archs, groups, budget, space), all=list(range(len(archs))))
        out["score_images"], not_scored = images_rescores(a, work, done, archs, truth.mean(1), subsets, results, steps)
        out["missing_jobs"] += not_scored
    if a.score_picks and partial is None:
        out["picks_order"], not_scored = picks_order(a, work, done, results, steps)
        out["missing_jobs"] += not_scored
    if partial is None and done and not a.no_search:  # the search and its retrains (cached: a report-only run reads what is done)
        out["search_quality"] = search_quality(a, work, budget, out)
    if partial is None:  # last: after the search
        checked, unchecked = checked_budget()
        out["missing_jobs"] += unchecked
    out["budget_check"] = checked
    return out


def budget_check(a, space, archs, check, results, done, steps) -> dict:
    """Stand-alone top-1 of the check subnets (mean of ``--check-seeds`` seeds) at the budget
    and twice it, and how the rankers rank both."""
    def job(i: int, n: int, seed: int) -> dict:  # {}: not run yet
        return results.get(f"sa_{i}_s{seed}_{n}", {})

    def top1(i: int, n: int, seed: int):  # None: not run yet
        return job(i, n, seed).get("test_top1")

    def mean(i: int, n: int):
        runs = [top1(i, n, s) for s in range(a.check_seeds)]
        return None if None in runs else round(float(np.mean(runs)), 3)

    at, twice = ([mean(i, n) for i in check] for n in (a.truth_steps, 2 * a.truth_steps))
    out = {"subnets": check, "group": "given" if a.check_subnets else a.check_group, "steps": [a.truth_steps, 2 * a.truth_steps], "seeds": a.check_seeds,
           "top1_at_budget": at, "top1_at_twice": twice}
    if a.check_seeds > 1:  # each seed's runs, and how far two seeds of the same budget agree
        out["top1_seeds"] = {str(n): [[top1(i, n, s) for s in range(a.check_seeds)] for i in check]
                             for n in out["steps"]}
        complete = {n: runs for n, runs in out["top1_seeds"].items() if all(None not in r for r in runs)}
        out["seed_kendall_tau"] = {n: round(kendall_tau(*zip(*[r[:2] for r in runs])), 4) for n, runs in complete.items()}
        out["seed_agreement"] = {n: seed_agreement(np.array(runs)) for n, runs in complete.items()}  # every pair, seed SD
        out["channels_last_seeds"] = {str(n): [[job(i, n, s).get("channels_last", False) for s in range(a.check_seeds)]
                                               for i in check] for n in out["steps"]}
    both = [k for k, (x, y) in enumerate(zip(at, twice)) if x is not None and y is not None]
    if len(both) < len(check) or not check:
        if len(both) >= 3:  # an interim figure over the subnets with both runs so far; no verdict
            out["so_far"] = {"subnets": [check[k] for k in both],
                             "kendall_tau": round(kendall_tau([at[k] for k in both], [twice[k] for k in both]), 4)}
        return out
    out["kendall_tau"] = round(kendall_tau(at, twice), 4)
    out["stable"] = out["kendall_tau"] >= 0.8
    rankers = {"macs": [space.macs(archs[i]) for i in check]}  # the same rankers against the longer truth
    rankers.update({f"{v}_s{s}": [results[f"sn_{v}_s{s}_{steps[v]}"]["scores"][i] for i in check]
                    for v in done for s in range(a.supernet_seeds)})
    out["kendall_tau_vs_twice"] = {k: round(kendall_tau(p, twice), 4) for k, p in rankers.items()}
    out["kendall_tau_vs_budget"] = {k: round(kendall_tau(p, at), 4) for k, p in rankers.items()}
    return out


def subset_taus(pred, target: np.ndarray, subsets: dict[str, list[int]]) -> dict:
    """Kendall tau on each subset of the subnets (the stratified ones with a bootstrap CI)."""
    pred = np.asarray(pred, dtype=float)
    out = {f"{name}_kendall_tau": round(kendall_tau(pred[idx], target[idx]), 4) for name, idx in subsets.items()}
    idx = subsets["stratified"]
    out["stratified_kendall_tau_ci95"] = [round(v, 4) for v in bootstrap_ci(kendall_tau, pred[idx], target[idx])]
    return out


def seed_report(pred, target: np.ndarray, subsets: dict[str, list[int]]) -> dict:
    """One ranker's figures against the truth: tau, rho, their CIs, precision@5, tau per subset."""
    return dict(rank_report(pred, target), **subset_taus(pred, target, subsets))


def means(reports: list[dict], keys) -> dict:
    return {f"{k}_mean": round(float(np.mean([r[k] for r in reports])), 4) for k in keys}


def subsets_of(archs, groups, budget, space) -> dict[str, list[int]]:
    """The subnets inside the search's MACs band, and the stratified ones."""
    band = [i for i, arch in enumerate(archs) if 0.85 * budget <= space.macs(arch) <= 1.15 * budget]
    return {"band": band, "stratified": [i for i, g in enumerate(groups) if g == "stratified"]}


def rank_figures(a, variants, archs, groups, budget, truth, results, steps, per_step, space) -> dict:
    target, subsets = truth.mean(1), subsets_of(archs, groups, budget, space)
    with_all = dict(subsets, all=list(range(len(archs))))
    band = subsets["band"]
    macs = [space.macs(arch) for arch in archs]
    params = [space.params(arch) for arch in archs]
    rng = np.random.default_rng(7)
    baselines = {"macs": macs, "params": params, "random_order": rng.permutation(len(archs)).tolist()}
    out = {"band_subnets": band, "baselines": {}, "variants": {}}
    for name, pred in baselines.items():
        out["baselines"][name] = seed_report(pred, target, subsets)
    for v in variants:
        runs = [results[f"sn_{v}_s{s}_{steps[v]}"] for s in range(a.supernet_seeds)]
        per_seed = [dict(seed_report(r["scores"], target, subsets), mean_score=round(float(np.mean(r["scores"])), 2),
                         train_seconds=r["train_seconds"]) for r in runs]
        losses = [r["val_losses"] for r in runs if "val_losses" in r]  # older jobs kept top-1 only
        for r, p in zip(runs, per_seed):  # the search_val loss as the score (what the laptop search orders by)
            if "val_losses" in r:
                neg = [-x for x in r["val_losses"]]  # lower is better
                p["loss_as_score_kendall_tau"] = round(kendall_tau(neg, target), 4)
                p.update({f"loss_as_score_{k}": t for k, t in subset_taus(neg, target, subsets).items()
                          if k.endswith("kendall_tau")})
        taus = [p["kendall_tau"] for p in per_seed]
        out["variants"][v] = {"steps": steps[v], "step_seconds": round(per_step[v], 4), "overrides": overrides(a, v),
                              **({"batch": supernet_batch(a, v)[0]} if v in SUPERNET_BATCH else {}),
                              "seeds": per_seed,
                              "scores": [r["scores"] for r in runs],
                              **({"val_losses": losses} if len(losses) == len(runs) else {}),
                              **means(per_seed, ("kendall_tau", "band_kendall_tau", "stratified_kendall_tau")),
                              "kendall_tau_sd": round(float(np.std(taus, ddof=1)) if len(taus) > 1 else 0.0, 4)}
        if len(losses) == len(runs):
            out["variants"][v].update(means(per_seed, [f"loss_as_score_{k}" for k in
                                                       ("kendall_tau", "band_kendall_tau", "stratified_kendall_tau")]))
        if len(runs) > 1:  # the supernet seeds' mean score as one ranker: what a second supernet would buy
            out["variants"][v]["seeds_mean_score"] = subset_taus(np.mean([r["scores"] for r in runs], 0), target,
                                                                 with_all)
            if len(losses) == len(runs):
                out["variants"][v]["seeds_mean_loss"] = subset_taus(-np.mean(losses, 0), target, with_all)
    if truth.shape[1] > 1:
        rankers = {"macs": [macs], "params": [params], **{v: out["variants"][v]["scores"] for v in variants}}
        out["held_out"] = held_out_figures(truth, with_all, rankers)
    return out


def held_out_figures(truth: np.ndarray, subsets: dict[str, list[int]], rankers: dict[str, list]) -> dict:
    """Kendall tau per subset against each truth seed's held-out target (the other seeds' mean),
    averaged over the seeds: for one stand-alone run (the held-out seed's own) and for each ranker
    (one figure per supernet seed). What a supernet must beat to be worth more than training
    every subnet once."""
    out = {}
    for name, idx in subsets.items():
        row = {"one_standalone_run": round(held_out_tau(truth[idx]), 4)}
        for ranker, preds in rankers.items():
            row[ranker] = [round(held_out_tau(truth[idx], np.asarray(p, dtype=float)[idx]), 4) for p in preds]
        out[name] = row
    return out


def search_quality(a, work: Path, budget: float, out: dict) -> dict:
    """Evolution's and random search's picks (one per search seed) and the largest-MACs arch,
    each retrained stand-alone with 3 seeds."""
    best = max(out["variants"], key=lambda v: out["variants"][v]["kendall_tau_mean"])
    space = build_space(from_dict(SpaceConfig, SPACE))
    steps = out["variants"][best]["steps"]
    methods = ("evolution", "random")
    seeds = range(a.search_seeds)  # seed 0's key is the one runs before --search-seeds wrote
    by = "" if a.search_score == "top1" else f"_{a.search_score}"  # top-1 keeps the keys of earlier runs
    # _c: searches since the generator names each network canonically (and keeps its runners-up)
    searches = [(work, f"search_{best}_{steps}_{m}_{a.population}_{a.generations}{by}_c" + (f"_seed{s}" if s else ""),
                 searched, a, best, steps, m, budget, s) for s in seeds for m in methods]
    found = finished(a, work, searches)
    if None in found:
        return {"variant": best, "missing": [j[1] for j, r in zip(searches, found) if r is None]}
    picks = [dict(zip(methods, found[i:i + 2])) for i in range(0, len(found), 2)]
    kind = "best_accuracy" if a.search_score == "top1" else "best_loss"
    scores = [{m: p[m][kind] for m in methods} for p in picks]
    shortlists = {}
    if a.finalists:
        chosen = finalists(a, work, picks)
        if "missing" in chosen:
            return {"variant": best, **chosen}
        shortlists = chosen.pop("shortlists")
        for p, s, c in zip(picks, scores, chosen["picks"]):
            p.update(c)
            s.update({m: c[m]["supernet_score"] for m in c})
    largest = space.to_json(space.extreme_arch(True, 0, budget))
    names = {json.dumps(largest): "largest_macs"}  # one set of retrain jobs per arch, named by its first picker
    for p in picks:
        for m in p:
            names.setdefault(json.dumps(p[m]["arch"]), m)
    jobs = [(work, f"pick_{name}_{hashlib.sha1(key.encode()).hexdigest()[:10]}_s{s}_{a.truth_steps}",
             standalone, a, json.loads(key), s, a.truth_steps) for key, name in names.items() for s in range(3)]
    results = finished(a, work, jobs)
    if None in results:
        return {"variant": best, "missing": [j[1] for j, r in zip(jobs, results) if r is None]}
    top1 = {key: [r["test_top1"] for r in results[3 * i:3 * i + 3]] for i, key in enumerate(names)}

    def pick(arch, score) -> dict:
        seeds_top1 = top1[json.dumps(arch)]
        return {"arch": arch, "macs": space.macs(arch), "retrained_top1_seeds": seeds_top1,
                "retrained_top1_mean": round(float(np.mean(seeds_top1)), 2), "supernet_score": score}

    per_seed = [{m: pick(p[m]["arch"], s[m]) for m in p} for p, s in zip(picks, scores)]
    report = {"variant": best, "budget_macs": budget, "search_score": a.search_score, "evaluations": picks[0]["evolution"]["evaluated"],
              "picks": dict(per_seed[0], largest_macs=pick(largest, None)),  # search seed 0
              "standalone_seed_sd": round(out["standalone_seed_sd"], 2),  # the truth's, one run
              **({"finalists": shortlists} if shortlists else {})}
    if len(per_seed) > 1:  # each method's retrained mean over its picks, one per search seed
        report["search_seeds"] = per_seed
        report["mean_over_search_seeds"] = {m: round(float(np.mean([p[m]["retrained_top1_mean"] for p in per_seed])), 2)
                                            for m in per_seed[0]}
    extra = chance_archs(a, space, budget, [s["arch"] for s in out["subnets"]])
    n = a.chance_seeds or a.truth_seeds
    jobs = [(work, f"chance_{i}_s{s}_{a.truth_steps}", standalone, a, arch, s, a.truth_steps)
            for i, arch in enumerate(extra) for s in range(n)]
    results = finished(a, work, jobs)
    if None in results:
        return dict(report, missing=[j[1] for j, r in zip(jobs, results) if r is None])
    extra_top1 = [[r["test_top1"] for r in results[i * n:(i + 1) * n]]
                  for i in range(len(extra))]
    report["against_random_archs"] = against_random_archs(out["subnets"], budget, per_seed, methods,
                                                          extra, extra_top1)
    return report


def finalists(a, work: Path, picks: list[dict]) -> dict:
    """A second opinion among each search's ``--finalists`` best: each trained stand-alone for
    ``--finalist-steps`` (seed ``--finalist-seed``, none of the retrains'), read on search_val;
    the best of them is that search's ``<method>_finalists`` pick. {"picks": [{method: pick}] per
    search seed, "shortlists": each finalist's figures}, or {"missing": jobs not run}."""
    def key(arch) -> str:
        return hashlib.sha1(json.dumps(arch).encode()).hexdigest()[:10]

    lists = [{m: p[m]["top"][:a.finalists] for m in p} for p in picks]
    archs = {json.dumps(arch): arch for shortlist in lists for top in shortlist.values() for arch, _ in top}
    jobs = [(work, f"finalist_{key(arch)}_s{a.finalist_seed}_{a.finalist_steps}", standalone, a, arch,
             a.finalist_seed, a.finalist_steps, "search_val") for arch in archs.values()]
    results = finished(a, work, jobs)
    if None in results:
        return {"missing": [j[1] for j, r in zip(jobs, results) if r is None]}
    val = {k: r["search_val_top1"] for k, r in zip(archs, results)}
    chosen, shortlists = [], []
    for shortlist in lists:
        rows = {m: [{"arch": arch, "supernet_score": score, "search_val_top1": val[json.dumps(arch)]} for arch, score in top]
                for m, top in shortlist.items()}
        # ties go to the supernet's better score: the list is in its order
        chosen.append({f"{m}_finalists": max(r, key=lambda f: f["search_val_top1"]) for m, r in rows.items()})
        shortlists.append(rows)
    return {"picks": chosen, "shortlists": shortlists}


def chance_archs(a, space, budget: float, taken: list) -> list:
    """``--chance-archs`` random archs of 0.85-1.0x the budget's MACs besides the truth subnets
    in that range: more draws of chance for the search to be measured against."""
    taken, out = {json.dumps(arch) for arch in taken}, []
    for t in range(100 * a.chance_archs):  # distinct archs; a range holding fewer ends the list early
        if len(out) == a.chance_archs:
            break
        arch = space.to_json(space.sample_constrained(np.random.default_rng([777, t]), 0.85 * budget, budget, 1, 2000))
        if json.dumps(arch) not in taken:
            taken.add(json.dumps(arch))
            out.append(arch)
    return out


def against_random_archs(subnets: list[dict], budget: float, per_seed: list[dict], methods,
                         extra: list, extra_top1: list[list[float]]) -> dict:
    """Chance, the baseline a search must beat: random archs as large as the budget allows, the
    truth subnets of 0.85-1.0x its MACs and the ``extra`` ones (each the mean of its truth
    seeds), against each method's retrained picks (one per search seed), with a bootstrap 95 %
    CI of the difference."""
    chance = [i for i, s in enumerate(subnets) if 0.85 * budget <= s["macs"] <= budget]
    top1 = [float(np.mean(subnets[i]["test_top1_seeds"])) for i in chance] + [float(np.mean(t)) for t in extra_top1]
    out = {"subnets": chance, "extra_archs": extra, "extra_top1_seeds": extra_top1,
           "top1_means": [round(t, 2) for t in top1], "mean": round(float(np.mean(top1)), 2),
           "median": round(float(np.median(top1)), 2)}
    for m in methods:
        diff, lo, hi = mean_difference_ci([p[m]["retrained_top1_mean"] for p in per_seed], top1)
        out[f"{m}_minus_random_archs"] = {"mean": round(diff, 2), "ci95": [round(lo, 2), round(hi, 2)]}
    return out


def finished(a, work: Path, jobs: list[tuple]) -> list:
    """The jobs' results: run where missing, or (``--report-only``) None where not cached."""
    if not a.report_only:
        return run_jobs(claimed, jobs, a.procs)
    return [json.loads((work / f"{j[1]}.json").read_text()) if (work / f"{j[1]}.json").exists() else None
            for j in jobs]


def needs_weights(a) -> bool:
    """Whether this run uses its supernets' weights (the search, rescoring), not only their scores."""
    return not a.no_search or a.bf16 is not None or bool(a.score_images) or bool(a.score_picks)


def scores_only(a, work: Path, keys: list[str], copied: set[str]) -> None:
    """Supernet jobs copied from a JSON (scores, no weights kept here): dropped, so trained again, where
    this run needs the weights (the search, rescoring); named where no job of this run uses them
    (e.g. steps at equal time that round otherwise here: pass ``--supernet-steps VARIANT=N``)."""
    for key in keys:
        path = work / f"{key}.json"
        variant, seed, steps = key[3:].rsplit("_", 2)  # sn_<variant>_s<seed>_<steps>
        kept = weights_path(work, variant, int(seed[1:]), int(steps)).exists()  # trained here before
        if needs_weights(a) and not kept and path.exists() and "from" in json.loads(path.read_text()):
            path.unlink()
    unused = sorted(k for k in copied if k.startswith("sn_") and k not in keys)
    if unused:
        print(f"ranking: copied supernet scores no job of this run uses: {', '.join(unused)}", flush=True)


def seed_work_dir(a, work: Path, archs: list, source: str) -> list[str]:
    """Cache the stand-alone results (and step times) of an earlier run's JSON (``--truth-from``) for
    the jobs they are: a full run's truth and check, or a check's alone (``--check-only``, at its two
    budgets, whatever ``--truth-steps`` is now: a job's key carries its steps). The same space, data,
    truth LR and subnets (a full run's archs; a check's, drawn by the same settings), or exit 2."""
    old = json.loads(Path(source).read_text())
    theirs = old.get("settings", {})
    same = (old["space"] == SPACE and old["data"] == data_cfg(a) and theirs.get("truth_lr", 0.1) == a.truth_lr
            and all(theirs.get(k, getattr(a, k)) == getattr(a, k) for k in ("stratified", "band", "budget"))
            and ("subnets" not in old or [s["arch"] for s in old["subnets"]] == archs)
            and old.get("recipe", RECIPE) == RECIPE)
    if not same:
        print(f"ranking: {source} holds another space, data, truth LR, subnets or recipe", file=sys.stderr)
        raise SystemExit(2)

    def result(top1: float, cpu: str | None = None, channels_last: bool = False) -> dict:
        return {"test_top1": top1, "seconds": None, "from": source, "cpu_model": cpu, "channels_last": channels_last}

    seeded = {}
    for i, sub in enumerate(old.get("subnets", [])):  # each run with its CPU and layout, where recorded
        n = len(sub["test_top1_seeds"])
        for s, run in enumerate(zip(sub["test_top1_seeds"], sub.get("cpu_model_seeds") or [None] * n,
                                    sub.get("channels_last_seeds") or [False] * n)):
            seeded[f"sa_{i}_s{s}_{old['truth_steps']}"] = result(*run)
    check = old["budget_check"]  # per-seed runs, or seed 0's alone (a mean is no run)
    for n, means in zip(check["steps"], (check["top1_at_budget"], check["top1_at_twice"])):
        runs = check.get("top1_seeds", {}).get(str(n)) or [[t] for t in means]
        seeded.update({f"sa_{i}_s{s}_{n}": result(top1) for i, r in zip(check["subnets"], runs)
                       for s, top1 in enumerate(r) if top1 is not None})
    # the step times that set each variant's steps at equal time, so its supernets are the same jobs
    # (a sandwich step of another number of random archs costs another time: timed anew)
    if theirs.get("num_random", 2) == a.num_random and theirs.get("channels_last", False) == a.channels_last:
        seeded.update({f"step_{v}": r["step_seconds"] for v, r in old.get("variants", {}).items() if v in a.variants})
    seeded.update(supernet_scores(a, old, source))
    for key, value in seeded.items():
        if not (work / f"{key}.json").exists():
            atomic_write(work / f"{key}.json", json.dumps(value))
    print(f"ranking: {len(seeded)} results taken from {source}", flush=True)
    return list(seeded)


SUPERNET_SETTINGS = {"supernet_lr": 0.1, "supernet_wd": 0.0, "num_random": 2, "calib_images": 1000, "val_images": 2000,
                     "channels_last": False}


def supernet_scores(a, old: dict, source: str) -> dict:
    """An earlier run's supernet jobs (each seed's scores of the subnets), where the settings that
    decide a supernet and its scores are this run's: a new truth then ranks the same supernets
    without training them again (their search_val losses are not in the JSON)."""
    theirs = old.get("settings", {})
    if needs_weights(a):  # trained again
        return {}
    if any(theirs.get(k, default) != getattr(a, k) for k, default in SUPERNET_SETTINGS.items()):
        return {}
    return {f"sn_{v}_s{s}_{r['steps']}": {"steps": r["steps"], "scores": scores,
                                          "train_seconds": r["seeds"][s]["train_seconds"], "from": source}
            for v, r in old.get("variants", {}).items()
            if v in a.variants and r.get("overrides", VARIANTS[v]) == overrides(a, v)
            for s, scores in enumerate(r["scores"])}


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(out["variants"])
    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(4.2 * (len(variants) + 1), 4), squeeze=False)
    truth = np.array([s["test_top1_seeds"] for s in out["subnets"]])
    band = set(out["band_subnets"])
    colors = ["tab:orange" if i in band else "tab:blue" for i in range(len(truth))]
    noise = axes[0][0]  # the noise ceiling: how well one stand-alone seed ranks the other
    noise.scatter(truth[:, 0], truth[:, 1], color=colors, s=10)
    pairs = "" if len(truth[0]) < 3 else f"; every pair of {len(truth[0])} seeds: {out['noise_ceiling_tau_mean']:.2f}"
    noise.set_title(f"stand-alone seed 0 vs seed 1\ntau {out['noise_ceiling_tau_seed0_vs_seed1']:.2f}{pairs} "
                    "(the noise ceiling)", fontsize=9)
    noise.set_xlabel("seed 0 test top-1 (%)")
    noise.set_ylabel("seed 1 test top-1 (%)")
    noise.grid(alpha=0.3)
    for ax, v in zip(axes[0][1:], variants):
        score = np.mean(out["variants"][v]["scores"], axis=0)
        for i in range(len(truth)):
            ax.plot(truth[i], [score[i]] * len(truth[i]), color=colors[i], lw=0.8, alpha=0.6)
            ax.scatter(truth[i], [score[i]] * len(truth[i]), color=colors[i], s=10)
        ax.set_title(f"{v}\ntau {out['variants'][v]['kendall_tau_mean']:.2f} "
                     f"(MACs {out['baselines']['macs']['kendall_tau']:.2f})", fontsize=9)
        ax.set_xlabel("stand-alone test top-1 (%), every seed")
        ax.set_ylabel("supernet score (%), mean of seeds")
        ax.grid(alpha=0.3)
    fig.suptitle("Supernet score vs stand-alone accuracy (orange: inside the search band)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def supernet_steps(value: str) -> dict[str, int]:
    """``--supernet-steps``: ``N`` for every variant ("*") or ``variant=N,...``."""
    if value.isdigit():
        return {"*": int(value)}
    try:
        return {v: int(n) for v, n in (item.split("=") for item in value.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError("takes N or VARIANT=N[,VARIANT=N...]") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="", help="the jobs' cache (default: ~/.cache/elastic-nas/ranking-v"
                    f"{RECIPE}, with -cifar10 on --source cifar10)")
    ap.add_argument("--source", choices=("synthetic", "cifar10"), default="synthetic",
                    help="the data every job trains and scores on")
    ap.add_argument("--data", default="", help="synthetic cache dir or CIFAR-10 root (default: the shared one)")
    ap.add_argument("--num-train", type=int, default=DATA["num_train"],
                    help="synthetic train images generated (search_val's 2,000 carved from them)")
    ap.add_argument("--difficulty", choices=("standard", "hard"), default="standard",
                    help="the synthetic set's (hard: fine-grained outlines, more clutter)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--stratified", type=int, default=24)
    ap.add_argument("--band", type=int, default=12)
    ap.add_argument("--check", type=int, default=8, help="subnets of the budget check (trained at twice the steps)")
    ap.add_argument("--check-group", choices=("all", "stratified", "band"), default="all",
                    help="the subnets the budget check's 8 are spread over: all, or one group (band: where MACs "
                    "cannot order them and the search decides)")
    ap.add_argument("--check-subnets", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                    metavar="I[,I...]", help="the budget check on these subnets (numbers as in the results JSON), "
                    "not --check of --check-group: a probe, e.g. of another --truth-lr")
    ap.add_argument("--check-seeds", type=int, default=1,
                    help="seeds per check subnet and budget (the check compares seed means)")
    ap.add_argument("--budget", type=float, default=0.0, help="search budget, M MACs (0: median of random archs)")
    ap.add_argument("--truth-steps", type=int, default=1000)
    ap.add_argument("--truth-lr", type=float, default=0.1)
    ap.add_argument("--truth-seeds", type=int, default=2, help="stand-alone seeds per subnet (the truth is their mean)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--supernet-seeds", type=int, default=2)
    ap.add_argument("--supernet-minutes", type=float, default=20.0, help="of one core, per supernet")
    ap.add_argument("--supernet-steps", type=supernet_steps, default={}, metavar="N|VARIANT=N,...",
                    help="train every supernet (or each variant named) this many steps instead of --supernet-minutes "
                    "(an A/B at the steps an earlier run's minutes gave on its machine: step times differ between "
                    "machines)")
    ap.add_argument("--supernet-lr", type=float, default=0.1)
    ap.add_argument("--supernet-wd", type=float, default=0.0, help="weight decay 0: the simple supernet recipe")
    ap.add_argument("--num-random", type=int, default=2, help="sandwich: random archs per step")
    ap.add_argument("--channels-last", action="store_true",
                    help="train, score and search the supernets in fp32 channels_last, as the laptop configs do "
                    "(about 2x on CPUs: memory_format.py); the stand-alone truth and retrains: --truth-channels-last")
    ap.add_argument("--truth-channels-last", action="store_true",
                    help="stand-alone jobs not run yet train in fp32 channels_last (same math, about 2x on CPUs); "
                    "each job records its layout, as it does its CPU")
    ap.add_argument("--calib-images", type=int, default=1000)
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--chance-archs", type=int, default=0,
                    help="random archs of 0.85-1.0x the budget trained (--chance-seeds) besides the truth subnets there: "
                         "chance, against the search's picks")
    ap.add_argument("--chance-seeds", type=int, default=0,
                    help="stand-alone seeds of each --chance-archs arch (0: --truth-seeds)")
    ap.add_argument("--search-score", choices=("top1", "loss"), default="top1",
                    help="what the searches order by: search_val top-1, or its loss (the shipped jobs/search.yaml)")
    ap.add_argument("--search-seeds", type=int, default=1,
                    help="searches per method (evolution, random) on the seed-0 supernet, each pick retrained")
    ap.add_argument("--finalists", type=int, default=0, metavar="K",
                    help="each search's K best (by the supernet) also trained stand-alone --finalist-steps and read on "
                         "search_val; the best is one more pick (<method>_finalists), retrained like the others")
    ap.add_argument("--finalist-steps", type=int, default=0, help="--finalists' stand-alone steps (0: half --truth-steps)")
    ap.add_argument("--finalist-seed", type=int, default=100, help="--finalists' seed (none of the retrains' 0-2)")
    ap.add_argument("--bf16", nargs="?", const="", default=None, metavar="CALIB,...",
                    help="also score every subnet on each trained supernet in bf16 + channels_last, beside fp32, "
                         "with BN recalibrated on each of these image counts (default: --calib-images)")
    ap.add_argument("--score-images", type=int, default=0, metavar="N",
                    help="each supernet also scores the subnets on N images: search_val's, then blocks of as "
                         "many fresh synthetic ones (how much of its ranking is scoring noise)")
    ap.add_argument("--score-picks", default="", metavar="JSON",
                    help="a ranking JSON with --search-seeds: every supernet also scores the archs its searches picked "
                         "and retrained (the top of the band), judged against their retrains (picks_order)")
    ap.add_argument("--finetune-steps", type=int, default=0, metavar="N",
                    help="with --score-picks: also train each pick N steps on from the weights it inherits from each "
                         "supernet, then score it (and N steps from scratch, the baseline at equal compute)")
    ap.add_argument("--finetune-lr", type=float, default=0.02, help="--finetune-steps' LR at batch 64 (cosine to 0)")
    ap.add_argument("--finetune-scratch-seeds", type=int, default=1, help="seeds of --finetune-steps' scratch baseline")
    ap.add_argument("--name", default="ranking")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of every phase")
    ap.add_argument("--supernets-first", action="store_true",
                    help="train the supernets before the truth jobs not done yet (the report is interim until they are)")
    ap.add_argument("--check-first", action="store_true",
                    help="run the budget check (8 subnets at twice the truth steps) before the truth jobs")
    ap.add_argument("--check-only", action="store_true",
                    help="run and report the budget check alone: whether --truth-steps is stable on this data")
    ap.add_argument("--truth-from", action="append", default=[], metavar="JSON",
                    help="an earlier run's results JSON (a full run's or a check's; repeatable): its stand-alone "
                    "results and step times are cached, not rerun")
    ap.add_argument("--no-search", action="store_true",
                    help="leave out the search and its retrains: the ranking figures of a supernet setting alone")
    ap.add_argument("--report-only", action="store_true",
                    help="write the figures of the jobs finished so far (the rest listed in missing_jobs); train nothing")
    a = ap.parse_args()
    a.variants = a.variants.split(",")
    if set(FEW_SHOT) & set(a.variants) and not (a.no_search and a.bf16 is None and not a.score_images
                                                 and not a.score_picks):
        ap.error("few-shot variants score their subnets once, each on its part's copy: add --no-search, "
                 "without --bf16, --score-images or --score-picks")
    if a.truth_seeds < 2:
        ap.error("--truth-seeds takes 2 or more: the noise ceiling compares seeds")
    if a.supernet_steps.keys() - {"*", *a.variants}:
        ap.error(f"--supernet-steps names variants not in --variants: {sorted(a.supernet_steps.keys() - {'*', *a.variants})}")
    if a.source != "synthetic" and (a.num_train != DATA["num_train"] or a.difficulty != "standard"):
        ap.error("--num-train and --difficulty set the synthetic set; CIFAR-10 has its own")
    a.work = a.work or str(Path.home() / ".cache" / "elastic-nas" /
                           f"ranking-v{RECIPE}{'' if a.source == 'synthetic' else '-' + a.source}")
    if a.quick:
        a.stratified, a.band, a.check, a.truth_steps, a.supernet_minutes = 6, 3, 4, 30, 0.2
        a.population, a.generations, a.val_images, a.calib_images, a.name = 8, 1, 200, 200, a.name + "_quick"
    if a.score_images and (a.source != "synthetic" or a.score_images <= a.val_images):
        ap.error("--score-images takes more than --val-images images, on the synthetic set (fresh images are generated)")
    if a.bf16 is not None:
        a.bf16 = [int(n) for n in a.bf16.split(",") if n] or [a.calib_images]
    if a.score_picks:  # before any job: a JSON whose searches retrained their picks
        try:
            json.loads(Path(a.score_picks).read_text())["search_quality"]["search_seeds"][0]["evolution"]["arch"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            ap.error(f"--score-picks {a.score_picks}: not a ranking JSON with retrained search picks (--search-seeds)")
    if a.finalists < 0 or a.finalist_steps < 0 or (a.finalists and (a.no_search or a.finalists > TOP_KEPT)):
        ap.error(f"--finalists takes 1-{TOP_KEPT} (the runners-up a search keeps) and --finalist-steps >= 0, "
                 "with the search")
    if a.finalists and a.finalist_seed in range(3):
        ap.error("--finalist-seed takes a seed the retrains do not (0-2): else choice and figure share a run's noise")
    a.finalist_steps = a.finalist_steps or a.truth_steps // 2
    if a.finetune_steps < 0 or (a.finetune_steps and not a.score_picks):
        ap.error("--finetune-steps takes a step count >= 0, with --score-picks")
    if a.source != "synthetic" and not a.report_only:
        ensure_data(a)
    t0 = time.time()
    out = run(a)
    out["wall_seconds"] = round(time.time() - t0, 1)
    out["settings"] = {k: v for k, v in vars(a).items() if k not in ("work", "data")}
    if "variants" in out:
        plot(out, RESULTS / f"{a.name}.png")
    write_result(a.name, out)


if __name__ == "__main__":
    main()
