"""``elastic-nas supernet``: weight-sharing supernet training with the configured strategy."""

from __future__ import annotations

import time
from dataclasses import asdict

import torch

from elastic_nas.cluster.launcher import resolve_storage
from elastic_nas.config import SupernetConfig, from_dict
from elastic_nas.io import print_outputs
from elastic_nas.train.driver import run_training
from elastic_nas.train.loop import train_loop
from elastic_nas.train.strategies import STRATEGIES
from elastic_nas.train.task import TrainTask


def supernet_fingerprint(cfg: SupernetConfig, num_train: int) -> dict:
    out = {"kind": "supernet", "space": asdict(cfg.space), "strategy": cfg.strategy,
           "data": {"source": cfg.data.source, "seed": cfg.data.seed, "num_train": num_train}}
    if cfg.sampling.method == "fair":  # named only when set: older checkpoints resume
        out["sampling"] = "fair"  # another sequence of archs from the same steps
    return out


def build_supernet_task(cfg: SupernetConfig) -> TrainTask:
    """The supernet, its strategy and the train split, the same on every worker."""
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    torch.manual_seed(cfg.run.seed)
    model = space.build_supernet()
    strategy = STRATEGIES[cfg.strategy](cfg, space, model, splits)
    fingerprint = dict(supernet_fingerprint(cfg, len(splits.train)), **strategy.run_fingerprint())
    return TrainTask(model=model, strategy=strategy, train_split=splits.train, fingerprint=fingerprint)


def supernet_worker(config: dict) -> None:
    """Ray Train entry point, run on every worker."""
    t_enter = time.time()
    cfg = from_dict(SupernetConfig, config["cfg"])
    torch.set_num_threads(max(1, int(cfg.elastic.resources_per_worker.get("CPU", 1))))
    train_loop(build_supernet_task(cfg), cfg, config.get("tensorboard_dir", ""), t_enter)


def train_supernet(cfg: SupernetConfig) -> dict:
    """Validate inputs, run the elastic trainer, write the plot, summary and the strategy's results."""
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    # Fail before any work starts: storage, the space, the strategy's arch sampling, the
    # landmarks, then the dataset (generated or downloaded once here, not on every worker).
    resolve_storage(cfg.run)
    strategy = STRATEGIES[cfg.strategy]
    strategy.check(cfg, build_space(cfg.space))
    splits = build_dataset(cfg.data, cfg.space.input_size)
    print(f"elastic-nas: {cfg.strategy} supernet {cfg.space.name} on {cfg.data.source} "
          f"({len(splits.train)} train images)", flush=True)
    run = run_training(supernet_worker, cfg)
    outputs = run.outputs
    if run.checkpoint:
        outputs.update(strategy.write_results(cfg, run.checkpoint, run.folder))
    run.folder.publish()
    print_outputs("supernet outputs:", outputs)
    return outputs


__all__ = ["build_supernet_task", "supernet_fingerprint", "supernet_worker", "train_supernet"]
