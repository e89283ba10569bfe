"""Make Ray Train see node losses and joins at once instead of on a 20 s tick.

Train V2's elastic policy sizes a restart from the reservations of Ray's
AutoscalingCoordinator, which refreshes its view of the cluster every 20 s (fixed in
Ray 2.58-2.60). Until then a restart after a node loss asks for the lost node's worker
and waits out ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``, and a joined node goes unseen.

This driver-side thread polls the live node set (one GCS call every ``interval_s``)
and, when it changes, asks the coordinator to recompute. It relies on a private
actor; if that is missing or changes, it logs once and Ray's own tick still applies.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

_COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")  # (name, namespace)


class NodeChangeRefresher:
    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.refreshes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elastic-nas-node-watch", daemon=True)

    def __enter__(self) -> "NodeChangeRefresher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @staticmethod
    def _alive_nodes() -> frozenset[str]:
        import ray

        return frozenset(n["NodeID"] for n in ray.nodes() if n["Alive"])

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
            known = self._alive_nodes()
        except Exception:
            return
        while not self._stop.wait(self.interval_s):
            try:
                alive = self._alive_nodes()
            except Exception:
                continue
            if alive != known:
                known = alive
                if not self._refresh():
                    return
