"""The analytic cost model against FlopCounterMode and the standalone subnets."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from elastic_nas.config import SpaceConfig
from elastic_nas.spaces import PUBLISHED, build_space, depthwise
from tests.conftest import SPACE_CONFIGS

CONFIGS = SPACE_CONFIGS


def counted(net: torch.nn.Module, size: int, device: str = "cpu") -> tuple[int, int]:
    """(FlopCounterMode FLOPs / 2, sum of parameter numels) of a standalone net as designed and
    exported: depthwise kernels whole (training and scoring cut them to their map, the same math)."""
    net.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad(), depthwise.whole_kernels():
        net(torch.zeros(1, 3, size, size, device=device))
    return fc.get_total_flops() // 2, sum(p.numel() for p in net.parameters())


def _check(space, arch, size, device="cpu"):
    with torch.device(device):
        net = space.build_subnet(arch)
    macs, params = counted(net, size, device)
    assert abs(space.macs(arch) - macs) <= 0.005 * macs, (arch, space.macs(arch), macs)
    assert space.params(arch) == params, (arch, space.params(arch), params)


@pytest.mark.parametrize("key, n", [("spos", 50), ("spos-channel", 50), ("cream", 100)])
def test_cost_matches_flop_counter_at_32(key, n):
    """100 random archs per space (SPOS split between block and block+channel search)."""
    space = build_space(CONFIGS[key])
    rng = np.random.default_rng(123)
    for _ in range(n):
        _check(space, space.sample(rng), 32)


@pytest.mark.parametrize("cfg", [
    SpaceConfig(name="spos", input_size=64, num_classes=100, stem_stride=2, width_mult=0.5),
    SpaceConfig(name="cream", input_size=64, num_classes=100, stem_stride=2, width_mult=1.5,
                max_depths=[2, 3, 4, 5, 6]),
])
def test_cost_matches_other_widths_and_sizes(cfg):
    space = build_space(cfg)
    rng = np.random.default_rng(5)
    for _ in range(5):
        _check(space, space.sample(rng), 64)


@pytest.mark.parametrize("name", ["spos-323m", "cream-287", "cream-604"])
def test_cost_matches_flop_counter_at_224(name):
    space_name, arch, size = PUBLISHED[name]
    space = build_space(SpaceConfig(name=space_name, input_size=size, num_classes=1000, stem_stride=2,
                                    max_depths=[5, 5, 5, 6, 6]))
    _check(space, arch, size, device="meta")
    _check(space, space.sample(np.random.default_rng(0)), size, device="meta")


def test_spos_channel_at_224_on_meta():
    space = build_space(SpaceConfig(name="spos", input_size=224, num_classes=1000, stem_stride=2,
                                    channel_search=True))
    _check(space, space.sample(np.random.default_rng(1)), 224, device="meta")


@pytest.mark.parametrize("key", list(CONFIGS))
def test_macs_range_is_tight(key):
    space = build_space(CONFIGS[key])
    lo, hi = space.macs_range()
    rng = np.random.default_rng(0)
    ms = [space.macs(space.sample(rng)) for _ in range(2000)]
    assert lo <= min(ms) and max(ms) <= hi
    # The extremes are reached by the cheapest / dearest choice everywhere.
    if space.name == "cream":
        cheap = tuple((int(np.argmin(t[0])),) for t in space._macs_table)
        dear = tuple(tuple(int(np.argmax(row)) for row in t) for t in space._macs_table)
    else:
        scales = range(8) if space.cfg.channel_search else (4,)
        pick = [(min if i == 0 else max)((t[op][s], op, s) for op in range(4) for s in scales)
                for i in (0, 1) for t in space._macs_table]
        n = len(space._macs_table)
        cheap = space._join(tuple(c[1] for c in pick[:n]), tuple(c[2] for c in pick[:n]))
        dear = space._join(tuple(c[1] for c in pick[n:]), tuple(c[2] for c in pick[n:]))
    assert space.macs(cheap) == lo and space.macs(dear) == hi


@pytest.mark.parametrize("key", list(CONFIGS))
def test_cost_model_is_a_table_lookup(key):
    """Evolution costs thousands of archs per generation: a guard against a cost model that
    builds networks (that would be ~100x slower), not a speed figure."""
    space = build_space(CONFIGS[key])
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(2000)]
    t0 = time.perf_counter()
    for a in archs:
        space.macs(a)
        space.params(a)
    rate = len(archs) / (time.perf_counter() - t0)
    assert rate >= 1_000, f"{rate:.0f} archs/s"
