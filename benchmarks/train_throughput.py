"""Steady-state samples/s: Ray Train with 1 worker vs a plain PyTorch loop, same run.

Same supernet, per-worker batch, data split, augmentation and 1 thread on both sides.
The plain loop is the bare minimum (sample a path, forward, loss, backward, SGD step);
the Ray side is the full ``elastic-nas supernet`` worker (sampler cursor, LR policy,
preemption polls, reports, TensorBoard). Plain runs before and after Ray; the baseline
is their mean, so drift on a noisy machine shows up as their spread.

    python benchmarks/train_throughput.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _common import SPOS_WORKLOAD, write_result
from elastic_nas.config import SupernetConfig, load_config


def make_cfg(tmp: Path, steps: int, batch: int) -> SupernetConfig:
    cfg = load_config(SupernetConfig, "jobs/supernet.yaml", [
        f"run.storage_path={tmp}/runs", "run.name=throughput", f"data.path={tmp}/data",
        "data.num_train=12000", "data.num_test=256", "data.search_val_size=256",
        "elastic.min_workers=1", "elastic.max_workers=1", f"elastic.per_worker_batch={batch}",
        "elastic.checkpoint_every_steps=100000", "elastic.checkpoint_every_s=3600",
        "elastic.report_every_steps=20",
        # the workload measured so far: SPOS space at width 0.5, one arch per step
        *[f"{k}={v}" for k, v in SPOS_WORKLOAD.items()], "space.width_mult=0.5",
    ])
    cfg.optim.epochs = steps * batch / (12000 - 256)
    return cfg


def plain_loop(cfg: SupernetConfig, steps: int, warmup: int) -> float:
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    torch.set_num_threads(1)
    train = build_dataset(cfg.data, cfg.space.input_size).train
    space = build_space(cfg.space)
    torch.manual_seed(0)
    model = space.build_supernet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    rng = np.random.default_rng(0)
    b = cfg.elastic.per_worker_batch
    perm = rng.permutation(len(train))
    t0 = 0.0
    for step in range(steps):
        if step == warmup:
            t0 = time.perf_counter()
        arch = space.sample(np.random.default_rng([0, step]))
        idx = perm[(step * b) % (len(train) - b):][:b]
        x, y, _ = train.get_batch(idx, augment=True, rng=rng)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, arch), y, label_smoothing=0.1).backward()
        opt.step()
    return (steps - warmup) * b / (time.perf_counter() - t0)


def ray_loop(cfg: SupernetConfig, warmup: int) -> float:
    from elastic_nas.train.supernet import train_supernet

    out = train_supernet(cfg)
    reports = [h for h in json.loads(Path(out["history"]).read_text()) if h["event"] == "report"]
    steady = [h for h in reports if h["step"] > warmup]
    (a, b) = steady[0], steady[-1]
    return (b["samples_seen"] - a["samples_seen"]) / (b["time"] - a["time"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    warmup = 20
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as d:
        cfg = make_cfg(Path(d), a.steps, a.batch)
        from elastic_nas.data import build_dataset

        build_dataset(cfg.data, cfg.space.input_size)  # generate the cache outside the timing
        before = plain_loop(cfg, a.steps, warmup)
        ray_rate = ray_loop(cfg, warmup)
        after = plain_loop(cfg, a.steps, warmup)
    ray.shutdown()
    baseline = statistics.mean([before, after])
    write_result("train_throughput", {
        "steps": a.steps, "per_worker_batch": a.batch, "threads": 1,
        "plain_samples_per_s": [round(before, 1), round(after, 1)],
        "ray_train_1_worker_samples_per_s": round(ray_rate, 1),
        "ratio_ray_over_plain": round(ray_rate / baseline, 3),
        "target": ">= 0.97",
    })


if __name__ == "__main__":
    main()
