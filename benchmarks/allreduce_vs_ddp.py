"""Gradient sync for a supernet step: DDP(find_unused_parameters=True) vs a bucketed
all-reduce of only the arch's parameters (``elastic_nas.train.distributed``).

Two gloo processes on this machine, 1 thread each, the same archs on both sides;
blocks of steps alternate between the two methods so drift hits both equally.

    python benchmarks/allreduce_vs_ddp.py [--width 0.5 --steps 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from _common import write_result


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
    times = {"ddp": [], "bucketed": []}
    for step in range(steps):
        method = "ddp" if (step // block) % 2 == 0 else "bucketed"
        arch = space.sample(np.random.default_rng([0, step]))
        dist.barrier()
        t0 = time.perf_counter()
        opt = opts[method]
        opt.zero_grad(set_to_none=True)
        if method == "ddp":
            F.cross_entropy(ddp(x, arch), y).backward()
        else:
            F.cross_entropy(plain(x, arch), y).backward()
            allreduce_grads(plain.arch_parameters(arch))
        opt.step()
        if step >= 2 * block:  # skip the first block of each as warm-up
            times[method].append(time.perf_counter() - t0)
    if rank == 0:
        out.update({k: statistics.median(v) for k, v in times.items()})
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--block", type=int, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(2, os.path.join(d, "pg"), a.width, a.steps, a.block, out), nprocs=2)
        res = dict(out)
    write_result("allreduce_vs_ddp", {
        "world_size": 2, "backend": "gloo", "space": "spos", "width_mult": a.width, "batch_per_worker": 32,
        "median_step_s": {k: round(v, 4) for k, v in res.items()},
        "ddp_over_bucketed": round(res["ddp"] / res["bucketed"], 3),
        "kept": "bucketed" if res["bucketed"] <= res["ddp"] else "ddp",
    })


if __name__ == "__main__":
    main()
