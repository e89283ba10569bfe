"""SPOS ShuffleNetV2 search space (Guo et al., ECCV 2020), as in the official release.

Layout (input 224, ``stem_stride=2``; widths before ``width_mult``)::

    stem     conv3x3 s2 3->16, BN, ReLU                       # 224 -> 112
    stage 1  4 choice blocks, 64 ch, first stride 2             # 112 -> 56
    stage 2  4 choice blocks, 160 ch, first stride 2            # 56 -> 28
    stage 3  8 choice blocks, 320 ch, first stride 2            # 28 -> 14
    stage 4  4 choice blocks, 640 ch, first stride 2            # 14 -> 7
    head     conv1x1 640->1024, BN, ReLU, global pool, dropout 0.1, linear (no bias)

Choices per block: 0, 1, 2 = ShuffleNetV2 block with a k = 3, 5, 7 depthwise conv;
3 = Shuffle-Xception block ((dw3x3 -> pw) x 3). A stride-1 block splits the channels and
runs the main branch on half of them; a stride-2 block adds a projection branch
(dw kxk s2 -> pw) on the full input. The main branch's mid width is ``(out // 2) * scale``.

Architectures:

* block search (``channel_search: false``): 20 op ids, e.g. ``[2,1,0,1,2,0,...]``;
* block + channel search: ``[[20 op ids], [20 scale ids]]`` with scale = (id + 1) * 0.2,
  ids 0..7 (0.2 ... 1.6). The supernet allocates the 1.6x mid width and an arch runs the
  leading channels (Once-for-All's elastic width, here called sliced).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ArchError
from elastic_nas.spaces.base import Arch, SearchSpace, Supernet, as_int, as_list, inherit_weights
from elastic_nas.spaces.latency import LatencyParts, Part
from elastic_nas.spaces.layers import channel_shuffle, conv_bn, make_divisible, sliced_bn, sliced_conv, used_kernel

STAGE_REPEATS = (4, 4, 8, 4)
STAGE_OUT_CHS = (64, 160, 320, 640)
STEM_CHS = 16
HEAD_CHS = 1024
DROP_RATE = 0.1
KERNEL_LIST = (3, 5, 7)  # ops 0, 1, 2; op 3 = Shuffle-Xception
NUM_OPS = 4
SCALE_LIST = tuple(round((i + 1) * 0.2, 1) for i in range(8))  # 0.2 ... 1.6
BLOCK_SCALE_ID = 4  # scale 1.0: the only width when channel search is off


def scaled_mid_chs(base_mid_chs: int, scale_id: int) -> int:
    """``int(base * scale)`` computed in integers, so 0.6 * 80 is exactly 48."""
    return max(1, base_mid_chs * (scale_id + 1) // 5)


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


class _ShuffleBase(nn.Module):
    """Shared split/projection logic; subclasses define ``main``."""

    def __init__(self, in_chs: int, out_chs: int, proj_kernel_size: int, stride: int, affine: bool):
        super().__init__()
        self.stride = stride
        self.main_in_chs = in_chs if stride == 2 else in_chs // 2
        self.main_out_chs = out_chs - self.main_in_chs
        if stride == 2:
            self.proj_dw, self.proj_bn1 = conv_bn(in_chs, in_chs, proj_kernel_size, 2, in_chs, affine)
            self.proj_pw, self.proj_bn2 = conv_bn(in_chs, in_chs, 1, affine=affine)
            self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, active_mid_chs: int | None = None,
                active_kernel: int | None = None) -> torch.Tensor:
        """``active_kernel``: the centre of the depthwise kernels an entangled block runs."""
        if self.stride == 1:
            x_proj, x = channel_shuffle(x)
        else:
            x_proj = sliced_conv(self.proj_dw, x, kernel_size=active_kernel)
            x_proj = self.act(self.proj_bn2(self.proj_pw(self.proj_bn1(x_proj))))
        return torch.cat((x_proj, self.main(x, active_mid_chs, active_kernel)), 1)

    def main(self, x: torch.Tensor, active_mid_chs: int | None,
             active_kernel: int | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class ShuffleV2Block(_ShuffleBase):
    """Main branch: pw -> dw kxk -> pw-linear (choices 0, 1, 2)."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, dw_kernel_size: int, stride: int,
                 affine: bool = True):
        super().__init__(in_chs, out_chs, dw_kernel_size, stride, affine)
        self.conv_pw, self.bn1 = conv_bn(self.main_in_chs, mid_chs, 1, affine=affine)
        self.conv_dw, self.bn2 = conv_bn(mid_chs, mid_chs, dw_kernel_size, stride, mid_chs, affine)
        self.conv_pwl, self.bn3 = conv_bn(mid_chs, self.main_out_chs, 1, affine=affine)

    def main(self, x: torch.Tensor, active_mid_chs: int | None, active_kernel: int | None) -> torch.Tensor:
        relu = nn.functional.relu
        x = relu(sliced_bn(self.bn1, sliced_conv(self.conv_pw, x, active_mid_chs)))
        x = sliced_bn(self.bn2, sliced_conv(self.conv_dw, x, kernel_size=active_kernel))
        return relu(self.bn3(sliced_conv(self.conv_pwl, x)))


class ShuffleXceptionBlock(_ShuffleBase):
    """Main branch: (dw3x3 -> pw) x 3, the first dw carrying the stride (choice 3)."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int, affine: bool = True):
        super().__init__(in_chs, out_chs, 3, stride, affine)
        a = self.main_in_chs
        self.conv_dw1, self.bn1 = conv_bn(a, a, 3, stride, a, affine)
        self.conv_pw1, self.bn2 = conv_bn(a, mid_chs, 1, affine=affine)
        self.conv_dw2, self.bn3 = conv_bn(mid_chs, mid_chs, 3, 1, mid_chs, affine)
        self.conv_pw2, self.bn4 = conv_bn(mid_chs, mid_chs, 1, affine=affine)
        self.conv_dw3, self.bn5 = conv_bn(mid_chs, mid_chs, 3, 1, mid_chs, affine)
        self.conv_pw3, self.bn6 = conv_bn(mid_chs, self.main_out_chs, 1, affine=affine)

    def main(self, x: torch.Tensor, active_mid_chs: int | None, active_kernel: int | None) -> torch.Tensor:
        relu = nn.functional.relu
        x = self.bn1(self.conv_dw1(x))
        x = relu(sliced_bn(self.bn2, sliced_conv(self.conv_pw1, x, active_mid_chs)))
        x = sliced_bn(self.bn3, sliced_conv(self.conv_dw2, x))
        x = relu(sliced_bn(self.bn4, sliced_conv(self.conv_pw2, x, active_mid_chs)))
        x = sliced_bn(self.bn5, sliced_conv(self.conv_dw3, x))
        return relu(self.bn6(sliced_conv(self.conv_pw3, x)))


def make_block(op: int, in_chs: int, out_chs: int, mid_chs: int, stride: int, affine: bool) -> nn.Module:
    if op < len(KERNEL_LIST):
        return ShuffleV2Block(in_chs, out_chs, mid_chs, KERNEL_LIST[op], stride, affine)
    return ShuffleXceptionBlock(in_chs, out_chs, mid_chs, stride, affine)


class ChoiceBlocks(nn.ModuleList):
    """Independent weights: one block per op at a position (SPOS)."""

    def __init__(self, b: _BlockSpec, affine: bool):
        super().__init__(make_block(op, b.in_chs, b.out_chs, b.max_mid_chs, b.stride, affine) for op in range(NUM_OPS))

    def forward(self, x: torch.Tensor, op: int, active_mid_chs: int) -> torch.Tensor:
        return self[op](x, active_mid_chs)

    def op_module(self, op: int) -> nn.Module:
        """The module whose parameters op ``op`` trains."""
        return self[op]


class EntangledChoices(nn.Module):
    """Entangled weights: the three ShuffleNetV2 choices (k = 3, 5, 7) are one block whose 7x7
    depthwise kernels run their centre (main branch and, striding, projection alike); the
    Shuffle-Xception choice keeps its own weights."""

    def __init__(self, b: _BlockSpec, affine: bool):
        super().__init__()
        self.shuffle = ShuffleV2Block(b.in_chs, b.out_chs, b.max_mid_chs, max(KERNEL_LIST), b.stride, affine)
        self.xception = ShuffleXceptionBlock(b.in_chs, b.out_chs, b.max_mid_chs, b.stride, affine)

    def forward(self, x: torch.Tensor, op: int, active_mid_chs: int) -> torch.Tensor:
        if op < len(KERNEL_LIST):
            return self.shuffle(x, active_mid_chs, KERNEL_LIST[op])
        return self.xception(x, active_mid_chs)

    def op_module(self, op: int) -> nn.Module:
        return self.shuffle if op < len(KERNEL_LIST) else self.xception


def _stem(out_chs: int, stride: int, affine: bool) -> nn.Sequential:
    conv, bn = conv_bn(3, out_chs, 3, stride, affine=affine)
    return nn.Sequential(conv, bn, nn.ReLU(inplace=True))


class _Head(nn.Module):
    def __init__(self, in_chs: int, head_chs: int, num_classes: int, affine: bool):
        super().__init__()
        self.conv_head, self.bn = conv_bn(in_chs, head_chs, 1, affine=affine)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(DROP_RATE)
        self.classifier = nn.Linear(head_chs, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv_head(x)))
        x = x.mean((2, 3))
        return self.classifier(self.dropout(x))


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


class SposSupernet(Supernet):
    """Every choice of every block (:class:`ChoiceBlocks`, or :class:`EntangledChoices` with
    ``space.weight_sharing: entangled``); BN ``affine=False`` as the official supernet."""

    def __init__(self, space: SposSpace):
        super().__init__()
        self.space = space  # layout and arch validation only; no arch state
        lay = space.layout
        self.stem = _stem(lay.stem_chs, space.cfg.stem_stride, affine=False)
        position = EntangledChoices if space.cfg.weight_sharing == "entangled" else ChoiceBlocks
        self.blocks = nn.ModuleList(position(b, affine=False) for b in lay.blocks)
        self.head = _Head(lay.last_chs, lay.head_chs, space.cfg.num_classes, affine=False)

    def forward(self, x: torch.Tensor, arch: Any) -> torch.Tensor:
        ops, scale_ids = self.space.split(self.space.validate(arch))
        x = self.stem(x)
        for position, b, op, s in zip(self.blocks, self.space.layout.blocks, ops, scale_ids):
            x = position(x, op, b.mid_chs_list[s])
        return self.head(x)

    def arch_modules(self, arch: Any) -> list[nn.Module]:
        ops, _ = self.space.split(self.space.validate(arch))
        return [self.stem, *(position.op_module(op) for position, op in zip(self.blocks, ops)), self.head]


class SposNet(nn.Module):
    """A standalone SPOS network: stem, the chosen blocks at their mid widths, head."""

    def __init__(self, space: SposSpace, arch: Arch, affine: bool = True):
        super().__init__()
        lay = space.layout
        ops, scale_ids = space.split(arch)
        self.arch = arch
        self.stem = _stem(lay.stem_chs, space.cfg.stem_stride, affine)
        self.blocks = nn.ModuleList(
            make_block(op, b.in_chs, b.out_chs, b.mid_chs_list[s], b.stride, affine)
            for b, op, s in zip(lay.blocks, ops, scale_ids)
        )
        self.head = _Head(lay.last_chs, lay.head_chs, space.cfg.num_classes, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


# ---------------------------------------------------------------------------
# Space
# ---------------------------------------------------------------------------


class _BlockSpec:
    __slots__ = ("in_chs", "out_chs", "stride", "h_in", "h_out", "mid_chs_list", "max_mid_chs")

    def __init__(self, in_chs, out_chs, stride, h_in, h_out, mid_chs_list, max_mid_chs):
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.h_in, self.h_out = h_in, h_out
        self.mid_chs_list, self.max_mid_chs = mid_chs_list, max_mid_chs


class _Layout:
    def __init__(self, cfg: SpaceConfig):
        wm = cfg.width_mult
        self.stem_chs = make_divisible(STEM_CHS * wm)
        self.head_chs = make_divisible(HEAD_CHS * wm)
        self.stage_chs = [make_divisible(c * wm) for c in STAGE_OUT_CHS]
        self.h_stem = (cfg.input_size - 1) // cfg.stem_stride + 1  # conv3x3, pad 1
        self.blocks: list[_BlockSpec] = []
        in_chs, h = self.stem_chs, self.h_stem
        self.repeats = tuple(cfg.stage_repeats or STAGE_REPEATS)
        for repeats, out_chs in zip(self.repeats, self.stage_chs):
            if out_chs <= in_chs:
                raise ArchError(
                    f"spos: width_mult {wm} makes a stage {out_chs} channels wide after {in_chs}; "
                    "use a larger width_mult"
                )
            for i in range(repeats):
                stride = 2 if i == 0 else 1
                h_out = (h - 1) // 2 + 1 if stride == 2 else h
                base_mid = out_chs // 2
                if cfg.channel_search:
                    mids = tuple(scaled_mid_chs(base_mid, s) for s in range(len(SCALE_LIST)))
                else:
                    mids = tuple(base_mid for _ in SCALE_LIST)
                self.blocks.append(_BlockSpec(in_chs, out_chs, stride, h, h_out, mids, max(mids)))
                in_chs, h = out_chs, h_out
        self.last_chs, self.h_last = in_chs, h


class SposSpace(SearchSpace):
    name = "spos"

    def __init__(self, cfg: SpaceConfig):
        super().__init__(cfg)
        self.layout = _Layout(cfg)
        self.num_blocks = len(self.layout.blocks)
        self.num_scales = len(SCALE_LIST) if cfg.channel_search else 1
        self._build_cost_tables()

    # -- architectures -------------------------------------------------------
    def validate(self, arch: Any) -> Arch:
        n = self.num_blocks
        if self.cfg.channel_search:
            parts = as_list(arch, "spos arch (channel search)")
            if len(parts) != 2:
                raise ArchError(
                    f"spos arch (channel search): expected [[{n} op ids], [{n} scale ids]], "
                    f"got {len(parts)} items"
                )
            ops = self._genes(parts[0], NUM_OPS, "op")
            scales = self._genes(parts[1], len(SCALE_LIST), "scale")
            if type(arch) is tuple and ops is arch[0] and scales is arch[1]:
                return arch  # already normalised
            return (ops, scales)
        return self._genes(arch, NUM_OPS, "op")

    def canonical(self, arch: Any) -> Arch:
        """Each ShuffleNetV2 block's depthwise kernel (main and projection branch alike) cut to what
        its input map can use (see ``used_kernel``): at 32 x 32 the last stage runs at 2 x 2, where
        k = 5 and 7 compute what k = 3 does at more MACs. The Xception choice is left alone: its
        three 3x3 convs are a different network. With independent weights the supernet scores the
        renamed arch with the 3x3 op's own weights: the name is the network trained from scratch."""
        ops, scales = self.split(self.validate(arch))
        ops = tuple(op if op >= len(KERNEL_LIST) else KERNEL_LIST.index(used_kernel(KERNEL_LIST[op], b.h_in, KERNEL_LIST))
                    for op, b in zip(ops, self.layout.blocks))
        return self._join(ops, scales)

    def _genes(self, value: Any, card: int, what: str) -> tuple[int, ...]:
        n = self.num_blocks
        if type(value) is tuple and len(value) == n and all(type(v) is int and 0 <= v < card for v in value):
            return value  # fast path: already normalised
        items = as_list(value, f"spos {what} ids")
        if len(items) != n:
            hint = ""
            if what == "op" and not self.cfg.channel_search and len(items) == 2:
                hint = " (a [[ops], [scales]] arch needs space.channel_search: true)"
            raise ArchError(f"spos {what} ids: expected {n} values, got {len(items)}{hint}")
        out = []
        for i, v in enumerate(items):
            v = as_int(v, f"spos {what} id {i}")
            if not 0 <= v < card:
                raise ArchError(f"spos {what} id {i}: must be in 0..{card - 1}, got {v}")
            out.append(v)
        return tuple(out)

    def split(self, arch: Arch) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(op ids, scale ids) of a normalised arch; scale ids are 1.0 without channel search."""
        if self.cfg.channel_search:
            return arch[0], arch[1]
        return arch, (BLOCK_SCALE_ID,) * self.num_blocks

    def _join(self, ops: tuple[int, ...], scales: tuple[int, ...]) -> Arch:
        return (ops, scales) if self.cfg.channel_search else ops

    def deepen(self, arch: Any, factor: float) -> tuple[dict, Arch]:
        """Each stage ``ceil(factor x)`` blocks deep, the new blocks repeating the stage's choices
        in order (so its mix of ops, and its MACs per block, stay as they were); EfficientNet's
        depth scaling. Returns the space-config changes and the arch."""
        ops, scales = self.split(self.validate(arch))
        repeats = [math.ceil(r * factor - 1e-9) for r in self.layout.repeats]
        new_ops, new_scales, start = [], [], 0
        for r, n in zip(self.layout.repeats, repeats):
            stage_ops, stage_scales = ops[start:start + r], scales[start:start + r]
            new_ops += [stage_ops[j % r] for j in range(n)]
            new_scales += [stage_scales[j % r] for j in range(n)]
            start += r
        return {"stage_repeats": repeats}, self._join(tuple(new_ops), tuple(new_scales))

    def sample(self, rng: np.random.Generator) -> Arch:
        ops = tuple(int(v) for v in rng.integers(NUM_OPS, size=self.num_blocks))
        if not self.cfg.channel_search:
            return ops
        scales = tuple(int(v) for v in rng.integers(len(SCALE_LIST), size=self.num_blocks))
        return (ops, scales)

    fair_window = NUM_OPS

    def sample_fair(self, rng: np.random.Generator, order: np.random.Generator, position: int) -> Arch:
        ops = tuple(int(order.permutation(NUM_OPS)[position]) for _ in range(self.num_blocks))
        if not self.cfg.channel_search:
            return ops
        return (ops, tuple(int(v) for v in rng.integers(len(SCALE_LIST), size=self.num_blocks)))

    def mutate(self, arch: Any, rng: np.random.Generator, prob: float) -> Arch:
        ops, scales = self.split(self.validate(arch))
        ops = _mutate_genes(ops, NUM_OPS, rng, prob)
        if self.cfg.channel_search:
            scales = _mutate_genes(scales, len(SCALE_LIST), rng, prob)
        return self._join(ops, scales)

    def crossover(self, a: Any, b: Any, rng: np.random.Generator) -> Arch:
        ops_a, sc_a = self.split(self.validate(a))
        ops_b, sc_b = self.split(self.validate(b))
        take_a = rng.random(self.num_blocks) < 0.5
        ops = tuple(x if t else y for x, y, t in zip(ops_a, ops_b, take_a))
        if self.cfg.channel_search:
            take_a = rng.random(self.num_blocks) < 0.5
            sc_a = tuple(x if t else y for x, y, t in zip(sc_a, sc_b, take_a))
        return self._join(ops, sc_a)

    def neighbours(self, arch: Arch) -> list[Arch]:
        ops, scales = self.split(arch)
        out = []
        for i in range(self.num_blocks):
            for v in range(NUM_OPS):
                if v != ops[i]:
                    out.append(self._join(ops[:i] + (v,) + ops[i + 1:], scales))
            if self.cfg.channel_search:
                for v in range(len(SCALE_LIST)):
                    if v != scales[i]:
                        out.append(self._join(ops, scales[:i] + (v,) + scales[i + 1:]))
        return out

    # -- cost model ------------------------------------------------------------
    def _build_cost_tables(self) -> None:
        lay, cfg = self.layout, self.cfg
        stem_macs = 9 * 3 * lay.stem_chs * lay.h_stem**2
        stem_params = 27 * lay.stem_chs + 2 * lay.stem_chs
        head_macs = lay.last_chs * lay.head_chs * lay.h_last**2 + lay.head_chs * cfg.num_classes
        head_params = lay.last_chs * lay.head_chs + 2 * lay.head_chs + lay.head_chs * cfg.num_classes
        self._base_macs = stem_macs + head_macs
        self._base_params = stem_params + head_params
        # table[i][op][scale] -> MACs / params of block i
        self._macs_table: list[list[list[int]]] = []
        self._params_table: list[list[list[int]]] = []
        for b in lay.blocks:
            mt, pt = [], []
            for op in range(NUM_OPS):
                mrow, prow = [], []
                for s in range(len(SCALE_LIST)):
                    m, p = _block_cost(b, op, b.mid_chs_list[s])
                    mrow.append(m)
                    prow.append(p)
                mt.append(mrow)
                pt.append(prow)
            self._macs_table.append(mt)
            self._params_table.append(pt)

    def macs(self, arch: Any) -> int:
        ops, scales = self.split(self.validate(arch))
        total = self._base_macs
        for t, op, s in zip(self._macs_table, ops, scales):
            total += t[op][s]
        return total

    def params(self, arch: Any) -> int:
        ops, scales = self.split(self.validate(arch))
        total = self._base_params
        for t, op, s in zip(self._params_table, ops, scales):
            total += t[op][s]
        return total

    def largest_arch(self) -> Arch:
        return self._extreme(max)

    def smallest_arch(self) -> Arch:
        return self._extreme(min)

    def _extreme(self, pick) -> Arch:
        """Per block, the (op, scale) of the most or fewest MACs: block costs add up."""
        scale_range = range(len(SCALE_LIST)) if self.cfg.channel_search else (BLOCK_SCALE_ID,)
        genes = [pick(((op, sc) for op in range(NUM_OPS) for sc in scale_range), key=lambda g, t=t: t[g[0]][g[1]])
                 for t in self._macs_table]
        return self._join(tuple(op for op, _ in genes), tuple(sc for _, sc in genes))

    # -- latency -------------------------------------------------------------------
    def latency_parts(self) -> LatencyParts:
        lay, cfg = self.layout, self.cfg
        fixed = {"stem": Part(lambda: _stem(lay.stem_chs, cfg.stem_stride, True), 3, cfg.input_size),
                 "head": Part(lambda: _Head(lay.last_chs, lay.head_chs, cfg.num_classes, True), lay.last_chs, lay.h_last)}
        scales = range(len(SCALE_LIST)) if cfg.channel_search else (BLOCK_SCALE_ID,)
        choices = {f"b{i}": {self._choice_key(op, sc): Part(
            lambda b=b, op=op, sc=sc: make_block(op, b.in_chs, b.out_chs, b.mid_chs_list[sc], b.stride, True),
            b.in_chs, b.h_in) for op in range(NUM_OPS) for sc in scales} for i, b in enumerate(lay.blocks)}
        return LatencyParts(fixed, choices)

    def latency_keys(self, arch: Any) -> list[tuple[str, str]]:
        ops, scales = self.split(self.validate(arch))
        return [(f"b{i}", self._choice_key(op, sc)) for i, (op, sc) in enumerate(zip(ops, scales))]

    def _choice_key(self, op: int, scale_id: int) -> str:
        return f"{op}@{scale_id}" if self.cfg.channel_search else str(op)

    # -- networks ------------------------------------------------------------------
    def build_supernet(self) -> SposSupernet:
        return SposSupernet(self)

    def build_subnet(self, arch: Any, supernet: Supernet | None = None, *, affine: bool = True) -> SposNet:
        """Standalone net; ``affine=True`` (default) for retraining, as the SPOS paper."""
        arch = self.validate(arch)
        net = SposNet(self, arch, affine)
        if supernet is not None:
            if not isinstance(supernet, SposSupernet):
                raise TypeError("supernet must be an SposSupernet")
            ops, _ = self.split(arch)
            inherit_weights(net.stem, supernet.stem)
            for block, position, op in zip(net.blocks, supernet.blocks, ops):
                inherit_weights(block, position.op_module(op))  # an entangled kernel's centre, too
            inherit_weights(net.head, supernet.head)
        return net


def _block_cost(b: _BlockSpec, op: int, mid: int) -> tuple[int, int]:
    """(MACs, params with affine BN) of one block; conv MACs = kernel_ops * C_out * H_out * W_out."""
    a = b.in_chs if b.stride == 2 else b.in_chs // 2
    o = b.out_chs - a
    hi2, ho2 = b.h_in**2, b.h_out**2
    if op < len(KERNEL_LIST):
        k2 = KERNEL_LIST[op] ** 2
        macs = a * mid * hi2 + k2 * mid * ho2 + mid * o * ho2
        params = a * mid + k2 * mid + mid * o + 2 * (2 * mid + o)
    else:
        k2 = 9
        macs = (9 * a + a * mid + 9 * mid + mid * mid + 9 * mid + mid * o) * ho2
        params = 9 * a + a * mid + 18 * mid + mid * mid + mid * o + 2 * (a + 4 * mid + o)
    if b.stride == 2:
        p = b.in_chs
        macs += (k2 * p + p * p) * ho2
        params += k2 * p + p * p + 4 * p
    return macs, params


def _mutate_genes(genes: tuple[int, ...], card: int, rng: np.random.Generator, prob: float) -> tuple[int, ...]:
    hit = rng.random(len(genes)) < prob
    new = rng.integers(card, size=len(genes))
    return tuple(int(n) if h else g for g, h, n in zip(genes, hit, new))
