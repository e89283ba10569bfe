"""Supernet path vs standalone subnet: one SGD training step each, same batch.

For each space and a few seeded archs, times ``zero_grad -> forward -> loss -> backward ->
SGD step`` on the supernet (path given to ``forward``) and on ``build_subnet(arch)``,
interleaved (alternating which goes first), and reports the median of each, the median of
the per-pair ratios (``ratio``, robust to load changes) and the ratio of the medians. The
target is a supernet step at most 1.15x the subnet's.

    python benchmarks/supernet_step.py --input-size 32 --batch 64 --repeats 21

Writes ``benchmarks/results/supernet_step.json`` (command, machine, figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.config import SpaceConfig
from elastic_nas.spaces import build_space

TARGET = 1.15


def make_step(model, optimizer, x, y, arch=None):
    def step() -> float:
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)  # unsampled choices keep grad None: SGD skips them
        logits = model(x) if arch is None else model(x, arch)
        F.cross_entropy(logits, y).backward()
        optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return step


def bench_space(key: str, cfg: SpaceConfig, args, device: torch.device) -> dict:
    space = build_space(cfg)
    torch.manual_seed(0)
    sup = space.build_supernet().to(device).train()
    sup_opt = torch.optim.SGD(sup.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    rng = np.random.default_rng(args.seed)
    x = torch.randn(args.batch, 3, cfg.input_size, cfg.input_size, device=device)
    y = torch.randint(0, cfg.num_classes, (args.batch,), device=device)
    rows = []
    for _ in range(args.archs_per_space):
        arch = space.sample(rng)
        # Same BN form on both sides (the SPOS supernet is affine=False) for a like-for-like step.
        kw = {"affine": False} if space.name == "spos" else {}
        sub = space.build_subnet(arch, sup, **kw).to(device).train()
        sub_opt = torch.optim.SGD(sub.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
        sup_step = make_step(sup, sup_opt, x, y, arch)
        sub_step = make_step(sub, sub_opt, x, y)
        for _ in range(args.warmup):
            sup_step()
            sub_step()
        t_sup, t_sub, ratios = [], [], []
        for r in range(args.repeats):
            if r % 2 == 0:
                a, b = sup_step(), sub_step()
            else:
                b, a = sub_step(), sup_step()
            t_sup.append(a)
            t_sub.append(b)
            ratios.append(a / b)
        med_sup, med_sub = statistics.median(t_sup), statistics.median(t_sub)
        row = {
            "arch": space.to_json(arch),
            "macs": space.macs(arch),
            "supernet_ms": round(med_sup * 1e3, 3),
            "subnet_ms": round(med_sub * 1e3, 3),
            # Each pair ran back to back under the same load: the median of pair ratios is
            # the robust figure on a shared machine; the ratio of medians is kept beside it.
            "ratio": round(statistics.median(ratios), 4),
            "ratio_of_medians": round(med_sup / med_sub, 4),
        }
        print(f"{key:13s} {row['macs'] / 1e6:7.2f}M MACs  supernet {row['supernet_ms']:8.2f} ms  "
              f"subnet {row['subnet_ms']:8.2f} ms  ratio {row['ratio']:.3f} "
              f"(of medians {row['ratio_of_medians']:.3f})", flush=True)
        rows.append(row)
    return {
        "config": {"name": cfg.name, "input_size": cfg.input_size, "num_classes": cfg.num_classes,
                   "stem_stride": cfg.stem_stride, "channel_search": cfg.channel_search,
                   "max_depths": list(cfg.max_depths)},
        "archs": rows,
        "median_ratio": round(statistics.median(r["ratio"] for r in rows), 4),
        "max_ratio": max(r["ratio"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--stem-stride", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--archs-per-space", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--spaces", default="spos,spos-channel,cream")
    p.add_argument("--out", default="benchmarks/results/supernet_step.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    common = dict(input_size=args.input_size, num_classes=args.num_classes, stem_stride=args.stem_stride)
    configs = {
        "spos": SpaceConfig(name="spos", **common),
        "spos-channel": SpaceConfig(name="spos", channel_search=True, **common),
        "cream": SpaceConfig(name="cream", **common),
    }
    results = {key: bench_space(key, configs[key], args, device) for key in args.spaces.split(",")}
    worst = max(r["median_ratio"] for r in results.values())
    report = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "target_ratio": TARGET,
        "spaces": results,
        "worst_median_ratio": worst,
        "meets_target": worst <= TARGET,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"worst median ratio {worst:.3f} (target <= {TARGET}); wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
