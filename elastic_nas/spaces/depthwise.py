"""Depthwise convs on small feature maps.

The spaces at 32 px run most blocks on maps of 4 x 4 or smaller, often with a kernel wider than
the map. Two facts make that cheap to fix:

* a tap farther from the centre than the map is wide meets only padding, so the kernel cut to
  the taps that meet pixels gives the same output and the same gradients;
* on CPUs, oneDNN's weight gradient of a depthwise conv whose kernel (or stride) is wider than its
  map takes 30-270x the conv's forward (``benchmarks/depthwise.py``). There the weight gradient is
  taken tap by tap instead, each tap over only the outputs it reaches.

``conv2d`` is the one entry point: the sliced ops and :class:`DepthwiseConv2d` (what ``conv_bn``
builds for a depthwise conv, so standalone subnets get it too) both call it. It takes odd kernels
with padding ``kernel // 2`` (the spaces' only kind), and one backward (no double backward).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def reach(kernel: int, size: int) -> int:
    """How far from the centre a ``kernel``'s taps (padding ``kernel // 2``) meet pixels of a map
    ``size`` wide: no farther than ``size - 1``, whatever the stride."""
    return min(kernel // 2, size - 1)


def reach_kernel(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An odd ``weight``'s centre that holds every tap meeting a ``height`` x ``width`` map: the
    same conv, and the outer taps' gradient 0 as before."""
    kernel = weight.shape[-1]
    cut = kernel // 2 - reach(kernel, max(height, width))
    return weight[..., cut:kernel - cut, cut:kernel - cut] if cut else weight


def _overlap(offset: int, size: int, out: int, stride: int) -> tuple[slice, slice]:
    """The outputs whose tap at ``offset`` from the centre meets an input pixel, and those pixels."""
    lo = max(0, -(offset // stride))  # first o with stride * o + offset >= 0
    hi = min(out, (size - 1 - offset) // stride + 1)  # past the last o with stride * o + offset < size
    return slice(lo, hi), slice(stride * lo + offset, stride * (hi - 1) + offset + 1, stride)


def weight_grad_by_taps(x: torch.Tensor, grad_out: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """The depthwise weight gradient (fp32 at least), one tap at a time over the outputs it reaches."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # bf16/fp16 products summed in fp32, as oneDNN does
    x = x.to(dtype, memory_format=torch.channels_last)  # a reduction over N, H, W per channel
    grad_out = grad_out.to(dtype, memory_format=torch.channels_last)
    chs, pad = x.shape[1], kernel // 2
    grad = x.new_zeros(chs, kernel, kernel)
    for i in range(kernel):
        out_i, in_i = _overlap(i - pad, x.shape[2], grad_out.shape[2], stride)
        for j in range(kernel):
            out_j, in_j = _overlap(j - pad, x.shape[3], grad_out.shape[3], stride)
            if out_i.start < out_i.stop and out_j.start < out_j.stop:
                grad[:, i, j] = (x[:, :, in_i, in_j] * grad_out[:, :, out_i, out_j]).sum((0, 2, 3))
    return grad.view(chs, 1, kernel, kernel)


def _plain(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, x.shape[1])


class _TapsWeightGrad(torch.autograd.Function):
    """A depthwise conv whose weight gradient is :func:`weight_grad_by_taps`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        ctx.dtypes = x.dtype, weight.dtype
        if torch.is_autocast_enabled(x.device.type):  # the backward's ops do not autocast: save the cast inputs
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = (t.to(dtype) if t.dtype == torch.float32 else t for t in (x, weight))
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return _plain(x, weight, stride)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        kernel, stride = weight.shape[-1], ctx.stride
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_out.to(weight.dtype), stride, kernel // 2, 1,
                                                x.shape[1]).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad_by_taps(x, grad_out, kernel, stride).to(ctx.dtypes[1])
        return grad_x, grad_w, None


_whole = False


@contextlib.contextmanager
def whole_kernels():
    """Inside, every depthwise conv is the plain op on its whole kernel, as an export computes it
    (what the cost model counts; a benchmark's baseline)."""
    global _whole
    before, _whole = _whole, True
    try:
        yield
    finally:
        _whole = before


def conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """A depthwise conv (one filter a channel, padding ``kernel // 2``, no bias) of ``x``."""
    if _whole or torch.compiler.is_compiling() or torch.jit.is_tracing() or weight.shape[-1] % 2 == 0:
        return _plain(x, weight, stride)  # exports and compiles see the plain op
    weight = reach_kernel(weight, x.shape[2], x.shape[3])
    kernel = weight.shape[-1]
    if (x.device.type == "cpu" and max(kernel, stride) > max(x.shape[2], x.shape[3]) and torch.is_grad_enabled()
            and weight.requires_grad):
        return _TapsWeightGrad.apply(x, weight, stride)
    return _plain(x, weight, stride)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (the same parameters and state dict) that runs :func:`conv2d`."""

    def __init__(self, chs: int, out_chs: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = False):
        if not (chs == out_chs == groups and kernel_size % 2 and padding == kernel_size // 2 and not bias):
            raise ValueError("DepthwiseConv2d: one filter a channel, an odd kernel, padding kernel // 2, no bias")
        super().__init__(chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.stride[0])
