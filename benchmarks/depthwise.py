"""Depthwise convs on small maps: the product's ``spaces.depthwise.conv2d`` against the plain op.

At 32 px the laptop space runs most blocks on 4 x 4 maps or smaller, often with a kernel wider
than the map. The product cuts such a kernel to the taps that meet pixels and, on CPUs, takes a
kernel still wider than its map's weight gradient tap by tap (oneDNN's is slow there). Reports

* ``weight_grad``: per map size, kernel and stride (channels_last, batch 64, 1 thread): the plain
  forward, a forward and the weight gradient by the plain op (oneDNN's) and by the product's, and
  the two gradients' largest relative difference;
* ``steps``: the product's own training step in one process, 1 thread, batch 64 (one of the
  pipeline's two supernet workers), plain op against the product's in alternating blocks of steps
  (the first block of each is warm-up): the shipped ``jobs/supernet.yaml`` sandwich step with the
  teacher alone (progressive shrinking's first phase, 30 % of the pipeline's samples) and with
  every dimension elastic (its last 25 %), and the pipeline's pick stand-alone with the retrain
  recipe; before the timing, both take ``--check-steps`` steps from the same weights on the same
  batches and their losses are compared (only the order of sums differs);
* ``evaluator``: BN recalibration on 1,000 images and scoring of 2,000 (``evaluate_arch``, no
  gradient: only the cut kernel can matter), candidate by candidate, alternating.

    python benchmarks/depthwise.py [--steps 60 --block 10 --rounds 2]

Writes ``benchmarks/results/depthwise.json`` (``--out NAME``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import memory_format
import numpy as np
import torch
import torch.nn.functional as F
from memory_format import PIPELINE_PICK

from _common import write_result

MODES = ("plain", "product")
BATCH = 64
# sandwich.progressive for each supernet part: the teacher alone throughout, or every dimension elastic
SUPERNET_PARTS = {"supernet_teacher_alone": "[0.99,0.99,0.99]", "supernet_all_elastic": "[]"}


def mode(name: str):
    """Inside, every depthwise conv of the spaces runs as ``name``: ``plain`` is ``F.conv2d`` as it
    was before ``spaces.depthwise`` (the whole kernel, oneDNN's gradients)."""
    from elastic_nas.spaces import depthwise

    return depthwise.whole_kernels() if name == "plain" else contextlib.nullcontext()


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def weight_grad_part(reps: int) -> list[dict]:
    from elastic_nas.spaces import depthwise

    rows, g = [], torch.Generator().manual_seed(0)
    for size, chs in ((1, 480), (2, 480), (4, 192), (8, 96), (16, 48)):
        for kernel in (3, 5, 7):
            for stride in (1, 2):
                x = torch.randn(BATCH, chs, size, size, generator=g).contiguous(memory_format=torch.channels_last)
                w = torch.randn(chs, 1, kernel, kernel, generator=g)
                y = F.conv2d(x, w, None, stride, kernel // 2, 1, chs)
                gy = torch.randn(y.shape, generator=g).contiguous(memory_format=torch.channels_last)

                def step(conv, weight):
                    """A forward and the weight gradient (the input needs none), through ``conv``."""
                    weight = weight.clone().requires_grad_()
                    conv(x, weight).backward(gy)
                    return weight.grad

                def plain(x_, w_):
                    return F.conv2d(x_, w_, None, stride, kernel // 2, 1, chs)

                def product(x_, w_):
                    return depthwise.conv2d(x_, w_, stride)

                ref, ours = step(plain, w), step(product, w)
                rows.append({"map": size, "channels": chs, "kernel": kernel, "stride": stride,
                             "kernel_cut_to": depthwise.reach_kernel(w, size, size).shape[-1],
                             "forward_ms": round(median_ms(lambda: plain(x, w), reps), 3),
                             "plain_forward_and_weight_grad_ms": round(median_ms(lambda: step(plain, w), reps), 3),
                             "product_forward_and_weight_grad_ms": round(median_ms(lambda: step(product, w), reps), 3),
                             "max_rel_diff": float((ours - ref).abs().max() / ref.abs().max())})
    return rows


def build(part: str, sets: list):
    """(TrainStep, optimizer) of ``part`` in fp32 channels_last (``memory_format.build``), the same
    weights each call."""
    torch.manual_seed(0)
    if part == "subnet":
        return memory_format.build("subnet", PIPELINE_PICK, True, sets)
    return memory_format.build("sandwich", PIPELINE_PICK, True, [*sets, f"sandwich.progressive={SUPERNET_PARTS[part]}"])


def steps_part(part: str, sets: list, steps: int, block: int, check_steps: int) -> dict:
    from elastic_nas.train.step import Batch

    g = torch.Generator().manual_seed(1)
    batches = [Batch(torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g),
                     torch.ones(BATCH)) for _ in range(4)]
    runs, losses = {}, {}
    for m in MODES:
        runs[m] = build(part, sets)
        with mode(m):
            losses[m] = [runs[m][0](s, runs[m][1], 0.05, batches[s % 4], BATCH).loss_sum / BATCH
                         for s in range(check_steps)]
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for s in range(steps):
        m = MODES[(s // block) % 2]
        with mode(m):
            t0 = time.perf_counter()
            runs[m][0](check_steps + s, runs[m][1], 0.05, batches[s % 4], BATCH)
            if s >= 2 * block:
                times[m].append(time.perf_counter() - t0)
    step_s = {m: statistics.median(t) for m, t in times.items()}
    return {"step_s": step_s, "speedup": step_s["plain"] / step_s["product"],
            "losses": {m: [round(v, 6) for v in losses[m]] for m in MODES},
            "loss_max_abs_diff": max(abs(a - b) for a, b in zip(losses["plain"], losses["product"]))}


def evaluator_part(candidates: int, sets: list) -> dict:
    from elastic_nas.search.evaluator import EvalData, evaluate_arch
    from elastic_nas.spaces import build_space
    from elastic_nas.spaces.precision import Precision

    space = build_space(memory_format.supernet_cfg(sets).space)
    torch.manual_seed(0)
    model = Precision(channels_last=True).model(space.build_supernet())
    g = torch.Generator().manual_seed(0)
    calib, val = torch.randn(1000, 3, 32, 32, generator=g).numpy(), torch.randn(2000, 3, 32, 32, generator=g).numpy()
    data = EvalData(calib, val, torch.randint(0, 10, (2000,), generator=g).numpy(), 250, "fp32", True)
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(candidates)]
    evaluate_arch(model, archs[0], data)  # warm-up
    times, scores = {m: [] for m in MODES}, {m: [] for m in MODES}
    for i, arch in enumerate(archs):
        for m in MODES if i % 2 == 0 else MODES[::-1]:
            with mode(m):
                t0 = time.perf_counter()
                scores[m].append(evaluate_arch(model, arch, data)["loss"])
                times[m].append(time.perf_counter() - t0)
    candidate_s = {m: statistics.median(t) for m, t in times.items()}
    return {"candidates": candidates, "candidate_s": candidate_s, "speedup": candidate_s["plain"] / candidate_s["product"],
            "val_loss_max_abs_diff": max(abs(a - b) for a, b in zip(scores["plain"], scores["product"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps per part and round, both modes")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="every training part once per round")
    ap.add_argument("--check-steps", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=8, help="evaluator candidates")
    ap.add_argument("--reps", type=int, default=10, help="timed repeats of each weight-gradient shape")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override jobs/supernet.yaml (the subnet part keeps the pipeline's pick)")
    ap.add_argument("--out", default="depthwise")
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    grads = weight_grad_part(a.reps)
    for r in grads:
        print(f"depthwise: {r['map']}x{r['map']} k{r['kernel']} s{r['stride']} ({r['channels']} ch, cut to "
              f"k{r['kernel_cut_to']}): forward {r['forward_ms']} ms; forward + weight grad: plain "
              f"{r['plain_forward_and_weight_grad_ms']} ms, product {r['product_forward_and_weight_grad_ms']} ms; "
              f"rel diff {r['max_rel_diff']:.1e}", flush=True)
    parts = [*SUPERNET_PARTS, "subnet"]
    rounds = []
    for _ in range(a.rounds):
        res = {p: steps_part(p, a.sets, a.steps, a.block, a.check_steps) for p in parts}
        for p, v in res.items():
            print(f"depthwise: {p}: plain {v['step_s']['plain']:.3f} s/step, product {v['step_s']['product']:.3f} "
                  f"({v['speedup']:.2f}x), loss diff {v['loss_max_abs_diff']:.1e}", flush=True)
        rounds.append(res)
    ev = evaluator_part(a.candidates, a.sets)
    print(f"depthwise: evaluator: {ev['speedup']:.2f}x a candidate, loss diff {ev['val_loss_max_abs_diff']:.1e}")
    write_result(a.out, {
        "threads": 1, "batch": BATCH, "steps": a.steps, "block": a.block, "check_steps": a.check_steps,
        "weight_grad": grads, "rounds": rounds, "evaluator": ev,
        "median_speedup": {p: statistics.median(r[p]["speedup"] for r in rounds) for p in parts},
        "wall_seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
