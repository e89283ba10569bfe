"""Control for ``supernet_learning.py --fit-images``: a supernet with no project code.

An 8-layer plain CNN (conv3x3-BN-ReLU, widths 32/64/128, linear head) where every layer
holds ``--ops`` independently initialised convs, trained on 512 fixed synthetic images.
If a random path per step fails to fit here too, the stall of the project's supernets at
small step budgets is the random-path method, not their code. Variants (train top-1 on
the 512 images every 50 steps):

* ``one_op``: one conv per layer (a plain CNN), LR 0.1;
* ``random``: ``--ops`` convs per layer, a uniformly random one per step, LR 0.1;
* ``one_op_lr0.01``, ``random_lr0.01``: the same at LR 0.01;
* ``random_tied_lr0.01``: random, all convs of a layer starting from the same weights,
  LR 0.01.

    python benchmarks/plain_supernet_fit.py [--steps 200]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import _common
from elastic_nas.config import DataConfig
from elastic_nas.data import build_dataset, class_balanced_subset

# (in, out) channels as multiples of --width (0 = the RGB image), stride
LAYERS = ((0, 1, 1), (1, 1, 1), (1, 2, 2), (2, 2, 1), (2, 4, 2), (4, 4, 1), (4, 4, 2), (4, 4, 1))


def fit(x, y, ops: int, tied: bool, lr: float, steps: int, width: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    layers = nn.ModuleList(
        nn.ModuleList(nn.Sequential(nn.Conv2d(cin * width or 3, cout * width, 3, s, 1, bias=False),
                                    nn.BatchNorm2d(cout * width, affine=False), nn.ReLU())
                      for _ in range(ops))
        for cin, cout, s in LAYERS)
    if tied:
        for choices in layers:
            for op in choices[1:]:
                op.load_state_dict(choices[0].state_dict())
    head = nn.Linear(4 * width, 10)
    params = [*layers.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=4e-5)
    rng = np.random.default_rng(seed)
    points, correct, seen = [], 0, 0
    for step in range(steps):
        path = rng.integers(ops, size=len(layers))
        idx = rng.choice(len(y), 64, replace=False)
        h = x[idx]
        for choices, op in zip(layers, path):
            h = choices[op](h)
        logits = head(h.mean((2, 3)))
        loss = nn.functional.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)  # unsampled convs keep grad None: SGD skips them
        loss.backward()
        opt.step()
        correct += int((logits.argmax(1) == y[idx]).sum())
        seen += len(idx)
        if (step + 1) % 50 == 0:
            points.append({"step": step + 1, "train_top1": round(100.0 * correct / seen, 1)})
            correct = seen = 0
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--ops", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    splits = build_dataset(DataConfig(num_train=20000, num_test=2000, search_val_size=2000), 32)
    sub = class_balanced_subset(splits.train, a.images, a.seed)
    x, y, _ = sub.get_batch(np.arange(len(sub)))
    variants = {"one_op": (1, False, 0.1), "random": (a.ops, False, 0.1), "one_op_lr0.01": (1, False, 0.01),
                "random_lr0.01": (a.ops, False, 0.01), "random_tied_lr0.01": (a.ops, True, 0.01)}
    results = {}
    for name, (ops, tied, lr) in variants.items():
        results[name] = fit(x, y, ops, tied, lr, a.steps, a.width, a.seed)
        print(f"{name:>20}: train top-1 {[pt['train_top1'] for pt in results[name]]}", flush=True)
    _common.write_result("plain_supernet_fit", {"images": a.images, "steps": a.steps, "ops": a.ops,
                                                "width": a.width, "chance_top1": 10.0, "results": results})


if __name__ == "__main__":
    main()
