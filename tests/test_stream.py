"""The streamed data order: every train sample of every epoch exactly once, for any resize
history; the same history gives the same batches; a checkpoint resumes the same stream; ranks
read few row groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elastic_nas.elastic.sampler import ElasticSampler
from elastic_nas.elastic.stream import StreamSampler


def make_groups(rng: np.random.Generator, n_groups: int, group_size: int, held_out: float) -> np.ndarray:
    """The row group of each train sample of a converted split with some rows held out
    (search_val): row groups of uneven train counts, some with none."""
    groups = np.repeat(np.arange(n_groups), group_size)
    keep = rng.random(len(groups)) >= held_out
    keep[0] = True
    return groups[keep]


def run_history(sampler: StreamSampler, history: list[tuple[int, int, int]], checkpoint_at: int | None = None):
    """Steps through ``history`` [(world, global batch, steps)...], round-tripping the state
    through a checkpoint (torch.save/load weights_only) at step ``checkpoint_at``.
    Returns each step's (epoch, per-rank real indices) until two epochs are done."""
    out, step = [], 0
    for world, batch, steps in history:
        for _ in range(steps):
            if sampler.epoch >= 2:
                return out
            if step == checkpoint_at:
                state = _roundtrip(sampler.state_dict())
                fresh = StreamSampler(sampler._groups_arg, sampler.seed, sampler.window)
                fresh._groups_arg = sampler._groups_arg
                fresh.load_state_dict(state)
                sampler = fresh
            plan = sampler.plan(world, batch)
            assert plan.indices(0).shape == (plan.shard_len,)
            out.append((plan.epoch, [plan.indices(r)[plan.valid(r)] for r in range(world)]))
            sampler.advance(plan)
            step += 1
    return out


def _roundtrip(state: dict) -> dict:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def sampler_for(groups: np.ndarray, seed: int, window: int) -> StreamSampler:
    s = StreamSampler(groups, seed, window)
    s._groups_arg = groups  # the test rebuilds it after a checkpoint
    return s


histories = st.lists(st.tuples(st.integers(1, 8), st.integers(8, 40), st.integers(1, 12)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(n_groups=st.integers(1, 30), group_size=st.integers(1, 20), window=st.integers(1, 6),
       held_out=st.floats(0, 0.5), seed=st.integers(0, 2 ** 16), history=histories,
       checkpoint_at=st.one_of(st.none(), st.integers(0, 40)))
def test_every_sample_once_per_epoch_for_any_resize_history(n_groups, group_size, window, held_out, seed,
                                                            history, checkpoint_at):
    groups = make_groups(np.random.default_rng(seed), n_groups, group_size, held_out)
    n = len(groups)
    # Run the history, then stay at its last world until two whole epochs are done.
    last_world, last_batch, _ = history[-1]
    total = sum(min(n, b) * s for _, b, s in history)
    history = history + [(last_world, last_batch, 2 * n + total)]
    steps = run_history(sampler_for(groups, seed, window), history, checkpoint_at)
    by_epoch: dict[int, list[int]] = {}
    for epoch, per_rank in steps:
        for real in per_rank:
            by_epoch.setdefault(epoch, []).extend(real.tolist())
    for epoch in (0, 1):
        seen = sorted(by_epoch[epoch])
        assert seen == list(range(n)), f"epoch {epoch}: not every sample exactly once"
    # The same history gives the same batches, with or without a checkpoint in between.
    again = run_history(sampler_for(groups, seed, window), history, None)
    assert len(again) == len(steps)
    for (e1, a), (e2, b) in zip(steps, again):
        assert e1 == e2 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_ranks_read_few_row_groups_and_epochs_differ():
    groups = np.repeat(np.arange(64), 32)  # 64 row groups of 32
    sampler = StreamSampler(groups, seed=3, window=16)
    world, batch = 4, 64
    read = [set() for _ in range(world)]
    first_epoch = []
    while sampler.epoch == 0:
        plan = sampler.plan(world, batch)
        for r in range(world):
            real = plan.indices(r)[plan.valid(r)]
            read[r].update(groups[real].tolist())
            first_epoch.extend(real.tolist())
        sampler.advance(plan)
    # Each rank reads about a quarter of the row groups, plus the ones cut between two ranks.
    total_reads = sum(len(r) for r in read)
    assert total_reads <= 64 * (1 + world / 16) + world
    second = []
    while sampler.epoch == 1:
        plan = sampler.plan(world, batch)
        second.extend(np.concatenate([plan.indices(r)[plan.valid(r)] for r in range(world)]).tolist())
        sampler.advance(plan)
    assert sorted(second) == sorted(first_epoch) and second != first_epoch


def test_a_resize_redeals_only_the_remainder():
    groups = np.repeat(np.arange(40), 10)
    a = StreamSampler(groups, seed=0, window=8)
    for _ in range(3):  # windows of 80 samples, 20 per rank: 30 read per rank reach into window 1
        a.advance(a.plan(4, 40))
    plan = a.plan(2, 40)  # the resize: the unread part of windows 0 and 1 is dealt again
    assert a.redeals == 1 and len(a.leftover) == 2 * 80 - 3 * 40 and a.next_window == 2
    assert plan.num_real == 40 and set(plan.indices(0)).isdisjoint(plan.indices(1))
    with pytest.raises(ValueError, match="stale plan"):
        a.advance(StreamSampler(groups, seed=0, window=8).plan(2, 40))


def test_a_state_for_another_dataset_is_refused():
    from elastic_nas.errors import CheckpointError

    state = StreamSampler(np.repeat(np.arange(5), 4), seed=0, window=2).state_dict()
    with pytest.raises(CheckpointError, match="num_samples"):
        StreamSampler(np.repeat(np.arange(6), 4), seed=0, window=2).load_state_dict(state)
    with pytest.raises(CheckpointError, match="in-memory"):
        StreamSampler(np.repeat(np.arange(5), 4)).load_state_dict(ElasticSampler(20).state_dict())
    with pytest.raises(CheckpointError, match="data.stream: true"):
        ElasticSampler(20).load_state_dict(StreamSampler(np.repeat(np.arange(5), 4)).state_dict())
