"""Driver side: start Ray, build the ``TorchTrainer``, run it, and summarise the result.

The Ray Train knobs below make recovery fast; Ray propagates ``RAY_TRAIN_*`` variables
from the driver to its controller. A user's own environment always wins (setdefault).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs as pafs

from elastic_nas.config import ElasticConfig, RunConfig
from elastic_nas.errors import UserError

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
    ray.init(address="local", log_to_driver=True, dashboard_host="127.0.0.1")


def resolve_storage(run: RunConfig) -> str:
    """An absolute local path or a URI that pyarrow can open; a clear error otherwise."""
    path = run.storage_path
    if "://" not in path:
        p = Path(path).expanduser().resolve()
        p.mkdir(parents=True, exist_ok=True)
        return str(p)
    try:
        fs, fs_path = pafs.FileSystem.from_uri(path)
        fs.get_file_info(fs_path)
    except Exception as e:  # pyarrow raises OSError/ArrowInvalid subclasses per backend
        raise UserError(f"cannot reach run.storage_path {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return path


def run_trainer(
    worker_fn: Callable[[dict], None],
    loop_config: dict[str, Any],
    run: RunConfig,
    elastic: ElasticConfig,
    storage: str,
):
    """Run ``worker_fn`` on an elastic worker group; resumes if the run name exists."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig as RayRunConfig, ScalingConfig
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
        ),
    )
    from elastic_nas.train.resize_watch import NodeChangeRefresher
    from elastic_nas.train.warm_workers import WarmPool

    if not elastic.node_watch:
        return trainer.fit()
    per_worker = dict(elastic.resources_per_worker)
    if elastic.use_gpu:
        per_worker.setdefault("GPU", 1.0)
    warm_pool = WarmPool(run.name, per_worker, elastic.max_workers) if elastic.warm_workers else None
    with NodeChangeRefresher(run_name=run.name, join_checkpoint_timeout_s=elastic.join_checkpoint_timeout_s,
                             warm_pool=warm_pool):
        return trainer.fit()


def launch(worker_fn: Callable[[dict], None], cfg: Any, extra: dict | None = None) -> tuple[Any, dict]:
    """Run ``worker_fn`` for a job config with ``run`` and ``elastic`` sections.

    Returns Ray's result and the outputs to print: the final checkpoint, TensorBoard dir,
    and (for local storage) the world size / LR / throughput plot and history JSON.
    """
    from elastic_nas.config import to_dict
    from elastic_nas.elastic.checkpoint import read_checkpoint
    from elastic_nas.train.plots import plot_history

    storage = resolve_storage(cfg.run)
    run_dir = local_run_dir(storage, cfg.run.name)
    tb_dir = str(run_dir / "tensorboard") if run_dir else str(
        Path("~/.cache/elastic-nas/tensorboard").expanduser() / cfg.run.name)
    print(f"elastic-nas: run {cfg.run.name!r} in {storage} "
          f"({cfg.elastic.min_workers}-{cfg.elastic.max_workers} workers)", flush=True)
    init_ray()
    loop_config = {"cfg": to_dict(cfg), "tensorboard_dir": tb_dir, **(extra or {})}
    result = run_trainer(worker_fn, loop_config, cfg.run, cfg.elastic, storage)
    if result.error:
        raise result.error
    ckpt_path = result.checkpoint.path if result.checkpoint else None
    outputs: dict[str, Any] = {"checkpoint": ckpt_path, "tensorboard": tb_dir}
    if ckpt_path and run_dir is not None:
        history = read_checkpoint(ckpt_path).state["history"]
        outputs["plot"] = str(plot_history(history, run_dir / "elastic_history.png"))
        write_json(run_dir / "history.json", history)
        outputs["history"] = str(run_dir / "history.json")
    outputs["final metrics"] = {k: round(v, 4) if isinstance(v, float) else v
                                for k, v in (result.metrics or {}).items()}
    return result, outputs


def local_run_dir(storage: str, name: str) -> Path | None:
    return Path(storage) / name if "://" not in storage else None


def print_outputs(title: str, outputs: dict[str, Any]) -> None:
    print(f"\n{title}", flush=True)
    width = max(len(k) for k in outputs)
    for k, v in outputs.items():
        print(f"  {k:<{width}}  {v}")
    sys.stdout.flush()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
