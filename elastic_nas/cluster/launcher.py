"""Driver side: connect to or start Ray, and run a function on an elastic ``TorchTrainer``.

The Ray Train knobs below make recovery fast; Ray propagates ``RAY_TRAIN_*`` variables
from the driver to its controller. A user's own environment always wins (setdefault).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elastic_nas.cluster.node_watch import NodeWatcher
from elastic_nas.cluster.private import tolerate_storage_outage
from elastic_nas.cluster.resources import check_fits, worker_resources
from elastic_nas.cluster.takeover import release_dead_driver
from elastic_nas.cluster.warm_workers import WarmPool
from elastic_nas.config import ElasticConfig, RunConfig
from elastic_nas.errors import UserError
from elastic_nas.io import filesystem, first_line, is_uri, join, read_from, redact, storage_error

RAY_CHECKPOINT_RECORD = "checkpoint_manager_snapshot.json"  # Ray Train's list of a run's checkpoints

# Ray's defaults wait 60 s for a restarted worker group and check health every 2 s;
# on a resize that is most of the ~68 s it takes to resume (see README, "Elastic").
RAY_TRAIN_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    # Only the placement-group wait: resources that exist reserve in well under a second,
    # and a timeout just makes the controller retry with a fresh size.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3",
    "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "1",
    # Worker prints reach the driver once through Ray's log forwarding; the patch repeats them.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}


def init_ray() -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` (``ray job submit`` sets it; ``auto`` finds a
    ``ray start`` cluster on this machine), or else start a private one on 127.0.0.1.

    Never attaching silently to some other cluster on the machine is deliberate: a laptop
    run stays on loopback with its dashboard on 127.0.0.1.
    """
    for key, value in RAY_TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind the new node to 127.0.0.1
    # Ray turns token auth on for a new local cluster and says so on every step's console;
    # that is the setting we want, so its notice is kept off the console (only this start's:
    # a warning that auth is *off* on a cluster joined later still shows).
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = auth_log.level
    auth_log.setLevel(logging.ERROR)
    try:
        ray.init(address="local", log_to_driver=True, dashboard_host="127.0.0.1")
    finally:
        auth_log.setLevel(level)
    _PRIVATE.add(ray.get_runtime_context().get_job_id())


_PRIVATE: set[str] = set()  # jobs whose Ray init_ray started itself, on this machine only


def private_cluster() -> bool:
    """Whether this process runs on a Ray that :func:`init_ray` started for it: there, no
    autoscaler will ever add a node (a caller's own ``ray.init`` may reach an autoscaling one)."""
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_job_id() in _PRIVATE


def resolve_storage(run: RunConfig) -> str:
    """An absolute local path or a URI that pyarrow can open and this process can write; one
    clear line otherwise, before any work (a missing bucket or read-only credentials would
    else fail inside Ray's controller as a wall of traceback)."""
    path = run.storage_path
    if not is_uri(path):
        p = Path(path).expanduser().resolve()
        try:
            p.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(f"run.storage_path {p} is a file, not a folder") from None
        except OSError as e:  # no permission, a read-only disk
            raise UserError(f"cannot use run.storage_path {p}: {e.strerror or e}") from None
        return str(p)
    fs, fs_path = filesystem(path)
    probe = f"{fs_path.rstrip('/')}/.elastic-nas-write-check-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except Exception as e:  # pyarrow raises OSError/ArrowInvalid subclasses per backend
        raise UserError(f"cannot write to run.storage_path {redact(path)}: {storage_error(e)}") from None
    return path


def run_trainer(
    worker_fn: Callable[[dict], None],
    loop_config: dict[str, Any],
    run: RunConfig,
    elastic: ElasticConfig,
    storage: str,
):
    """Run ``worker_fn`` on an elastic worker group; resumes if the run name exists."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    num_workers = (
        elastic.max_workers if elastic.min_workers == elastic.max_workers
        else (elastic.min_workers, elastic.max_workers)
    )
    trainer = TorchTrainer(
        worker_fn,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=elastic.use_gpu,
            resources_per_worker=dict(elastic.resources_per_worker),
            elastic_resize_monitor_interval_s=elastic.resize_monitor_interval_s,
        ),
        run_config=RayRunConfig(
            name=run.name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=elastic.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=elastic.keep_checkpoints),
            logging_config=LoggingConfig(log_level=elastic.train_log_level),
            callbacks=[controller_setup()],
        ),
    )
    drop_cut_checkpoint_record(storage, run.name)
    per_worker = worker_resources(elastic)
    if private_cluster():
        check_fits(per_worker, elastic.min_workers)
    elif elastic.release_dead_driver:
        _release_dead_driver(run.name)
    if not elastic.node_watch:
        return trainer.fit()
    warm_pool = WarmPool(run.name, per_worker, elastic.max_workers) if elastic.warm_workers else None
    with NodeWatcher(run_name=run.name, join_checkpoint_timeout_s=elastic.join_checkpoint_timeout_s,
                     warm_pool=warm_pool, need=(per_worker, elastic.min_workers), join_settle_s=elastic.join_settle_s):
        return trainer.fit()


def drop_cut_checkpoint_record(storage: str, name: str) -> bool:
    """Remove Ray Train's checkpoint record of run ``name`` when a kill cut its write short
    (Ray writes it in place, so a driver killed then leaves it empty or half written, and
    Ray's controller would refuse to start on it). The resume does not need it: it lists the
    run's checkpoint directories itself. True when it removed one."""
    fs, root = filesystem(storage)
    path = join(root, name, RAY_CHECKPOINT_RECORD)  # inside the filesystem, where Ray reads it
    shown = redact(join(storage, name, RAY_CHECKPOINT_RECORD))
    try:
        data = read_from(fs, path)
    except Exception:  # none yet, or storage that does not answer (pyarrow raises OSError/ArrowInvalid)
        return False
    try:
        json.loads(data.decode("utf-8"))  # as Ray decodes it
        return False
    except ValueError:  # not JSON, or not UTF-8: cut short
        pass
    try:
        fs.delete_file(path)
    except Exception as e:
        raise UserError(f"Ray Train's checkpoint record {shown} was cut short by a kill and cannot be removed "
                        f"({storage_error(e)}); remove it and run again") from None
    print(f"elastic-nas: removed Ray Train's checkpoint record {shown}: a kill cut its write short "
          "(the resume lists the checkpoints itself)", flush=True)
    return True


def controller_setup():
    """A Ray Train callback whose unpickling, in the Train controller's process, makes Ray's
    checkpoint records there ride out a storage outage (:func:`tolerate_storage_outage`)."""
    from ray.train import UserCallback

    class ControllerSetup(UserCallback):
        def __reduce__(self):
            return (_in_controller, ())

    return ControllerSetup()


def _in_controller():
    tolerate_storage_outage()
    return controller_setup()


def _release_dead_driver(run_name: str) -> None:
    try:
        job = release_dead_driver(run_name)
    except Exception as e:  # the KV store or the coordinator did not answer: Ray's expiry still applies
        print(f"elastic-nas: could not release the resources of this run's previous driver ({first_line(e)}); "
              "Ray frees them within 180 s", flush=True)
        return
    if job:
        print(f"elastic-nas: released the resources that this run's previous driver (job {job}, gone) "
              "still held with Ray", flush=True)


__all__ = ["RAY_CHECKPOINT_RECORD", "RAY_TRAIN_ENV_DEFAULTS", "drop_cut_checkpoint_record", "init_ray",
           "private_cluster", "resolve_storage", "run_trainer"]
