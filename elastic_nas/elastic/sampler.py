"""Exactly-once data order across world-size changes.

The order of an epoch is a permutation fixed by ``(seed, epoch)``. A single global
cursor counts the samples of the current epoch already consumed, so the position in
the data does not depend on how many workers consumed it: after a restart with a
different world size, the next step simply slices the permutation from the cursor
across the new ranks. Pure numpy; the cursor and epoch are all a checkpoint needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from elastic_nas.errors import CheckpointError

_STATE_VERSION = 1


@dataclass(frozen=True)
class StepPlan:
    """One global step: ``num_real`` samples split over ``world_size`` equal shards.

    Rank ``r`` gets every ``world_size``-th sample starting at ``r`` (strided, so the
    real samples are spread evenly). Shards are padded to ``shard_len`` with repeats of
    real samples; ``valid(rank)`` is False on the padding, which must not count towards
    the loss or metrics. Every rank gets ``shard_len`` items, even one with nothing real,
    so all ranks run the same collective ops.
    """

    epoch: int
    start: int  # cursor of the epoch when the plan was made
    world_size: int
    shard_len: int
    num_real: int
    _table: np.ndarray  # [world_size, shard_len] dataset indices
    _mask: np.ndarray  # [world_size, shard_len] True = real sample

    @property
    def num_padded(self) -> int:
        return self.world_size * self.shard_len - self.num_real

    def indices(self, rank: int) -> np.ndarray:
        self._check_rank(rank)
        return self._table[rank].copy()

    def valid(self, rank: int) -> np.ndarray:
        self._check_rank(rank)
        return self._mask[rank].copy()

    def num_valid(self, rank: int) -> int:
        self._check_rank(rank)
        return int(self._mask[rank].sum())

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} out of range for world_size {self.world_size}")


class EpochCursor:
    """Where a sampler is: ``epoch`` and ``cursor`` (samples of it consumed) of ``num_samples``."""

    num_samples: int
    epoch: int
    cursor: int

    @property
    def remaining(self) -> int:
        """Samples left in the current epoch."""
        return self.num_samples - self.cursor

    @property
    def samples_seen(self) -> int:
        """Real samples consumed since the start, over all epochs."""
        return self.epoch * self.num_samples + self.cursor


class ElasticSampler(EpochCursor):
    """Deterministic, resumable, world-size-independent sample order.

    ``plan`` is pure; ``advance`` commits a plan. An epoch boundary ends a step early
    (the last step of an epoch may be short) so one step never mixes two epochs.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.cursor = 0  # samples of the current epoch already consumed
        self.padded_total = 0  # padding items ever issued (for accounting)
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """The dataset order of ``epoch`` (cached for the current one)."""
        if epoch == self._perm_epoch:
            return self._perm
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        else:
            perm = np.arange(self.num_samples)
        self._perm_epoch, self._perm = epoch, perm.astype(np.int64)
        return self._perm

    def plan(self, world_size: int, global_batch: int) -> StepPlan:
        """The next step for ``world_size`` ranks, without advancing."""
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        n = min(global_batch, self.remaining)
        chunk = self.permutation(self.epoch)[self.cursor:self.cursor + n]
        shard_len = math.ceil(n / world_size)
        slots = shard_len * world_size
        # Pad with repeats of this step's own real samples (cyclic), never other data.
        flat = np.concatenate([chunk, chunk[np.arange(slots - n) % n]])
        mask = np.arange(slots) < n
        # Row-major (shard_len, world_size) then transpose: rank r gets flat[r::world_size].
        table = np.ascontiguousarray(flat.reshape(shard_len, world_size).T)
        mask = np.ascontiguousarray(mask.reshape(shard_len, world_size).T)
        return StepPlan(self.epoch, self.cursor, world_size, shard_len, n, table, mask)

    def advance(self, plan: StepPlan) -> None:
        """Commit ``plan``: its real samples count as consumed."""
        if plan.epoch != self.epoch or plan.start != self.cursor:
            raise ValueError(
                f"stale plan (made at epoch {plan.epoch}, cursor {plan.start}; "
                f"sampler is at epoch {self.epoch}, cursor {self.cursor})"
            )
        self.cursor += plan.num_real
        self.padded_total += plan.num_padded
        if self.cursor >= self.num_samples:
            self.epoch += 1
            self.cursor = 0

    def state_dict(self) -> dict[str, int]:
        # Plain ints only: loadable with torch.load(weights_only=True).
        return {
            "version": _STATE_VERSION,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "shuffle": int(self.shuffle),
            "epoch": self.epoch,
            "cursor": self.cursor,
            "padded_total": self.padded_total,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("kind") == "stream":
            raise CheckpointError("the checkpoint's data order is a stream of row groups; resume with data.stream: true")
        missing = {"num_samples", "seed", "shuffle", "epoch", "cursor"} - set(state)
        if missing:
            raise CheckpointError(f"sampler state is missing {sorted(missing)}")
        if int(state.get("version", 1)) != _STATE_VERSION:
            raise CheckpointError(f"sampler state version {state['version']} is not {_STATE_VERSION}")
        for key, mine in (("num_samples", self.num_samples), ("seed", self.seed),
                          ("shuffle", int(self.shuffle))):
            if int(state[key]) != mine:
                raise CheckpointError(
                    f"sampler state has {key}={int(state[key])} but this run has {key}={mine}; "
                    "the checkpoint is from a different dataset or seed"
                )
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        if epoch < 0 or not 0 <= cursor < self.num_samples:
            raise CheckpointError(f"sampler state has impossible epoch {epoch} / cursor {cursor}")
        self.epoch, self.cursor = epoch, cursor
        self.padded_total = int(state.get("padded_total", 0))


__all__ = ["ElasticSampler", "EpochCursor", "StepPlan"]
