"""Small layers shared by the spaces, and the sliced (leading-channel) ops.

Sliced ops are what Once-for-All calls elastic width (in this project "elastic" means world
size): a layer allocates its maximum width (``max_*``) and an arch runs the leading
``active_*`` channels. The layers themselves are plain
``nn.Conv2d`` / ``nn.BatchNorm2d`` (a depthwise conv: ``depthwise.DepthwiseConv2d``, the same
parameters), so a standalone subnet is built from the very same block classes at the active
width, and inherits weights by leading slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elastic_nas.spaces import depthwise


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never below 90% of ``v`` (timm/MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def used_kernel(kernel: int, h_in: int, kernels) -> int:
    """The smallest of ``kernels`` that has every tap of a ``kernel`` x ``kernel`` depthwise conv
    (padding ``kernel // 2``) that meets an ``h_in`` x ``h_in`` input: on such a map no tap farther
    than ``h_in - 1`` from the centre ever meets a pixel, only padding."""
    taps = depthwise.reach(kernel, h_in)
    return min(k for k in kernels if k // 2 >= taps)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) / 6.0


def channel_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPOS's shuffle: split the channels into the even and the odd ones."""
    b, c, h, w = x.shape
    x = x.reshape(b * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, c // 2, h, w)
    return x[0], x[1]


def conv_bn(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            affine: bool = True) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    cls = depthwise.DepthwiseConv2d if 1 < groups == in_chs == out_chs else nn.Conv2d
    conv = cls(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_chs, affine=affine)


def centre_kernel(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The centre ``kernel_size`` x ``kernel_size`` of a conv weight (what OFA calls an elastic kernel)."""
    start = (weight.shape[-1] - kernel_size) // 2
    return weight[..., start:start + kernel_size, start:start + kernel_size]


def sliced_conv(conv: nn.Conv2d, x: torch.Tensor, active_out_chs: int | None = None,
                kernel_size: int | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``conv`` on the leading ``x.shape[1]`` input and ``active_out_chs`` output channels,
    with the centre ``kernel_size`` of its kernel (or an explicit ``weight`` of that size).

    A depthwise conv (groups == in_channels) follows its input width.
    """
    active_in_chs = x.shape[1]
    is_depthwise = conv.groups > 1
    if is_depthwise:
        active_out_chs = active_in_chs
    active_out_chs = active_out_chs or conv.out_channels
    kernel_size = kernel_size or conv.kernel_size[0]
    if (active_in_chs == conv.in_channels and active_out_chs == conv.out_channels
            and kernel_size == conv.kernel_size[0] and weight is None):
        return conv(x)
    weight = centre_kernel(conv.weight, kernel_size) if weight is None else weight
    if is_depthwise:
        return depthwise.conv2d(x, weight[:active_in_chs], conv.stride[0])
    bias = conv.bias[:active_out_chs] if conv.bias is not None else None
    return F.conv2d(x, weight[:active_out_chs, :active_in_chs], bias, conv.stride, kernel_size // 2, conv.dilation)


def sliced_bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Batch norm over the leading ``x.shape[1]`` channels; updates those running stats in place."""
    c = x.shape[1]
    if c == bn.num_features:
        return bn(x)
    # Same momentum rule as nn.BatchNorm2d (momentum=None = cumulative average).
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean[:c] if bn.running_mean is not None else None,
        bn.running_var[:c] if bn.running_var is not None else None,
        bn.weight[:c] if bn.weight is not None else None,
        bn.bias[:c] if bn.bias is not None else None,
        use_batch_stats,
        factor,
        bn.eps,
    )


class SqueezeExcite(nn.Module):
    """SE with a hard-sigmoid gate (MobileNetV3/Cream): pool -> 1x1 reduce -> ReLU -> 1x1 expand."""

    def __init__(self, chs: int, se_ratio: float = 0.25, divisor: int = 8):
        super().__init__()
        self.se_ratio, self.divisor = se_ratio, divisor
        self.reduced_chs = make_divisible(chs * se_ratio, divisor)
        self.conv_reduce = nn.Conv2d(chs, self.reduced_chs, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(self.reduced_chs, chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """On the leading ``x.shape[1]`` channels, squeezed as a block of that width would be."""
        chs = x.shape[1]
        squeeze = x.mean((2, 3), keepdim=True)
        squeeze = sliced_conv(self.conv_reduce, squeeze, make_divisible(chs * self.se_ratio, self.divisor))
        return x * hard_sigmoid(sliced_conv(self.conv_expand, self.act(squeeze), chs))
