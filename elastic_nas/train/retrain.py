"""``elastic-nas retrain``: the chosen subnet, trained from scratch on the elastic trainer.

Same loop as the supernet (Dynamic mini-batch SGD, preemption checkpoints, resume);
the "arch" is the whole standalone subnet, built with affine BatchNorm.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from typing import Any

import torch

from elastic_nas.cluster.launcher import resolve_storage
from elastic_nas.config import RetrainConfig, SpaceConfig, from_dict
from elastic_nas.errors import ArchError
from elastic_nas.io import print_outputs, redact, write_json
from elastic_nas.search.outputs import read_choice
from elastic_nas.spaces.precision import Precision
from elastic_nas.train.driver import run_training
from elastic_nas.train.evaluate import evaluate, load_subnet, subnet_fingerprint
from elastic_nas.train.loop import train_loop
from elastic_nas.train.strategies import Strategy
from elastic_nas.train.task import TrainTask


def select_arch(cfg: RetrainConfig) -> tuple[SpaceConfig, Any]:
    """(space config, arch JSON) from a search result, an explicit arch or a published name."""
    from elastic_nas.spaces import PUBLISHED, build_space

    sel = cfg.arch
    if sel.search:
        space_dict, arch = read_choice(sel.search, sel.budget)
        space_cfg = from_dict(SpaceConfig, space_dict)
    elif isinstance(sel.value, list):
        space_cfg, arch = cfg.space, sel.value
    elif sel.value in PUBLISHED:
        name, arch, _ = PUBLISHED[sel.value]
        space_cfg = replace(cfg.space, name=name)
        if name == "cream":  # published Cream models need deeper stages than the default supernet
            space_cfg.max_depths = [max(d, len(s)) for d, s in zip(space_cfg.max_depths, arch[1:6])]
    else:
        try:
            arch = json.loads(sel.value)
        except json.JSONDecodeError:
            raise ArchError(f"arch.value must be arch JSON or a published name "
                            f"({', '.join(PUBLISHED)}), got {sel.value!r}") from None
        space_cfg = cfg.space
    space = build_space(space_cfg)
    return space_cfg, space.to_json(space.validate(arch))


def build_subnet_task(cfg: RetrainConfig, space_cfg: SpaceConfig, arch_json: Any) -> TrainTask:
    """The standalone subnet, from scratch (affine BN), and the train split."""
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    space = build_space(space_cfg)
    arch = space.validate(arch_json)
    splits = build_dataset(cfg.data, space_cfg.input_size)
    torch.manual_seed(cfg.run.seed)
    model = space.build_subnet(arch)
    return TrainTask(model=model, strategy=Strategy(model, cfg.optim.label_smoothing), train_split=splits.train,
                     fingerprint=subnet_fingerprint(space_cfg, arch_json, cfg.data), kind="subnet")


def retrain_worker(config: dict) -> None:
    """Ray Train entry point, run on every worker."""
    t_enter = time.time()
    cfg = from_dict(RetrainConfig, config["cfg"])
    torch.set_num_threads(max(1, int(cfg.elastic.resources_per_worker.get("CPU", 1))))
    task = build_subnet_task(cfg, from_dict(SpaceConfig, config["space"]), config["arch"])
    train_loop(task, cfg, config.get("tensorboard_dir", ""), t_enter)


def retrain(cfg: RetrainConfig) -> dict:
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    resolve_storage(cfg.run)  # before any work: storage that cannot be written fails here
    space_cfg, arch = select_arch(cfg)
    splits = build_dataset(cfg.data, space_cfg.input_size)
    space = build_space(space_cfg)
    a = space.validate(arch)
    print(f"elastic-nas: retraining {space_cfg.name} arch {json.dumps(arch)} "
          f"({space.macs(a) / 1e6:.1f}M MACs, {space.params(a) / 1e6:.2f}M params) from scratch", flush=True)
    run = run_training(retrain_worker, cfg, {"space": asdict(space_cfg), "arch": arch})
    model, *_ = load_subnet(run.checkpoint)
    metrics = evaluate(model, splits.test, cfg.eval_batch, precision=Precision.of(cfg.optim))  # as it trained
    summary = {"space": asdict(space_cfg), "arch": arch, "macs": space.macs(a), "params": space.params(a),
               "test_top1": round(metrics["top1"], 2), "test_top5": round(metrics["top5"], 2),
               "checkpoint": redact(run.checkpoint)}
    outputs = run.outputs
    outputs["result"] = run.folder.show(write_json(run.folder.local / "result.json", summary))
    run.folder.publish()
    outputs["test top-1 / top-5"] = f"{metrics['top1']:.2f}% / {metrics['top5']:.2f}%"
    print_outputs("retrain outputs:", outputs)
    return summary


__all__ = ["build_subnet_task", "retrain", "retrain_worker", "select_arch"]
