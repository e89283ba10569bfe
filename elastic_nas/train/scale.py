"""``elastic-nas scale``: a found architecture's EfficientNet family, and (``--grid``) the
coefficients that suit it.

Scaling itself is data (:mod:`elastic_nas.spaces.scaling`). This step picks the base arch
as ``retrain`` does (a search result by budget, an explicit arch or a published name),
writes the family for phi = 0..``phi_max`` (arch, input size, MACs, params) and, for each
member, a retrain config that ``elastic-nas retrain --config`` reads as it is. With
``--grid`` it first runs EfficientNet's step 1 on Ray Tune: each (alpha, beta) of a small
grid, with gamma fitted on the cost model so each step of phi multiplies the MACs by
``flops_factor`` (EfficientNet's ``alpha * beta^2 * gamma^2 = 2`` holds for MBConv stages,
not for ShuffleNetV2's), scales the base once (phi = 1) and trains it stand-alone for a few
hundred steps with the trainer's own step, in parallel trials; the best search_val top-1
gives the coefficients.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace

import numpy as np
import torch
import yaml

from elastic_nas.cluster.launcher import init_ray, resolve_storage
from elastic_nas.config import (
    DataConfig,
    RetrainConfig,
    ScaleConfig,
    ScaleGridConfig,
    SpaceConfig,
    find_config,
    from_dict,
    load_config,
)
from elastic_nas.errors import ConfigError
from elastic_nas.io import RunFolder, atomic_write, print_outputs, write_json
from elastic_nas.spaces.scaling import Scaling, family, fit_gamma, scale_arch


def family_phis(cfg: ScaleConfig) -> range:
    return range(1, max(1, cfg.phi_max) + 1)


def grid_points(cfg: ScaleConfig, space_cfg: SpaceConfig, arch) -> list[dict]:
    """(alpha, beta, gamma) with gamma fitted to the MACs growth on this arch, gamma >= 1."""
    points = [{"alpha": a, "beta": b, "gamma": fit_gamma(space_cfg, arch, a, b, cfg.grid.flops_factor,
                                                         family_phis(cfg))}
              for a in cfg.grid.alphas for b in cfg.grid.betas]
    points = [p for p in points if p["gamma"] >= 1]
    if not points:
        raise ConfigError("grid.flops_factor", f"{cfg.grid.flops_factor}: every (alpha, beta) of the grid alone "
                                               "grows this arch's MACs faster; lower grid.alphas or grid.betas")
    return points


def train_point(space_cfg: SpaceConfig, arch, data_cfg: DataConfig, grid: ScaleGridConfig, point: dict,
                seed: int = 0) -> dict:
    """Scale the base by ``point`` at phi = 1, train it stand-alone for ``grid.steps`` steps
    (the trainer's step, cosine LR) and score it on class-balanced search_val images."""
    from elastic_nas.config import OptimConfig
    from elastic_nas.data import build_dataset, class_balanced_subset
    from elastic_nas.elastic.sampler import ElasticSampler
    from elastic_nas.spaces import build_space
    from elastic_nas.train.evaluate import evaluate
    from elastic_nas.train.step import Batch, TrainStep, make_optimizer
    from elastic_nas.train.strategies import Strategy

    cfg, scaled = scale_arch(space_cfg, arch, Scaling(1, point["alpha"], point["beta"], point["gamma"]))
    space = build_space(cfg)
    splits = build_dataset(data_cfg, cfg.input_size)
    torch.manual_seed(seed)
    model = space.build_subnet(scaled).train()
    optimizer = make_optimizer(model, OptimConfig(lr=grid.lr, nesterov=True))
    step = TrainStep(model, Strategy(model, label_smoothing=0.1))
    sampler = ElasticSampler(len(splits.train), seed=seed)
    for t in range(grid.steps):
        plan = sampler.plan(1, grid.batch)
        x, y, _ = splits.train.get_batch(plan.indices(0), augment=True, rng=np.random.default_rng([seed, t]))
        lr = 0.5 * grid.lr * (1 + math.cos(math.pi * t / grid.steps))
        step(t, optimizer, lr, Batch(x, y, torch.ones(len(y))), num_real=len(y))
        sampler.advance(plan)
    val = class_balanced_subset(splits.search_val, min(grid.val_images, len(splits.search_val)), seed)
    return {**point, "top1": round(evaluate(model, val)["top1"], 2), "input_size": cfg.input_size,
            "macs": space.macs(scaled), "params": space.params(scaled)}


def _grid_trial(config: dict, settings: dict) -> None:
    from ray import tune

    torch.set_num_threads(max(1, int(settings["cpus"])))
    started = time.time()
    result = train_point(from_dict(SpaceConfig, settings["space"]), settings["arch"],
                         from_dict(DataConfig, settings["data"]), from_dict(ScaleGridConfig, settings["grid"]),
                         config["point"], settings["seed"])
    tune.report({**result, "started": started, "ended": time.time()})


def run_grid(cfg: ScaleConfig, space_cfg: SpaceConfig, arch, folder: RunFolder) -> tuple[dict, list[dict]]:
    """EfficientNet's step 1 as parallel Tune trials; (best point, every point)."""
    import logging
    import os

    from ray import tune
    from ray.tune import Callback
    from ray.tune.logger import JsonLoggerCallback

    points = grid_points(cfg, space_cfg, arch)
    print(f"elastic-nas: scale grid: {len(points)} points (alpha, beta; gamma so each phi multiplies the MACs by "
          f"{cfg.grid.flops_factor}), {cfg.grid.steps} steps each", flush=True)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # one line per point below, not Tune's tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the JSON logger below is enough
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    init_ray()
    done, t0 = [0], time.time()

    class Progress(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            done[0] += 1
            print(f"elastic-nas: scale grid {done[0]}/{len(points)}: alpha {result['alpha']} beta {result['beta']} "
                  f"gamma {result['gamma']}: top-1 {result['top1']:.2f}% ({result['macs'] / 1e6:.2f}M MACs, "
                  f"{time.time() - t0:.0f} s)", flush=True)

    settings = {"space": asdict(space_cfg), "arch": arch, "data": asdict(cfg.data), "grid": asdict(cfg.grid),
                "seed": cfg.run.seed, "cpus": cfg.grid.cpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_grid_trial, settings=settings), {"cpu": cfg.grid.cpus_per_trial}),
        param_space={"point": tune.grid_search(points)},
        run_config=tune.RunConfig(name="grid", storage_path=str(folder.local / "tune"), verbose=0,
                                  callbacks=[JsonLoggerCallback(), Progress()]),
    )
    results = tuner.fit()
    rows = sorted((r.metrics for r in results if r.metrics and "top1" in r.metrics),
                  key=lambda m: (m["alpha"], m["beta"]))
    if len(rows) != len(points):
        raise RuntimeError(f"scale grid: {len(points) - len(rows)} of {len(points)} points failed; see {folder.local}")
    keep = ("alpha", "beta", "gamma", "top1", "input_size", "macs", "params", "started", "ended")
    rows = [{k: m[k] for k in keep} for m in rows]
    return max(rows, key=lambda m: m["top1"]), rows


def run_scale(cfg: ScaleConfig, grid: bool = False) -> dict:
    from elastic_nas.train.retrain import select_arch

    folder = RunFolder(resolve_storage(cfg.run), cfg.run.name)
    space_cfg, arch = select_arch(RetrainConfig(arch=cfg.arch, space=cfg.space))
    folder.local.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    if cfg.fit_gamma and not grid:
        gamma = fit_gamma(space_cfg, arch, cfg.alpha, cfg.beta, cfg.grid.flops_factor, family_phis(cfg))
        if gamma < 1:
            raise ConfigError("fit_gamma", f"alpha {cfg.alpha} and beta {cfg.beta} alone grow this arch's MACs more "
                                           f"than {cfg.grid.flops_factor}x per phi; lower them")
        cfg = replace(cfg, gamma=gamma)
    if grid:
        best, points = run_grid(cfg, space_cfg, arch, folder)
        cfg = replace(cfg, alpha=best["alpha"], beta=best["beta"], gamma=best["gamma"])
        outputs["grid"] = folder.show(write_json(folder.local / "grid.json", {"best": best, "points": points}))
    rows = family(space_cfg, arch, range(cfg.phi_max + 1), cfg.alpha, cfg.beta, cfg.gamma)
    base = yaml.safe_load(find_config(cfg.retrain).read_text()) or {}
    for row in rows:
        path = folder.local / f"retrain-phi{row['phi']}.yaml"
        member = {**base, "run": {**base.get("run", {}), "name": f"{cfg.run.name}-phi{row['phi']}"},
                  "arch": {"search": "", "budget": 0, "value": row["arch"]}, "space": row["space"]}
        atomic_write(path, f"# {cfg.run.name} phi={row['phi']}: alpha {cfg.alpha}, beta {cfg.beta}, "
                           f"gamma {cfg.gamma}\n" + yaml.safe_dump(member, sort_keys=False))
        load_config(RetrainConfig, path)  # it must read back as it is
        row["retrain_config"] = folder.show(path)
    outputs["family"] = folder.show(write_json(folder.local / "family.json", {
        "alpha": cfg.alpha, "beta": cfg.beta, "gamma": cfg.gamma, "flops_factor": round(
            Scaling(1, cfg.alpha, cfg.beta, cfg.gamma).flops_factor, 4), "members": rows}))
    folder.publish()
    base_macs = rows[0]["macs"]
    print(f"scale: {rows[0]['space']['name']} family, alpha {cfg.alpha} beta {cfg.beta} gamma {cfg.gamma}", flush=True)
    print(f"  {'phi':>3}  {'input':>5}  {'MACs':>9}  {'x base':>6}  {'params':>8}  retrain config", flush=True)
    for r in rows:
        print(f"  {r['phi']:>3}  {r['input_size']:>5}  {r['macs'] / 1e6:>8.2f}M  {r['macs'] / base_macs:>6.2f}  "
              f"{r['params'] / 1e6:>7.3f}M  {r['retrain_config']}", flush=True)
    print_outputs("scale outputs:", outputs)
    return {"members": rows, "alpha": cfg.alpha, "beta": cfg.beta, "gamma": cfg.gamma}


__all__ = ["family_phis", "grid_points", "run_grid", "run_scale", "train_point"]
