"""Accuracy under elasticity: does a supernet trained through resizes match a static one?

Three supernets per seed on the synthetic set, same data and sample budget:

* ``elastic``: a 2 -> 1 -> 2 worker schedule (a third of the samples each) under the
  ``scale`` policy (Dynamic mini-batch SGD: global batch and LR follow the world size,
  LR ramped over T*r steps, momentum kept);
* ``static``: 2 workers throughout;
* ``naive``: the same schedule, LR not rescaled (``naive`` policy), for contrast.

The figure is the mean, over a fixed set of 10 subnets, of the inherited top-1 on a
class-balanced ``search_val`` subset after exact BN recalibration; then the mean over
seeds. The schedule is replayed in one process: each step runs k per-worker shards
(BN sees per-worker batches, as on k workers) through the project's own sampler, LR
policy and optimizer, and sums their gradients as the all-reduce would. That isolates
the optimisation effect from Ray's timing; the Ray path itself runs the same sampler and
policy code and is covered by tests/test_elastic_ray.py.

    python benchmarks/elastic_accuracy.py [--seeds 3 --epochs 2]
    # the Cream space (SPOS arch sampling), whose random-arch supernet leaves chance within
    # a CPU budget (see supernet_learning.py); RESULTS.md says why it has no figure yet
    python benchmarks/elastic_accuracy.py --space cream --num-train 6000 --epochs 19 --procs 2

Each (seed, schedule) supernet is a job; ``--procs`` jobs run at once, one thread each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import run_jobs, write_result
from elastic_nas.config import DataConfig, ElasticConfig, OptimConfig, RunConfig, SpaceConfig, SupernetConfig
from elastic_nas.train.state import TrainState
from elastic_nas.train.step import Batch, TrainStep
from elastic_nas.train.strategies import SposStrategy
from elastic_nas.train.task import TrainTask

WORKER_BATCH, REF_BATCH = 32, 64


def train_supernet(space, train, seed: int, epochs: float, policy_kind: str, schedule: list[tuple[float, int]],
                   base_lr: float):
    """The loop's own state (sampler, LR policy, optimizer) and step on a world-size schedule."""
    torch.manual_seed(seed)
    model = space.build_supernet()
    cfg = SupernetConfig(
        run=RunConfig(seed=seed),
        optim=OptimConfig(lr=base_lr, reference_batch=REF_BATCH, momentum=0.9, nesterov=False, weight_decay=4e-5,
                          label_smoothing=0.1, schedule="cosine", warmup_epochs=0.1, epochs=epochs),
        elastic=ElasticConfig(batch_policy=policy_kind, per_worker_batch=WORKER_BATCH, global_batch=2 * WORKER_BATCH,
                              max_per_worker_batch=256, lr_ramp_steps=8))
    task = TrainTask(model, SposStrategy(cfg, space, model, None), train, fingerprint={})
    state = TrainState(task, cfg.optim, cfg.elastic, seed)
    train_step = TrainStep(model, task.strategy)
    rng = np.random.default_rng([seed, 1])
    world = 0
    model.train()
    while not state.done:
        k = [w for frac, w in schedule if state.samples_seen >= frac * state.total_samples][-1]
        if k != world:
            plan = state.policy.on_world_size(state.step, k)
            world = k
        sp = state.sampler.plan(k, plan.global_batch)
        # One micro-batch per worker shard: per-worker BN statistics, gradients summed as the all-reduce would.
        shards = [train.get_batch(sp.indices(rank), augment=True, rng=rng)[:2] for rank in range(k)]
        batch = Batch(torch.cat([x for x, _ in shards]), torch.cat([y for _, y in shards]),
                      torch.as_tensor(np.concatenate([sp.valid(rank) for rank in range(k)]), dtype=torch.float32))
        train_step(state.step, state.optimizer, state.lr(), batch, sp.num_real, accum_steps=k,
                   samples_seen=state.samples_seen)
        state.advance(sp)
    return model


def inherited_accuracy(space, model, archs, calib, val) -> float:
    from elastic_nas.spaces.bn import recalibrate_bn

    accs = []
    calib_batches = [calib.get_batch(np.arange(i, min(i + 250, len(calib))))[0] for i in range(0, len(calib), 250)]
    xv, yv, _ = val.get_batch(np.arange(len(val)))
    for arch in archs:
        recalibrate_bn(model, lambda x, a=arch: model(x, a), calib_batches)
        model.eval()
        with torch.no_grad():
            accs.append(100.0 * float((model(xv, arch).argmax(1) == yv).float().mean()))
    return statistics.mean(accs)


SCHEDULES = {"elastic": ("scale", [(0.0, 2), (1 / 3, 1), (2 / 3, 2)]),
             "static": ("scale", [(0.0, 2)]),
             "naive": ("naive", [(0.0, 2), (1 / 3, 1), (2 / 3, 2)])}


def space_config(a) -> SpaceConfig:
    if a.space == "cream":  # the small Cream space of cream_vs_spos.py
        return SpaceConfig(name="cream", width_mult=a.width, max_depths=[2, 2, 3, 3, 2])
    return SpaceConfig(width_mult=a.width)


def fixed_subnets(space) -> list:
    return [space.sample(np.random.default_rng([1234, i])) for i in range(10)]


def run_job(name: str, seed: int, a, data_dir: str) -> float:
    """Train one supernet on its schedule; the mean inherited top-1 of the fixed subnets."""
    from elastic_nas.data import build_dataset
    from elastic_nas.data.base import class_balanced_subset
    from elastic_nas.spaces import build_space

    torch.set_num_threads(a.threads)
    data = build_dataset(DataConfig(path=data_dir, num_train=a.num_train, num_test=256, search_val_size=1000), 32)
    space = build_space(space_config(a))
    subnets = fixed_subnets(space)
    calib = class_balanced_subset(data.train, 1000, seed=0)
    kind, sched = SCHEDULES[name]
    model = train_supernet(space, data.train, seed, a.epochs, kind, sched, a.lr)
    acc = inherited_accuracy(space, model, subnets, calib, data.search_val)
    print(f"seed {seed} {name:8s} mean inherited top-1 of 10 subnets: {acc:.2f}%", flush=True)
    return round(acc, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--num-train", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=0.1, help="LR at the reference batch of 64 (2 workers)")
    ap.add_argument("--space", choices=("spos", "cream"), default="spos")
    ap.add_argument("--width", type=float, default=0.25, help="width_mult of the space")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument("--procs", type=int, default=1, help="jobs at once")
    ap.add_argument("--schedules", default=",".join(SCHEDULES), help="which of elastic,static,naive to train")
    ap.add_argument("--name", default="elastic_accuracy", help="results/<name>.json")
    a = ap.parse_args()
    names = a.schedules.split(",")
    if any(n not in SCHEDULES for n in names):
        ap.error(f"--schedules: choose from {','.join(SCHEDULES)}")
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    results: dict[str, list[float]] = {k: [] for k in names}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        data_dir = str(Path(d) / "data")
        build_dataset(DataConfig(path=data_dir, num_train=a.num_train, num_test=256, search_val_size=1000), 32)
        jobs = [(name, seed, a, data_dir) for seed in range(a.seeds) for name in names]
        accs = run_jobs(run_job, jobs, a.procs)
    for (name, *_), acc in zip(jobs, accs):
        results[name].append(acc)
    mean = {k: round(statistics.mean(v), 2) for k, v in results.items()}
    space = build_space(space_config(a))
    diffs = {f"{k}_minus_static_points": round(mean[k] - mean["static"], 2)
             for k in ("elastic", "naive") if k in mean and "static" in mean}
    write_result(a.name, {
        "seeds": a.seeds, "epochs": a.epochs, "num_train": a.num_train, "lr": a.lr,
        "space": vars(space_config(a)), "chance_top1": 10.0, "per_worker_batch": WORKER_BATCH,
        "subnets": [space.to_json(s) for s in fixed_subnets(space)],
        "per_seed_top1": results, "mean_top1": mean, **diffs,
        "target": "|elastic - static| <= 0.5 points", "wall_s": round(time.time() - t0, 1),
    })


if __name__ == "__main__":
    main()
