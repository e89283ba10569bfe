"""A thin Ray Tune ``Searcher`` over a generation-based candidate generator.

All search logic lives in :mod:`elastic_nas.search.evolution`; this class maps Tune trials
to candidates and enforces the generation barrier: ``suggest`` hands out the current
generation's candidates, a batch per trial, returns ``None`` ("not now") while any of them
is still running, asks the generator for the next generation once all are scored (as the
last batch's report arrives, before its trial ends: Tune then reuses that trial's evaluator
for the next generation instead of starting a new one), and returns ``Searcher.FINISHED``
when the generator is done.

With ``early_start``, an evaluator slot that frees up at the barrier starts the next
generation early, a candidate at a time: the generator proposes it as if the last running
candidates' scores left the parents as they are, and once those scores arrive it either stands
(the generation the barrier would have given: always for random search, for evolution unless a
last candidate entered the top k) or is withdrawn (its trials' reports are ignored, the
generation is proposed anew), so the search is the same as with a plain barrier, its slots no
longer idle through another's last candidate (on 2 slots no faster: the barrier's wait comes
back as the search's tail, and evolution withdraws often). Otherwise, or where nothing is left
to start early, with 3+ evaluator slots the slot gets a hold trial instead of "not now", so
Tune keeps its actor too (:mod:`.barrier`).

A trial evaluates a batch of ``candidates_per_trial`` candidates (fewer as the generation
drains, so no evaluator slot idles through another's last full batch) and reports the batch
once, every candidate's result in it, so Tune's per-trial bookkeeping (trial start, result
handling, state saves, the evaluator's wait for the driver after a report) is paid once per
batch. Each candidate is told to the generator as the batch arrives; a killed evaluator's
trial is retried by Tune and redoes its batch (same scores: the evaluation is deterministic),
and a candidate its trial never reported counts as failed.

With ``candidates_per_trial`` 0 the batch is sized where the candidates run, not on the
driver's machine: the first trials score one candidate per evaluator slot, and the first
evaluation time reported sets a batch of about ``trial_seconds`` (saved with the state).

State (``get_state``/``save``) is built by hand: the generator's state (RNG, every
candidate with its score) plus which candidates are not yet suggested and which trial
runs which batch. ``Tuner.restore(..., resume_unfinished=True)`` re-runs the running
trials under their old ids, so their results land where they belong.

Tune saves its trial table first and the searcher after it, so a driver killed between
the two would leave a trial finished in the table but running in the searcher, and the
generation barrier would wait for it forever. Hence the searcher saves itself again as soon
as a trial completes (before Tune's next table), and a restored batch whose candidates are
all scored no longer counts as running (if Tune does re-run it, its reports are told again,
with the same scores). Tune then copies the saved files to the search's folder one at a time
(:mod:`.saves` keeps them whole), so a driver killed mid-copy can still leave the table ahead
of the searcher: a restore tells the searcher the last report of every batch the table lists as
finished.
"""

from __future__ import annotations

import json
import math
import os
import time

from ray.tune.search import Searcher

from elastic_nas.io import atomic_write
from elastic_nas.search import barrier, saves
from elastic_nas.search.evaluator import candidate_results
from elastic_nas.search.evolution import _Generator, arch_key

STATE_VERSION = 2
TRIAL_SECONDS = 10.0  # a sized batch lasts about this long; a trial switch costs ~30 ms (search_speed.py)


class _Generation:
    """The candidates of the current generation: not yet suggested, and running (trial id -> keys)."""

    def __init__(self, number: int, proposal: int, keys: list[str] | None = None,
                 running: dict[str, list[str]] | None = None):
        self.number = number
        self.proposal = proposal  # the searcher's count of proposed generations: a withdrawn one's is lower
        self.unsuggested = list(keys or [])
        self.running = {trial: list(batch) for trial, batch in (running or {}).items()}
        self.trials: set[str] = set()  # (an early generation) every trial handed a candidate of it, finished too
        self.size = len(self.unsuggested) + sum(len(b) for b in self.running.values())
        self.started = time.monotonic()  # in this process: a restored generation counts from its restore

    def done(self) -> bool:
        return not self.unsuggested and not self.running


class GenerationSearcher(Searcher):
    """Tune searcher for :class:`~elastic_nas.search.evolution.EvolutionSearch` or ``RandomSearch``.

    ``candidates_per_trial``: the batch a trial evaluates at most (0: sized from the first
    reported evaluation time to last about ``trial_seconds``); ``slots``: the evaluators that
    run at once, so a generation is split into at least that many batches (0: none yet, an
    autoscaler adds them for the pending trials). ``metric`` / ``mode``: the reported value
    that orders the candidates, "accuracy" / "max" or "loss" / "min". ``early_start``: idle
    slots at the barrier start the next generation (False: they wait).
    """

    def __init__(self, generator: _Generator, metric: str = "accuracy", mode: str = "max",
                 candidates_per_trial: int = 1, slots: int = 1, trial_seconds: float = TRIAL_SECONDS,
                 early_start: bool = False):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        super().__init__(metric=metric, mode=mode)
        self.generator = generator
        self.candidates_per_trial = max(0, candidates_per_trial)
        self.slots = max(0, slots)
        self.trial_seconds = trial_seconds
        self.early_start = early_start
        self.current = _Generation(-1, 0)
        self._proposals = 0  # generations proposed, withdrawn ones included (saved: a resume counts on)
        self.early: _Generation | None = None  # the next generation, started at the barrier
        self._no_early = False  # the generator had no generation to start early at this barrier
        self._withdrawn: set[str] = set()  # trials of a withdrawn early generation: reports ignored
        self._state_path = ""  # where Tune last saved this searcher
        self._holds: set[str] = set()  # hold trials: evaluators waiting out the barrier (barrier.py)
        self._lifts = 0  # barriers lifted in this process
        # on_generation(generator, generation, candidates, seconds): that generation, of that many
        # candidates, was fully scored, that many seconds after it was handed out (in this process)
        self.on_generation = None

    # -- the Tune contract ------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        if not self.current.unsuggested:
            if self.current.running:  # generation barrier: parents need every score of this generation
                return self._early_candidate(trial_id) or self._hold(trial_id)
            fresh = self.generator.next_generation()
            if fresh is None:
                return Searcher.FINISHED
            self.current = self._proposed(fresh)
        per_trial = self.candidates_per_trial
        if not per_trial:  # not sized yet: one candidate per slot until the first evaluation time arrives
            if self.slots and len(self.current.running) >= self.slots:
                return None  # (with no slot yet, every candidate is pending demand for the autoscaler)
            per_trial = 1
        # Batches shrink as the generation drains (guided self-scheduling), so the evaluators
        # reach the generation barrier nearly together instead of one waiting out a full batch.
        per_trial = min(per_trial, math.ceil(len(self.current.unsuggested) / max(1, self.slots)))
        batch, self.current.unsuggested = self.current.unsuggested[:per_trial], self.current.unsuggested[per_trial:]
        self.current.running[trial_id] = batch
        return {"candidates": [self._candidate(key, self.current.proposal) for key in batch]}

    def _busy_slots(self) -> int:
        return len(self.current.running) + len(self.early.running if self.early else ()) + len(self._holds)

    def _early_candidate(self, trial_id: str) -> dict | None:
        """At the barrier, one candidate of the next generation for an evaluator slot that would
        idle (one: a withdrawn trial wastes one evaluation at most; only for an idle slot: Tune asks
        for trials to queue, and queued ones would miss the generation's batching once it stands)."""
        if not self.early_start or self._no_early or self._busy_slots() >= self.slots:
            return None
        if self.early is None:
            fresh = self.generator.start_early()
            if fresh is None:
                self._no_early = True
                return None
            self.early = self._proposed(fresh)
        if not self.early.unsuggested:
            return None
        key = self.early.unsuggested.pop(0)
        self.early.running[trial_id] = [key]
        self.early.trials.add(trial_id)
        return {"candidates": [self._candidate(key, self.early.proposal)]}

    def _hold(self, trial_id: str) -> dict | None:
        """At the barrier, a hold trial for an evaluator slot that would idle (else None: "not now"),
        so Tune keeps its actor for the next generation instead of stopping it."""
        if self.slots < barrier.HOLD_FROM_SLOTS or self._busy_slots() >= self.slots:
            return None
        config = barrier.hold_config(self._lifts)
        if config is not None:
            self._holds.add(trial_id)
        return config

    def _proposed(self, fresh: list) -> _Generation:
        self._proposals += 1
        return _Generation(self.generator.generation, self._proposals, [c.key for c in fresh])

    def _candidate(self, key: str, proposal: int) -> dict:
        cand = self.generator.candidates[key]
        return {"arch": json.loads(key), "macs": cand.macs, "params": cand.params, "latency_ms": cand.latency_ms,
                "generation": cand.generation, "proposal": proposal}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """The trial's batch is scored: tell the generator each candidate's score."""
        if trial_id in self._withdrawn:
            return
        scored = candidate_results(result)
        for cand in scored:
            key = self._key(cand)
            if key is not None:
                value = _score(cand.get(self.metric))  # the generators maximise: a "min" metric negated
                self.generator.tell(key, value if value is None or self.mode == "max" else -value)
        if not self.candidates_per_trial and scored and scored[0].get("eval_s"):
            self.candidates_per_trial = max(1, round(self.trial_seconds / scored[0]["eval_s"]))
        if self._scored_in_full(trial_id):
            # The barrier lifts now, not when the trial ends, so the next generation's trials are
            # staged while its actor lives and Tune hands them that actor. Waiting for the end left
            # Tune no staged trial to cache the actor for: it stopped it and started a fresh
            # evaluator (process, torch import) for the next generation.
            self._batch_done(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._holds or trial_id in self._withdrawn:
            self._holds.discard(trial_id)
            self._withdrawn.discard(trial_id)
            return
        if result is not None and not error:
            self.on_trial_result(trial_id, result)
        batch = self._running(trial_id)
        if batch is None:  # scored in full already, or e.g. a resumed errored trial of an earlier generation
            batch = [k for k in (self._key(c) for c in ((result or {}).get("config") or {}).get("candidates", []))
                     if k is not None]
        for key in batch:
            if not self.generator.candidates[key].evaluated:  # never reported: its evaluation failed
                self.generator.tell(key, None)
        if self._running(trial_id) is not None:
            self._batch_done(trial_id)
        if self._state_path:  # ahead of Tune's trial table, which will list this trial as finished
            self.save(self._state_path)

    def _running(self, trial_id: str) -> list[str] | None:
        """The batch a trial runs, of this generation or of the one started early."""
        batch = self.current.running.get(trial_id)
        return batch if batch is not None or self.early is None else self.early.running.get(trial_id)

    def _scored_in_full(self, trial_id: str) -> bool:
        batch = self._running(trial_id)
        return bool(batch) and all(self.generator.candidates[key].evaluated for key in batch)

    def _batch_done(self, trial_id: str) -> None:
        if self.early is not None and trial_id in self.early.running:
            self.early.running.pop(trial_id)
            return
        self.current.running.pop(trial_id)
        if self.current.done():
            self._lift()

    def _lift(self) -> None:
        """This generation is scored: the barrier lifts, and the one started early stands or goes."""
        self._lifts += 1
        barrier.lift(self._lifts)  # the holds end once the next generation's trials are staged
        if self.on_generation is not None:
            self.on_generation(self.generator, self.current.number, self.current.size,
                               time.monotonic() - self.current.started)
        early, self.early, self._no_early = self.early, None, False
        if early is None:
            return
        if not self.generator.settle_early():
            # reported or not, its trials' results are ignored; the generation is proposed anew
            self._withdrawn.update(early.trials)
            return
        self.current = early
        if self.current.done():  # scored in full while the barrier stood
            self._lift()

    def _key(self, result_or_candidate: dict | None) -> str | None:
        arch = (result_or_candidate or {}).get("arch")
        if arch is None:
            return None
        key = arch_key(self.generator.encoder, arch)
        return key if key in self.generator.candidates else None

    # -- state ------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "generator": self.generator.get_state(),
            "unsuggested": list(self.current.unsuggested),
            "running": {trial: list(batch) for trial, batch in self.current.running.items()},
            "proposal": self.current.proposal, "proposals": self._proposals,
            "candidates_per_trial": self.candidates_per_trial,  # a sized batch survives a restore
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"searcher state version {state.get('version')}, expected {STATE_VERSION}")
        self.generator.set_state(state["generator"])
        self.candidates_per_trial = state.get("candidates_per_trial", self.candidates_per_trial)
        scored = {key for key, cand in self.generator.candidates.items() if cand.evaluated}
        running = {trial: batch for trial, batch in state["running"].items() if not set(batch) <= scored}
        self._proposals = state.get("proposals", 0)
        self.current = _Generation(self.generator.generation, state.get("proposal", 0), state["unsuggested"], running)
        self.early, self._no_early, self._withdrawn = None, False, set()

    def save(self, checkpoint_path: str) -> None:
        """JSON, written atomically (a crash never leaves half a file). Tune uploads the folder
        in the background, and a temporary file there that an upload lists and we rename before
        it copies fails the upload: so the temporary file lies one level up."""
        parent = os.path.dirname(os.path.abspath(checkpoint_path))
        atomic_write(checkpoint_path, json.dumps(self.get_state()), tmp_dir=os.path.dirname(parent))

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        self._state_path = os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str))
        super().save_to_dir(checkpoint_dir, session_str)
        saves.keep(checkpoint_dir, session_str)  # Tune's copy to the search's folder is not atomic

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))
        # Tune copies its saved files up one at a time: a driver killed mid-copy can leave a trial
        # table newer than this state, listing as finished a batch that runs here. Tune will not
        # run it again, so its last report (the whole batch) is told now, or the barrier would
        # wait for it forever.
        finished = saves.finished_trials(os.path.dirname(checkpoint_path))
        for trial_id in [t for t in self.current.running if t in finished]:
            self.on_trial_complete(trial_id, finished[trial_id])


def _score(value) -> float | None:
    """A reported score; None (a failure) when missing or NaN."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


__all__ = ["GenerationSearcher"]
