"""Search spaces: arch algebra, validation, supernet archs and subnet equivalence."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ArchError
from elastic_nas.spaces import PUBLISHED, build_space
from elastic_nas.spaces.cli import describe
from elastic_nas.spaces.layers import make_divisible
from tests.conftest import SPACE_CONFIGS, follows_input, live_bn

SPOS_323M = [2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3]
SPOS_328M = [
    [0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2],
    [6, 5, 3, 5, 2, 6, 3, 4, 2, 5, 7, 5, 4, 6, 7, 4, 4, 5, 4, 3],
]
CREAM_287 = [[0], [3], [3, 3], [3, 1, 3], [3, 3, 3, 3], [3, 3, 3], [0]]

CONFIGS = SPACE_CONFIGS


@pytest.fixture(scope="module", params=list(CONFIGS))
def space(request):
    return build_space(CONFIGS[request.param])


def published_space(name: str, **kw):
    space_name, arch, size = PUBLISHED[name]
    cfg = SpaceConfig(name=space_name, input_size=size, num_classes=1000, stem_stride=2, **kw)
    return build_space(cfg), arch


# ---------------------------------------------------------------------------
# Published numbers
# ---------------------------------------------------------------------------


def test_spos_published_block_search():
    s, arch = published_space("spos-323m")
    assert round(s.macs(arch) / 1e6, 1) == 322.9
    assert round(s.params(arch) / 1e6, 2) == 3.56


def test_spos_published_block_channel_search():
    s = build_space(SpaceConfig(name="spos", input_size=224, num_classes=1000, stem_stride=2,
                                channel_search=True))
    assert round(s.macs(SPOS_328M) / 1e6) == 328
    assert round(s.params(SPOS_328M) / 1e6, 1) == 3.4


def test_cream_287_published():
    s, arch = published_space("cream-287")
    assert round(s.macs(arch) / 1e6, 1) == 276.3
    assert round(s.params(arch) / 1e6, 2) == 6.04


@pytest.mark.parametrize("name", [n for n in PUBLISHED if n.startswith("cream")])
def test_cream_published_validate_and_sit_4_to_7_percent_under_ptflops(name):
    s, arch = published_space(name, max_depths=[5, 5, 5, 6, 6])
    published = int(name.split("-")[1]) * 1e6
    assert 0.90 * published < s.macs(arch) < 0.97 * published  # Cream counts bias/BN/act too


def test_cream_default_max_depths_fit_every_published_model():
    s = build_space(SpaceConfig(name="cream", input_size=224, stem_stride=2))
    for name, (space_name, arch, _) in PUBLISHED.items():
        if space_name == "cream":
            s.validate(arch)


def test_cream_604_needs_deeper_max_depths_than_creams_supernet():
    s = build_space(SpaceConfig(name="cream", input_size=224, stem_stride=2, max_depths=[4, 4, 5, 4, 4]))
    with pytest.raises(ArchError, match=r"max_depths.*5, 5, 5, 6, 6"):
        s.validate(PUBLISHED["cream-604"][1])
    s.validate(PUBLISHED["cream-481"][1])


def test_arch_info_published_and_json():
    info = describe("cream-287", None, None, 1000)
    assert info["arch"] == [[0], [3, 3], [3, 1, 3], [3, 3, 3, 3], [3, 3, 3]]
    assert info["macs"] == 276262016 and info["input_size"] == 224
    info = describe(json.dumps(SPOS_323M), "spos", 224, 1000)
    assert info["macs"] == 322918720 and info["params"] == 3558464
    with pytest.raises(ArchError):
        describe("[1, 2", "spos", None, 1000)
    with pytest.raises(ArchError):
        describe("[1, 2]", None, None, 1000)
    with pytest.raises(ArchError, match="belongs to space"):
        describe("cream-14", "spos", None, 1000)


# ---------------------------------------------------------------------------
# Formats and validation
# ---------------------------------------------------------------------------


def test_cream_quirk_only_for_cream_format():
    s = _SPACES["creamFalse"]
    # Cream's INPUT_ARCH: the one-block stage 1 ignores its 3 and builds k3e4 (0).
    assert s.validate(CREAM_287) == ((0,), (3, 3), (3, 1, 3), (3, 3, 3, 3), (3, 3, 3))
    assert s.validate([[0], [3], [3], [3], [3], [3], [0]]) == ((0,), (2,), (1,), (1,), (3,))
    # The internal format honours every index.
    assert s.validate([[3], [3], [3], [3], [3]]) == ((3,), (3,), (3,), (3,), (3,))
    assert s.to_cream(s.validate(CREAM_287)) == [[0], [0], [3, 3], [3, 1, 3], [3, 3, 3, 3], [3, 3, 3], [0]]
    with pytest.raises(ArchError, match="one-block stage"):
        s.to_cream([[3], [3], [3], [3], [3]])


def test_cream_to_cream_round_trip():
    s = build_space(SpaceConfig(name="cream"))
    arch = s.validate(CREAM_287)
    assert s.validate(s.to_cream(arch)) == arch


@pytest.mark.parametrize(
    "cfg, arch, match",
    [
        (CONFIGS["spos"], [0] * 19, "expected 20 values"),
        (CONFIGS["spos"], [0] * 19 + [4], "op id 19: must be in 0..3"),
        (CONFIGS["spos"], [0] * 19 + [True], "expected an integer"),
        (CONFIGS["spos"], [0] * 19 + [1.0], "expected an integer"),
        (CONFIGS["spos"], "0,1", "expected a list"),
        (CONFIGS["spos"], SPOS_328M, "channel_search: true"),
        (CONFIGS["spos-channel"], SPOS_323M, r"expected \[\[20 op ids\], \[20 scale ids\]\]"),
        (CONFIGS["spos-channel"], [SPOS_323M, [8] * 20], "scale id 0: must be in 0..7"),
        (CONFIGS["cream"], [[0], [], [0], [0], [0]], "stage 2: depth must be 1..4, got 0"),
        (CONFIGS["cream"], [[0], [0], [0], [0], [6]], "stage 5 block 0: op id must be in 0..5"),
        (CONFIGS["cream"], [[0], [0], [0], [0, 0, 0, 0, 0], [0]], "stage 4: depth must be 1..4, got 5"),
        (CONFIGS["cream"], [[1], [0], [0], [0], [0], [0], [0]], r"item 0: must be \[0\]"),
        (CONFIGS["cream"], [[0], [0], [0]], "expected 5 stage lists"),
    ],
)
def test_validate_errors(cfg, arch, match):
    with pytest.raises(ArchError, match=match):
        build_space(cfg).validate(arch)


def test_json_round_trip_and_hashable(space):
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        hash(arch)
        text = json.dumps(space.to_json(arch))
        assert space.validate(json.loads(text)) == arch
        assert space.validate(arch) is arch


# ---------------------------------------------------------------------------
# Sampling, mutation, crossover
# ---------------------------------------------------------------------------


def _run_ops(space, seed):
    rng = np.random.default_rng(seed)
    a, b = space.sample(rng), space.sample(rng)
    return [a, b, space.mutate(a, rng, 0.3), space.crossover(a, b, rng),
            space.sample_constrained(rng, 0, 0)]


def test_same_seed_same_sequence(space):
    assert _run_ops(space, 7) == _run_ops(space, 7)
    assert _run_ops(space, 7) != _run_ops(space, 8)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), prob=st.floats(0, 1))
def test_mutate_crossover_stay_in_space(seed, prob):
    for cfg in CONFIGS.values():
        space = _SPACES[cfg.name + str(cfg.channel_search)]
        rng = np.random.default_rng(seed)
        a, b = space.sample(rng), space.sample(rng)
        m = space.mutate(a, rng, prob)
        c = space.crossover(a, b, rng)
        assert space.validate(m) == m and space.validate(c) == c
        assert space.mutate(a, rng, 0.0) == a
        if space.name == "cream":
            for ops_c, ops_a, ops_b in zip(c, a, b):
                assert len(ops_c) in (len(ops_a), len(ops_b))
                for j, op in enumerate(ops_c):
                    assert op in [o[j] for o in (ops_a, ops_b) if j < len(o)]
        else:
            for gc, ga, gb in zip(np.ravel(c), np.ravel(a), np.ravel(b)):
                assert gc in (ga, gb)


# One independent-weights space per (name, channel search): the arch algebra does not depend on weights.
_SPACES = {cfg.name + str(cfg.channel_search): build_space(cfg) for cfg in CONFIGS.values()
           if cfg.weight_sharing == "independent"}


def test_mutate_prob_one_changes_about_three_quarters_of_spos_genes():
    s = _SPACES["sposFalse"]
    rng = np.random.default_rng(0)
    a = s.sample(rng)
    changed = np.mean([np.mean(np.array(s.mutate(a, rng, 1.0)) != np.array(a)) for _ in range(200)])
    assert 0.70 < changed < 0.80  # resampled uniformly over 4 ops, as SPOS


def test_sample_covers_depths_and_ops():
    s = _SPACES["creamFalse"]
    rng = np.random.default_rng(0)
    archs = [s.sample(rng) for _ in range(2000)]
    for i, d in enumerate(s.max_depths):
        assert {len(a[i]) for a in archs} == set(range(1, d + 1))
    assert {op for a in archs for ops in a for op in ops} == set(range(6))


# ---------------------------------------------------------------------------
# FLOPs-constrained sampling
# ---------------------------------------------------------------------------


def test_constrained_sampling_spos_bins():
    s = build_space(SpaceConfig(name="spos", input_size=224, num_classes=1000, stem_stride=2))
    rng = np.random.default_rng(0)
    lo, hi = 290e6, 360e6
    ms = np.array([s.macs(s.sample_constrained(rng, lo, hi)) for _ in range(300)])
    assert ((ms >= lo) & (ms <= hi)).all()
    counts = np.histogram(ms, bins=7, range=(lo, hi))[0]
    assert counts.min() > 15  # every bin is drawn (uniform over bins, not over archs)


def test_constrained_sampling_narrow_range_and_bounds():
    s = build_space(SpaceConfig(name="cream"))
    lo, hi = s.macs_range()
    rng = np.random.default_rng(1)
    arch = s.sample_constrained(rng, lo, lo * 1.001, max_tries=20)  # found by the greedy repair
    assert lo <= s.macs(arch) <= lo * 1.001
    arch = s.sample_constrained(rng, 0, hi)
    assert s.macs(arch) <= hi
    with pytest.raises(ArchError, match=r"this space spans \[\d+\.\d+M MACs, \d+\.\d+M MACs\]"):
        s.sample_constrained(rng, hi + 1, 0)
    with pytest.raises(ArchError, match="spans"):
        s.sample_constrained(rng, 1, lo - 1)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


def _randomise_kernels(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Kernel transforms, offsets and own kernels away from their init (identity, zero, the
    centre), so that equality tests see them (BN: ``live_bn``)."""
    for name, p in module.named_parameters():
        if any(k in name for k in ("kernel_transforms", "kernel_offsets", "own_kernels")):
            p.data.add_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_subnet_equals_supernet_arch(key):
    torch.manual_seed(0)
    space = build_space(CONFIGS[key])
    sup = space.build_supernet()
    with torch.no_grad():
        _randomise_kernels(sup, torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(4):
        arch = space.sample(rng)
        live_bn(sup, lambda b: sup(b, arch), x)  # the path's BN statistics, its activations'
        sub = space.build_subnet(arch, sup).eval()
        assert all(m.affine for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d))
        with torch.no_grad():
            out = sup.eval()(x, arch)
            diff = (sub(x) - out).abs().max().item()
        assert follows_input(out) and diff <= 1e-6 * max(1.0, out.abs().max().item()), (arch, diff)


def test_subnet_from_scratch_uses_affine_bn_and_runs():
    for space in _SPACES.values():
        net = space.build_subnet(space.sample(np.random.default_rng(0)))
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(m.affine for m in bns)
        out = net(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_supernet_train_step_touches_only_its_arch(key):
    torch.manual_seed(0)
    space = build_space(CONFIGS[key])
    sup = space.build_supernet().train()
    rng = np.random.default_rng(3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    # Kernel transforms, offsets and own kernels run for some kernel sizes only (and beside own
    # kernels, the largest kernel for k = 7 only): left out here.
    own = {f"{n}.conv_dw.weight" for n, m in sup.named_modules() if getattr(m, "own_kernels", None) is not None}
    transforms = {id(p) for n, p in sup.named_parameters()
                  if n in own or any(k in n for k in ("kernel_transforms", "kernel_offsets", "own_kernels"))}
    for _ in range(2):
        arch = space.sample(rng)
        sup.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(sup(x, arch), y)
        loss.backward()
        with_grad = {id(p) for p in sup.parameters() if p.grad is not None}
        assert with_grad - transforms == {id(p) for p in sup.arch_parameters(arch)} - transforms
        assert torch.isfinite(loss)


def test_channel_search_slices_leading_channels():
    space = _SPACES["sposTrue"]
    sup = space.build_supernet().train()
    ops = (0,) * 20
    arch = (ops, (0,) * 20)  # scale 0.2: only the leading mid channels run
    sup(torch.randn(2, 3, 32, 32), arch).sum().backward()
    w = sup.blocks[1][0].conv_pw.weight  # stride-1 block, out 64: base mid 32, max 51, 0.2 -> 6
    assert w.shape[0] == 51
    assert w.grad[:6].abs().sum() > 0 and w.grad[6:].abs().sum() == 0


def test_supernet_holds_no_path_state():
    space = _SPACES["creamFalse"]
    sup = space.build_supernet().eval()
    rng = np.random.default_rng(0)
    a, b = space.sample(rng), space.sample(rng)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ya = sup(x, a)
        sup(x, b)
        assert torch.equal(ya, sup(x, a))


def test_cli_arch_info(capsys):
    from elastic_nas.cli import main

    assert main(["arch", "info", "--arch", "spos-323m"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["macs"] == 322918720 and info["params"] == 3558464 and info["arch"] == SPOS_323M
    assert main(["arch", "info", "--space", "cream", "--arch", "[[0],[3],[3,3],[9],[3],[3],[0]]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "op id must be in 0..5" in err


@pytest.mark.parametrize("key", ["spos-channel-entangled", "cream-entangled"])
def test_entangled_space_costs_every_arch_as_the_independent_one(key):
    """The cost model does not care how a supernet stores its weights."""
    entangled = build_space(CONFIGS[key])
    independent = build_space(dataclasses.replace(CONFIGS[key], weight_sharing="independent"))
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = entangled.sample(rng)
        assert (entangled.macs(arch), entangled.params(arch)) == (independent.macs(arch), independent.params(arch))
    assert entangled.macs_range() == independent.macs_range()


def test_entangled_cream_ops_share_one_kernel_and_the_leading_channels():
    space = build_space(CONFIGS["cream-entangled"])
    sup = space.build_supernet().train()
    position = sup.stages[1][0]
    assert sum(1 for _ in sup.stages[1][0].modules() if isinstance(_, torch.nn.Conv2d) and _.groups > 1) == 1
    assert position.conv_dw.kernel_size == (7, 7)
    arch = tuple((0,) * 1 for _ in range(5))  # every stage one k3e4 block
    sup(torch.randn(2, 3, 32, 32), arch).sum().backward()
    grad = position.conv_dw.weight.grad
    mid = make_divisible(position.in_chs * 4)  # expansion 4 of the allocated 6
    assert grad[:mid, :, 2:5, 2:5].abs().sum() > 0  # the centre 3x3 of the leading channels trained
    outside = torch.ones_like(grad, dtype=torch.bool)
    outside[:mid, :, 2:5, 2:5] = False  # all but the centre 3x3 of the leading channels
    assert grad[outside].abs().sum() == 0


_K3 = ((1,),) * 5  # cream: k3e6 everywhere
_SPOS_K3 = ((0,) * 20, (4,) * 20)  # spos (channel search): k3 everywhere, scale 1.0
_SPOS_LAST_4X4 = 16  # the last stage's first block: it strides from 4 x 4


@pytest.mark.parametrize("cfg, wasted, cut, reaching, smaller", [
    # the laptop Cream space: k7e6 everywhere, cut to k3e6 from stage 3 on; stage 2's first block
    # strides from 4 x 4, where its 5x5 kernel reaches pixels the 3x3 does not
    (dataclasses.replace(CONFIGS["cream-entangled"], stem_stride=2), ((5,),) * 5,
     ((5,), (5,), (5,), (1,), (1,)), ((1,), (1,), (3,), (1,), (1,)), _K3),
    # SPOS at 32 x 32: the last stage's blocks after the first run at 2 x 2; the Xception choice stays
    (CONFIGS["spos-channel-entangled"], ((2,) * 19 + (3,), (4,) * 20), ((2,) * 17 + (0, 0, 3), (4,) * 20),
     ((0,) * _SPOS_LAST_4X4 + (2, 0, 0, 0), (4,) * 20), _SPOS_K3),
], ids=["cream", "spos"])
def test_a_kernel_larger_than_its_feature_map_is_named_as_the_3x3_it_computes(cfg, wasted, cut, reaching, smaller):
    """At 32 x 32 the last stages run at 2 x 2 and 1 x 1: there a 5x5 or 7x7 depthwise kernel's
    outer taps meet only padding. The canonical arch (what the search scores and dedups) computes
    the same outputs at fewer MACs; where a kernel's taps all meet pixels it is left alone."""
    space = build_space(cfg)
    sup = space.build_supernet()
    x, rng, renamed = torch.randn(2, 3, 32, 32), np.random.default_rng(0), 0

    def out(arch):
        with torch.no_grad():
            return sup.eval()(x, arch)

    for _ in range(12):
        arch = space.sample(rng)
        canon = space.canonical(arch)
        assert space.canonical(canon) == canon
        if canon != arch:
            renamed += 1
            assert space.macs(canon) < space.macs(arch) and space.params(canon) < space.params(arch)
        live_bn(sup, lambda b: sup(b, arch), x)  # residual branches open, the path's statistics
        assert follows_input(out(arch)) and (out(arch) - out(canon)).abs().max().item() <= 1e-5, arch
    assert renamed >= 6
    assert space.canonical(wasted) == cut and space.canonical(reaching) == reaching
    live_bn(sup, lambda b: sup(b, reaching), x)
    assert (out(reaching) - out(smaller)).abs().max().item() > 1e-3


def _backward_per_kernel(key: str):
    """The supernet of ``CONFIGS[key]`` after a backward with every block k7e6, k5e6, then k3e6
    (yields it and the kernel size each time)."""
    sup = build_space(CONFIGS[key]).build_supernet().train()
    x = torch.randn(2, 3, 32, 32)
    for op, kernel in ((5, 7), (3, 5), (1, 3)):
        sup.zero_grad(set_to_none=True)
        sup(x, tuple((op,) for _ in range(5))).sum().backward()
        yield sup, kernel


def _trained(params) -> set[str]:
    return {name for name, p in params.items() if p.grad is not None}


def test_kernel_transforms_train_only_below_the_largest_kernel():
    used = {7: set(), 5: {"7to5"}, 3: {"7to5", "5to3"}}
    for sup, kernel in _backward_per_kernel("cream-entangled-transform"):
        assert _trained(sup.stages[2][0].kernel_transforms) == used[kernel]


def test_kernel_offsets_train_only_their_own_kernel():
    for sup, kernel in _backward_per_kernel("cream-entangled-offsets"):
        block = sup.stages[2][0]
        assert _trained(block.kernel_offsets) == ({f"k{kernel}"} if kernel < 7 else set())
        assert block.conv_dw.weight.grad is not None  # the shared kernel trains with every size


def test_own_kernels_train_apart_from_the_largest():
    for sup, kernel in _backward_per_kernel("cream-entangled-own"):
        block = sup.stages[0][0]
        assert _trained(block.own_kernels) == ({f"k{kernel}"} if kernel < 7 else set())
        # the 7x7 kernel trains only when k = 7 runs; a stage without own kernels stays entangled
        assert (block.conv_dw.weight.grad is not None) == (kernel == 7)
        assert sup.stages[2][0].own_kernels is None and sup.stages[2][0].conv_dw.weight.grad is not None
