"""Batch/LR policy for world-size changes (Dynamic mini-batch SGD, Lin et al. 2019).

Pure functions and a small state object; no torch, no Ray, so they are unit-tested alone.

The learning rate at a step is::

    lr = base_lr * batch_mult * schedule(samples_seen)

* ``schedule`` (warm-up, then cosine/linear decay) is written in samples seen, so it
  does not change shape when the global batch does.
* ``batch_mult`` is the linear-scaling factor ``global_batch / reference_batch``. Under
  the ``scale`` policy a resize from k to k' workers changes it by r = k'/k; it then
  moves there linearly over ``T * r`` steps instead of jumping, which is what keeps the
  momentum buffer (kept across the resize) from blowing up (Lin et al., Sec. 3).
* Under ``fixed`` the global batch is constant, so ``batch_mult`` never changes; each
  worker takes ``B / k'`` and accumulates gradients above a per-worker cap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step is split at a given world size."""

    world_size: int
    global_batch: int  # samples per optimizer step, all workers together
    per_worker_batch: int  # samples per worker per optimizer step (before padding)
    accum_steps: int  # micro-batches per optimizer step on each worker
    micro_batch: int  # samples per micro-batch


def plan_batch(
    policy: str,
    world_size: int,
    per_worker_batch: int,
    global_batch: int,
    max_per_worker_batch: int,
) -> BatchPlan:
    """The global batch and its split for ``world_size`` workers under ``policy``."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if policy in ("scale", "naive"):
        b = per_worker_batch
        return BatchPlan(world_size, b * world_size, b, 1, b)
    if policy == "fixed":
        b = math.ceil(global_batch / world_size)
        accum = math.ceil(b / max_per_worker_batch)
        return BatchPlan(world_size, global_batch, b, accum, math.ceil(b / accum))
    raise ValueError(f"unknown batch policy {policy!r}")


def schedule_factor(samples_seen: float, total_samples: float, warmup_samples: float, kind: str) -> float:
    """LR schedule in [0, 1], a function of samples seen (not steps)."""
    if warmup_samples > 0 and samples_seen < warmup_samples:
        return samples_seen / warmup_samples
    if kind == "constant":
        return 1.0
    span = max(total_samples - warmup_samples, 1.0)
    t = min(max((samples_seen - warmup_samples) / span, 0.0), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "linear":
        return 1.0 - t
    raise ValueError(f"unknown schedule {kind!r}")


@dataclass
class LRRamp:
    """The batch multiplier and its ramp towards a new target after a resize.

    Stored in checkpoints, so a resize during a ramp continues from the current value.
    """

    start_step: int = 0
    from_mult: float = 0.0
    to_mult: float = 0.0
    length: int = 0  # steps; 0 = no ramp (already at to_mult)

    def mult(self, step: int) -> float:
        if self.length <= 0 or step >= self.start_step + self.length:
            return self.to_mult
        frac = max(step - self.start_step, 0) / self.length
        return self.from_mult + (self.to_mult - self.from_mult) * frac

    def retarget(self, step: int, new_mult: float, ramp_steps: int, r: float) -> None:
        """Aim at ``new_mult`` from wherever the multiplier is at ``step``.

        The ramp lasts ``ramp_steps * r`` steps (r = k'/k), at least one step.
        """
        current = self.mult(step)
        if self.to_mult == 0.0:  # first start: nothing to ramp from
            self.start_step, self.from_mult, self.to_mult, self.length = step, new_mult, new_mult, 0
            return
        if math.isclose(new_mult, self.to_mult):
            return  # same target (a restart at the same size): keep any ramp in progress
        self.start_step = step
        self.from_mult = current
        self.to_mult = new_mult
        self.length = max(1, round(ramp_steps * r))

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.start_step = int(state["start_step"])
        self.from_mult = float(state["from_mult"])
        self.to_mult = float(state["to_mult"])
        self.length = int(state["length"])


@dataclass(frozen=True)
class LRSettings:
    """What the policy needs of a job config: the ``optim`` and ``elastic`` sections plus
    the train split's size (the schedule is written in samples)."""

    policy: str  # scale | fixed | naive (elastic.batch_policy)
    base_lr: float  # at reference_batch
    reference_batch: int
    per_worker_batch: int  # scale / naive
    global_batch: int  # fixed
    max_per_worker_batch: int  # fixed: accumulate above this
    ramp_steps: int  # T of the T*r ramp
    schedule: str  # cosine | linear | constant
    total_samples: float
    warmup_samples: float

    @classmethod
    def from_config(cls, optim, elastic, num_train: int) -> LRSettings:
        """From ``OptimConfig`` and ``ElasticConfig`` sections (any objects with their fields)."""
        return cls(elastic.batch_policy, optim.lr, optim.reference_batch, elastic.per_worker_batch,
                   elastic.global_batch, elastic.max_per_worker_batch, elastic.lr_ramp_steps, optim.schedule,
                   run_samples(optim, num_train), optim.warmup_epochs * num_train)


def run_samples(optim, num_train: int) -> float:
    """A run's length in samples: where the LR schedule ends and the strategies' schedules count to."""
    return optim.epochs * num_train


class ElasticLRPolicy:
    """Learning rate and batch split for the current world size.

    ``on_world_size(step, k)`` is called once after every (re)start; it rescales the
    global batch and starts the LR ramp when the size differs from the last one.
    ``naive`` is ``scale`` without LR rescaling: the contrast baseline of the benchmarks.
    """

    def __init__(self, settings: LRSettings):
        self.settings = settings
        self.ramp = LRRamp()
        self.world_size = 0  # last world size seen; 0 before the first start
        self.plan: BatchPlan | None = None

    def on_world_size(self, step: int, world_size: int) -> BatchPlan:
        st = self.settings
        self.plan = plan_batch(st.policy, world_size, st.per_worker_batch, st.global_batch, st.max_per_worker_batch)
        if st.policy == "naive":
            # Keep the LR of the size the run started with: the contrast baseline.
            new_mult = self.ramp.to_mult or self.plan.global_batch / st.reference_batch
        else:
            new_mult = self.plan.global_batch / st.reference_batch
        r = world_size / self.world_size if self.world_size else 1.0
        self.ramp.retarget(step, new_mult, st.ramp_steps, r)
        self.world_size = world_size
        return self.plan

    def lr(self, step: int, samples_seen: float) -> float:
        st = self.settings
        return st.base_lr * self.ramp.mult(step) * schedule_factor(
            samples_seen, st.total_samples, st.warmup_samples, st.schedule
        )

    def state_dict(self) -> dict:
        return {"ramp": self.ramp.state_dict(), "world_size": self.world_size, "policy": self.settings.policy}

    def load_state_dict(self, state: dict) -> None:
        self.ramp.load_state_dict(state["ramp"])
        self.world_size = int(state["world_size"])
