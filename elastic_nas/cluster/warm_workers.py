"""Warm worker processes, so a restarted worker group skips process start and imports.

Ray Train V2 replaces every worker actor on a resize or failure. A new actor needs a new
Python process, and on this project's workers most of a restart is that process booting
and importing torch, torch._dynamo (the first optimizer pulls it in) and Ray Train:
about 10 of the 12-13 s of a recovery on a 2-core machine (``benchmarks/elastic_recovery.py``).
The price is one idle process per worker slot (a few hundred MB with torch imported; no
CUDA context, which torch creates lazily).

Two pieces remove it:

* ``RAY_preload_python_modules`` (a raylet setting, read when a node starts) makes every
  new Ray worker process on the node import :data:`PRELOAD_MODULES` before it takes work.
  :func:`preload_env` gives it; ``cluster.yaml`` sets it on the worker nodes only, since
  on the head it would make Train's controller and helper actors import torch too.
* :class:`WarmPool` (driver side, on the node watcher's thread) keeps, on each node,
  as many idle pre-started workers as the node has worker slots, bound to the run's
  job and runtime env, so the raylet hands them to the next worker actors. Rank 0
  publishes that job id and runtime env string (:func:`publish_worker_env`); the pool
  counts idle workers with the raylet's ``GetNodeStats`` and tops up with its
  ``PrestartWorkers``.

Both use private Ray APIs (the raylet's gRPC service, the KV store; see
:mod:`~elastic_nas.cluster.private`): when one is gone it is logged once and restarts
just start cold, as without them.
"""

from __future__ import annotations

import json
import logging
import time

from elastic_nas.cluster.kv import kv_get, kv_put
from elastic_nas.cluster.private import UNAVAILABLE, idle_worker_pids, prestart_workers, raylet_stub
from elastic_nas.cluster.resources import slots_on

logger = logging.getLogger(__name__)

# What a training worker imports before its first step, slowest first.
PRELOAD_MODULES = (
    "torch",
    "torch._dynamo",
    "ray.train.torch",
    "ray.train.v2._internal.execution.worker_group.worker",
    "elastic_nas.train.supernet",
    "elastic_nas.train.retrain",
)
PRELOAD_ENV = "RAY_preload_python_modules"


def preload_env() -> dict[str, str]:
    """The environment a Ray node needs (at ``ray start``) to preload the worker imports."""
    return {PRELOAD_ENV: ",".join(PRELOAD_MODULES)}


def _env_key(run_name: str) -> str:
    return f"{run_name}/worker-env"


def publish_worker_env(run_name: str) -> None:
    """Rank 0: record the job id and runtime env of this worker group's actors, which
    pre-started workers must match to be handed to the next group."""
    import ray

    ctx = ray.get_runtime_context()
    env = {"job_id": ctx.get_job_id(), "runtime_env": ctx.get_runtime_env_string()}
    kv_put(_env_key(run_name), json.dumps(env))


class WarmPool:
    """Keeps ``slots_on(node)`` idle pre-started workers on every alive node."""

    def __init__(self, run_name: str, per_worker: dict[str, float], max_workers: int,
                 keep_alive_s: int = 24 * 3600, refill_delay_s: float = 15.0):
        self.run_name = run_name
        self.per_worker = dict(per_worker)
        self.max_workers = max_workers
        self.keep_alive_s = keep_alive_s  # the job's end kills them anyway
        # A node short of warm workers is refilled only after this long: a restart has just
        # taken them, and new processes importing torch would slow its setup and first
        # steps. It also covers the second or so a pre-started worker takes to register.
        self.refill_delay_s = refill_delay_s
        self.started = 0  # workers pre-started so far, for tests and logs
        self.disabled = False
        self._short_since: dict[str, float] = {}
        self._stubs: dict[str, object] = {}

    def _worker_env(self) -> dict | None:
        """What this driver's worker groups published; None before the first one starts
        (or while the key still holds an earlier driver's job: a resumed run)."""
        import ray

        raw = kv_get(_env_key(self.run_name))  # None without the KV store: no pool
        env = json.loads(raw) if raw else None
        return env if env and env["job_id"] == ray.get_runtime_context().get_job_id() else None

    def _stub(self, node: dict):
        node_id = node["NodeID"]
        if node_id not in self._stubs:
            self._stubs[node_id] = raylet_stub(node)
        return self._stubs[node_id]

    def idle_workers(self, node: dict, job_id: str) -> list[int] | None:
        """Pids of ``job_id``'s idle pre-started workers on ``node`` (None without the raylet API)."""
        stub = self._stub(node)
        return UNAVAILABLE if stub is UNAVAILABLE else idle_worker_pids(stub, job_id)

    def top_up(self, nodes: list[dict], now_ids: frozenset[str] = frozenset()) -> int:
        """Pre-start what is missing on each alive node; returns how many were started.

        Nodes in ``now_ids`` (just joined: their processes should boot while Ray decides
        the resize) skip ``refill_delay_s``."""
        if self.disabled:
            return 0
        try:
            return self._top_up(nodes, now_ids)
        except Exception as e:  # never let the pool stop the node watcher's thread
            logger.warning("elastic-nas: cannot keep warm worker processes (%s: %s); "
                           "restarts start new processes", type(e).__name__, e)
            self.disabled = True
            return 0

    def _top_up(self, nodes: list[dict], now_ids: frozenset[str]) -> int:
        import grpc

        env = self._worker_env()
        if env is None:  # no worker group of this driver has started yet
            return 0
        started = 0
        for node in nodes:
            if not node.get("Alive"):
                self._stubs.pop(node["NodeID"], None)
                continue
            try:
                count = self._top_up_node(node, env, node["NodeID"] in now_ids)
            except grpc.RpcError as e:  # e.g. the node is going away: try it next time
                logger.debug("elastic-nas: warm workers on %s: %s", node["NodeID"], e)
                continue
            if count is UNAVAILABLE:  # the raylet API is gone (logged once): start cold from now on
                self.disabled = True
                break
            started += count
        self.started += started
        return started

    def _top_up_node(self, node: dict, env: dict, joined: bool) -> int | None:
        want = slots_on(node.get("Resources", {}), self.per_worker, self.max_workers)
        if want == 0:
            return 0
        idle = self.idle_workers(node, env["job_id"])
        if idle is UNAVAILABLE:
            return UNAVAILABLE
        missing = want - len(idle)
        if missing <= 0:
            self._short_since.pop(node["NodeID"], None)
            return 0
        short_since = self._short_since.setdefault(node["NodeID"], time.monotonic())
        if not joined and time.monotonic() - short_since < self.refill_delay_s:
            return 0
        self._short_since.pop(node["NodeID"], None)
        if prestart_workers(self._stub(node), env["job_id"], env["runtime_env"], missing, self.keep_alive_s) is UNAVAILABLE:
            return UNAVAILABLE
        print(f"elastic-nas: pre-started {missing} warm worker process(es) on node {node['NodeID'][:8]}",
              flush=True)
        return missing
