"""Batch norm of a weight-sharing supernet: exact recalibration per arch, and frozen statistics.

Running statistics collected while training the supernet belong to a mix of archs;
before a candidate is scored they are recomputed for its arch alone (SPOS, OFA's
``set_running_statistics``) over a fixed set of training images. Forwards that only look
at the supernet while it trains (a teacher, a probe) leave the statistics alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

_UNTOUCHED = -1.0  # a variance is never negative: marks channels a batch did not reach


@torch.no_grad()
def recalibrate_bn(model: nn.Module, forward_fn: Callable[[Any], Any], batches: Iterable[torch.Tensor]) -> int:
    """Set every BN's running mean/var to the exact statistics over ``batches``.

    Each BN layer normalises with batch statistics (train mode; every other module,
    dropout included, in eval mode) while ``forward_fn(batch)`` runs. The per-batch mean
    and variance are read back by resetting the stats before every batch with
    ``momentum=1.0`` (the running statistics become that batch's: what a cumulative average,
    ``momentum=None``, gives after one batch, without reading the batch count back from the
    device in every BN layer), then combined by the law of total variance, weighted by batch size:
    mean = E[m_b], var = E[v_b] + Var[m_b]. That is the mean and variance over the whole
    calibration set (up to PyTorch's per-batch Bessel factor n/(n-1), n = pixels per
    channel in a batch), also for an uneven last batch; a plain cumulative average would
    drop the spread of the batch means. Channels no batch reached (sliced widths) get
    0 and 1. Returns the number of images seen; the model's train/eval flags and BN
    momenta are restored.
    """
    bns = tracked_bns(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    weight = [torch.zeros_like(bn.running_mean, dtype=torch.float64) for bn in bns]
    mean_sum = [torch.zeros_like(w) for w in weight]
    sq_sum = [torch.zeros_like(w) for w in weight]
    seen = 0
    try:
        model.eval()
        for bn in bns:
            bn.train()
            bn.momentum = 1.0
        for batch in batches:
            for bn in bns:
                bn.num_batches_tracked.zero_()
                bn.running_mean.zero_()
                bn.running_var.fill_(_UNTOUCHED)
            forward_fn(batch)
            n = len(batch)
            seen += n
            for bn, w, ms, ss in zip(bns, weight, mean_sum, sq_sum):
                m, v = bn.running_mean.double(), bn.running_var.double()
                # times 0/1, not masked indexing: a mask's nonzero() waits for the GPU, per BN and
                # batch (most of a GPU evaluator's time). Exact: x * 1.0 == x, and + 0.0 changes nothing.
                hit = (v >= 0).double()
                w += n * hit
                ms += n * m * hit
                ss += n * (v + m ** 2) * hit
        for bn, w, ms, ss in zip(bns, weight, mean_sum, sq_sum):
            hit, seen_w = w > 0, w.clamp_min(1.0)  # (no division by 0 where no batch reached)
            mean = torch.where(hit, ms / seen_w, 0.0)
            var = torch.where(hit, (ss / seen_w - mean ** 2).clamp_min(0.0), 1.0)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.fill_(1)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return seen


def tracked_bns(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Batch statistics as usual, but leave BN running statistics untouched (momentum 0)."""
    bns = tracked_bns(model)
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0
        yield
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum


__all__ = ["frozen_bn_stats", "recalibrate_bn", "tracked_bns"]
