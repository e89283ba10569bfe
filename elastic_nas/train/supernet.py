"""``elastic-nas supernet``: weight-sharing supernet training (SPOS path sampling)."""

from __future__ import annotations

from dataclasses import asdict

import time

import numpy as np
import torch

from elastic_nas.config import SupernetConfig, from_dict
from elastic_nas.train.loop import LoopSettings, TrainTask, train_loop


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

    if cfg.strategy == "cream":
        from elastic_nas.train.cream import build_cream_task

        return build_cream_task(cfg)
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
    train_loop(build_supernet_task(cfg), LoopSettings.from_config(cfg, config.get("tensorboard_dir", "")), t_enter)


def train_supernet(cfg: SupernetConfig) -> dict:
    """Validate inputs, run the elastic trainer, write the plot and summary; returns outputs."""
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space
    from elastic_nas.train import launcher

    # Fail before any work starts: the dataset (generates the synthetic cache once
    # here, not on every worker at once), the space, and the sampling range.
    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    if cfg.strategy == "cream":
        from elastic_nas.train.cream import CreamPathSampler

        CreamPathSampler(space, cfg)(0)
    else:
        path_sampler(space, cfg)(0)
    print(f"elastic-nas: supernet {cfg.space.name} on {cfg.data.source} ({len(splits.train)} train images)",
          flush=True)
    _, outputs = launcher.launch(supernet_worker, cfg)
    if cfg.strategy == "cream" and outputs.get("checkpoint"):
        from elastic_nas.train.cream import write_board_results

        # The board's best path per MACs budget, in the search's output format.
        run_dir = launcher.local_run_dir(launcher.resolve_storage(cfg.run), cfg.run.name)
        if run_dir is not None:
            outputs.update(write_board_results(cfg, outputs["checkpoint"], run_dir / "board"))
        else:
            outputs["board"] = "not written: board results need a local run.storage_path"
    launcher.print_outputs("supernet outputs:", outputs)
    return outputs


__all__ = ["build_supernet_task", "supernet_worker", "train_supernet"]
