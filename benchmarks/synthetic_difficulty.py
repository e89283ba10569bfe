"""Does architecture matter on the synthetic dataset? Train very different fixed nets
for the same short budget and compare test top-1.

    python benchmarks/synthetic_difficulty.py [--steps 1000] [--batch 64] [--threads 1]

Writes ``benchmarks/results/synthetic_difficulty.json`` (command, machine, accuracies).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from elastic_nas.config import DataConfig
from elastic_nas.data import build_dataset


def linear(num_classes: int) -> nn.Module:
    # No spatial structure at all: one matrix on raw pixels.
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))


def mlp(num_classes: int) -> nn.Module:
    # No spatial structure: a hidden layer on raw pixels.
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 256), nn.ReLU(inplace=True),
                         nn.Linear(256, num_classes))


def local_cnn(num_classes: int) -> nn.Module:
    # Receptive field 10x10 px, then a global average: sees edges, corners and
    # textures but never a whole shape.
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


def deep_cnn(num_classes: int) -> nn.Module:
    # Three downsampling stages: receptive field covers the whole 32x32 image.
    def stage(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2)]
    return nn.Sequential(*stage(3, 16), *stage(16, 32), *stage(32, 64),
                         nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


MODELS = {"linear": linear, "mlp": mlp, "local_cnn": local_cnn, "deep_cnn": deep_cnn}


def train_and_eval(name: str, data, steps: int, batch: int, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MODELS[name](data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    model.train()
    for step in range(steps):
        idx = rng.integers(0, len(data.train), size=batch)
        x, y, _ = data.train.get_batch(idx, augment=True, rng=rng)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.time() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.test), 1000):
            idx = np.arange(start, min(start + 1000, len(data.test)))
            x, y, _ = data.test.get_batch(idx)
            correct += int((model(x).argmax(1) == y).sum())
    acc = 100.0 * correct / len(data.test)
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params, "steps": steps, "batch": batch,
            "train_seconds": round(train_s, 1), "test_top1": round(acc, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="training budget per model, in SGD steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--difficulty", choices=("standard", "hard"), default="standard")
    ap.add_argument("--num-train", type=int, default=DataConfig().num_train, help="synthetic images generated for train")
    ap.add_argument("--cache", default="", help="synthetic cache dir (default ~/.cache/elastic-nas/...)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "synthetic_difficulty.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.time()
    data = build_dataset(DataConfig(seed=args.seed, path=args.cache, difficulty=args.difficulty,
                                    num_train=args.num_train), image_size=32)
    prep_s = time.time() - t0
    print(f"data: {data.summary()} ({prep_s:.1f} s)", file=sys.stderr)
    results = []
    for name in args.models.split(","):
        r = train_and_eval(name, data, args.steps, args.batch, args.seed)
        print(f"{name}: {r}", file=sys.stderr)
        results.append(r)

    table = ["| model | params | steps x batch | train time (s) | test top-1 (%) |",
             "|---|---:|---:|---:|---:|"]
    table += [f"| {r['model']} | {r['params']:,} | {r['steps']} x {r['batch']} | {r['train_seconds']} "
              f"| {r['test_top1']} |" for r in results]
    print("\n".join(table))
    report = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": args.threads, "torch": torch.__version__,
                    "python": platform.python_version()},
        "data": {"train": len(data.train), "search_val": len(data.search_val), "test": len(data.test),
                 "prepare_seconds": round(prep_s, 1)},
        "difficulty": args.difficulty,
        "budget": {"steps": args.steps, "batch": args.batch},
        "results": results,
        "total_seconds": round(time.time() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
