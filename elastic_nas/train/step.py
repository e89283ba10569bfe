"""One optimizer step of synchronous data-parallel SGD, with no Ray in it.

A step on one rank: the strategy names the step's arch(s); for every micro-batch and
every arch, the strategy's per-sample loss (under the run's autocast), weighted (padding
weighs 0) and normalised for a SUM over ranks, is back-propagated, and then the strategy's
ranking term over several archs, where it has one this step; gradients are then
summed over the ranks (DDP, or flat buckets of the archs' parameters), unscaled (fp16),
clipped, and the optimizer steps once.
The strategy's ``after_step`` hook ends it. Used by Ray Train workers
(:mod:`~elastic_nas.train.loop`), by single-process benchmarks and by the tests, so
there is one step to read and to change.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from elastic_nas.spaces.precision import Precision
from elastic_nas.train import distributed

# BN running stats stay per rank while training (the search recalibrates them), so DDP must
# not broadcast buffers at each forward; newer torch renamed the flag and warns on the old one.
_NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


@dataclass
class Batch:
    """One rank's share of a step: normalised images, labels, weight 1 per real sample, 0 on padding."""

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor

    def split(self, parts: int) -> list[Batch]:
        """``parts`` micro-batches (gradient accumulation; BN sees each one alone)."""
        return [Batch(*t) for t in zip(*(t.chunk(parts) for t in (self.x, self.y, self.weight)))]


@dataclass
class StepStats:
    """This rank's figures for the step's first arch: loss and correct predictions, summed
    over its real samples (``count``)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    skipped: bool = False  # the gradients were not finite: nothing was updated
    global_count: int = 0  # real samples in the step's global batch (every rank's), known without a collective


def make_optimizer(model: nn.Module, optim) -> torch.optim.SGD:
    """SGD with weight decay on weights only, as SPOS: BN and biases (1-D) get none.

    ``optim`` is an ``OptimConfig``. Parameters without a gradient (choices no arch of the
    step used; grads are None, not zero) are skipped by SGD entirely, so they see no
    momentum and no weight decay.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum,
                           nesterov=optim.nesterov and optim.momentum > 0)


class TrainStep:
    """``step_fn(step, optimizer, lr, batch, num_real, accum_steps) -> StepStats``.

    ``grad_sync``: ``ddp`` overlaps the all-reduce with backward (find_unused_parameters
    only when the strategy's archs leave parameters unused); ``bucketed`` all-reduces the
    archs' parameters in flat buckets after backward. Both leave off-arch gradients None,
    so SGD gives unsampled choices no momentum or weight decay. In a world of one neither
    communicates. See ``benchmarks/allreduce_vs_ddp.py`` for the measured choice.
    """

    def __init__(self, model: nn.Module, strategy, grad_clip: float = 0.0, grad_sync: str = "ddp",
                 guard: bool = True, precision: Precision | None = None):
        """``guard``: skip a step whose gradients are not finite (see ``benchmarks/step_guard.py``);
        ``precision``: autocast, memory format and fp16's loss scaling (default: plain fp32)."""
        self.model, self.strategy, self.grad_clip, self.guard = model, strategy, grad_clip, guard
        self.precision = precision or Precision()
        self.ddp = None
        if grad_sync == "ddp" and distributed.is_distributed():
            self.ddp = nn.parallel.DistributedDataParallel(
                model, find_unused_parameters=strategy.leaves_parameters_unused, **_NO_FORWARD_BUFFER_SYNC)
            if self.precision.channels_last:
                # An entangled kernel's centre slice gets a [C, 1, k, k] gradient whose size-1 dim has
                # another stride than the channels_last bucket view: the same memory, which DDP copies
                # (a few KB); PyTorch's layout warning about it would be noise on every rank's console.
                warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        self.forward = self.ddp or model
        self.buffers = list(model.buffers())  # BN running stats: a skipped step puts them back
        # DDP averages gradients over ranks; the loss is normalised for a SUM.
        self.loss_scale = float(distributed.world_size()) if self.ddp is not None else 1.0

    def __call__(self, step: int, optimizer: torch.optim.Optimizer, lr: float, batch: Batch, num_real: int,
                 accum_steps: int = 1, samples_seen: int = 0) -> StepStats:
        """One optimizer step; ``samples_seen``: the run's samples before it (the strategy's schedules)."""
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.strategy.samples_seen = samples_seen
        optimizer.zero_grad(set_to_none=True)
        archs = self.strategy.archs(step)
        ranked = self.strategy.ranking_archs(step)  # a term over several archs at once (landmarks)
        # Two forwards feeding one backward are more than DDP's reducer takes: a step with a ranking
        # term accumulates without DDP's sync and sums its gradients in buckets after backward.
        buckets = self.ddp is None or bool(ranked)
        # Sum of per-sample losses / real samples in the global batch: with a SUM over ranks
        # this is the exact global mean, padding included at weight 0.
        denom = float(num_real) / (1.0 if buckets else self.loss_scale)
        micro = batch.split(accum_steps)
        stats = StepStats(global_count=int(num_real))
        saved = [b.clone() for b in self.buffers] if self.guard or self.precision.scaler is not None else []
        prec = self.precision
        for m, part in enumerate(micro):
            x = prec.input(part.x)
            for i, arch in enumerate(archs):
                last = m == len(micro) - 1 and i == len(archs) - 1 and not buckets
                with self._sync(last):  # with accumulation, DDP syncs on the last backward only
                    with prec.autocast():  # the forward only: backward runs in the forward's dtypes
                        per_sample, logits = self.strategy.loss(self.forward, x, part.y, arch, step, i)
                    prec.backward((per_sample.float() * part.weight).sum().div(denom))
                if i == 0:
                    _add_stats(stats, per_sample, logits, part)
            if ranked:
                with self._sync(False):
                    with prec.autocast():
                        per_sample = self.strategy.ranking_loss(self.forward, x, part.y, part.weight, ranked)
                    prec.backward((per_sample.float() * part.weight).sum().div(denom))
        if buckets:
            distributed.allreduce_grads(self.strategy.grad_params(archs + ranked))
        prec.unscale(optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        # One norm serves both: the clip's (taken before it clips) and the guard's.
        norm = nn.utils.clip_grad_norm_(params, self.grad_clip) if self.grad_clip > 0 else None
        # Gradients are summed over the ranks by now, so every rank takes the same decision.
        if (self.guard or prec.scaler is not None) and not _finite([p.grad for p in params], norm):
            optimizer.zero_grad(set_to_none=True)
            for buf, old in zip(self.buffers, saved):
                buf.copy_(old)
            stats.skipped = not prec.overflow()  # fp16 out of range: the scale halves, no divergence
            return stats
        prec.step(optimizer)
        self.strategy.after_step(step, archs, batch, stats)
        return stats

    def _sync(self, last: bool) -> Any:
        return self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()


@torch.no_grad()
def _finite(grads: list[torch.Tensor], norm: torch.Tensor | None = None) -> bool:
    """Whether every gradient is finite: one norm over all of them (NaN or inf propagate);
    ``norm``: that norm, when the clip has already taken it."""
    if not grads:
        return True
    if norm is None:
        total = getattr(nn.utils, "get_total_norm", None)  # torch >= 2.6
        norm = total(grads) if total else torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    return bool(torch.isfinite(norm))


@torch.no_grad()
def _add_stats(stats: StepStats, per_sample: torch.Tensor, logits: torch.Tensor, part: Batch) -> None:
    stats.loss_sum += float((per_sample * part.weight).sum())
    stats.correct += float(((logits.argmax(1) == part.y).float() * part.weight).sum())
    stats.count += float(part.weight.sum())


__all__ = ["Batch", "StepStats", "TrainStep", "make_optimizer"]
