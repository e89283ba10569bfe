"""Exactly-once order for streamed data: windows of row groups, dealt to the ranks.

A streamed dataset is read by row groups (a few hundred samples each, see ``data
convert``), so a global per-sample permutation, where every rank needs a sample of every
row group, would make each rank read the whole dataset each epoch. Instead, per
``(seed, epoch)`` the row groups are permuted and taken in windows of ``window`` row
groups. A window is *dealt* to the ranks of the current world: its samples, in row-group
order, are cut into one contiguous share per rank (so a rank reads about
``window / world`` row groups, and row groups cut between two ranks are read twice:
at most ``(1 + world / window)`` times the dataset per epoch), and each rank shuffles its
share. Every step, rank ``r`` takes its next samples from its own stream (its shares of
the windows, one after another); all ranks take the same count, so they step together.

On a resize, whatever was dealt but not consumed (the unread part of every window that
any rank had begun) is dealt again, in row-group order, to the new world, and the
untouched windows follow. So every sample of an epoch is trained exactly once for any
resize history, the order is a pure function of (seed, epoch, resize history), and the
ranks need no communication. The state is small: epoch, world, the windows begun, the
re-dealt remainder (at most about two windows) and one counter per rank.

:class:`StreamSampler` has :class:`~elastic_nas.elastic.sampler.ElasticSampler`'s
interface (``plan`` / ``advance`` / ``state_dict``) and returns the same
:class:`~elastic_nas.elastic.sampler.StepPlan`. Pure numpy.
"""

from __future__ import annotations

import math

import numpy as np

from elastic_nas.elastic.sampler import EpochCursor, StepPlan
from elastic_nas.errors import CheckpointError

_STATE_VERSION = 1


class StreamSampler(EpochCursor):
    """``groups[i]``: the row group of sample ``i`` (samples numbered in read order: by
    row group, then row). ``window``: row groups dealt at once."""

    def __init__(self, groups: np.ndarray, seed: int = 0, window: int = 16):
        groups = np.asarray(groups, dtype=np.int64)
        if len(groups) < 1:
            raise ValueError("a stream needs at least one sample")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.num_samples, self.seed, self.window = len(groups), int(seed), int(window)
        # Samples of each row group, in read order: group g is by_group[starts[g]:starts[g + 1]].
        self.group_ids, inverse = np.unique(groups, return_inverse=True)
        self.by_group = np.argsort(inverse, kind="stable").astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(inverse))]).astype(np.int64)
        self.num_windows = math.ceil(len(self.group_ids) / self.window)
        self.epoch = 0
        self.cursor = 0  # samples of the current epoch consumed
        self.padded_total = 0
        self.redeals = 0  # re-deals this epoch: they seed the shuffles, so the history fixes the order
        self._reset_deal(world=0)

    # -- the epoch's windows ---------------------------------------------------------
    def _group_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.group_ids))

    def _samples(self, groups: np.ndarray) -> np.ndarray:
        """The samples of ``groups``, in that order, each group's in read order."""
        return np.concatenate([self.by_group[self.starts[g]:self.starts[g + 1]] for g in groups])

    def _position_key(self, epoch: int) -> np.ndarray:
        """Each sample's position in the epoch's unshuffled read order (windows, groups, rows)."""
        key = np.empty(self.num_samples, np.int64)
        key[self._samples(self._group_order(epoch))] = np.arange(self.num_samples)
        return key

    # -- deals -------------------------------------------------------------------------
    def _reset_deal(self, world: int, leftover: np.ndarray | None = None, next_window: int = 0) -> None:
        self.world = world  # the world the current deals are for (0: none yet)
        self.leftover = np.empty(0, np.int64) if leftover is None else leftover  # re-dealt, in read order
        self.next_window = next_window  # first window of this deal sequence after the leftover
        self.consumed = [0] * world  # samples each rank took from its stream since the deal
        self._streams: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._deal_list: list[np.ndarray] | None = None

    def _deals(self) -> list[np.ndarray]:
        """The deals of the current sequence, in order: the leftover (if any), then the windows."""
        if self._deal_list is None:
            deals = [self.leftover] if len(self.leftover) else []
            order = self._group_order(self.epoch)
            for w in range(self.next_window, self.num_windows):
                deals.append(self._samples(order[w * self.window:(w + 1) * self.window]))
            self._deal_list = deals
        return self._deal_list

    def _stream(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """Rank ``rank``'s stream (its shuffled share of every deal, one after another) and
        where each deal's share starts in it (plus its end)."""
        if rank not in self._streams:
            shares = []
            for d, samples in enumerate(self._deals()):
                # Shares differ by one sample; rotating which ranks get the longer ones keeps
                # the streams within a sample or two of each other over an epoch.
                share = np.array_split(samples, self.world)[(rank + d) % self.world]
                rng = np.random.default_rng([self.seed, self.epoch, self.redeals, d, rank])
                shares.append(share[rng.permutation(len(share))])
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in shares])]).astype(np.int64)
            flat = np.concatenate(shares) if shares else np.empty(0, np.int64)
            self._streams[rank] = (flat, offsets)
        return self._streams[rank]

    def _redeal(self, world: int) -> None:
        """Deal everything dealt but not consumed again, in read order, to ``world`` ranks."""
        if self.world == 0:
            self._reset_deal(world)
            return
        # Deals some rank has begun: their unread samples (every rank's) are the leftover; a
        # re-dealt leftover counts as begun even before anyone read from it.
        begun = max(int(np.searchsorted(self._stream(r)[1][:-1], self.consumed[r], side="left"))
                    for r in range(self.world))
        has_leftover = len(self.leftover) > 0
        begun = max(begun, int(has_leftover))
        parts = [self._stream(r)[0][self.consumed[r]:self._stream(r)[1][begun]] for r in range(self.world)]
        leftover = np.concatenate(parts)
        leftover = leftover[np.argsort(self._position_key(self.epoch)[leftover], kind="stable")]
        self.redeals += 1
        self._reset_deal(world, leftover, self.next_window + begun - int(has_leftover))

    def upcoming(self, rank: int, ahead: int) -> np.ndarray:
        """What ``rank`` should read ahead: the rest of its share of the current deal (its
        order is shuffled, so it needs all of it) and the next ``ahead`` samples after it.
        Reading further ahead is wasted when a resize deals the rest again."""
        if not 0 <= rank < self.world:
            return np.empty(0, np.int64)
        flat, offsets = self._stream(rank)
        start = self.consumed[rank]
        end = offsets[min(len(offsets) - 1, int(np.searchsorted(offsets, start, side="right")))]
        return flat[start:end + ahead]

    def _take(self, rank: int, count: int) -> np.ndarray:
        flat, _ = self._stream(rank)
        return flat[self.consumed[rank]:self.consumed[rank] + count]

    # -- the ElasticSampler interface ----------------------------------------------------
    def plan(self, world_size: int, global_batch: int) -> StepPlan:
        """The next step for ``world_size`` ranks. A new world size re-deals the remainder
        first (deterministic, so planning again gives the same plan)."""
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        if world_size != self.world:
            self._redeal(world_size)
        base, extra = divmod(global_batch, world_size)
        taken = [self._take(r, base + (r < extra)) for r in range(world_size)]
        num_real = sum(len(t) for t in taken)
        if num_real == 0:
            raise ValueError(f"a global batch of {global_batch} leaves ranks of a world of {world_size} "
                             "without samples; use a global batch of at least the world size")
        shard_len = max(1, math.ceil(global_batch / world_size))
        real = np.concatenate(taken)
        table = np.empty((world_size, shard_len), np.int64)
        mask = np.zeros((world_size, shard_len), bool)
        for r, t in enumerate(taken):
            # Padding repeats this rank's own samples (no extra read), or the step's when it has none.
            pool = t if len(t) else real
            table[r] = np.concatenate([t, pool[np.arange(shard_len - len(t)) % len(pool)]])
            mask[r, :len(t)] = True
        return StepPlan(self.epoch, self.cursor, world_size, shard_len, num_real, table, mask)

    def advance(self, plan: StepPlan) -> None:
        if plan.epoch != self.epoch or plan.start != self.cursor or plan.world_size != self.world:
            raise ValueError(f"stale plan (made at epoch {plan.epoch}, cursor {plan.start}; "
                             f"sampler is at epoch {self.epoch}, cursor {self.cursor})")
        for r in range(plan.world_size):
            self.consumed[r] += plan.num_valid(r)
        self.cursor += plan.num_real
        self.padded_total += plan.num_padded
        if self.cursor >= self.num_samples:
            self.epoch += 1
            self.cursor = 0
            self.redeals = 0
            self._reset_deal(self.world)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        # Plain ints and lists: loadable with torch.load(weights_only=True).
        return {"version": _STATE_VERSION, "kind": "stream", "num_samples": self.num_samples, "seed": self.seed,
                "window": self.window, "epoch": self.epoch, "cursor": self.cursor,
                "padded_total": self.padded_total, "world": self.world, "redeals": self.redeals,
                "next_window": self.next_window, "leftover": self.leftover.tolist(), "consumed": list(self.consumed)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "stream":
            raise CheckpointError("the checkpoint's data order is for in-memory data, not a stream; "
                                  "resume with data.stream: false")
        for key, mine in (("num_samples", self.num_samples), ("seed", self.seed), ("window", self.window)):
            if int(state[key]) != mine:
                raise CheckpointError(f"stream state has {key}={int(state[key])} but this run has {key}={mine}; "
                                      "the checkpoint is from a different dataset, seed or window")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.padded_total = int(state.get("padded_total", 0))
        self.redeals = int(state["redeals"])
        self._reset_deal(int(state["world"]), np.asarray(state["leftover"], np.int64), int(state["next_window"]))
        self.consumed = [int(c) for c in state["consumed"]]


__all__ = ["StreamSampler"]
