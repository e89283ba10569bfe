"""In-process NAS steps shared by the quality benchmarks (no Ray: they measure the method,
not the cluster). Training runs the elastic loop's own step, ``TrainStep``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from elastic_nas.config import OptimConfig
from elastic_nas.search.evaluator import EvalData, evaluate_arch
from elastic_nas.search.evaluator import eval_data as search_eval_data
from elastic_nas.search.evolution import Constraints, EvolutionSettings, make_generator
from elastic_nas.spaces.precision import Precision
from elastic_nas.train.evaluate import evaluate
from elastic_nas.train.step import Batch, StepStats, TrainStep, make_optimizer
from elastic_nas.train.strategies import Strategy


def cosine(step: int, total: int, lr: float) -> float:
    return 0.5 * lr * (1 + np.cos(np.pi * step / total))


def warm_cosine(step: int, total: int, lr: float, warmup: int) -> float:
    """The cosine over ``total`` steps after a linear warm-up of ``warmup`` steps (0: none)."""
    return cosine(step, total, lr) * min(1.0, (step + 1) / warmup if warmup else 1.0)


def train_task(task, split, steps: int, batch: int, lr: float, seed: int, grad_clip: float = 0.0,
               warmup: int = 0, every: int = 0, on_interval=None, weight_decay: float = 4e-5,
               channels_last: bool = False, device: str = "cpu", lr_at=None) -> None:
    """The project's training step (``TrainStep``: the strategy's archs and loss, SGD, its
    hooks) in one process, on random batches, cosine LR over ``steps``.

    ``task`` has ``model`` and ``strategy``. ``warmup``: linear LR warm-up steps.
    ``on_interval(step, train_loss, train_top1)`` is called every ``every`` steps and after
    the last, with the interval's means. ``channels_last``: fp32 in that layout (the model is
    converted in place), as the laptop configs train. ``device``: where the model is and the
    batches go (the images are drawn and augmented on the CPU either way). ``lr_at(step)``: each
    step's LR in place of the cosine and warm-up (a run trained in phases, each a part of one schedule).
    """
    prec = Precision("fp32", channels_last, device)
    prec.model(task.model.to(device))
    optimizer = make_optimizer(task.model, OptimConfig(lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay))
    train_step = TrainStep(task.model, task.strategy, grad_clip, precision=prec)
    rng = np.random.default_rng(seed)
    task.model.train()
    interval = StepStats()
    for step in range(steps):
        idx = rng.choice(len(split), batch, replace=False)
        x, y, _ = split.get_batch(idx, augment=True, rng=rng)
        step_lr = lr_at(step) if lr_at else warm_cosine(step, steps, lr, warmup)
        batch_ = Batch(x.to(device), y.to(device), torch.ones(batch, device=device))
        stats = train_step(step, optimizer, step_lr, batch_, batch, samples_seen=step * batch)
        if on_interval is not None:
            interval.loss_sum += stats.loss_sum
            interval.correct += stats.correct
            interval.count += stats.count
            if (step + 1) % every == 0 or step + 1 == steps:
                on_interval(step + 1, interval.loss_sum / interval.count, 100.0 * interval.correct / interval.count)
                interval = StepStats()


def eval_data(splits, n: int, seed: int) -> EvalData:
    """The fixed calibration (train) and class-balanced validation (search_val) images."""
    return search_eval_data(splits, n, n, seed)


TOP_KEPT = 32  # the best candidates a search keeps, best first


def search(method: str, space, model, data: EvalData, macs_max: float, settings: EvolutionSettings,
           seed: int, latency_table=None, latency_max_ms: float = 0.0, score: str = "top1") -> dict:
    """Evolution or random search on ``model`` under ``macs_max`` (and, with a latency table,
    ``latency_max_ms``), scoring candidates as the Tune evaluators do; the best candidate and
    the best score after each generation. ``score``: ``top1`` or ``loss`` (the search_val loss,
    negated for the generators as the search's ``evaluator.score: loss`` does)."""
    def cost(arch) -> tuple:
        macs, params = space.macs(arch), space.params(arch)
        return (macs, params) if latency_table is None else (macs, params, latency_table.predict_ms(space, arch))

    gen = make_generator(method, space, cost, Constraints(macs_max=macs_max, latency_max_ms=latency_max_ms),
                         settings, seed)

    def shown(v: float) -> float:  # the score as people read it: top-1 %, or the loss itself
        return round(v, 2) if score == "top1" else round(-v, 4)

    best_by_gen = []
    while (batch := gen.next_generation()) is not None:
        for c in batch:
            r = evaluate_arch(model, c.arch, data)
            gen.tell(c.key, r["accuracy"] if score == "top1" else -r["loss"])
        best_by_gen.append(shown(gen.top(1)[0].score))
    best = gen.top(1)[0]
    return {"best_accuracy" if score == "top1" else "best_loss": shown(best.score), "best_macs": best.macs,
            "evaluated": len(gen.evaluated()), "best_by_generation": best_by_gen, "arch": space.to_json(best.arch),
            # the runners-up, best first: a second opinion (e.g. short stand-alone training) picks among them
            "top": [[space.to_json(c.arch), shown(c.score)] for c in gen.top(TOP_KEPT)]}


def retrain(space, arch, splits, steps: int, batch: int, lr: float, seed: int, warmup: int = 0,
            channels_last: bool = False) -> float:
    """Test top-1 of ``arch`` trained from scratch for ``steps`` (stand-alone, as retrain does)."""
    return retrain_views(space, arch, splits, steps, batch, lr, seed, warmup, channels_last=channels_last)["final"]["top1"]


def retrain_views(space, arch, splits, steps: int, batch: int, lr: float, seed: int, warmup: int = 0,
                  ema_decays: tuple[float, ...] = (), calib_images: int = 0, curve_every: int = 0,
                  channels_last: bool = False, device: str = "cpu", split: str = "test") -> dict[str, dict]:
    """``retrain``'s run, read several ways, each ``evaluate``'s figures on the test split:
    ``final`` (the weights and BN statistics as trained), and with ``calib_images``
    class-balanced train images ``recal`` (BN statistics recomputed exactly over them) and
    ``ema<decay>`` (an exponential moving average of the weights, BN recomputed likewise).
    The views differ only in how the end of one training run is read: their seed-to-seed
    spread says how much of a stand-alone truth's noise is the end point's. ``curve_every``:
    also ``curve``, the train loss and top-1 of every that many steps (where a run's path went).
    ``channels_last``: trained and evaluated in fp32 channels_last (the same math, faster on CPUs).
    ``device``: where it trains and is read (fp32 there: TF32 off, the CPU truth's math).
    ``split``: what it is read on (``search_val``: where a choice among archs may look)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from elastic_nas.data import class_balanced_subset
    from elastic_nas.spaces.bn import recalibrate_bn

    if ema_decays and not calib_images:
        raise ValueError("EMA weights need calib_images: their BN statistics are recomputed")
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(seed)
    net = space.build_subnet(arch).to(device)
    emas = {d: AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(d)) for d in ema_decays}

    curve: list[list[float]] = []
    interval: list[tuple[float, float]] = []

    def update(step: int, loss: float, top1: float) -> None:
        for ema in emas.values():
            ema.update_parameters(net)
        interval.append((loss, top1))
        if curve_every and step % curve_every == 0:
            curve.append([step, *(round(float(v), 4) for v in np.mean(interval, axis=0))])
            interval.clear()

    every = 1 if emas else curve_every
    train_task(SimpleNamespace(model=net, strategy=Strategy(net, label_smoothing=0.1)), splits.train, steps, batch,
               lr, seed + 1000, warmup=warmup, every=every, on_interval=update if every else None,
               channels_last=channels_last, device=device)
    prec = Precision("fp32", channels_last, device)
    views: dict = {"final": evaluate(net, getattr(splits, split), 256, device, prec)}
    if calib_images:
        calib, _, _ = class_balanced_subset(splits.train, calib_images, seed).get_batch(np.arange(calib_images))
        for name, model in [("recal", net), *((f"ema{d}", ema.module) for d, ema in emas.items())]:
            with torch.no_grad():
                recalibrate_bn(model, model, [prec.input(x.to(device)) for x in calib.split(200)])
            views[name] = evaluate(prec.model(model), getattr(splits, split), 256, device, prec)
    return {**views, **({"curve": curve} if curve_every else {})}
