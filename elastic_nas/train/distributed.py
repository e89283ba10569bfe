"""Collectives of the training step and loop, written so that a world of one needs no process group."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 25 * 1024 * 1024  # DDP's default bucket size


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def allreduce_grads(params: list[torch.nn.Parameter], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum the gradients of ``params`` over all ranks, in flat buckets.

    Only the parameters of the step's archs take part: a supernet step touches a small
    part of the weights, and reducing the rest would move zeros. Every rank samples the
    same archs, so every rank builds the same buckets in the same order.
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        bucket.append(g)
        size += g.numel() * g.element_size()
        if size >= bucket_bytes:
            _reduce_bucket(bucket)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket)


def _reduce_bucket(bucket: list[torch.Tensor]) -> None:
    flat = _flatten_dense_tensors(bucket)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for g, reduced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
        g.copy_(reduced)


def allreduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few scalars over all ranks (one small collective)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def allreduce_min(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t.item())


def broadcast_int(value: int, device: torch.device, src: int = 0) -> int:
    t = torch.tensor([value], dtype=torch.int64, device=device)
    if is_distributed():
        dist.broadcast(t, src=src)
    return int(t.item())


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s values into ``t`` on every rank, in place; returns ``t``."""
    if is_distributed():
        dist.broadcast(t, src=src)
    return t


def broadcast_params(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank start from rank ``src``'s weights and buffers."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)
