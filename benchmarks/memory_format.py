"""Memory format on this CPU: the laptop pipeline's steps in NCHW against channels_last (fp32).

Each part is the product's own code, in fp32, once per format, in alternating blocks of steps
so that drift hits both formats alike (the first block of each is warm-up):

* ``sandwich``: the shipped ``jobs/supernet.yaml`` ``TrainStep`` (entangled Cream space, the
  sandwich rule with one random arch a step) on 2 gloo processes x 1 thread, batch 32 each:
  the pipeline's two supernet workers;
* ``uniform``: the same with one uniform arch a step (``strategy=spos``);
* ``subnet``: a stand-alone subnet (``--arch``, by default the pipeline's pick) with the
  retrain config's recipe, on the same 2 processes: the pipeline's retrain;
* ``evaluator``: BN recalibration on 1,000 images and scoring of 2,000 (``evaluate_arch``),
  one process, 1 thread: a search evaluator.

Numerics: before the timing, both formats take ``--check-steps`` steps from the same weights on
the same batches; the losses of each step are compared (fp32 in either layout: only the order of
the sums differs), and the evaluator's scores of the same candidates are compared; and one step's
logits and gradients in each format are compared with the same step in fp64 (``fp64_check``).

    python benchmarks/memory_format.py [--steps 80 --block 10 --rounds 2]

Writes ``benchmarks/results/memory_format.json`` (``--out NAME``). Another space through ``--set``,
e.g. the elastic benchmarks' SPOS supernet (independent weights, stem stride 1, width 0.25):

    python benchmarks/memory_format.py --parts uniform,evaluator --set space.name=spos \
        --set space.stem_stride=1 --set space.width_mult=0.25 --set space.weight_sharing=independent \
        --out memory_format_spos
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _common import timed_blocks, write_result

FORMATS = ("nchw", "channels_last")
PIPELINE_PICK = "[[5], [5, 2], [5], [5, 1], [2]]"  # a pick of the laptop pipeline (1.37M MACs)
DATA_SETS = ["data.num_train=2500", "data.num_test=64", "data.search_val_size=256"]  # the weights need no data


def supernet_cfg(sets: list):
    """``jobs/supernet.yaml`` with ``sets`` (e.g. another space), on a small train split."""
    from elastic_nas.config import SupernetConfig, load_config

    return load_config(SupernetConfig, "supernet", [*DATA_SETS, *sets])


def build(part: str, arch: str, channels_last: bool, sets: list):
    """(TrainStep, optimizer) of ``part`` in one memory format, the same weights for both."""
    from elastic_nas.config import RetrainConfig, load_config
    from elastic_nas.spaces.precision import Precision
    from elastic_nas.train.retrain import build_subnet_task
    from elastic_nas.train.step import TrainStep, make_optimizer
    from elastic_nas.train.supernet import build_supernet_task

    if part == "subnet":
        cfg = load_config(RetrainConfig, "retrain", DATA_SETS)
        task = build_subnet_task(cfg, supernet_cfg(sets).space, json.loads(arch))
    else:
        # the sandwich part times the whole rule: a few steps under the shipped progressive
        # shrinking would all be its first phase (the teacher alone); ``sets`` may say otherwise
        cfg = supernet_cfg([*(["strategy=spos"] if part == "uniform" else ["sandwich.progressive=[]"]), *sets])
        task = build_supernet_task(cfg)
    prec = Precision("fp32", channels_last)
    model = prec.model(task.model)
    return TrainStep(model, task.strategy, precision=prec), make_optimizer(model, cfg.optim)


def train_worker(rank: int, world: int, init_file: str, parts: list, arch: str, sets: list, steps: int,
                 block: int, check_steps: int, out: dict) -> None:
    from elastic_nas.train.step import Batch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    batches = [Batch(torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g),
                     torch.ones(32)) for _ in range(4)]
    for part in parts:
        runs = {f: build(part, arch, f == "channels_last", sets) for f in FORMATS}
        losses = {}
        for f in FORMATS:
            torch.manual_seed(rank)  # the same dropout masks (SPOS's head) for both formats
            losses[f] = [runs[f][0](s, runs[f][1], 0.05, batches[s % 4], 32 * world).loss_sum / 32
                         for s in range(check_steps)]
        timed = {f: (lambda s, f=f: runs[f][0](check_steps + s, runs[f][1], 0.05, batches[s % 4], 32 * world))
                 for f in FORMATS}
        step_s = timed_blocks(timed, steps, block)
        if rank == 0:
            out[part] = {"step_s": step_s,
                         "losses": {f: [round(v, 6) for v in losses[f]] for f in FORMATS}}
    dist.destroy_process_group()


def evaluator_part(candidates: int, rounds: int, sets: list) -> dict:
    """Seconds per candidate in each format, alternating candidate by candidate, and the scores."""
    from elastic_nas.search.evaluator import EvalData, evaluate_arch
    from elastic_nas.spaces import build_space
    from elastic_nas.spaces.precision import Precision

    torch.set_num_threads(1)
    space = build_space(supernet_cfg(sets).space)
    torch.manual_seed(0)
    state = space.build_supernet().state_dict()
    models, data = {}, {}
    g = torch.Generator().manual_seed(0)
    calib, val = torch.randn(1000, 3, 32, 32, generator=g).numpy(), torch.randn(2000, 3, 32, 32, generator=g).numpy()
    val_y = torch.randint(0, 10, (2000,), generator=g).numpy()
    for f in FORMATS:
        cl = f == "channels_last"
        models[f] = Precision(channels_last=cl).model(space.build_supernet())
        models[f].load_state_dict(state)
        data[f] = EvalData(calib, val, val_y, 250, "fp32", cl)
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(candidates)]
    for f in FORMATS:
        evaluate_arch(models[f], archs[0], data[f])  # warm-up
    times, scores = {f: [] for f in FORMATS}, {f: [] for f in FORMATS}
    for r in range(rounds):
        for i, arch in enumerate(archs):
            for f in (FORMATS if (i + r) % 2 == 0 else FORMATS[::-1]):
                t0 = time.perf_counter()
                res = evaluate_arch(models[f], arch, data[f])
                times[f].append(time.perf_counter() - t0)
                if r == 0:
                    scores[f].append(res["loss"])
    diffs = [abs(a - b) for a, b in zip(scores["nchw"], scores["channels_last"])]
    return {"candidates": candidates, "rounds": rounds, "calib_images": 1000, "val_images": 2000,
            "candidate_s": {f: statistics.median(t) for f, t in times.items()},
            "val_loss_max_abs_diff": max(diffs)}


def fp64_check(sets: list) -> dict:
    """How far one fp32 forward and backward of a random arch (random images, train mode, no
    dropout) lands from the same in fp64, per format: logits' max abs error, gradients' relative L2
    error. Rounding in another order should leave both formats about as far."""
    import copy

    import torch.nn.functional as F

    from elastic_nas.spaces import build_space
    from elastic_nas.spaces.precision import Precision

    space = build_space(supernet_cfg(sets).space)
    torch.manual_seed(0)
    base = space.build_supernet().train()
    for m in base.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    arch = space.sample(np.random.default_rng(3))

    def run(channels_last: bool, dtype) -> tuple:
        prec = Precision("fp32", channels_last)
        model = prec.model(copy.deepcopy(base).to(dtype))
        out = model(prec.input(x.to(dtype)), arch)
        F.cross_entropy(out, y).backward()
        return out.detach().double(), {n: p.grad.double() for n, p in model.named_parameters() if p.grad is not None}

    ref_out, ref = run(False, torch.float64)
    out = {}
    for f in FORMATS:
        logits, grads = run(f == "channels_last", torch.float32)
        err = sum(((grads[k] - ref[k]) ** 2).sum() for k in ref) ** 0.5 / sum((v ** 2).sum() for v in ref.values()) ** 0.5
        out[f] = {"logits_max_abs_error": float((logits - ref_out).abs().max()), "grad_rel_l2_error": float(err)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80, help="timed steps per part and round, both formats")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="every part once per round, the order reversed each round")
    ap.add_argument("--check-steps", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=6, help="evaluator candidates per round")
    ap.add_argument("--arch", default=PIPELINE_PICK, help="the subnet part's arch (JSON)")
    ap.add_argument("--parts", default="sandwich,uniform,subnet,evaluator")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override jobs/supernet.yaml, e.g. another space (the subnet part then needs --arch)")
    ap.add_argument("--out", default="memory_format")
    a = ap.parse_args()
    parts = a.parts.split(",")
    train_parts = [p for p in parts if p != "evaluator"]
    per_round = []
    for r in range(a.rounds):
        order = train_parts if r % 2 == 0 else train_parts[::-1]
        res = {}
        if order:
            with tempfile.TemporaryDirectory() as d, mp.Manager() as manager:
                out = manager.dict()
                mp.spawn(train_worker, args=(2, os.path.join(d, "pg"), order, a.arch, a.sets, a.steps, a.block,
                                             a.check_steps, out), nprocs=2)
                res.update(dict(out))
        if "evaluator" in parts:
            res["evaluator"] = evaluator_part(a.candidates, 1, a.sets)
        for part, v in res.items():
            t = v["step_s"] if part != "evaluator" else v["candidate_s"]
            v["speedup"] = round(t["nchw"] / t["channels_last"], 3)
            print(f"round {r + 1}/{a.rounds} {part}: nchw {t['nchw']:.4f} s, channels_last "
                  f"{t['channels_last']:.4f} s, {v['speedup']:.2f}x", flush=True)
        per_round.append(res)
    summary = {}
    for part in parts:
        ups = [r[part]["speedup"] for r in per_round]
        entry = {"speedup_median": round(statistics.median(ups), 3), "speedup_min_max": [min(ups), max(ups)]}
        if part == "evaluator":
            entry["val_loss_max_abs_diff"] = max(r[part]["val_loss_max_abs_diff"] for r in per_round)
        else:
            pairs = [(x, y) for r in per_round for x, y in zip(r[part]["losses"]["nchw"],
                                                                r[part]["losses"]["channels_last"])]
            entry["check_loss_max_abs_diff"] = max(abs(x - y) for x, y in pairs)
        summary[part] = entry
    torch.set_num_threads(1)
    write_result(a.out, {"settings": vars(a), "threads_per_process": 1, "precision": "fp32",
                         "summary": summary, "fp64_check": fp64_check(a.sets), "rounds": per_round})


if __name__ == "__main__":
    main()
