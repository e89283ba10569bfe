"""The node watcher: Ray Train sees node losses and joins at once instead of on a 20 s tick.

Train V2's elastic policy sizes a restart from the reservations of Ray's
AutoscalingCoordinator, which refreshes its view of the cluster every 20 s (fixed in
Ray 2.58-2.60). Until then a restart after a node loss asks for the lost node's worker
and waits out ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``, and a joined node goes unseen.

This driver-side thread (``elastic.node_watch``) polls the live node set (one GCS call
every ``interval_s``) and, when it changes, asks the coordinator to recompute. Before it
lets Ray see a joined node it asks the workers for a checkpoint (:mod:`~elastic_nas.cluster.kv`),
waiting at most ``join_checkpoint_timeout_s`` (Ray's own tick may still see the node first: that
restart resumes from the last periodic checkpoint, and the new group answers), and gathers the nodes that join within
``join_settle_s`` of each other, so that they cost one restart; and it keeps the warm worker processes of
:mod:`~elastic_nas.cluster.warm_workers` topped up, so the next restart finds its
processes booted and torch imported. The coordinator is a private actor
(:mod:`~elastic_nas.cluster.private`): without it, Ray's own tick still applies.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from elastic_nas.cluster.kv import JoinCheckpoint
from elastic_nas.cluster.private import refresh_autoscaling_coordinator
from elastic_nas.cluster.resources import describe_nodes, workers_that_fit

logger = logging.getLogger(__name__)

REQUESTER_ID = "elastic-nas-node-watch"


class NodeWatcher:
    """A context manager around ``trainer.fit()``: the watching thread runs inside it."""

    def __init__(self, interval_s: float = 0.5, run_name: str = "", join_checkpoint_timeout_s: float = 0.0,
                 warm_pool=None, warm_check_s: float = 3.0, need: tuple[dict, int] | None = None,
                 waiting_line_s: float = 30.0, join_settle_s: float = 0.0, join_settle_max_s: float = 5.0):
        self.interval_s = interval_s
        # Nodes that join together (an autoscaler launching several) should cost one restart:
        # Ray sees a join once no other node has joined for join_settle_s (at most join_settle_max_s).
        self.join_settle_s, self.join_settle_max_s = join_settle_s, join_settle_max_s
        # (resources per worker, min workers): while the cluster cannot hold them, say so
        # every ``waiting_line_s`` (an autoscaler may be adding nodes, or nobody is)
        self.need, self.waiting_line_s = need, waiting_line_s
        self.warm_pool = warm_pool  # a WarmPool, or None
        self.warm_check_s = warm_check_s
        self.join_checkpoint = JoinCheckpoint(run_name) if run_name and join_checkpoint_timeout_s > 0 else None
        self.join_checkpoint_timeout_s = join_checkpoint_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elastic-nas-node-watch", daemon=True)

    def __enter__(self) -> NodeWatcher:
        if self.join_checkpoint is not None:
            with contextlib.suppress(Exception):  # a request left by a killed driver of this run
                self.join_checkpoint.withdraw()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5 + self.join_checkpoint_timeout_s)  # a join checkpoint may be under way

    @staticmethod
    def _nodes() -> list[dict]:
        import ray

        return ray.nodes()

    @staticmethod
    def _alive(nodes: list[dict]) -> frozenset[str]:
        return frozenset(n["NodeID"] for n in nodes if n["Alive"])

    def _refresh(self) -> bool:
        """Make Ray Train's coordinator see the new node set; False once that API is gone."""
        try:
            refreshed = refresh_autoscaling_coordinator(REQUESTER_ID)
        except Exception as e:  # a timeout or a dying actor: try again at the next change
            logger.warning("elastic-nas: cannot refresh Ray's autoscaling coordinator (%s)", e)
            return True
        return refreshed is not None

    def _run(self) -> None:
        try:
            known = self._alive(self._nodes())
        except Exception:
            return
        refreshing = True  # False once the coordinator's private API is gone
        last_warm_check = 0.0
        last_waiting_line = time.monotonic()
        while not self._stop.wait(self.interval_s):
            try:
                nodes = self._nodes()
            except Exception:
                continue
            if self.need is not None and time.monotonic() - last_waiting_line >= self.waiting_line_s:
                last_waiting_line = time.monotonic()
                self._say_if_waiting(nodes)
            alive = self._alive(nodes)
            joined = alive - known
            if self.warm_pool is not None and (joined or time.monotonic() - last_warm_check >= self.warm_check_s):
                # A joined node gets its warm workers first: they boot while the join
                # checkpoint is written and Ray decides the resize.
                last_warm_check = time.monotonic()
                self.warm_pool.top_up(nodes, now_ids=joined)
            if alive != known:
                t_join = time.monotonic()
                if joined and self.join_checkpoint is not None:
                    self._checkpoint_before_join()
                if joined:
                    alive = self._gather_joins(alive, t_join)
                known = alive
                if refreshing:
                    refreshing = self._refresh()

    def _gather_joins(self, alive: frozenset[str], first: float) -> frozenset[str]:
        """The alive nodes once none has joined for ``join_settle_s`` since ``first`` (the
        join checkpoint's time counts), at most ``join_settle_max_s`` after it."""
        last = first
        while (now := time.monotonic()) - last < self.join_settle_s and now - first < self.join_settle_max_s:
            if self._stop.wait(self.interval_s):
                break
            try:
                nodes = self._nodes()
            except Exception:
                continue
            now_alive = self._alive(nodes)
            if now_alive - alive:
                last = time.monotonic()
                if self.warm_pool is not None:
                    self.warm_pool.top_up(nodes, now_ids=now_alive - alive)
            alive = now_alive
        return alive

    def _say_if_waiting(self, nodes: list[dict]) -> None:
        per_worker, min_workers = self.need
        if workers_that_fit(nodes, per_worker, min_workers) < min_workers:
            print(f"elastic-nas: waiting for resources: {min_workers} worker(s) of {per_worker}; "
                  f"the cluster's alive nodes have {describe_nodes(nodes)}", flush=True)

    def _checkpoint_before_join(self) -> None:
        t0 = time.monotonic()
        try:
            ok = self.join_checkpoint.request(self.join_checkpoint_timeout_s)
        except Exception as e:  # the KV call failed: this join redoes steps since the last checkpoint
            logger.warning("elastic-nas: cannot request a checkpoint before a scale-up (%s)", e)
            return
        if ok:
            print(f"elastic-nas: node joined; checkpoint before the resize took {time.monotonic() - t0:.1f}s",
                  flush=True)


__all__ = ["NodeWatcher"]
