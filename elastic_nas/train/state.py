"""Everything a training checkpoint restores, and the resume that picks the checkpoint.

:class:`TrainState` holds the model, the optimizer, the data sampler's cursor, the LR
policy, the step and sample counters, the history of restarts and reports, the RNG and
the strategy's own state; ``state_dict()`` is exactly what a checkpoint stores (plain
containers and tensors: it loads with ``weights_only=True``). No Ray in here: the worker
passes its storage filesystem and Ray's latest checkpoint to :meth:`TrainState.resume`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from elastic_nas.elastic.checkpoint import LoadedCheckpoint, partial_checkpoints, resolve_checkpoint
from elastic_nas.elastic.policy import ElasticLRPolicy, LRSettings
from elastic_nas.elastic.sampler import ElasticSampler, StepPlan
from elastic_nas.elastic.stream import StreamSampler
from elastic_nas.spaces.precision import Precision, plain_state_dict
from elastic_nas.train import distributed
from elastic_nas.train.step import make_optimizer


class TrainState:
    """Model, optimizer, sampler, LR policy, counters and history of one training run."""

    def __init__(self, task, optim, elastic, seed: int, device: torch.device | str = "cpu"):
        """``task``: a :class:`~elastic_nas.train.task.TrainTask`; ``optim``, ``elastic``: config sections."""
        self.task = task
        self.precision = Precision.of(optim, device)  # autocast, memory format, fp16's scaler
        self.model = self.precision.model(task.model.to(device))
        self.optimizer = make_optimizer(self.model, optim)
        num_train = len(task.train_split)
        store = getattr(task.train_split, "store", None)
        if getattr(store, "groups", None) is not None:  # streamed by row group: windows dealt to the ranks
            self.sampler = StreamSampler(store.groups[task.train_split.rows], seed, store.window)
        else:
            self.sampler = ElasticSampler(num_train, seed=seed)
        self.policy = ElasticLRPolicy(LRSettings.from_config(optim, elastic, num_train))
        self.total_samples = self.policy.settings.total_samples  # the LR schedule's end is the run's
        self.step = 0
        self.samples_seen = 0
        self.history: list[dict] = []
        self.optim = optim
        self.lr_scale = 1.0  # lowered by each rollback of the divergence guard
        self.skipped_steps = 0  # steps whose gradients were not finite, over the whole run
        self.rollbacks = 0
        self.bad_in_a_row = 0

    @property
    def done(self) -> bool:
        return self.samples_seen >= self.total_samples

    def lr(self) -> float:
        return self.policy.lr(self.step, self.samples_seen) * self.lr_scale

    def rollback_due(self, skipped: bool) -> bool:
        """Count a step of the divergence guard; True when the run must roll back now."""
        self.bad_in_a_row = self.bad_in_a_row + 1 if skipped else 0
        self.skipped_steps += skipped
        return 0 < self.optim.rollback_after_bad_steps <= self.bad_in_a_row

    def roll_back(self, fs, run_path: str) -> LoadedCheckpoint | None:
        """Back to the newest checkpoint (weights there are finite: bad steps never reach
        them) with the LR scaled down; without one, on from here at the lower LR.
        Collective, as :meth:`resume`."""
        if self.rollbacks >= self.optim.max_rollbacks:
            raise FloatingPointError(f"training diverged: {self.bad_in_a_row} steps in a row with non-finite "
                                     f"gradients after {self.rollbacks} rollback(s) (optim.max_rollbacks); "
                                     f"lower optim.lr or set optim.grad_clip")
        kept = (self.skipped_steps, self.rollbacks + 1, self.lr_scale * self.optim.rollback_lr_scale)
        loaded = resolve_checkpoint(run_path, self.task.fingerprint, fs=fs, missing_ok=True)
        if loaded is not None:
            self.load_state_dict(loaded.state)
        self.skipped_steps, self.rollbacks, self.lr_scale = kept
        self.bad_in_a_row = 0
        return loaded

    def read_ahead(self, rank: int) -> None:
        """Streamed data: start reading the row groups of this rank's next samples (the rest
        of its share of the current window and two row groups beyond)."""
        store = self.task.train_split.store
        if getattr(store, "prefetch", None) is not None:
            store.prefetch(self.task.train_split.rows[self.sampler.upcoming(rank, 2 * store.group_rows)])

    def advance(self, plan: StepPlan) -> None:
        """Count one optimizer step over ``plan``'s samples."""
        self.sampler.advance(plan)
        self.step += 1
        self.samples_seen += plan.num_real

    def record(self, event: str, world_size: int, global_batch: int, lr: float, **figures: float) -> None:
        """One history entry (restarts, reports, notices): what ``elastic_history.png`` draws.
        ``lr`` is the last step's (a report follows its step); ``figures`` adds e.g. loss."""
        self.history.append({"event": event, "step": self.step, "time": time.time(), "world_size": world_size,
                             "global_batch": global_batch, "lr": lr, "samples_seen": self.samples_seen,
                             "samples_per_s": 0.0, **figures})

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": plain_state_dict(self.model),  # fp32, plain layout: loads under any precision
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "policy": self.policy.state_dict(),
            "step": self.step,
            "samples_seen": self.samples_seen,
            "history": self.history,
            "lr_scale": self.lr_scale,
            "skipped_steps": self.skipped_steps,
            "rollbacks": self.rollbacks,
            "rng": {"torch": torch.get_rng_state()},  # augmentation draws from its own seeded generator
        }
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state()
        if self.precision.scaler is not None:
            state["scaler"] = self.precision.state_dict()
        extra = self.task.strategy.state_dict()
        if extra is not None:
            state["extra"] = extra
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.policy.load_state_dict(state["policy"])
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        self.history = list(state["history"])
        self.lr_scale = float(state.get("lr_scale", 1.0))  # checkpoints from before the guard: 1
        self.skipped_steps, self.rollbacks = int(state.get("skipped_steps", 0)), int(state.get("rollbacks", 0))
        self.precision.load_state_dict(state.get("scaler"))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        if "extra" in state:
            self.task.strategy.load_state_dict(state["extra"])

    def meta(self, reason: str, world_size: int) -> dict[str, Any]:
        """What ``meta.json`` says of a checkpoint of this state."""
        return {"kind": self.task.kind, "step": self.step, "epoch": self.sampler.epoch, "reason": reason,
                "fingerprint": self.task.fingerprint, "world_size": world_size, "time": time.time()}

    def resume(self, fs, run_path: str, latest: str | None) -> LoadedCheckpoint | None:
        """Load the newest valid checkpoint of the run: Ray's ``latest`` registered one or any
        newer complete one whose registration a hard kill cut short (every candidate is
        checksummed, so newest-first is safe). Without one, every rank takes rank 0's
        initial weights. Collective: every rank calls it."""
        loaded = resolve_checkpoint(run_path, self.task.fingerprint, fs=fs, newer=latest, missing_ok=True)
        if loaded is not None:
            self.load_state_dict(loaded.state)
        else:
            distributed.broadcast_params(self.model)  # same init everywhere, whatever each rank's seed did
        return loaded


def remove_partial_checkpoints(fs, loaded: LoadedCheckpoint) -> None:
    """Delete older checkpoint directories whose copy into storage a kill cut short."""
    try:
        for path in partial_checkpoints(fs, loaded.listed, loaded.path):
            fs.delete_dir(path)
            print(f"elastic-nas: removed {path}: its copy into storage never finished", flush=True)
    except Exception as e:  # storage trouble must not stop training; the directories stay
        print(f"elastic-nas: could not clean up partial checkpoints: {e}", file=sys.stderr, flush=True)


__all__ = ["TrainState", "remove_partial_checkpoints"]
