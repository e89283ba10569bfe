"""Hold trials: an idle evaluator waits out the generation barrier inside a trial.

Tune keeps a finished trial's actor only for a trial already staged (or one actor with nothing
staged). At a generation barrier nothing is staged until the last batch is scored, so with more
than two evaluator slots Tune stopped all but two evaluators at every barrier and started fresh
processes (Ray worker, torch import, supernet build, a CUDA context on GPUs) for the next
generation. Instead the searcher hands an evaluator that frees up at the barrier a *hold*
trial: it blocks on a tiny signal actor until the barrier lifts, by which time the next
generation's trials are staged, and Tune hands them the holding actors.

The signal is one async actor per search driver (no CPU, on the driver's node), named so that
an evaluator finds it from the hold's config; a hold whose signal is gone (a restarted driver's
old trial, a lost node) ends at once. Only the driver process holds the actor's handle, never
a pickled searcher.
"""

from __future__ import annotations

import asyncio
import uuid

HOLD = "hold"  # a trial config key: the barrier lifts seen when the hold was handed out
SIGNAL = "signal"  # the signal actor's name
HOLD_TIMEOUT_S = 600.0  # a hold ends by then even if no lift arrives (then the searcher hands another)
HOLD_FROM_SLOTS = 3  # with 2 slots Tune keeps both evaluators anyway (one cached, the last reused)

_DRIVER: dict[str, object] = {}  # this driver's signal: {"name": ..., "actor": handle}


class BarrierSignal:
    """Counts the barrier lifts of one search; ``wait(seen)`` returns once there are more than ``seen``."""

    def __init__(self):
        self.lifts = 0
        self.changed = asyncio.Condition()

    async def lift(self, lifts: int) -> None:
        async with self.changed:
            self.lifts = max(self.lifts, lifts)
            self.changed.notify_all()

    async def wait(self, seen: int, timeout_s: float) -> bool:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.lifts > seen), timeout_s)
            except asyncio.TimeoutError:
                return False
        return True


def start_signal() -> None:
    """Start this driver's signal actor (Ray connected) on its own node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    stop_signal()
    name = f"elastic-nas-barrier-{uuid.uuid4().hex[:12]}"
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    actor = ray.remote(BarrierSignal).options(name=name, num_cpus=0, scheduling_strategy=here).remote()
    _DRIVER.update(name=name, actor=actor)


def stop_signal() -> None:
    """Free the signal's worker (after the fit); a no-op without one."""
    actor = _DRIVER.get("actor")
    _DRIVER.clear()
    if actor is not None:
        import ray

        ray.kill(actor)


def hold_config(seen: int) -> dict | None:
    """The config of a hold trial that waits for the lift after ``seen``; None without a signal."""
    return {HOLD: seen, SIGNAL: _DRIVER["name"], "candidates": []} if "name" in _DRIVER else None


def lift(lifts: int) -> None:
    """The barrier lifted (``lifts`` times in all): every hold waiting on fewer ends."""
    actor = _DRIVER.get("actor")
    if actor is not None:
        actor.lift.remote(lifts)  # not awaited: the driver's controller loop does not wait on it


def wait_out(config: dict) -> None:
    """In an evaluator: block until the hold's barrier lifts (or its signal is gone)."""
    import ray

    try:
        actor = ray.get_actor(config[SIGNAL])
        ray.get(actor.wait.remote(int(config[HOLD]), HOLD_TIMEOUT_S))
    except (ValueError, ray.exceptions.RayError):
        return  # no such signal: a restarted driver's or a lost one; the hold is over


__all__ = ["HOLD", "HOLD_FROM_SLOTS", "BarrierSignal", "hold_config", "lift", "start_signal", "stop_signal",
           "wait_out"]
