"""In-process NAS steps shared by the quality benchmarks (no Ray: they measure the method,
not the cluster). Training runs the same task hooks the elastic loop calls on a worker."""

from __future__ import annotations

import numpy as np
import torch

from elastic_nas.data import class_balanced_subset
from elastic_nas.search.evaluator import EvalData, evaluate_arch
from elastic_nas.search.evolution import Constraints, EvolutionSettings, make_generator
from elastic_nas.train.evaluate import evaluate


def cosine(step: int, total: int, lr: float) -> float:
    return 0.5 * lr * (1 + np.cos(np.pi * step / total))


def train_task(task, split, steps: int, batch: int, lr: float, seed: int, label_smoothing: float = 0.1,
               grad_clip: float = 0.0, warmup: int = 0, every: int = 0, on_interval=None) -> None:
    """What the elastic loop does on one worker: path, criterion, SGD (cosine), after_step.

    ``warmup``: linear LR warm-up steps. ``on_interval(step, train_loss, train_top1)`` is
    called every ``every`` steps and after the last, with the interval's means.
    """
    decay = [p for p in task.model.parameters() if p.ndim > 1]
    rest = [p for p in task.model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 4e-5}, {"params": rest, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(seed)
    task.model.train()
    loss_sum = correct = seen = 0.0
    for step in range(steps):
        arch = task.path(step)
        idx = rng.choice(len(split), batch, replace=False)
        x, y, _ = split.get_batch(idx, augment=True, rng=rng)
        for g in opt.param_groups:
            g["lr"] = cosine(step, steps, lr) * min(1.0, (step + 1) / warmup if warmup else 1.0)
        opt.zero_grad(set_to_none=True)
        if task.criterion is not None:
            per_sample, logits = task.criterion(task.model, x, y, arch, step)
        else:
            logits = task.model(x) if arch is None else task.model(x, arch)
            per_sample = torch.nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing,
                                                           reduction="none")
        per_sample.mean().backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(task.model.parameters(), grad_clip)
        opt.step()
        if task.after_step is not None:
            task.after_step(step, arch, {"correct": float((logits.argmax(1) == y).sum()), "count": float(batch),
                                         "x": x, "y": y, "valid": torch.ones(batch)})
        if on_interval is not None:
            loss_sum += float(per_sample.detach().sum())
            correct += float((logits.argmax(1) == y).sum())
            seen += batch
            if (step + 1) % every == 0 or step + 1 == steps:
                on_interval(step + 1, loss_sum / seen, 100.0 * correct / seen)
                loss_sum = correct = seen = 0.0


def eval_data(splits, n: int, seed: int) -> EvalData:
    """The fixed calibration (train) and class-balanced validation (search_val) images."""
    calib = class_balanced_subset(splits.train, n, seed)
    val = class_balanced_subset(splits.search_val, n, seed)
    cx, _, _ = calib.get_batch(np.arange(len(calib)))
    vx, vy, _ = val.get_batch(np.arange(len(val)))
    return EvalData(cx.numpy(), vx.numpy(), vy.numpy(), 200)


def search(method: str, space, model, data: EvalData, macs_max: float, settings: EvolutionSettings,
           seed: int) -> dict:
    """Evolution or random search on ``model`` under ``macs_max``, scoring candidates as the
    Tune evaluators do; the best candidate and the best score after each generation."""
    gen = make_generator(method, space, lambda arch: (space.macs(arch), space.params(arch)),
                         Constraints(macs_max=macs_max), settings, seed)
    best_by_gen = []
    while (batch := gen.next_generation()) is not None:
        for c in batch:
            gen.tell(c.key, evaluate_arch(model, c.arch, data)["accuracy"])
        best_by_gen.append(round(gen.top(1)[0].score, 2))
    best = gen.top(1)[0]
    return {"best_accuracy": round(best.score, 2), "best_macs": best.macs, "evaluated": len(gen.evaluated()),
            "best_by_generation": best_by_gen, "arch": space.to_json(best.arch)}


def retrain(space, arch, splits, steps: int, batch: int, lr: float, seed: int) -> float:
    """Test top-1 of ``arch`` trained from scratch for ``steps`` (stand-alone, as retrain does)."""
    torch.manual_seed(seed)
    net = space.build_subnet(arch)

    class Fixed:  # a task whose "path" is the whole subnet, as retrain's
        model, path, criterion, after_step = net, staticmethod(lambda step: None), None, None

    train_task(Fixed, splits.train, steps, batch, lr, seed + 1000)
    return evaluate(net, splits.test, 256)["top1"]


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties in either list count as neither concordant nor discordant)."""
    n, num, ties_a, ties_b = len(a), 0.0, 0, 0
    pairs = n * (n - 1) // 2
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            num += da * db
            ties_a += da == 0
            ties_b += db == 0
    denom = np.sqrt((pairs - ties_a) * (pairs - ties_b))
    return float(num / denom) if denom else 0.0
