"""A restarted driver takes its run over at once.

Ray Train's controller asks Ray's AutoscalingCoordinator for its workers' resources under
an id of its own (a new one per driver), and cancels the request when it ends. A driver
that is killed (SIGKILL, ``ray job stop``, a lost laptop) never cancels: its request keeps
the resources reserved for 180 s, so the next driver of the run sees "ready resources for
0 workers" on an idle cluster and waits, and an autoscaler keeps sizing for a job that is gone.

So rank 0 records its controller's requester id and its job under ``<run>/train-requester``
in Ray's KV store, and a new driver of the run, before Train starts, cancels that request
when that job is dead. A driver of the run that is still alive is left alone. Both sides
use private Ray APIs (:mod:`~elastic_nas.cluster.private`): without them, the 180 s wait is back.
"""

from __future__ import annotations

import json

from elastic_nas.cluster.kv import kv_get, kv_put
from elastic_nas.cluster.private import cancel_coordinator_request, job_is_dead, train_requester_id


def _key(run_name: str) -> str:
    return f"{run_name}/train-requester"


def record_requester(run_name: str) -> None:
    """Rank 0: record this run's requester id and job, for the driver that may replace ours."""
    import ray

    requester = train_requester_id()
    if requester:
        kv_put(_key(run_name), json.dumps({"requester": requester, "job_id": ray.get_runtime_context().get_job_id()}))


def release_dead_driver(run_name: str) -> str | None:
    """Driver, before Train starts: cancel the resource request of an earlier driver of
    ``run_name`` whose job has ended; returns that job's id, or None when there was none."""
    import ray

    raw = kv_get(_key(run_name))
    if not raw:
        return None
    record = json.loads(raw)
    if record["job_id"] == ray.get_runtime_context().get_job_id() or not job_is_dead(record["job_id"]):
        return None
    if cancel_coordinator_request(record["requester"]) is None:
        return None
    kv_put(_key(run_name), "")  # done: a later driver has nothing to release
    return record["job_id"]


__all__ = ["record_requester", "release_dead_driver"]
