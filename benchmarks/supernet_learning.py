"""Does a supernet learn on the synthetic set, and how fast against its own subnet?

Learning curves (no Ray: this measures the method, not the cluster), one per variant,
all with the same data, batch, LR schedule and steps:

* ``subnet``: one fixed random architecture trained stand-alone (as retrain does);
* ``supernet_fixed``: the supernet trained on that same arch every step;
* ``supernet_pool``: the supernet cycling through ``--pool`` fixed archs (that one included);
* ``supernet_pool_same_transitions``: the same archs, but each stage's first block (the
  one that changes stride or width, with no identity branch) set to that arch's choice;
* ``supernet_random``: the supernet with a uniformly sampled arch per step (SPOS).

The pool variants locate where weight sharing stops learning: sharing a stage's other
blocks is cheap, while arch-specific transition blocks hand the shared layers after
them unrelated features.

Every ``--eval-every`` steps each variant is scored on the same fixed arch, exactly as the
search scores candidates (BN recalibration on train images, class-balanced search_val),
so the three curves are comparable point by point.

    python benchmarks/supernet_learning.py --config jobs/supernet-cream.yaml --set strategy=spos \
        --steps 400 --eval-every 200 --name supernet_learning_cream
    python benchmarks/supernet_learning.py                 # SPOS space; results/supernet_learning.json
    python benchmarks/supernet_learning.py --fit-images 512 --steps 300 --eval-every 100 \
        --eval-images 500 --set space.width_mult=0.25 --variants subnet,supernet_fixed,supernet_random \
        --name supernet_fit_spos           # can the supernet fit 512 images at all?
    python benchmarks/supernet_learning.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

import _common
from _nas import eval_data, train_task
from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.data import build_dataset, class_balanced_subset
from elastic_nas.search.evaluator import evaluate_arch
from elastic_nas.spaces import build_space
from elastic_nas.train.strategies import Strategy
from elastic_nas.train.supernet import build_supernet_task

VARIANTS = ("subnet", "supernet_fixed", "supernet_pool", "supernet_pool_same_transitions", "supernet_random")


def same_transitions(space, arch, ref):
    """``arch`` with each stage's first block taken from ``ref``."""
    if space.cfg.name == "cream":  # per-stage tuples of op ids
        return tuple((ref[i][0], *stage[1:]) for i, stage in enumerate(arch))
    first = [b.stride == 2 or b.in_chs != b.out_chs for b in space.layout.blocks]  # SPOS block search
    return [r if f else op for op, r, f in zip(arch, ref, first)]


class _SubnetAsSupernet(torch.nn.Module):
    """A stand-alone subnet behind the supernet's ``model(x, arch)`` call, so that one
    evaluation function (BN recalibration + validation) scores all variants."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, arch=None):
        return self.net(x)


def curve(variant: str, cfg, splits, arch, data, a) -> dict:
    torch.manual_seed(a.seed)
    task = build_supernet_task(cfg)
    if variant == "subnet":
        space = build_space(cfg.space)
        model = _SubnetAsSupernet(space.build_subnet(arch))
        task.model, task.strategy = model, Strategy(model, cfg.optim.label_smoothing)
    elif variant == "supernet_fixed":
        task.strategy.archs = lambda step: [arch]
    elif variant.startswith("supernet_pool"):
        space = build_space(cfg.space)
        pool = [space.sample(np.random.default_rng(a.seed + 900 + i)) for i in range(a.pool - 1)] + [arch]
        if variant.endswith("same_transitions"):
            pool = [same_transitions(space, p, arch) for p in pool]
        task.strategy.archs = lambda step: [pool[step % len(pool)]]
    points: list[dict] = []
    t0 = time.perf_counter()

    def on_eval(step: int, loss: float, top1: float) -> None:
        score = evaluate_arch(task.model, arch, data)
        task.model.train()
        points.append({"step": step, "train_loss": round(loss, 4), "train_top1": round(top1, 2),
                       "val_top1": round(score["accuracy"], 2), "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{variant:>16} step {step:>5}  train loss {loss:.3f} top1 {top1:5.1f}  "
              f"val top1 {score['accuracy']:5.1f}", flush=True)

    train_task(task, splits.train, a.steps, a.batch, a.lr, a.seed, warmup=a.warmup,
               every=a.eval_every, on_interval=on_eval)
    return {"points": points, "final_val_top1": points[-1]["val_top1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="jobs/supernet.yaml")
    p.add_argument("--set", action="append", default=[], help="config override, as for elastic-nas")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=50, help="linear LR warm-up steps")
    p.add_argument("--pool", type=int, default=8, help="archs of the pool variants")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-images", type=int, default=0,
                   help="train on this many fixed train images (a memorisation test: read train_top1)")
    p.add_argument("--name", default="supernet_learning", help="results/<name>.json")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.steps, a.eval_every, a.eval_images = 20, 10, 200
    torch.set_num_threads(1)
    cfg = load_config(SupernetConfig, a.config, ["data.num_train=20000", "data.num_test=2000",
                                                 "data.search_val_size=2000", *a.set])
    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    arch = space.sample(np.random.default_rng(a.seed + 777))
    data = eval_data(splits, a.eval_images, a.seed)
    if a.fit_images:
        splits = dataclasses.replace(splits, train=class_balanced_subset(splits.train, a.fit_images, a.seed))
    results = {v: curve(v, cfg, splits, arch, data, a) for v in a.variants.split(",")}
    _common.write_result(a.name, {
        "space": cfg.space.name, "width_mult": cfg.space.width_mult, "arch": space.to_json(arch),
        "steps": a.steps, "batch": a.batch, "lr": a.lr, "warmup": a.warmup, "seed": a.seed, "pool": a.pool,
        "fit_images": a.fit_images,
        "chance_top1": 100.0 / cfg.space.num_classes, "results": results,
    })


if __name__ == "__main__":
    main()
