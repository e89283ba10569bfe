"""``elastic-nas supernet``: weight-sharing supernet training (SPOS path sampling)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import time

import numpy as np
import torch

from elastic_nas.config import SupernetConfig, from_dict, to_dict
from elastic_nas.train.loop import LoopSettings, TrainTask, train_loop


def loop_settings(cfg: SupernetConfig, tensorboard_dir: str = "") -> LoopSettings:
    o, e = cfg.optim, cfg.elastic
    return LoopSettings(
        seed=cfg.run.seed, epochs=o.epochs, lr=o.lr, reference_batch=o.reference_batch,
        momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay,
        label_smoothing=o.label_smoothing, schedule=o.schedule, warmup_epochs=o.warmup_epochs,
        grad_clip=o.grad_clip, batch_policy=e.batch_policy, per_worker_batch=e.per_worker_batch,
        global_batch=e.global_batch, max_per_worker_batch=e.max_per_worker_batch,
        lr_ramp_steps=e.lr_ramp_steps, checkpoint_every_steps=e.checkpoint_every_steps,
        checkpoint_every_s=e.checkpoint_every_s, preemption_poll_steps=e.preemption_poll_steps,
        report_every_steps=e.report_every_steps, augment=cfg.data.augment,
        sample_log_dir=e.sample_log_dir, tensorboard_dir=tensorboard_dir, grad_sync=e.grad_sync,
    )


def path_sampler(space, cfg: SupernetConfig):
    """The path of step t, a function of (seed, t) only, so every rank agrees without
    communication and the sequence does not depend on the world size."""
    s = cfg.sampling
    constrained = s.method == "flops_bins" or s.flops_min > 0 or s.flops_max > 0
    num_bins = s.num_bins if s.method == "flops_bins" else 1

    def path(step: int):
        rng = np.random.default_rng([cfg.run.seed, step])
        if constrained:
            return space.sample_constrained(rng, s.flops_min * 1e6, s.flops_max * 1e6, num_bins, s.max_tries)
        return space.sample(rng)

    return path


def supernet_fingerprint(cfg: SupernetConfig, num_train: int) -> dict:
    return {"kind": "supernet", "space": asdict(cfg.space), "strategy": cfg.strategy,
            "data": {"source": cfg.data.source, "seed": cfg.data.seed, "num_train": num_train}}


def build_supernet_task(cfg: SupernetConfig) -> TrainTask:
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    torch.manual_seed(cfg.run.seed)
    model = space.build_supernet()
    return TrainTask(
        model=model,
        forward=model,
        path=path_sampler(space, cfg),
        grad_params=model.path_parameters,
        train_split=splits.train,
        fingerprint=supernet_fingerprint(cfg, len(splits.train)),
    )


def supernet_worker(config: dict) -> None:
    """Ray Train entry point, run on every worker."""
    t_enter = time.time()
    cfg = from_dict(SupernetConfig, config["cfg"])
    torch.set_num_threads(max(1, int(cfg.elastic.resources_per_worker.get("CPU", 1))))
    train_loop(build_supernet_task(cfg), loop_settings(cfg, config.get("tensorboard_dir", "")), t_enter)


def train_supernet(cfg: SupernetConfig) -> dict:
    """Validate inputs, run the elastic trainer, write the plot and summary; returns outputs."""
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space
    from elastic_nas.train import launcher
    from elastic_nas.train.plots import plot_history

    # Fail before any work starts: the dataset (generates the synthetic cache once
    # here, not on every worker at once), the space, and the sampling range.
    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    path_sampler(space, cfg)(0)
    storage = launcher.resolve_storage(cfg.run)
    run_dir = launcher.local_run_dir(storage, cfg.run.name)
    tb_dir = str(run_dir / "tensorboard") if run_dir else str(
        Path("~/.cache/elastic-nas/tensorboard").expanduser() / cfg.run.name)
    print(f"elastic-nas: supernet {cfg.space.name} on {cfg.data.source} "
          f"({len(splits.train)} train images), run {cfg.run.name!r} in {storage}", flush=True)

    launcher.init_ray()
    result = launcher.run_trainer(
        supernet_worker, {"cfg": to_dict(cfg), "tensorboard_dir": tb_dir}, cfg.run, cfg.elastic, storage
    )
    if result.error:
        raise result.error
    ckpt_path = result.checkpoint.path if result.checkpoint else None
    outputs = {"checkpoint": ckpt_path, "tensorboard": tb_dir}
    if ckpt_path and run_dir is not None:
        from elastic_nas.elastic.checkpoint import read_checkpoint

        history = read_checkpoint(ckpt_path).state["history"]
        outputs["plot"] = str(plot_history(history, run_dir / "elastic_history.png"))
        launcher.write_json(run_dir / "history.json", history)
        outputs["history"] = str(run_dir / "history.json")
    outputs["final metrics"] = {k: round(v, 4) if isinstance(v, float) else v
                                for k, v in (result.metrics or {}).items()}
    launcher.print_outputs("supernet outputs:", outputs)
    return outputs


__all__ = ["build_supernet_task", "loop_settings", "supernet_worker", "train_supernet"]
