"""Every private Ray API the product touches, each behind one function.

Ray 2.58-2.60 has no public way to do these things, and each one only makes elastic runs
faster or quieter; none is needed for a correct run. So each function here imports its
private module inside itself, and when the API is gone or has changed shape (an
``ImportError``, ``AttributeError`` or ``TypeError`` after a Ray upgrade) it logs one
warning naming what is lost and returns :data:`UNAVAILABLE` from then on. Failures of the
call itself (a node going away, a timeout) still raise: the caller decides about those.
(``elastic-nas cluster local``'s node provider, :mod:`~elastic_nas.cluster.local_provider`,
extends Ray's private fake provider: a tool for trying autoscaling here, never part of a run.)
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from elastic_nas.io import first_line

logger = logging.getLogger(__name__)

UNAVAILABLE = None  # what a degraded function returns
_COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")  # (name, namespace)
_API_GONE = (ImportError, AttributeError, TypeError)
_gone: set[str] = set()


def private_api(what: str, without: str):
    """Decorate a function that uses a private Ray API ``what``; ``without`` says what a run
    loses when it is gone. Logged once per process, then the function returns UNAVAILABLE."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            if what in _gone:
                return UNAVAILABLE
            try:
                return fn(*args, **kwargs)
            except _API_GONE as e:
                _gone.add(what)
                logger.warning("elastic-nas: %s is not available in this Ray (%s: %s); %s",
                               what, type(e).__name__, e, without)
                return UNAVAILABLE

        return call

    return wrap


# -- Ray Train's autoscaling coordinator ----------------------------------------------


@private_api("Ray Train's AutoscalingCoordinator actor", "resizes are seen on Ray's own 20 s tick")
def refresh_autoscaling_coordinator(requester_id: str, timeout_s: float = 10.0) -> bool | None:
    """Make the coordinator recompute its view of the cluster now; False when it does not
    exist yet (Train creates it on start, so nothing is stale)."""
    import ray

    try:
        coordinator = ray.get_actor(*_COORDINATOR)
    except ValueError:
        return False
    ray.get(coordinator.get_reserved_resources.remote(requester_id, recompute=True), timeout=timeout_s)
    return True


_TAKEOVER = ("Ray Train's run id and AutoscalingCoordinator actor",
             "a restarted driver waits up to 180 s for the requests of the driver it replaces to expire")


@private_api(*_TAKEOVER)
def train_requester_id() -> str:
    """In a training worker: the id under which this run's controller asks the coordinator
    for resources (Train V2 uses ``train-<run id>``, a new run id per driver)."""
    from ray.train.v2._internal.execution.context import get_train_context

    return f"train-{get_train_context().train_run_context.run_id}"


@private_api(*_TAKEOVER)
def cancel_coordinator_request(requester_id: str, timeout_s: float = 10.0) -> bool:
    """Drop ``requester_id``'s resource request and reservation; False when there is no
    coordinator (nothing to drop)."""
    import ray

    try:
        coordinator = ray.get_actor(*_COORDINATOR)
    except ValueError:
        return False
    ray.get(coordinator.cancel_request.remote(requester_id), timeout=timeout_s)
    return True


@private_api("Ray's job table", "a restarted driver cannot tell whether the driver it replaces is gone")
def job_is_dead(job_id: str) -> bool:
    """Whether the driver of ``job_id`` (hex) has exited; an unknown job counts as dead."""
    from ray._private import state

    return all(job["IsDead"] for job in state.jobs() if job["JobID"] == job_id)


# -- the raylet's gRPC service (worker processes) -----------------------------------------


@private_api("the raylet's gRPC service", "restarts start new worker processes")
def raylet_stub(node: dict) -> Any:
    """A client of ``node``'s raylet (a ``ray.nodes()`` entry)."""
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import node_manager_pb2_grpc

    address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
    return node_manager_pb2_grpc.NodeManagerServiceStub(init_grpc_channel(address))


@private_api("the raylet's gRPC service", "restarts start new worker processes")
def idle_worker_pids(stub: Any, job_id: str, timeout_s: float = 5.0) -> list[int] | None:
    """Pids of ``job_id``'s worker processes on the node that hold no actor and have run nothing."""
    from ray.core.generated import common_pb2, node_manager_pb2

    reply = stub.GetNodeStats(node_manager_pb2.GetNodeStatsRequest(), timeout=timeout_s)
    job = bytes.fromhex(job_id)
    return [w.pid for w in reply.core_workers_stats
            if w.worker_type == common_pb2.WORKER and w.job_id == job and _is_nil(w.actor_id)
            and w.num_executed_tasks == 0]


@private_api("the raylet's gRPC service", "restarts start new worker processes")
def prestart_workers(stub: Any, job_id: str, runtime_env: str, count: int, keep_alive_s: int,
                     timeout_s: float = 5.0) -> bool:
    """Ask the raylet for ``count`` idle Python workers of the job and runtime env."""
    from ray.core.generated import common_pb2, node_manager_pb2, runtime_environment_pb2

    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON, job_id=bytes.fromhex(job_id),
        runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(serialized_runtime_env=runtime_env),
        keep_alive_duration_secs=keep_alive_s, num_workers=count)
    stub.PrestartWorkers(request, timeout=timeout_s)
    return True


def _is_nil(ray_id: bytes) -> bool:
    return not ray_id or ray_id == b"\xff" * len(ray_id)  # Ray's nil ids are all 0xff


# -- Ray Train's worker-side logging --------------------------------------------------


@private_api("Ray Train's report logger", "Ray's per-report INFO lines stay on the console")
def set_train_report_log_level(level: str) -> bool:
    """Ray Train (2.60) logs every report at INFO through a logger named by its file path,
    which ``LoggingConfig(log_level)`` does not reach; give that logger ``level``."""
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(level)
    return True


# -- Ray Train's controller-side checkpoint records ------------------------------------


@private_api("Ray Train's CheckpointManager", "storage lost while Ray records a checkpoint fails the run")
def tolerate_storage_outage() -> bool:
    """In the Train controller's process: storage refusing Ray's checkpoint record
    (``checkpoint_manager_snapshot.json``) or the deletion of old checkpoints is logged
    instead of failing the run. The record is a convenience here: a resume lists the run's
    checkpoint directories newest first. A refused write skips the deletions after it, so
    the record on storage never names a deleted checkpoint."""
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager

    original = CheckpointManager._save_state_and_delete_old_checkpoints
    if getattr(original, "elastic_nas", False):
        return True

    @functools.wraps(original)
    def tolerant(self) -> None:
        try:
            original(self)
        except FileNotFoundError:  # an old checkpoint to delete is gone already
            pass
        except OSError as e:  # pyarrow's storage errors
            logger.warning("elastic-nas: storage refused Ray Train's checkpoint record (%s); the next checkpoint "
                           "writes it again", first_line(e))

    tolerant.elastic_nas = True
    CheckpointManager._save_state_and_delete_old_checkpoints = tolerant
    return True


__all__ = ["UNAVAILABLE", "cancel_coordinator_request", "idle_worker_pids", "job_is_dead", "prestart_workers",
           "private_api", "raylet_stub", "refresh_autoscaling_coordinator", "set_train_report_log_level",
           "tolerate_storage_outage", "train_requester_id"]
