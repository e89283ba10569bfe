"""What a training run shows: one progress line per report, TensorBoard scalars, the sample audit.

Per-step figures add up on each rank between reports; a report all-reduces them once
(a collective: every rank calls it), rank 0 prints one line and writes TensorBoard.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from elastic_nas.train import distributed
from elastic_nas.train.step import StepStats


class Progress:
    """Loss, top-1 and throughput between two reports; the printed line and TensorBoard."""

    def __init__(self, rank: int, tensorboard_dir: str, total_samples: float):
        self.rank = rank
        self.total_samples = total_samples
        self.stats = StepStats()
        self.samples = 0  # global samples since the last report
        self.t0 = time.perf_counter()
        self.writer = None
        if rank == 0 and tensorboard_dir:
            try:
                # tensorboardX comes with ray[train]; torch's own writer would need `tensorboard`.
                from tensorboardX import SummaryWriter

                self.writer = SummaryWriter(tensorboard_dir)
            except ImportError:  # keep training without TensorBoard logs
                print("elastic-nas: tensorboardX not installed; no TensorBoard logs", file=sys.stderr)

    def add(self, stats: StepStats, global_samples: int) -> None:
        self.stats.loss_sum += stats.loss_sum
        self.stats.correct += stats.correct
        self.stats.count += stats.count
        self.samples += global_samples

    def metrics(self, state, world_size: int, global_batch: int, lr: float, device) -> dict:
        """The figures since the last report, over all ranks (a collective), and reset."""
        loss_sum, correct, count = distributed.allreduce_sum(
            [self.stats.loss_sum, self.stats.correct, self.stats.count], device)
        rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
        self.stats, self.samples, self.t0 = StepStats(), 0, time.perf_counter()
        sampler = state.sampler
        return {"step": state.step, "loss": loss_sum / max(count, 1.0), "train_top1": 100.0 * correct / max(count, 1.0),
                "world_size": world_size, "global_batch": global_batch, "lr": lr, "samples_per_s": rate,
                "epoch": sampler.epoch + sampler.cursor / max(sampler.num_samples, 1),
                "samples_seen": state.samples_seen, "skipped_steps": state.skipped_steps, **state.task.strategy.report()}

    def log(self, m: dict) -> None:
        """Rank 0: the progress line and TensorBoard scalars of a report."""
        if self.rank != 0:
            return
        pct = 100.0 * m["samples_seen"] / max(self.total_samples, 1)
        print(f"[{pct:5.1f}%] step {m['step']:>6} epoch {m['epoch']:.2f} loss {m['loss']:.3f} "
              f"top1 {m['train_top1']:.1f} lr {m['lr']:.4g} world {m['world_size']} "
              f"batch {m['global_batch']} {m['samples_per_s']:.0f} samples/s"
              + (f" skipped {m['skipped_steps']}" if m.get("skipped_steps") else ""), flush=True)
        if self.writer is not None:
            for k, v in m.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"train/{k}", v, m["samples_seen"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class SampleLog:
    """Audit (``elastic.sample_log_dir``): every rank appends the sample ids of every step it
    trained, one file per rank and worker-group start, so tests can check exactly-once."""

    def __init__(self, log_dir: str, rank: int, attempt: int):
        self.file = None
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.file = open(Path(log_dir) / f"rank{rank}_{attempt}.jsonl", "a")  # noqa: SIM115 (closed in close)

    def write(self, epoch: int, step: int, world: int, ids: torch.Tensor, valid: np.ndarray) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"epoch": epoch, "step": step, "world": world, "t": time.time(),
                                    "ids": ids[torch.as_tensor(valid)].tolist()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


__all__ = ["Progress", "SampleLog"]
