"""A thin Ray Tune ``Searcher`` over a generation-based candidate generator.

All search logic lives in :mod:`elastic_nas.search.evolution`; this class maps Tune trial
ids to candidates and enforces the generation barrier: ``suggest`` hands out the current
generation's candidates one per trial, returns ``None`` ("not now") while any of them
is still running, asks the generator for the next generation once all are scored, and
returns ``Searcher.FINISHED`` when the generator is done.

State (``get_state``/``save``) is built by hand: the generator's state (RNG, every
candidate with its score) plus which candidates are not yet suggested and which trial
runs which candidate. ``Tuner.restore(..., resume_unfinished=True)`` re-runs the
running trials under their old ids, so their results land where they belong.
"""

from __future__ import annotations

import json
import math
import time

from ray.tune.search import Searcher

from elastic_nas.io import atomic_write
from elastic_nas.search.evolution import _Generator, arch_key

STATE_VERSION = 1


class _Generation:
    """The candidates of the current generation: not yet suggested, and running (trial id -> key)."""

    def __init__(self, keys: list[str] | None = None, running: dict[str, str] | None = None):
        self.unsuggested = list(keys or [])
        self.running = dict(running or {})
        self.size = len(self.unsuggested) + len(self.running)
        self.started = time.monotonic()  # in this process: a restored generation counts from its restore

    def done(self) -> bool:
        return not self.unsuggested and not self.running


class GenerationSearcher(Searcher):
    """Tune searcher for :class:`~elastic_nas.search.evolution.EvolutionSearch` or ``RandomSearch``."""

    def __init__(self, generator: _Generator, metric: str = "accuracy", mode: str = "max"):
        if mode != "max":
            raise ValueError("the generators maximise their score; pass mode='max'")
        super().__init__(metric=metric, mode=mode)
        self.generator = generator
        self.current = _Generation()
        # on_generation(generator, candidates, seconds): a generation of that many candidates
        # was fully scored, that many seconds after it was handed out (in this process)
        self.on_generation = None

    # -- the Tune contract ------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        if not self.current.unsuggested:
            if self.current.running:
                return None  # generation barrier: parents need every score of this generation
            fresh = self.generator.next_generation()
            if fresh is None:
                return Searcher.FINISHED
            self.current = _Generation([c.key for c in fresh])
        key = self.current.unsuggested.pop(0)
        self.current.running[trial_id] = key
        cand = self.generator.candidates[key]
        return {"arch": json.loads(key), "macs": cand.macs, "params": cand.params,
                "generation": cand.generation}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self.current.running.pop(trial_id, None)
        if key is None:
            key = self._late_key(result)  # e.g. a resumed errored trial of an earlier generation
            if key is None:
                return
        score = None if error or not result else result.get(self.metric)
        if score is not None and isinstance(score, float) and math.isnan(score):
            score = None
        self.generator.tell(key, score)
        if self.current.done() and self.on_generation is not None:
            self.on_generation(self.generator, self.current.size, time.monotonic() - self.current.started)

    def _late_key(self, result: dict | None) -> str | None:
        config = (result or {}).get("config") or {}
        if "arch" not in config:
            return None
        key = arch_key(self.generator.encoder, config["arch"])
        return key if key in self.generator.candidates else None

    # -- state ------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "generator": self.generator.get_state(),
            "unsuggested": list(self.current.unsuggested),
            "running": dict(self.current.running),
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"searcher state version {state.get('version')}, expected {STATE_VERSION}")
        self.generator.set_state(state["generator"])
        self.current = _Generation(state["unsuggested"], state["running"])

    def save(self, checkpoint_path: str) -> None:
        """JSON, written atomically (a crash never leaves half a file)."""
        atomic_write(checkpoint_path, json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))


__all__ = ["GenerationSearcher"]
