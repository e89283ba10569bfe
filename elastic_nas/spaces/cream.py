"""Cream search space (Peng et al., NeurIPS 2020): MobileNet-like, Swish, SE, variable depth.

Layout (input 224, ``stem_stride=2``; widths before ``width_mult``)::

    stem      conv3x3 s2 3->16, BN, Swish                              # 224 -> 112
    stage 0   fixed dw-separable block: dw3x3, BN, Swish, SE, pw 16, BN (+ skip)
    stage 1   1..max_depths[0] choice blocks, 24 ch, first stride 2     # 112 -> 56
    stage 2   1..max_depths[1] choice blocks, 40 ch, first stride 2     # 56 -> 28
    stage 3   1..max_depths[2] choice blocks, 80 ch, first stride 2     # 28 -> 14
    stage 4   1..max_depths[3] choice blocks, 96 ch, stride 1           # 14
    stage 5   1..max_depths[4] choice blocks, 192 ch, first stride 2    # 14 -> 7
    conv1x1 192->320, BN, Swish
    head      global pool, conv1x1 320->1280 (bias), Swish, linear      # pool BEFORE conv_head

Choice block = inverted residual (pw expand, BN, Swish, dw kxk, BN, Swish, SE, pw-linear,
BN, skip when stride 1 and widths match); SE squeezes ``mid * 0.25`` rounded to a multiple
of 8 (ReLU inside, hard-sigmoid gate). Choices: 0=k3e4, 1=k3e6, 2=k5e4, 3=k5e6, 4=k7e4, 5=k7e6.

Architectures, two accepted formats:

* internal (normalised, what ``to_json`` writes): five lists, one op id per block, e.g.
  ``[[0], [3, 3], [1, 3, 1], [3, 3, 3, 3], [3, 3, 3]]``; every id is honoured;
* Cream's ``INPUT_ARCH``: seven lists ``[[0], s1, s2, s3, s4, s5, [0]]``. It is imported
  with the quirk of Cream's released builder: a stage holding exactly one block ignores its
  index and builds the stage default (s1 k3e4, s2 k5e4, s3 k3e6, s4 k3e6, s5 k5e6), so
  ``[[0],[3],[3,3],[3,1,3],[3,3,3,3],[3,3,3],[0]]`` (Cream-287) normalises to
  ``[[0],[3,3],[3,1,3],[3,3,3,3],[3,3,3]]`` -- exactly what Cream builds.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ArchError
from elastic_nas.spaces.base import Arch, SearchSpace, Supernet, as_int, as_list, inherit_weights
from elastic_nas.spaces.latency import LatencyParts, Part
from elastic_nas.spaces.layers import (
    SqueezeExcite,
    centre_kernel,
    conv_bn,
    make_divisible,
    sliced_bn,
    sliced_conv,
    used_kernel,
)

STEM_CHS = 16
STAGE_CHS = (24, 40, 80, 96, 192)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_DEFAULT_OPS = (0, 2, 1, 1, 3)  # Cream's one-block-stage quirk: k3e4, k5e4, k3e6, k3e6, k5e6
FINAL_CHS = 320
HEAD_CHS = 1280
SE_RATIO = 0.25
KERNELS = (3, 5, 7)
OPS = tuple((k, e) for k in KERNELS for e in (4, 6))  # op id -> (kernel, expansion)
NUM_OPS = len(OPS)
MAX_KERNEL = max(KERNELS)
PUBLISHED_MAX_DEPTHS = (5, 5, 5, 6, 6)  # deepest stages of the published models (Cream-604)


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


class ConvBnAct(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv, self.bn = conv_bn(in_chs, out_chs, kernel_size, stride)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """Stage 0: dw3x3, BN, Swish, SE, pw, BN, with a skip (in == out, stride 1)."""

    def __init__(self, chs: int):
        super().__init__()
        self.conv_dw, self.bn1 = conv_bn(chs, chs, 3, 1, chs)
        self.act = nn.SiLU(inplace=True)
        self.se = SqueezeExcite(chs, SE_RATIO)
        self.conv_pw, self.bn2 = conv_bn(chs, chs, 1)
        nn.init.zeros_(self.bn2.weight)  # the block starts as the identity (see InvertedResidual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act(self.bn1(self.conv_dw(x)))
        x = self.se(x)
        x = self.bn2(self.conv_pw(x))
        return x + shortcut


class InvertedResidual(nn.Module):
    """pw expand, BN, Swish, dw kxk, BN, Swish, SE, pw-linear, BN (+ skip)."""

    def __init__(self, in_chs: int, out_chs: int, dw_kernel_size: int, exp_ratio: int, stride: int):
        super().__init__()
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.has_residual = stride == 1 and in_chs == out_chs
        self.conv_pw, self.bn1 = conv_bn(in_chs, mid_chs, 1)
        self.conv_dw, self.bn2 = conv_bn(mid_chs, mid_chs, dw_kernel_size, stride, mid_chs)
        self.act = nn.SiLU(inplace=True)
        self.se = SqueezeExcite(mid_chs, SE_RATIO)
        self.conv_pwl, self.bn3 = conv_bn(mid_chs, out_chs, 1)
        if self.has_residual:
            # A residual block starts as the identity (timm's zero_init_last, Goyal et al.):
            # without it, deep subnets of this space sat at chance for hundreds of steps,
            # for how long depending on the seed (benchmarks/ranking.py's ground truth).
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act(self.bn1(self.conv_pw(x)))
        x = self.act(self.bn2(self.conv_dw(x)))
        x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.has_residual else x


class ChoiceBlock(nn.ModuleList):
    """Independent weights: one :class:`InvertedResidual` per op at a block position."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__(InvertedResidual(in_chs, out_chs, k, e, stride) for k, e in OPS)

    def forward(self, x: torch.Tensor, op: int) -> torch.Tensor:
        return self[op](x)

    def op_module(self, op: int) -> nn.Module:
        """The module whose parameters op ``op`` trains."""
        return self[op]

    def copy_weights_to(self, block: InvertedResidual, op: int) -> None:
        inherit_weights(block, self[op])


class EntangledInvertedResidual(nn.Module):
    """Entangled weights: every op of a block position in one set of weights (what
    Once-for-All calls elastic kernel and width).

    The depthwise kernel is allocated at 7x7 and k = 5 and 3 run its centre, either as is or
    through OFA's learned kernel-transform matrices (7->5 on the 5x5 centre, 5->3 on the
    3x3 centre of that; identity at start), and with ``kernel_offsets`` plus a per-channel
    offset of their own (zero at start). Expansion 4 runs the leading channels of
    expansion 6 in pw, BN, dw, SE and pw-linear alike. Every op thus trains the same tensors,
    except with ``own_kernels``: there k = 5 and 3 run depthwise kernels of their own.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, kernel_transform: bool = False,
                 kernel_offsets: bool = False, own_kernels: bool = False):
        super().__init__()
        self.in_chs = in_chs
        max_mid_chs = make_divisible(in_chs * max(e for _, e in OPS))
        self.has_residual = stride == 1 and in_chs == out_chs
        self.conv_pw, self.bn1 = conv_bn(in_chs, max_mid_chs, 1)
        self.conv_dw, self.bn2 = conv_bn(max_mid_chs, max_mid_chs, MAX_KERNEL, stride, max_mid_chs)
        self.act = nn.SiLU(inplace=True)
        self.se = SqueezeExcite(max_mid_chs, SE_RATIO)
        self.conv_pwl, self.bn3 = conv_bn(max_mid_chs, out_chs, 1)
        if self.has_residual:
            nn.init.zeros_(self.bn3.weight)  # starts as the identity, as InvertedResidual
        self.kernel_transforms = nn.ParameterDict(
            {f"{k}to{k - 2}": nn.Parameter(torch.eye((k - 2) ** 2)) for k in range(MAX_KERNEL, 3, -2)}
        ) if kernel_transform else None
        self.kernel_offsets = nn.ParameterDict(
            {f"k{k}": nn.Parameter(torch.zeros(max_mid_chs, 1, k, k)) for k in range(MAX_KERNEL - 2, 2, -2)}
        ) if kernel_offsets else None
        self.own_kernels = nn.ParameterDict(
            {f"k{k}": nn.Parameter(torch.empty(max_mid_chs, 1, k, k)) for k in range(MAX_KERNEL - 2, 2, -2)}
        ) if own_kernels else None
        self.start_own_kernels()

    @torch.no_grad()
    def start_own_kernels(self) -> None:
        """Own kernels start as the largest kernel's centre (Once-for-All's small kernels start from
        the trained large one), so at first the block computes what its entangled twin does."""
        for name, p in (self.own_kernels or {}).items():
            p.copy_(centre_kernel(self.conv_dw.weight, int(name[1:])))

    def kernel(self, kernel_size: int) -> torch.Tensor:
        """The depthwise kernel of op size ``kernel_size``, for every allocated channel."""
        weight = self.conv_dw.weight
        if self.own_kernels is not None and kernel_size < MAX_KERNEL:
            return self.own_kernels[f"k{kernel_size}"]
        if self.kernel_transforms is None:
            weight = centre_kernel(weight, kernel_size)
        else:
            for size in range(MAX_KERNEL, kernel_size, -2):
                weight = centre_kernel(weight, size - 2)
                shape = weight.shape
                weight = F.linear(weight.reshape(-1, (size - 2) ** 2), self.kernel_transforms[f"{size}to{size - 2}"])
                weight = weight.reshape(shape)
        if self.kernel_offsets is not None and kernel_size < MAX_KERNEL:
            weight = weight + self.kernel_offsets[f"k{kernel_size}"]
        return weight

    @property
    def _kernels_apart(self) -> bool:
        """Whether a smaller kernel is more than the largest one's centre."""
        return any(p is not None for p in (self.kernel_transforms, self.kernel_offsets, self.own_kernels))

    def forward(self, x: torch.Tensor, op: int) -> torch.Tensor:
        kernel_size, exp_ratio = OPS[op]
        shortcut = x
        x = self.act(sliced_bn(self.bn1, sliced_conv(self.conv_pw, x, make_divisible(self.in_chs * exp_ratio))))
        weight = self.kernel(kernel_size) if self._kernels_apart else None
        x = self.act(sliced_bn(self.bn2, sliced_conv(self.conv_dw, x, kernel_size=kernel_size, weight=weight)))
        x = self.se(x)
        x = self.bn3(sliced_conv(self.conv_pwl, x))
        return x + shortcut if self.has_residual else x

    def op_module(self, op: int) -> nn.Module:
        return self

    def copy_weights_to(self, block: InvertedResidual, op: int) -> None:
        """``block`` (op ``op``, standalone) takes exactly the weights the op runs here."""
        inherit_weights(block, self)
        if self._kernels_apart:
            with torch.no_grad():
                block.conv_dw.weight.copy_(self.kernel(OPS[op][0])[:block.conv_dw.out_channels])


class _Head(nn.Module):
    """Global pool, conv1x1 with bias, Swish, linear (the pool comes before conv_head)."""

    def __init__(self, in_chs: int, head_chs: int, num_classes: int):
        super().__init__()
        self.conv_head = nn.Conv2d(in_chs, head_chs, 1, bias=True)
        self.act = nn.SiLU(inplace=True)
        self.classifier = nn.Linear(head_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        x = self.act(self.conv_head(x))
        return self.classifier(x.flatten(1))


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


class CreamSupernet(Supernet):
    """stages[s][j]: every op at every block position up to ``max_depths``; affine BN.

    A position is a :class:`ChoiceBlock` (independent weights per op, ``stages[s][j][op]``)
    or an :class:`EntangledInvertedResidual` (``space.weight_sharing: entangled``).
    """

    def __init__(self, space: CreamSpace):
        super().__init__()
        self.space = space  # layout and arch validation only; no arch state
        lay, cfg = space.layout, space.cfg
        self.stem = ConvBnAct(3, lay.stem_chs, 3, cfg.stem_stride)
        self.block0 = DepthwiseSeparable(lay.stem_chs)

        def position(b: _BlockSpec, s: int) -> nn.Module:
            if cfg.weight_sharing == "entangled":
                return EntangledInvertedResidual(b.in_chs, b.out_chs, b.stride, cfg.kernel_transform,
                                                 cfg.kernel_offsets, s in cfg.own_kernel_stages)
            return ChoiceBlock(b.in_chs, b.out_chs, b.stride)

        self.stages = nn.ModuleList(nn.ModuleList(position(b, s) for b in stage) for s, stage in enumerate(lay.stages))
        self.conv_final = ConvBnAct(lay.stage_chs[-1], lay.final_chs, 1)
        self.head = _Head(lay.final_chs, lay.head_chs, space.cfg.num_classes)

    def open_dimension(self, dim: str) -> None:
        if dim == "kernel":  # the 7x7 kernel trained alone so far: the own smaller ones start from it
            for stage in self.stages:
                for position in stage:
                    if isinstance(position, EntangledInvertedResidual):
                        position.start_own_kernels()

    def forward(self, x: torch.Tensor, arch: Any) -> torch.Tensor:
        x = self.block0(self.stem(x))
        for stage, ops in zip(self.stages, self.space.validate(arch)):
            for position, op in zip(stage, ops):
                x = position(x, op)
        return self.head(self.conv_final(x))

    def arch_modules(self, arch: Any) -> list[nn.Module]:
        blocks = [
            position.op_module(op)
            for stage, ops in zip(self.stages, self.space.validate(arch))
            for position, op in zip(stage, ops)
        ]
        return [self.stem, self.block0, *blocks, self.conv_final, self.head]


class CreamNet(nn.Module):
    """A standalone Cream network of the chosen blocks."""

    def __init__(self, space: CreamSpace, arch: Arch):
        super().__init__()
        lay = space.layout
        self.arch = arch
        self.stem = ConvBnAct(3, lay.stem_chs, 3, space.cfg.stem_stride)
        self.block0 = DepthwiseSeparable(lay.stem_chs)
        self.blocks = nn.ModuleList(
            InvertedResidual(b.in_chs, b.out_chs, *OPS[op], b.stride)
            for stage, ops in zip(lay.stages, arch)
            for b, op in zip(stage, ops)
        )
        self.conv_final = ConvBnAct(lay.stage_chs[-1], lay.final_chs, 1)
        self.head = _Head(lay.final_chs, lay.head_chs, space.cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block0(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(self.conv_final(x))


# ---------------------------------------------------------------------------
# Space
# ---------------------------------------------------------------------------


class _BlockSpec:
    __slots__ = ("in_chs", "out_chs", "stride", "h_in", "h_out")

    def __init__(self, in_chs, out_chs, stride, h_in, h_out):
        self.in_chs, self.out_chs, self.stride, self.h_in, self.h_out = in_chs, out_chs, stride, h_in, h_out


class _Layout:
    def __init__(self, cfg: SpaceConfig):
        wm = cfg.width_mult
        self.stem_chs = make_divisible(STEM_CHS * wm)
        self.stage_chs = [make_divisible(c * wm) for c in STAGE_CHS]
        self.final_chs = make_divisible(FINAL_CHS * wm)
        self.head_chs = make_divisible(HEAD_CHS * wm)
        self.h_stem = (cfg.input_size - 1) // cfg.stem_stride + 1
        self.stages: list[list[_BlockSpec]] = []
        in_chs, h = self.stem_chs, self.h_stem
        for out_chs, stride, depth in zip(self.stage_chs, STAGE_STRIDES, cfg.max_depths):
            stage = []
            for j in range(depth):
                s = stride if j == 0 else 1
                h_out = (h - 1) // s + 1
                stage.append(_BlockSpec(in_chs, out_chs, s, h, h_out))
                in_chs, h = out_chs, h_out
            self.stages.append(stage)
        # Depth does not change the spatial size after a stage: only the first block strides.
        self.h_last = h


class CreamSpace(SearchSpace):
    name = "cream"

    def __init__(self, cfg: SpaceConfig):
        super().__init__(cfg)
        self.max_depths = tuple(cfg.max_depths)
        self.layout = _Layout(cfg)
        self._build_cost_tables()

    # -- architectures -------------------------------------------------------
    def validate(self, arch: Any) -> Arch:
        if type(arch) is tuple and len(arch) == 5 and all(
            type(ops) is tuple and 1 <= len(ops) <= d and all(type(v) is int and 0 <= v < NUM_OPS for v in ops)
            for ops, d in zip(arch, self.max_depths)
        ):
            return arch  # fast path: already normalised
        stages = as_list(arch, "cream arch")
        if len(stages) == 7:
            return self._from_cream(stages)
        if len(stages) != 5:
            raise ArchError(
                "cream arch: expected 5 stage lists (internal format) or Cream's 7-list "
                f"INPUT_ARCH [[0], s1..s5, [0]], got {len(stages)} items"
            )
        return tuple(self._stage(ops, i) for i, ops in enumerate(stages))

    def canonical(self, arch: Any) -> Arch:
        """Each depthwise kernel cut to what its feature map can use: on an h x h input no tap
        farther than h - 1 from the centre ever meets an image pixel (only padding), so there
        k = 5 and 7 compute what k = 3 does (h <= 2: the last stages at 32 x 32) at more MACs.
        Entangled weights (without kernel transforms, offsets or own kernels) give both the same kernel
        centre, so the supernet scores them alike too."""
        out = []
        for ops, stage in zip(self.validate(arch), self.layout.stages):
            out.append(tuple(OPS.index((used_kernel(OPS[op][0], b.h_in, KERNELS), OPS[op][1]))
                             for op, b in zip(ops, stage)))
        return tuple(out)

    def _from_cream(self, stages: list) -> Arch:
        for i in (0, 6):
            if as_list(stages[i], f"cream INPUT_ARCH item {i}") != [0]:
                raise ArchError(f"cream INPUT_ARCH item {i}: must be [0], got {stages[i]!r}")
        out = []
        for i, ops in enumerate(stages[1:6]):
            ops = self._stage(ops, i)
            if len(ops) == 1:  # Cream's builder ignores the index of a one-block stage
                ops = (STAGE_DEFAULT_OPS[i],)
            out.append(ops)
        return tuple(out)

    def _stage(self, ops: Any, i: int) -> tuple[int, ...]:
        where = f"cream stage {i + 1}"
        ops = as_list(ops, where)
        d = self.max_depths[i]
        if not 1 <= len(ops) <= d:
            hint = ""
            if len(ops) > d:
                hint = (
                    f" (space.max_depths = {list(self.max_depths)}; the published models need "
                    f"up to {list(PUBLISHED_MAX_DEPTHS)})"
                )
            raise ArchError(f"{where}: depth must be 1..{d}, got {len(ops)} blocks{hint}")
        out = []
        for j, v in enumerate(ops):
            v = as_int(v, f"{where} block {j}")
            if not 0 <= v < NUM_OPS:
                raise ArchError(f"{where} block {j}: op id must be in 0..{NUM_OPS - 1}, got {v}")
            out.append(v)
        return tuple(out)

    def to_cream(self, arch: Any) -> list:
        """Cream's 7-list INPUT_ARCH; refuses one-block stages that Cream would not build as given."""
        arch = self.validate(arch)
        for i, ops in enumerate(arch):
            if len(ops) == 1 and ops[0] != STAGE_DEFAULT_OPS[i]:
                raise ArchError(
                    f"cream stage {i + 1}: Cream's builder ignores the op of a one-block stage "
                    f"(always {STAGE_DEFAULT_OPS[i]}), so op {ops[0]} cannot be written as INPUT_ARCH"
                )
        return [[0], *([*ops] for ops in arch), [0]]

    def deepen(self, arch: Any, factor: float) -> tuple[dict, Arch]:
        """Each stage ``ceil(factor x)`` blocks deep, the new blocks repeating the stage's ops in
        order (its mix of ops stays); EfficientNet's depth scaling. Returns the space-config
        changes and the arch."""
        stages = tuple(tuple(ops[j % len(ops)] for j in range(math.ceil(len(ops) * factor - 1e-9)))
                       for ops in self.validate(arch))
        return {"max_depths": [max(d, len(s)) for d, s in zip(self.max_depths, stages)]}, stages

    def sample(self, rng: np.random.Generator) -> Arch:
        """Depth uniform in 1..max_depth per stage, then each op uniform (per-gene uniform)."""
        out = []
        for d in self.max_depths:
            depth = int(rng.integers(1, d + 1))
            out.append(tuple(int(v) for v in rng.integers(NUM_OPS, size=depth)))
        return tuple(out)

    fair_window = NUM_OPS

    def sample_fair(self, rng: np.random.Generator, order: np.random.Generator, position: int) -> Arch:
        """Depth uniform per stage from ``rng``; each block's op from its window's permutation, drawn
        for every block a stage could have, so that a block's op does not depend on the depth."""
        out = []
        for d in self.max_depths:
            depth = int(rng.integers(1, d + 1))
            out.append(tuple(int(order.permutation(NUM_OPS)[position]) for _ in range(d))[:depth])
        return tuple(out)

    def mutate(self, arch: Any, rng: np.random.Generator, prob: float) -> Arch:
        """Each depth gene and each op gene is resampled with probability ``prob``."""
        out = []
        for ops, d in zip(self.validate(arch), self.max_depths):
            depth = int(rng.integers(1, d + 1)) if rng.random() < prob else len(ops)
            hit = rng.random(d) < prob
            new = rng.integers(NUM_OPS, size=d)
            # Positions beyond the old depth are new blocks: drawn uniformly.
            genes = [int(new[j]) if (j >= len(ops) or hit[j]) else ops[j] for j in range(depth)]
            out.append(tuple(genes))
        return tuple(out)

    def crossover(self, a: Any, b: Any, rng: np.random.Generator) -> Arch:
        """Per stage: depth from either parent; each op from either parent that has the block."""
        out = []
        for ops_a, ops_b, d in zip(self.validate(a), self.validate(b), self.max_depths):
            depth = len(ops_a) if rng.random() < 0.5 else len(ops_b)
            take_a = rng.random(d) < 0.5
            genes = []
            for j in range(depth):
                if j < len(ops_a) and j < len(ops_b):
                    genes.append(ops_a[j] if take_a[j] else ops_b[j])
                else:
                    genes.append(ops_a[j] if j < len(ops_a) else ops_b[j])
            out.append(tuple(genes))
        return tuple(out)

    def neighbours(self, arch: Arch) -> list[Arch]:
        out = []
        for i, (ops, d) in enumerate(zip(arch, self.max_depths)):
            variants = [
                ops[:j] + (v,) + ops[j + 1:] for j in range(len(ops)) for v in range(NUM_OPS) if v != ops[j]
            ]
            if len(ops) > 1:
                variants.append(ops[:-1])
            if len(ops) < d:
                variants += [ops + (v,) for v in range(NUM_OPS)]
            out += [arch[:i] + (v,) + arch[i + 1:] for v in variants]
        return out

    # -- cost model ------------------------------------------------------------
    def _build_cost_tables(self) -> None:
        lay, cfg = self.layout, self.cfg
        c0, h1 = lay.stem_chs, lay.h_stem
        r0 = make_divisible(c0 * SE_RATIO)
        stem_macs, stem_params = 27 * c0 * h1**2, 27 * c0 + 2 * c0
        ds_macs = (9 * c0 + c0 * c0) * h1**2 + 2 * c0 * r0
        ds_params = 9 * c0 + 2 * c0 + (2 * c0 * r0 + r0 + c0) + c0 * c0 + 2 * c0
        cl, cf, ch = lay.stage_chs[-1], lay.final_chs, lay.head_chs
        final_macs, final_params = cl * cf * lay.h_last**2, cl * cf + 2 * cf
        head_macs = cf * ch + ch * cfg.num_classes
        head_params = cf * ch + ch + ch * cfg.num_classes + cfg.num_classes
        self._base_macs = stem_macs + ds_macs + final_macs + head_macs
        self._base_params = stem_params + ds_params + final_params + head_params
        # table[stage][position][op] -> MACs / params of that block
        self._macs_table = [[[_ir_cost(b, k, e)[0] for k, e in OPS] for b in stage] for stage in lay.stages]
        self._params_table = [[[_ir_cost(b, k, e)[1] for k, e in OPS] for b in stage] for stage in lay.stages]

    def macs(self, arch: Any) -> int:
        total = self._base_macs
        for t, ops in zip(self._macs_table, self.validate(arch)):
            for row, op in zip(t, ops):
                total += row[op]
        return total

    def params(self, arch: Any) -> int:
        total = self._base_params
        for t, ops in zip(self._params_table, self.validate(arch)):
            for row, op in zip(t, ops):
                total += row[op]
        return total

    def largest_arch(self) -> Arch:
        """Every stage at its deepest, each block its costliest op (k7e6)."""
        return tuple(tuple(int(np.argmax(row)) for row in t) for t in self._macs_table)

    def smallest_arch(self) -> Arch:
        """Block costs are non-negative and additive: one cheapest block per stage."""
        return tuple((int(np.argmin(t[0])),) for t in self._macs_table)

    def deepest_smallest_arch(self) -> Arch:
        """Every stage at its deepest, each block its cheapest op (k3e4)."""
        return tuple(tuple(int(np.argmin(row)) for row in t) for t in self._macs_table)

    def deepest_wide_arch(self, rng: np.random.Generator | None = None) -> Arch:
        """Every stage at its deepest, each block k3e6 (or, given ``rng``, e6 with a drawn kernel)."""
        kernels, e = sorted({k for k, _ in OPS}), max(e for _, e in OPS)
        if rng is None:
            return tuple((OPS.index((kernels[0], e)),) * len(t) for t in self._macs_table)
        return tuple(tuple(OPS.index((int(rng.choice(kernels)), e)) for _ in t) for t in self._macs_table)

    def shrink(self, arch: Any, elastic: Collection[str], rng: np.random.Generator) -> Arch:
        """``arch`` at full depth where depth is not elastic, expansion 6 and kernel 7 where they
        are not; a block that full depth adds draws its op from ``rng``."""
        k_max, e_max = max(k for k, _ in OPS), max(e for _, e in OPS)
        out = []
        for ops, d in zip(self.validate(arch), self.max_depths):
            depth = len(ops) if "depth" in elastic else d
            drawn = ops + tuple(int(v) for v in rng.integers(NUM_OPS, size=depth - len(ops)))
            out.append(tuple(OPS.index((k if "kernel" in elastic else k_max, e if "expansion" in elastic else e_max))
                             for k, e in (OPS[op] for op in drawn)))
        return tuple(out)

    # -- latency -------------------------------------------------------------------
    def latency_parts(self) -> LatencyParts:
        lay, cfg = self.layout, self.cfg
        fixed = {
            "stem": Part(lambda: nn.Sequential(ConvBnAct(3, lay.stem_chs, 3, cfg.stem_stride),
                                               DepthwiseSeparable(lay.stem_chs)), 3, cfg.input_size),
            "head": Part(lambda: nn.Sequential(ConvBnAct(lay.stage_chs[-1], lay.final_chs, 1),
                                               _Head(lay.final_chs, lay.head_chs, cfg.num_classes)),
                         lay.stage_chs[-1], lay.h_last),
        }
        choices = {f"s{s}.b{j}": {str(op): Part(lambda b=b, op=op: InvertedResidual(b.in_chs, b.out_chs, *OPS[op],
                                                                                      b.stride), b.in_chs, b.h_in)
                                  for op in range(NUM_OPS)}
                   for s, stage in enumerate(lay.stages) for j, b in enumerate(stage)}
        return LatencyParts(fixed, choices)

    def latency_keys(self, arch: Any) -> list[tuple[str, str]]:
        return [(f"s{s}.b{j}", str(op)) for s, ops in enumerate(self.validate(arch)) for j, op in enumerate(ops)]

    # -- networks ------------------------------------------------------------------
    def build_supernet(self) -> CreamSupernet:
        return CreamSupernet(self)

    def build_subnet(self, arch: Any, supernet: Supernet | None = None) -> CreamNet:
        arch = self.validate(arch)
        net = CreamNet(self, arch)
        if supernet is not None:
            if not isinstance(supernet, CreamSupernet):
                raise TypeError("supernet must be a CreamSupernet")
            for name in ("stem", "block0", "conv_final", "head"):
                inherit_weights(getattr(net, name), getattr(supernet, name))
            chosen = [(position, op) for stage, ops in zip(supernet.stages, arch) for position, op in zip(stage, ops)]
            for block, (position, op) in zip(net.blocks, chosen):
                position.copy_weights_to(block, op)
        return net


def _ir_cost(b: _BlockSpec, k: int, e: int) -> tuple[int, int]:
    """(MACs, params with affine BN) of one inverted residual block with SE."""
    mid = make_divisible(b.in_chs * e)
    r = make_divisible(mid * SE_RATIO)
    hi2, ho2 = b.h_in**2, b.h_out**2
    macs = b.in_chs * mid * hi2 + k * k * mid * ho2 + 2 * mid * r + mid * b.out_chs * ho2
    params = (
        b.in_chs * mid + 2 * mid  # conv_pw, bn1
        + k * k * mid + 2 * mid  # conv_dw, bn2
        + 2 * mid * r + r + mid  # se (with biases)
        + mid * b.out_chs + 2 * b.out_chs  # conv_pwl, bn3
    )
    return macs, params
