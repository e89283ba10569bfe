"""Dynamic mini-batch SGD policy: batch split, LR scaling and ramp, schedule in samples."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastic_nas.config import ElasticConfig, OptimConfig
from elastic_nas.elastic.policy import ElasticLRPolicy, LRSettings, plan_batch, schedule_factor


def make_policy(kind="scale", ramp=8, **kw):
    args = dict(base_lr=0.1, reference_batch=128, per_worker_batch=64, global_batch=256,
                max_per_worker_batch=96, ramp_steps=ramp, schedule="constant",
                total_samples=1e6, warmup_samples=0)
    args.update(kw)
    return ElasticLRPolicy(LRSettings(kind, **args))


def test_settings_come_from_the_optim_and_elastic_sections():
    optim = OptimConfig(lr=0.2, reference_batch=128, epochs=3, warmup_epochs=0.5, schedule="linear")
    elastic = ElasticConfig(batch_policy="fixed", per_worker_batch=32, global_batch=96, max_per_worker_batch=48,
                            lr_ramp_steps=4)
    st = LRSettings.from_config(optim, elastic, num_train=1000)
    assert st == LRSettings("fixed", 0.2, 128, 32, 96, 48, 4, "linear", 3000, 500)


def test_scale_policy_keeps_worker_batch_and_scales_global():
    for k in (1, 2, 3, 8):
        p = plan_batch("scale", k, 64, 256, 96)
        assert (p.global_batch, p.per_worker_batch, p.accum_steps) == (64 * k, 64, 1)


def test_fixed_policy_keeps_global_batch_and_accumulates_above_cap():
    p = plan_batch("fixed", 1, 64, 256, 96)
    assert p.global_batch == 256 and p.per_worker_batch == 256
    assert p.accum_steps == 3 and p.micro_batch * p.accum_steps >= 256
    p = plan_batch("fixed", 4, 64, 256, 96)
    assert (p.per_worker_batch, p.accum_steps) == (64, 1)


def test_scale_lr_follows_linear_scaling_after_ramp():
    pol = make_policy()
    pol.on_world_size(0, 2)
    assert pol.lr(0, 0) == pytest.approx(0.1 * 128 / 128)
    pol.on_world_size(100, 4)  # k=2 -> k'=4: r=2, ramp over T*r = 16 steps
    assert pol.lr(100, 0) == pytest.approx(0.1)
    assert pol.lr(108, 0) == pytest.approx(0.15)
    assert pol.lr(116, 0) == pytest.approx(0.2)
    assert pol.lr(500, 0) == pytest.approx(0.2)


def test_scale_down_ramps_over_fewer_steps():
    pol = make_policy()
    pol.on_world_size(0, 4)
    pol.on_world_size(10, 2)  # r = 1/2: T*r = 4 steps
    assert pol.lr(10, 0) == pytest.approx(0.2)
    assert pol.lr(12, 0) == pytest.approx(0.15)
    assert pol.lr(14, 0) == pytest.approx(0.1)


def test_resize_mid_ramp_starts_from_current_lr():
    pol = make_policy()
    pol.on_world_size(0, 1)
    pol.on_world_size(0, 2)  # 0.05 -> 0.1 over 16 steps
    mid = pol.lr(8, 0)
    pol.on_world_size(8, 1)
    assert pol.lr(8, 0) == pytest.approx(mid)
    assert pol.lr(1000, 0) == pytest.approx(0.05)


def test_fixed_and_naive_never_change_lr():
    for kind in ("fixed", "naive"):
        pol = make_policy(kind)
        pol.on_world_size(0, 2)
        lr0 = pol.lr(0, 0)
        pol.on_world_size(50, 5)
        pol.on_world_size(90, 1)
        assert pol.lr(90, 0) == pytest.approx(lr0) and pol.lr(10_000, 0) == pytest.approx(lr0)


def test_restart_at_same_size_keeps_lr_and_state_roundtrips():
    pol = make_policy()
    pol.on_world_size(0, 2)
    pol.on_world_size(20, 3)
    state = pol.state_dict()
    again = make_policy()
    again.load_state_dict(state)
    again.on_world_size(25, 3)  # a restart after a crash at the same size
    for step in (25, 30, 40, 100):
        assert again.lr(step, 0) == pytest.approx(pol.lr(step, 0))


def test_schedule_is_written_in_samples():
    assert schedule_factor(0, 1000, 100, "cosine") == 0
    assert schedule_factor(50, 1000, 100, "cosine") == pytest.approx(0.5)
    assert schedule_factor(100, 1000, 100, "cosine") == pytest.approx(1.0)
    assert schedule_factor(550, 1000, 100, "cosine") == pytest.approx(0.5)
    assert schedule_factor(1000, 1000, 100, "linear") == pytest.approx(0.0)
    assert schedule_factor(5000, 1000, 0, "cosine") == pytest.approx(0.0)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 16), min_size=1, max_size=8), gap=st.integers(0, 40))
def test_lr_always_between_old_and_new_targets(sizes, gap):
    pol = make_policy()
    step = 0
    prev_target = None
    for k in sizes:
        before = pol.lr(step, 0) if prev_target is not None else None
        pol.on_world_size(step, k)
        target = 0.1 * 64 * k / 128
        for t in range(step, step + gap + 1):
            lr = pol.lr(t, 0)
            lo, hi = sorted([before if before is not None else target, target])
            assert lo - 1e-12 <= lr <= hi + 1e-12
        step += gap
        prev_target = target
    assert math.isclose(pol.lr(step + 10_000, 0), prev_target)
