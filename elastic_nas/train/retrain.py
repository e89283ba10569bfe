"""``elastic-nas retrain``: the chosen subnet, trained from scratch on the elastic trainer.

Same loop as the supernet (Dynamic mini-batch SGD, preemption checkpoints, resume);
the "path" is the whole standalone subnet, built with affine BatchNorm.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from elastic_nas.config import RetrainConfig, SpaceConfig, from_dict
from elastic_nas.errors import ArchError, UserError
from elastic_nas.train.evaluate import evaluate, subnet_fingerprint
from elastic_nas.train.loop import LoopSettings, TrainTask, train_loop


def _read_json(path: str) -> Any:
    fs, p = pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), str(Path(path).resolve()))
    try:
        with fs.open_input_stream(p) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise UserError(f"arch.search: {path} not found (run `elastic-nas search` first)") from None


def select_arch(cfg: RetrainConfig) -> tuple[SpaceConfig, Any]:
    """(space config, arch JSON) from a search result, an explicit arch or a published name."""
    from elastic_nas.spaces import PUBLISHED, build_space

    sel = cfg.arch
    if sel.search:
        root = sel.search.rstrip("/")
        if sel.budget > 0:
            entries = _read_json(f"{root}/best_per_budget.json")
            fitting = [e for e in entries if e["macs"] <= sel.budget * 1e6]
            if not fitting:
                budgets = ", ".join(f"{e['budget_macs'] / 1e6:g}M" for e in entries)
                raise UserError(f"arch.budget: no searched arch within {sel.budget:g}M MACs (budgets: {budgets})")
            best = max(fitting, key=lambda e: (e["accuracy"], -e["macs"]))
            chosen = _read_json(f"{root}/chosen_arch.json")
            space_cfg, arch = from_dict(SpaceConfig, chosen["space"]), best["arch"]
        else:
            chosen = _read_json(f"{root}/chosen_arch.json")
            space_cfg, arch = from_dict(SpaceConfig, chosen["space"]), chosen["arch"]
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


def retrain_worker(config: dict) -> None:
    """Ray Train entry point, run on every worker."""
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space

    t_enter = time.time()
    cfg = from_dict(RetrainConfig, config["cfg"])
    space_cfg = from_dict(SpaceConfig, config["space"])
    torch.set_num_threads(max(1, int(cfg.elastic.resources_per_worker.get("CPU", 1))))
    space = build_space(space_cfg)
    arch = space.validate(config["arch"])
    splits = build_dataset(cfg.data, space_cfg.input_size)
    torch.manual_seed(cfg.run.seed)
    model = space.build_subnet(arch)  # from scratch, affine BN
    task = TrainTask(
        model=model, forward=model, path=lambda step: None,
        grad_params=lambda _: list(model.parameters()), train_split=splits.train,
        fingerprint=subnet_fingerprint(space_cfg, config["arch"], cfg.data), kind="subnet",
    )
    train_loop(task, LoopSettings.from_config(cfg, config.get("tensorboard_dir", "")), t_enter)


def retrain(cfg: RetrainConfig) -> dict:
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space
    from elastic_nas.train import launcher
    from elastic_nas.train.evaluate import load_subnet

    space_cfg, arch = select_arch(cfg)
    splits = build_dataset(cfg.data, space_cfg.input_size)
    space = build_space(space_cfg)
    a = space.validate(arch)
    print(f"elastic-nas: retraining {space_cfg.name} arch {json.dumps(arch)} "
          f"({space.macs(a) / 1e6:.1f}M MACs, {space.params(a) / 1e6:.2f}M params) from scratch", flush=True)
    result, outputs = launcher.launch(retrain_worker, cfg, {"space": asdict(space_cfg), "arch": arch})
    model, *_ = load_subnet(result.checkpoint.path)
    metrics = evaluate(model, splits.test, cfg.eval_batch)
    summary = {"space": asdict(space_cfg), "arch": arch, "macs": space.macs(a), "params": space.params(a),
               "test_top1": round(metrics["top1"], 2), "test_top5": round(metrics["top5"], 2),
               "checkpoint": result.checkpoint.path}
    run_dir = launcher.local_run_dir(launcher.resolve_storage(cfg.run), cfg.run.name)
    if run_dir is not None:
        launcher.write_json(run_dir / "result.json", summary)
        outputs["result"] = str(run_dir / "result.json")
    outputs["test top-1 / top-5"] = f"{metrics['top1']:.2f}% / {metrics['top5']:.2f}%"
    launcher.print_outputs("retrain outputs:", outputs)
    return summary
