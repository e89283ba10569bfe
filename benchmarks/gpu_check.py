"""One prepared device check of the Ray-free core: training step, evaluator, retrain and export.

Runs the product's own code (``TrainStep`` with its ``Precision``, ``evaluate_arch``,
``export_model``) on one device and writes ``gpu_check_<device>.json`` and a short
``gpu_check_<device>.txt`` into ``--out``:

* device facts (name, memory, torch / CUDA / cuDNN versions);
* the supernet training step (one random arch per step, as SPOS) at the laptop default
  (``jobs/supernet.yaml``'s space, 32x32) and at the published width (Cream at 224x224):
  samples/s in fp32, bf16, bf16 + channels_last and fp32 + channels_last (the shipped
  configs), as ratios to fp32; and the supernet-path step of one arch against the same
  arch's stand-alone subnet step;
* the evaluator: BN recalibration plus scoring of N candidates from one supernet,
  candidates/s in fp32 and bf16, and 2 evaluator processes sharing the device against 1;
  the trial core (``score_batch``) with 1 and with batched candidates per trial, and a new
  evaluator process's time to its first result; a profile of one candidate's host time;
* a few retrain steps of a subnet in bf16 (its loss falls), its export, and the exported
  model's output on the CPU against the device model's (fp32, TF32 off);
* peak device memory of each part (CUDA only).

Timings are medians of timed steps after warm-up, each part against its fp32 baseline
measured in the same run. It needs no Ray, no dataset and no network.

    python benchmarks/gpu_check.py --out /tmp/gpu                  # on a GPU machine, < 5 min
    python benchmarks/gpu_check.py --device cpu --out benchmarks/results   # bf16 on this CPU
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/dry     # dry run (CI test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from _common import machine
from elastic_nas.config import OptimConfig, SpaceConfig, SupernetConfig, load_config
from elastic_nas.search.evaluator import EvalData, Snapshot, evaluate_arch, score_batch
from elastic_nas.spaces import build_space
from elastic_nas.spaces.bn import recalibrate_bn
from elastic_nas.spaces.precision import Precision
from elastic_nas.train.evaluate import export_model, load_exported
from elastic_nas.train.step import Batch, TrainStep, make_optimizer
from elastic_nas.train.strategies import Strategy

MODES = [("fp32", False), ("bf16", False), ("bf16", True), ("fp32", True)]  # fp32 + channels_last: the shipped configs


class Archs(Strategy):
    """The step trains ``archs[step % len(archs)]`` (None: a stand-alone network)."""

    leaves_parameters_unused = True

    def __init__(self, model, archs):
        super().__init__(model)
        self.fixed = archs

    def archs(self, step):
        return [self.fixed[step % len(self.fixed)]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Memory:
    """Peak device memory of one part, in MiB (None off CUDA)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        self.peak_mib = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if self.cuda else None


def workloads(quick: bool) -> dict[str, SpaceConfig]:
    default = load_config(SupernetConfig, "supernet").space
    published = replace(default, input_size=224, width_mult=1.0, max_depths=SpaceConfig().max_depths)
    if quick:  # the same code paths, tiny shapes
        published = replace(published, input_size=64, width_mult=0.25, max_depths=[1, 1, 1, 1, 1])
    return {"default": default, "published": published}


def time_steps(model, strategy, prec: Precision, x, y, warmup: int, steps: int, device) -> list[float]:
    """Seconds of each timed ``TrainStep`` of the product (forward, backward, SGD)."""
    step = TrainStep(model, strategy, precision=prec)
    optimizer = make_optimizer(model, OptimConfig(weight_decay=0.0))
    batch = Batch(x, y, torch.ones(len(y), device=device))
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        step(i, optimizer, 0.01, batch, num_real=len(y))
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def train_step_part(name: str, cfg: SpaceConfig, batch: int, a, device) -> dict:
    """samples/s of the supernet step per mode, and supernet path vs stand-alone subnet."""
    space = build_space(cfg)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(8)]
    x = torch.randn(batch, 3, cfg.input_size, cfg.input_size, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    out = {"space": cfg.name, "input_size": cfg.input_size, "width_mult": cfg.width_mult, "batch": batch, "modes": {}}
    for precision, channels_last in MODES:
        prec = Precision(precision, channels_last, device)
        torch.manual_seed(0)
        model = prec.model(space.build_supernet().to(device).train())
        with Memory(device) as mem:
            times = time_steps(model, Archs(model, archs), prec, x, y, a.warmup, a.steps, device)
        s = statistics.median(times)
        key = precision + ("+channels_last" if channels_last else "")
        out["modes"][key] = {"step_s": round(s, 5), "step_s_min_max": [round(min(times), 5), round(max(times), 5)],
                             "samples_per_s": round(batch / s, 1), "peak_mib": mem.peak_mib}
        print(f"  train step {name} {key}: {batch / s:.1f} samples/s", flush=True)
    base = out["modes"]["fp32"]["samples_per_s"]
    for m in out["modes"].values():
        m["ratio_to_fp32"] = round(m["samples_per_s"] / base, 3)
    # One arch: the supernet's path against its stand-alone subnet, in fp32 and in bf16.
    arch = space.largest_arch()
    out["supernet_path_vs_subnet"] = {}
    for precision, channels_last in MODES[:2]:
        prec = Precision(precision, channels_last, device)
        torch.manual_seed(0)
        sup = space.build_supernet().to(device).train()
        sub = space.build_subnet(arch).to(device).train()
        t_sup = statistics.median(time_steps(sup, Archs(sup, [arch]), prec, x, y, a.warmup, a.steps, device))
        t_sub = statistics.median(time_steps(sub, Archs(sub, [None]), prec, x, y, a.warmup, a.steps, device))
        out["supernet_path_vs_subnet"][precision] = {"supernet_step_s": round(t_sup, 5), "subnet_step_s": round(t_sub, 5),
                                                     "ratio": round(t_sup / t_sub, 3)}
    return out


def _score(space_cfg: dict, state: dict, archs: list, data: EvalData, device: str) -> tuple[float, int]:
    """Seconds to score ``archs`` (the supernet built and warmed up first), and how many."""
    space = build_space(SpaceConfig(**space_cfg))
    model = Precision(channels_last=data.channels_last).model(space.build_supernet())
    model.load_state_dict(state)
    model.to(device).eval()
    evaluate_arch(model, archs[0], data, device)  # warm-up: kernels chosen, caches filled
    sync(torch.device(device))
    t0 = time.perf_counter()
    for arch in archs:
        evaluate_arch(model, arch, data, device)
    sync(torch.device(device))
    return time.perf_counter() - t0, len(archs)


def _score_in_process(args) -> tuple[float, int]:
    barrier, job = args[0], args[1:]
    torch.set_num_threads(1)
    barrier.wait()  # time the scoring only, not the process start
    return _score(*job)


def _trials(snapshot: Snapshot, cands: list[dict], data: EvalData, device: str, per_trial: int) -> float:
    """candidates/s of trials of ``per_trial`` candidates each, run as the product's evaluator runs
    one trial (``score_batch``) in a process that has scored before (Tune reuses its actors)."""
    sync(torch.device(device))
    t0 = time.perf_counter()
    for i in range(0, len(cands), per_trial):
        for _ in score_batch(cands[i:i + per_trial], snapshot, data, device):
            pass
    sync(torch.device(device))
    return len(cands) / (time.perf_counter() - t0)


def _cold_trial(args) -> dict:
    """A fresh evaluator process's first trial of one candidate, in parts (the process start and
    imports: from the parent's clock before the start to this function's entry)."""
    started, snapshot, cands, data, device = args
    entered = time.time()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # the context made
    t1 = time.perf_counter()
    list(score_batch(cands[:1], snapshot, data, device))  # the supernet built and moved, first kernels chosen
    sync(torch.device(device))
    t2 = time.perf_counter()
    list(score_batch(cands[1:2], snapshot, data, device))
    sync(torch.device(device))
    t3 = time.perf_counter()
    return {"start_and_imports_s": round(entered - started, 3), "device_init_s": round(t1 - t0, 3),
            "first_trial_s": round(t2 - t1, 3), "next_trial_s": round(t3 - t2, 3)}


def profile_scoring(snapshot: Snapshot, cands: list[dict], data: EvalData, device: str, top: int = 6) -> dict:
    """Where one candidate's scoring spends its host time (``torch.profiler``, per candidate): the
    ops of most self CPU time, and how often the host waited for the device."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        for _ in score_batch(cands, snapshot, data, device):
            pass
        sync(torch.device(device))
    events = prof.key_averages()
    n = len(cands)
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"candidates": n, "host_waits_per_candidate": sum(e.count for e in events if "Synchronize" in e.key) / n,
            "top_ops": [{"op": e.key, "self_cpu_ms_per_candidate": round(e.self_cpu_time_total / 1e3 / n, 2),
                         "calls_per_candidate": round(e.count / n, 1)} for e in ops]}


def trials_part(cfg: SpaceConfig, state: dict, archs: list, data: EvalData, device, per_trial: list[int]) -> dict:
    """Issue 19's evaluator core on this device: candidates/s with one candidate per trial and with
    batched trials (Tune's own per-trial cost is measured where Ray runs: search_speed.py), and
    what a new evaluator process pays before its first result."""
    import multiprocessing as mp
    from dataclasses import asdict

    snapshot = Snapshot("gpu-check", asdict(cfg), {k: v.numpy() for k, v in state.items()})
    cands = [{"arch": arch, "macs": 0, "params": 0, "generation": 0} for arch in archs]
    # built once, as in a reused actor, and every arch's shapes seen once: the first trial size timed
    # must not pay the kernels' first use (run 2 on the H200 timed 1 per trial before this pass)
    _trials(snapshot, cands, data, str(device), len(cands))
    out = {"mode": data.precision + ("+channels_last" if data.channels_last else ""), "per_trial": {}}
    for n in per_trial:
        rate = _trials(snapshot, cands, data, str(device), n)
        out["per_trial"][str(n)] = {"candidates_per_s": round(rate, 2)}
        print(f"  evaluator trials of {n}: {rate:.2f} candidates/s", flush=True)
    base = out["per_trial"][str(per_trial[0])]["candidates_per_s"]
    for v in out["per_trial"].values():
        v["ratio_to_first"] = round(v["candidates_per_s"] / base, 3)
    started = time.time()
    with mp.get_context("spawn").Pool(1) as pool:
        cold = pool.map(_cold_trial, [(started, snapshot, cands, data, str(device))])[0]
    out["cold_process"] = {**cold, "wall_s": round(time.time() - started, 3)}
    print(f"  a new evaluator process: {cold}", flush=True)
    out["profile"] = profile_scoring(snapshot, cands[:3], data, str(device))
    print(f"  host waits per candidate: {out['profile']['host_waits_per_candidate']:.0f}; top ops: "
          + ", ".join(f"{o['op']} {o['self_cpu_ms_per_candidate']} ms" for o in out["profile"]["top_ops"][:3]), flush=True)
    return out


def evaluator_part(cfg: SpaceConfig, a, device) -> dict:
    import multiprocessing as mp
    from dataclasses import asdict

    space = build_space(cfg)
    torch.manual_seed(0)
    state = space.build_supernet().state_dict()
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(a.candidates)]
    g = torch.Generator().manual_seed(0)
    size = cfg.input_size
    calib = torch.randn(a.calib, 3, size, size, generator=g).numpy()
    val = torch.randn(a.val, 3, size, size, generator=g).numpy()
    val_y = torch.randint(0, cfg.num_classes, (a.val,), generator=g).numpy()
    out = {"candidates": a.candidates, "calib_images": a.calib, "val_images": a.val, "batch": a.eval_batch, "modes": {}}
    for precision, channels_last in MODES:
        data = EvalData(calib, val, val_y, a.eval_batch, precision, channels_last)
        with Memory(device) as mem:
            s, n = _score(asdict(cfg), state, archs, data, str(device))
        key = precision + ("+channels_last" if channels_last else "")
        out["modes"][key] = {"candidates_per_s": round(n / s, 2), "peak_mib": mem.peak_mib}
        print(f"  evaluator {key}: {n / s:.2f} candidates/s", flush=True)
    # Two evaluator processes sharing the device (as two Tune trials with gpus_per_trial 0.5).
    best = max(out["modes"], key=lambda k: out["modes"][k]["candidates_per_s"])
    precision, _, cl = best.partition("+")
    data = EvalData(calib, val, val_y, a.eval_batch, precision, bool(cl))
    ctx = mp.get_context("spawn")
    shared = {}
    for procs in (1, 2):
        barrier = ctx.Manager().Barrier(procs)
        jobs = [(barrier, asdict(cfg), state, archs[i::procs], data, str(device)) for i in range(procs)]
        with ctx.Pool(procs) as pool:
            t0 = time.perf_counter()
            results = pool.map(_score_in_process, jobs)
        slowest = max(s for s, _ in results)
        shared[procs] = sum(n for _, n in results) / slowest
        print(f"  evaluator {best}, {procs} process(es): {shared[procs]:.2f} candidates/s "
              f"({time.perf_counter() - t0:.0f} s with process start)", flush=True)
    out["processes"] = {"mode": best, "one_candidates_per_s": round(shared[1], 2),
                        "two_candidates_per_s": round(shared[2], 2), "ratio": round(shared[2] / shared[1], 3)}
    out["trials"] = trials_part(cfg, state, archs, data, device, a.per_trial)
    return out


def retrain_export_part(cfg: SpaceConfig, a, device) -> dict:
    """A few bf16 steps of a subnet on a fixed batch, then export and compare on the CPU."""
    space = build_space(cfg)
    arch = space.largest_arch()
    torch.manual_seed(0)
    net = space.build_subnet(arch).to(device)
    prec = Precision("bf16", True, device)
    prec.model(net)
    step = TrainStep(net, Archs(net, [None]), precision=prec)
    optimizer = make_optimizer(net, OptimConfig(weight_decay=0.0))
    x = torch.randn(a.batch, 3, cfg.input_size, cfg.input_size, device=device)
    y = torch.randint(0, cfg.num_classes, (a.batch,), device=device)
    batch = Batch(x, y, torch.ones(len(y), device=device))
    with Memory(device) as mem:
        losses = [step(i, optimizer, 0.05, batch, num_real=len(y)).loss_sum / len(y) for i in range(a.retrain_steps)]
    # BN statistics of real activations: six steps leave running ones that fade the signal, and a
    # comparison of constant outputs would pass whatever the export did
    recalibrate_bn(net, net, [x])
    net.eval()
    example = x[:8]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 to compare
    try:
        with torch.no_grad():
            on_device = net.float().to(memory_format=torch.contiguous_format)(example).cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        path = export_model(net.cpu(), example.cpu(), Path(d), "torch.export")
        export_s = time.perf_counter() - t0
        with torch.no_grad():
            exported = load_exported(path)(example.cpu())
    diff = float((exported - on_device).abs().max())
    scale = float(on_device.abs().max())
    spread = float((on_device[0] - on_device[1]).abs().max())  # the outputs follow the input
    return {"steps": a.retrain_steps, "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
            "loss_falls": losses[-1] < losses[0], "peak_mib": mem.peak_mib, "export_s": round(export_s, 2),
            "exported_vs_device_max_abs_diff": diff, "logit_scale": round(scale, 3), "logit_spread": round(spread, 3),
            "exported_matches": diff <= 1e-4 * max(1.0, scale) and spread > 1e-2}


def facts(device: torch.device) -> dict:
    out = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(name=p.name, memory_gib=round(p.total_memory / 2 ** 30, 1), capability=f"{p.major}.{p.minor}",
                   bf16_supported=torch.cuda.is_bf16_supported())
    else:
        out.update(name=machine()["platform"], threads=torch.get_num_threads())
    return out


def summary(result: dict) -> str:
    lines = [f"device check on {result['facts']['name']} (torch {result['facts']['torch']})"]
    for name, part in result["train_step"].items():
        modes = ", ".join(f"{k} {m['samples_per_s']:.0f}/s ({m['ratio_to_fp32']:.2f}x)" for k, m in part["modes"].items())
        paths = ", ".join(f"{k} {v['ratio']:.2f}x" for k, v in part["supernet_path_vs_subnet"].items())
        lines.append(f"train step, {name} ({part['input_size']}px, batch {part['batch']}): {modes}; "
                     f"supernet path / subnet: {paths}")
    ev = result["evaluator"]
    modes = ", ".join(f"{k} {m['candidates_per_s']:.2f}/s" for k, m in ev["modes"].items())
    pr = ev["processes"]
    lines.append(f"evaluator ({ev['candidates']} candidates): {modes}; 2 processes / 1: {pr['ratio']:.2f}x ({pr['mode']})")
    tr = ev["trials"]
    per = ", ".join(f"{k} per trial {v['candidates_per_s']:.2f}/s" for k, v in tr["per_trial"].items())
    cold = tr["cold_process"]
    lines.append(f"evaluator trials ({tr['mode']}): {per}; a new evaluator process: {cold['wall_s']:.1f} s to its "
                 f"first result (device init {cold['device_init_s']:.1f} s, first trial {cold['first_trial_s']:.2f} s, "
                 f"next {cold['next_trial_s']:.3f} s)")
    if "profile" in tr:  # (runs before the profile was added have none)
        prof = tr["profile"]
        lines.append(f"evaluator host time per candidate: {prof['host_waits_per_candidate']:.0f} waits for the device; "
                     + ", ".join(f"{o['op']} {o['self_cpu_ms_per_candidate']} ms" for o in prof["top_ops"][:4]))
    rt = result["retrain_export"]
    lines.append(f"retrain bf16: loss {rt['first_loss']} -> {rt['last_loss']}; export matches the device model: "
                 f"{rt['exported_matches']} (max abs diff {rt['exported_vs_device_max_abs_diff']:.2e})")
    lines.append(f"latency table: {result['latency_table']}")
    lines.append(f"total {result['wall_s']:.0f} s")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check_<device>.json and .txt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of every part")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    gpu = device.type == "cuda"
    sizes = dict(batch=256 if gpu else 64, published_batch=128 if gpu else 8, warmup=5 if gpu else 2,
                 steps=20 if gpu else 5, candidates=64 if gpu else 10, calib=1000, val=2000, eval_batch=250,
                 retrain_steps=20, per_trial=[1, 8, 32] if gpu else [1, 5])
    if a.quick:
        sizes = dict(batch=4, published_batch=2, warmup=1, steps=2, candidates=2, calib=8, val=8, eval_batch=4,
                     retrain_steps=4, per_trial=[1, 2])
    for k, v in sizes.items():
        setattr(a, k, v)
    t0 = time.time()
    result = {"command": " ".join(["python", *sys.argv]), "machine": machine(), "facts": facts(device),
              "sizes": sizes, "quick": a.quick}
    spaces = workloads(a.quick)
    print(f"gpu_check on {result['facts']['name']}", flush=True)
    result["train_step"] = {name: train_step_part(name, cfg, a.batch if name == "default" else a.published_batch, a, device)
                            for name, cfg in spaces.items()}
    result["evaluator"] = evaluator_part(spaces["default"], a, device)
    result["retrain_export"] = retrain_export_part(spaces["default"], a, device)
    result["latency_table"] = "not built: the product has no latency tables yet"
    result["wall_s"] = round(time.time() - t0, 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_check_{device.type}.json").write_text(json.dumps(result, indent=1))
    text = summary(result)
    (out / f"gpu_check_{device.type}.txt").write_text(text)
    print(text, end="")
    print(f"wrote {out / f'gpu_check_{device.type}.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
