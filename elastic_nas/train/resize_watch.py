"""Make Ray Train see node losses and joins at once instead of on a 20 s tick.

Train V2's elastic policy sizes a restart from the reservations of Ray's
AutoscalingCoordinator, which refreshes its view of the cluster every 20 s (fixed in
Ray 2.58-2.60). Until then a restart after a node loss asks for the lost node's worker
and waits out ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``, and a joined node goes unseen.

This driver-side thread polls the live node set (one GCS call every ``interval_s``)
and, when it changes, asks the coordinator to recompute. It relies on a private
actor; if that is missing or changes, it logs once and Ray's own tick still applies.

A join gives no notice to the workers: Ray restarts the group for the larger size, and
the steps since the last checkpoint would be redone. So before it lets Ray see a new
node, the watcher asks the running workers for a checkpoint (:class:`JoinCheckpoint`)
and waits for it, at most ``join_checkpoint_timeout_s``.

The same thread keeps the warm worker processes of :mod:`elastic_nas.train.warm_workers`
topped up, so the next restart finds its processes booted and torch imported.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

logger = logging.getLogger(__name__)

_COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")  # (name, namespace)
_KV_NAMESPACE = "elastic-nas"


def kv_get(key: str) -> str:
    """A run's value in Ray's internal KV (a private API), or ""."""
    from ray.experimental.internal_kv import _internal_kv_get

    value = _internal_kv_get(key, namespace=_KV_NAMESPACE)
    return value.decode() if value else ""


def kv_put(key: str, value: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(key, value, overwrite=True, namespace=_KV_NAMESPACE)


class JoinCheckpoint:
    """Checkpoint requests from the driver to rank 0 of a run, through Ray's internal KV.

    The driver puts a fresh token under ``<run>/join-ckpt-request`` and waits until rank 0
    writes the same token under ``<run>/join-ckpt-done``, after its checkpoint is reported.
    Ray's KV is a private API: any failure just means no early checkpoint (a warning).
    """

    def __init__(self, run_name: str):
        self.request_key = f"{run_name}/join-ckpt-request"
        self.done_key = f"{run_name}/join-ckpt-done"

    # driver
    def request(self, timeout_s: float, poll_s: float = 0.1) -> bool:
        """Ask for a checkpoint; True once rank 0 has reported it, False on timeout."""
        token = str(time.time_ns())
        kv_put(self.request_key, token)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if kv_get(self.done_key) == token:
                return True
            time.sleep(poll_s)
        self.withdraw()
        return False

    def withdraw(self) -> None:
        """Drop an unanswered request, so a later worker group does not answer it."""
        kv_put(self.done_key, kv_get(self.request_key))

    # rank 0
    def pending(self) -> str:
        """The token of an unanswered request, or ""."""
        token = kv_get(self.request_key)
        return token if token and token != kv_get(self.done_key) else ""

    def answer(self, token: str) -> None:
        kv_put(self.done_key, token)


class NodeChangeRefresher:
    def __init__(self, interval_s: float = 0.5, run_name: str = "", join_checkpoint_timeout_s: float = 0.0,
                 warm_pool=None, warm_check_s: float = 3.0):
        self.interval_s = interval_s
        self.warm_pool = warm_pool  # a WarmPool, or None
        self.warm_check_s = warm_check_s
        self.refreshes = 0
        self.join_checkpoint = JoinCheckpoint(run_name) if run_name and join_checkpoint_timeout_s > 0 else None
        self.join_checkpoint_timeout_s = join_checkpoint_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elastic-nas-node-watch", daemon=True)

    def __enter__(self) -> "NodeChangeRefresher":
        if self.join_checkpoint is not None:
            with contextlib.suppress(Exception):  # a request left by a killed driver of this run
                self.join_checkpoint.withdraw()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @staticmethod
    def _nodes() -> list[dict]:
        import ray

        return ray.nodes()

    @staticmethod
    def _alive(nodes: list[dict]) -> frozenset[str]:
        return frozenset(n["NodeID"] for n in nodes if n["Alive"])

    def _refresh(self) -> bool:
        import ray

        try:
            coordinator = ray.get_actor(*_COORDINATOR)
            ray.get(coordinator.get_reserved_resources.remote("elastic-nas-node-watch", recompute=True),
                    timeout=10)
        except ValueError:
            return True  # no coordinator yet: Train creates it on start, nothing is stale
        except Exception as e:  # a Ray upgrade changed the private API: fall back to Ray's tick
            logger.warning("elastic-nas: cannot refresh Ray's autoscaling coordinator (%s); "
                           "resizes are seen on Ray's own 20 s tick", e)
            return False
        self.refreshes += 1
        return True

    def _run(self) -> None:
        try:
            known = self._alive(self._nodes())
        except Exception:
            return
        refreshing = True  # False once the coordinator's private API failed
        last_warm_check = 0.0
        while not self._stop.wait(self.interval_s):
            try:
                nodes = self._nodes()
            except Exception:
                continue
            alive = self._alive(nodes)
            joined = alive - known
            if self.warm_pool is not None and (joined or time.monotonic() - last_warm_check >= self.warm_check_s):
                # A joined node gets its warm workers first: they boot while the join
                # checkpoint is written and Ray decides the resize.
                last_warm_check = time.monotonic()
                self.warm_pool.top_up(nodes, now_ids=joined)
            if alive != known:
                known = alive
                if joined and self.join_checkpoint is not None:
                    self._checkpoint_before_join()
                if refreshing:
                    refreshing = self._refresh()

    def _checkpoint_before_join(self) -> None:
        t0 = time.monotonic()
        try:
            ok = self.join_checkpoint.request(self.join_checkpoint_timeout_s)
        except Exception as e:  # private KV API changed: joins redo steps since the last checkpoint
            logger.warning("elastic-nas: cannot request a checkpoint before a scale-up (%s)", e)
            self.join_checkpoint = None
            return
        if ok:
            print(f"elastic-nas: node joined; checkpoint before the resize took {time.monotonic() - t0:.1f}s",
                  flush=True)
