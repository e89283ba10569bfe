"""What the divergence guard costs a training step.

The project's step (``TrainStep``) on the laptop supernet (``jobs/supernet.yaml``: Cream,
entangled; one uniform arch per step, pinned: the rule RESULTS.md measured), batch 64, one
thread, with the guard (BN buffers kept before the forward, one norm over all gradients after
the sync) and without it, interleaved step by step on the same archs and batches. Reports the
median of each and the median of the per-pair ratios (robust to load changes).

    python benchmarks/step_guard.py [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from _common import write_result
from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.data import build_dataset
from elastic_nas.train.step import Batch, TrainStep, make_optimizer
from elastic_nas.train.supernet import build_supernet_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(SupernetConfig, "supernet", ["strategy=spos"])  # the rule RESULTS.md measured
    task = build_supernet_task(cfg)
    split = build_dataset(cfg.data, cfg.space.input_size).train
    optimizer = make_optimizer(task.model, cfg.optim)
    steps = {True: TrainStep(task.model, task.strategy, guard=True),
             False: TrainStep(task.model, task.strategy, guard=False)}
    rng = np.random.default_rng(0)
    times: dict[bool, list[float]] = {True: [], False: []}
    task.model.train()
    for i in range(a.steps + 10):
        x, y, _ = split.get_batch(rng.choice(len(split), a.batch, replace=False))
        batch = Batch(x, y, torch.ones(a.batch))
        order = (True, False) if i % 2 else (False, True)
        for guard in order:  # the same arch (step i) and batch for both
            t0 = time.perf_counter()
            steps[guard](i, optimizer, 0.01, batch, a.batch)
            if i >= 10:  # warm-up: allocations, first-call costs
                times[guard].append(time.perf_counter() - t0)
    ratios = [g / n for g, n in zip(times[True], times[False])]
    figures = {"steps": a.steps, "batch": a.batch, "threads": 1,
               "step_s_median_guard": round(statistics.median(times[True]), 5),
               "step_s_median_no_guard": round(statistics.median(times[False]), 5),
               "ratio_median": round(statistics.median(ratios), 4),
               "ratio_iqr": [round(float(q), 4) for q in np.percentile(ratios, [25, 75])]}
    write_result("step_guard", figures)


if __name__ == "__main__":
    main()
