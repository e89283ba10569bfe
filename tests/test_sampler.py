"""ElasticSampler: every sample of every epoch exactly once, whatever the world size does."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elastic_nas.elastic.sampler import ElasticSampler
from elastic_nas.errors import CheckpointError


def _run_step(sampler: ElasticSampler, world_size: int, batch: int, seen: dict[int, list[int]]) -> int:
    plan = sampler.plan(world_size, batch)
    for rank in range(world_size):
        idx, valid = plan.indices(rank), plan.valid(rank)
        assert len(idx) == len(valid) == plan.shard_len
        seen.setdefault(plan.epoch, []).extend(idx[valid].tolist())
    sampler.advance(plan)
    return plan.num_padded


def test_plan_is_pure_and_deterministic():
    a, b = ElasticSampler(100, seed=3), ElasticSampler(100, seed=3)
    p1, p2 = a.plan(4, 32), a.plan(4, 32)
    assert a.cursor == 0 and a.epoch == 0
    for r in range(4):
        np.testing.assert_array_equal(p1.indices(r), p2.indices(r))
        np.testing.assert_array_equal(p1.indices(r), b.plan(4, 32).indices(r))
    assert not np.array_equal(a.permutation(0), ElasticSampler(100, seed=4).permutation(0))


def test_epochs_differ_and_boundary_is_not_crossed():
    s = ElasticSampler(10, seed=0)
    assert not np.array_equal(s.permutation(0), s.permutation(1))
    s.advance(s.plan(2, 8))
    plan = s.plan(2, 8)  # only 2 left in epoch 0
    assert plan.num_real == 2 and plan.epoch == 0
    s.advance(plan)
    assert (s.epoch, s.cursor) == (1, 0)


def test_shards_equal_length_with_explicit_padding():
    s = ElasticSampler(9, seed=1)
    plan = s.plan(8, 9)  # 9 real over 8 ranks: shard_len 2, 7 padded
    assert plan.shard_len == 2 and plan.num_real == 9 and plan.num_padded == 7
    lens = {len(plan.indices(r)) for r in range(8)}
    assert lens == {2}
    assert sum(plan.num_valid(r) for r in range(8)) == 9
    # Strided: every rank has at least one real sample here.
    assert all(plan.num_valid(r) >= 1 for r in range(8))
    # Padding repeats real samples of the same step.
    real = set(np.concatenate([plan.indices(r)[plan.valid(r)] for r in range(8)]).tolist())
    pads = set(np.concatenate([plan.indices(r)[~plan.valid(r)] for r in range(8)]).tolist())
    assert pads <= real
    s.advance(plan)
    assert s.padded_total == 7


def test_rank_with_nothing_real_still_gets_items():
    plan = ElasticSampler(3, seed=0).plan(5, 3)
    assert plan.shard_len == 1
    assert plan.num_valid(4) == 0 and len(plan.indices(4)) == 1


def test_stale_plan_rejected():
    s = ElasticSampler(50)
    plan = s.plan(2, 10)
    s.advance(plan)
    with pytest.raises(ValueError, match="stale"):
        s.advance(plan)


def test_state_dict_roundtrip_weights_only(tmp_path):
    s = ElasticSampler(50, seed=7)
    for _ in range(3):
        s.advance(s.plan(3, 7))
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    t = ElasticSampler(50, seed=7)
    t.load_state_dict(state)
    assert (t.epoch, t.cursor, t.padded_total) == (s.epoch, s.cursor, s.padded_total)
    np.testing.assert_array_equal(t.plan(2, 5).indices(1), s.plan(2, 5).indices(1))


def test_state_dict_mismatch_is_clear():
    state = ElasticSampler(50, seed=7).state_dict()
    with pytest.raises(CheckpointError, match="num_samples=50"):
        ElasticSampler(60, seed=7).load_state_dict(state)
    with pytest.raises(CheckpointError, match="seed=7"):
        ElasticSampler(50, seed=8).load_state_dict(state)


def test_no_shuffle_is_identity():
    s = ElasticSampler(6, shuffle=False)
    plan = s.plan(1, 6)
    np.testing.assert_array_equal(plan.indices(0), np.arange(6))


_schedule = st.lists(
    st.tuples(st.integers(1, 8), st.integers(1, 40), st.integers(1, 6)),  # world, batch, steps
    min_size=1, max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(num_samples=st.integers(1, 120), seed=st.integers(0, 2**31), schedule=_schedule)
def test_exactly_once_across_resizes(num_samples, seed, schedule):
    sampler = ElasticSampler(num_samples, seed=seed)
    seen: dict[int, list[int]] = {}
    padded = 0
    expect_padded = 0
    for world, batch, steps in schedule:
        # A resize is a restart: state goes through a checkpoint into a fresh sampler.
        fresh = ElasticSampler(num_samples, seed=seed)
        fresh.load_state_dict(dict(sampler.state_dict()))
        sampler = fresh
        for _ in range(steps):
            n = min(batch, sampler.remaining)
            expect_padded += math.ceil(n / world) * world - n
            padded += _run_step(sampler, world, batch, seen)
    assert padded == expect_padded == sampler.padded_total
    for epoch, ids in seen.items():
        complete = epoch < sampler.epoch
        counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=num_samples)
        assert counts.max() <= 1, f"epoch {epoch}: a sample consumed twice"
        if complete:
            assert counts.min() == 1, f"epoch {epoch}: a sample never consumed"
        else:
            assert counts.sum() == sampler.cursor
    assert sampler.samples_seen == sum(len(v) for v in seen.values())
