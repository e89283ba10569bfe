"""Gradient sync for a supernet step: DDP(find_unused_parameters=True) vs a bucketed
all-reduce of only the arch's parameters (``elastic_nas.train.distributed``).

Two gloo processes on this machine, 1 thread each, the same archs on both sides;
blocks of steps alternate between the two methods so drift hits both equally.

    python benchmarks/allreduce_vs_ddp.py [--width 0.5 --steps 120]

``--config NAME [--set k=v ...]``: the product's own step instead (``TrainStep`` with
``grad_sync: ddp`` and ``bucketed``, the config's space and strategy), e.g. the shipped
sandwich, whose step backs up several archs and syncs on the last only, or one uniform arch:

    python benchmarks/allreduce_vs_ddp.py --config supernet --out allreduce_vs_ddp_sandwich
    python benchmarks/allreduce_vs_ddp.py --config supernet --set strategy=spos --out allreduce_vs_ddp_spos_step
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from _common import timed_blocks, write_result


def worker(rank: int, world: int, init_file: str, width: float, steps: int, block: int, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from elastic_nas.config import SpaceConfig
    from elastic_nas.spaces import build_space
    from elastic_nas.train.distributed import allreduce_grads

    space = build_space(SpaceConfig(width_mult=width))
    torch.manual_seed(0)
    plain = space.build_supernet()
    torch.manual_seed(0)
    ddp = torch.nn.parallel.DistributedDataParallel(space.build_supernet(), find_unused_parameters=True)
    opts = {"ddp": torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9),
            "bucketed": torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)}
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    archs = [space.sample(np.random.default_rng([0, step])) for step in range(steps)]  # drawn outside the timing

    def ddp_step(step: int) -> None:
        opts["ddp"].zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x, archs[step]), y).backward()
        opts["ddp"].step()

    def bucketed_step(step: int) -> None:
        opts["bucketed"].zero_grad(set_to_none=True)
        F.cross_entropy(plain(x, archs[step]), y).backward()
        allreduce_grads(plain.arch_parameters(archs[step]))
        opts["bucketed"].step()

    medians = timed_blocks({"ddp": ddp_step, "bucketed": bucketed_step}, steps, block)
    if rank == 0:
        out.update(medians)
    dist.destroy_process_group()


def step_worker(rank: int, world: int, init_file: str, config: str, sets: list, steps: int, block: int,
                out: dict) -> None:
    """The product's ``TrainStep`` on the config's supernet, once per grad_sync setting."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from elastic_nas.config import SupernetConfig, load_config
    from elastic_nas.train.step import Batch, TrainStep, make_optimizer
    from elastic_nas.train.supernet import build_supernet_task

    cfg = load_config(SupernetConfig, config, sets)
    tasks = {m: build_supernet_task(cfg) for m in ("ddp", "bucketed")}  # the same seed: the same weights
    train_steps = {m: TrainStep(t.model, t.strategy, grad_sync=m) for m, t in tasks.items()}
    opts = {m: make_optimizer(t.model, cfg.optim) for m, t in tasks.items()}
    g = torch.Generator().manual_seed(rank)
    size = cfg.space.input_size
    batch = Batch(torch.randn(32, 3, size, size, generator=g), torch.randint(0, 10, (32,), generator=g), torch.ones(32))
    run = {m: (lambda step, m=m: train_steps[m](step, opts[m], 0.01, batch, 32 * world)) for m in train_steps}
    medians = timed_blocks(run, steps, block)
    if rank == 0:
        out.update(medians)
        out["strategy"], out["space"] = cfg.strategy, cfg.space.name
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--config", default="", help="a supernet job config: time the product's TrainStep on it")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="allreduce_vs_ddp")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, mp.Manager() as manager:
        out = manager.dict()
        init = os.path.join(d, "pg")
        if a.config:
            mp.spawn(step_worker, args=(2, init, a.config, a.sets, a.steps, a.block, out), nprocs=2)
        else:
            mp.spawn(worker, args=(2, init, a.width, a.steps, a.block, out), nprocs=2)
        res = dict(out)
    setup = ({"config": a.config, "sets": a.sets, "space": res.pop("space"), "strategy": res.pop("strategy"),
              "step": "elastic_nas.train.step.TrainStep"} if a.config else {"space": "spos", "width_mult": a.width})
    write_result(a.out, {
        "world_size": 2, "backend": "gloo", **setup, "batch_per_worker": 32, "steps": a.steps, "block": a.block,
        "median_step_s": {k: round(v, 4) for k, v in res.items()},
        "ddp_over_bucketed": round(res["ddp"] / res["bucketed"], 3),
        "kept": "bucketed" if res["bucketed"] <= res["ddp"] else "ddp",
    })


if __name__ == "__main__":
    main()
