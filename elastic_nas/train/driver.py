"""The driver side of a training run: launch it on the cluster, then write what people read.

After Ray's trainer returns: the final checkpoint, the TensorBoard dir,
``elastic_history.png`` (world size, LR, throughput, loss and top-1 over time) and
``history.json`` in the run's folder (published to the run's URI on s3:// storage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from elastic_nas.cluster.launcher import init_ray, resolve_storage, run_trainer
from elastic_nas.config import to_dict
from elastic_nas.elastic.checkpoint import read_checkpoint
from elastic_nas.io import RunFolder, filesystem, join, redact, write_json
from elastic_nas.train.plots import plot_history


class TrainingRun(NamedTuple):
    result: Any  # Ray's Result
    checkpoint: str | None  # the final checkpoint: a local path or a URI with its scheme
    outputs: dict[str, Any]  # what to print (URIs redacted)
    folder: RunFolder  # the run's outputs folder: the caller adds files, then publishes it


def run_training(worker_fn: Callable[[dict], None], cfg: Any, extra: dict | None = None) -> TrainingRun:
    """Run ``worker_fn`` for a job config with ``run`` and ``elastic`` sections."""
    storage = resolve_storage(cfg.run)
    folder = RunFolder(storage, cfg.run.name)
    tb_dir = str(folder.local / "tensorboard")  # rank 0 writes it: on its node, for URI storage
    print(f"elastic-nas: run {cfg.run.name!r} in {redact(storage)} "
          f"({cfg.elastic.min_workers}-{cfg.elastic.max_workers} workers)", flush=True)
    init_ray()
    loop_config = {"cfg": to_dict(cfg), "tensorboard_dir": tb_dir, **(extra or {})}
    result = run_trainer(worker_fn, loop_config, cfg.run, cfg.elastic, storage)
    if result.error:
        raise result.error
    ckpt_path = result.checkpoint.path if result.checkpoint else None
    if ckpt_path and folder.uri:  # Ray's path is inside its filesystem: no scheme, no options
        ckpt_path = join(storage, ckpt_path[len(filesystem(storage)[1]):])
    outputs: dict[str, Any] = {"checkpoint": ckpt_path and redact(ckpt_path), "tensorboard": tb_dir}
    if ckpt_path:
        history = read_checkpoint(ckpt_path).state["history"]
        folder.local.mkdir(parents=True, exist_ok=True)
        outputs["plot"] = folder.show(plot_history(history, folder.local / "elastic_history.png"))
        outputs["history"] = folder.show(write_json(folder.local / "history.json", history))
    outputs["final metrics"] = {k: round(v, 4) if isinstance(v, float) else v
                                for k, v in (result.metrics or {}).items()}
    return TrainingRun(result, ckpt_path, outputs, folder)


__all__ = ["TrainingRun", "run_training"]
