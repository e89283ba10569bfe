"""The driver side of a training run: launch it on the cluster, then write what people read.

After Ray's trainer returns: the final checkpoint, the TensorBoard dir and, for local
storage, ``elastic_history.png`` (world size, LR, throughput, loss and top-1 over time)
and ``history.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from elastic_nas.cluster.launcher import init_ray, local_run_dir, resolve_storage, run_trainer
from elastic_nas.config import to_dict
from elastic_nas.elastic.checkpoint import read_checkpoint
from elastic_nas.io import write_json
from elastic_nas.train.plots import plot_history


def run_training(worker_fn: Callable[[dict], None], cfg: Any, extra: dict | None = None) -> tuple[Any, dict]:
    """Run ``worker_fn`` for a job config with ``run`` and ``elastic`` sections; returns Ray's
    result and the outputs to print."""
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


__all__ = ["run_training"]
