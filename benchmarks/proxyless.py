"""ProxylessNAS against evolution under one latency target, on this CPU.

On the ranking benchmark's laptop Cream space and data (``ranking.py``: 32x32, stem stride
2, width 0.5, entangled weights):

1. **Latency table** of this machine (batch 1, 1 thread, fp32; ``elastic-nas latency build``'s
   defaults). The target T is the median predicted latency of 500 random archs unless
   ``--target-ms`` says otherwise: half of the space is over it.
2. **Step cost**: a ``strategy: proxyless`` step (a weight step, plus one alpha step every
   ``update_every`` steps) against a ``strategy: spos`` step on the same supernet, both timed
   alone in this process after a warm-up; the ratio. Run it on a quiet machine.
3. **Supernets at equal time** (``--supernet-minutes`` of one core each): ProxylessNAS
   (alpha learnt from a third of the run on, ``CE * 0.2 * (log LAT / log T)^0.3``, the
   paper's defaults) and uniform SPOS. Both through the project's ``TrainStep``.
4. **Picks**: ProxylessNAS's derived arch; evolution's best arch on the SPOS supernet under
   ``latency <= T`` (the same generator, population and generations as ``ranking.py``).
5. **Retrained** stand-alone with 3 seeds each (the ranking truth's recipe and steps), and
   each pick's latency measured end to end against T.

Jobs are cached in ``--work`` as they end (an interrupted run resumes), ``--procs`` at once.
Writes ``results/proxyless.json``.

    python benchmarks/proxyless.py                   # about an hour on 2 cores
    python benchmarks/proxyless.py --quick --work /tmp/pq   # minutes, every phase
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ranking import BATCH, DATA, SPACE, cached

from _common import run_jobs, write_result
from _nas import search, train_task
from elastic_nas.config import SpaceConfig, SupernetConfig, from_dict, load_config
from elastic_nas.search.evaluator import eval_data
from elastic_nas.search.evolution import EvolutionSettings
from elastic_nas.spaces import build_space
from elastic_nas.spaces.latency import LatencyTable, build_table, measure_arch_ms

VARIANTS = {"proxyless": ["strategy=proxyless"], "spos": ["strategy=spos"]}


def cfg_of(a, variant: str, steps: int = 1) -> SupernetConfig:
    sets = [f"space.{k}={json.dumps(v)}" for k, v in SPACE.items()] + [f"data.{k}={v}" for k, v in DATA.items()]
    sets += ["space.weight_sharing=entangled", f"data.path={a.data}", f"optim.epochs={steps * BATCH / DATA['num_train']}",
             *VARIANTS[variant]]
    if variant == "proxyless":
        sets += [f"proxyless.latency_table={Path(a.work) / 'latency_table.json'}", f"proxyless.target_ms={a.target_ms}",
                 f"proxyless.latency_loss={a.loss}", f"proxyless.warmup_fraction={a.warmup_fraction}"]
    return load_config(SupernetConfig, None, sets)


def table_job(a) -> dict:
    space = build_space(from_dict(SpaceConfig, SPACE))
    t0 = time.perf_counter()
    table = build_table(space)
    table.save(Path(a.work) / "latency_table.json")
    rng = np.random.default_rng(7)
    predicted = [table.predict_ms(space, space.sample(rng)) for _ in range(500)]
    return {"seconds": round(time.perf_counter() - t0, 1), "random_arch_ms_median": round(statistics.median(predicted), 4),
            "random_arch_ms_range": [round(min(predicted), 4), round(max(predicted), 4)], "table": table.describe()}


def step_costs(a) -> dict:
    """Seconds per step of each strategy, and of one alpha step alone (weights frozen)."""
    from elastic_nas.data import build_dataset
    from elastic_nas.train.supernet import build_supernet_task

    out = {}
    for variant in VARIANTS:
        cfg = cfg_of(a, variant)
        cfg.proxyless.warmup_fraction = 0.0  # alpha steps from the start: the cost of the whole loop
        task = build_supernet_task(cfg)
        split = build_dataset(cfg.data, cfg.space.input_size).train
        train_task(task, split, 5, BATCH, 0.01, 0)  # warm-up: allocations, first-call costs
        t0 = time.perf_counter()
        train_task(task, split, 25, BATCH, 0.01, 1)
        out[f"{variant}_step_s"] = round((time.perf_counter() - t0) / 25, 4)
        if variant == "proxyless":
            t0 = time.perf_counter()
            for step in range(10):
                task.strategy.arch_step(step)
            out["alpha_step_s"] = round((time.perf_counter() - t0) / 10, 4)
    out["ratio"] = round(out["proxyless_step_s"] / out["spos_step_s"], 3)
    return out


def supernet_job(a, variant: str, steps: int) -> dict:
    """Train one supernet for ``steps``; keep its weights (and ProxylessNAS's derived arch)."""
    from elastic_nas.data import build_dataset
    from elastic_nas.train.supernet import build_supernet_task

    cfg = cfg_of(a, variant, steps)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    torch.manual_seed(0)
    task = build_supernet_task(cfg)
    t0 = time.perf_counter()
    train_task(task, splits.train, steps, BATCH, 0.1, 0, weight_decay=0.0, warmup=steps // 20)
    torch.save(task.model.state_dict(), Path(a.work) / f"supernet_{variant}_{steps}.pt")
    out = {"steps": steps, "train_seconds": round(time.perf_counter() - t0, 1)}
    if variant == "proxyless":
        space = build_space(cfg.space)
        out.update(arch=space.to_json(task.strategy.alpha.derived()), arch_updates=task.strategy.arch_updates,
                   last_alpha_step=task.strategy.last)
    return out


def evolution_job(a, steps: int) -> dict:
    from elastic_nas.data import build_dataset

    cfg = cfg_of(a, "spos", steps)
    space = build_space(cfg.space)
    model = space.build_supernet()
    model.load_state_dict(torch.load(Path(a.work) / f"supernet_spos_{steps}.pt", weights_only=True))
    data = eval_data(build_dataset(cfg.data, cfg.space.input_size), a.calib_images, a.val_images, 0)
    settings = EvolutionSettings(population=a.population, top_k=a.population // 4, mutation_children=a.population // 2,
                                 crossover_children=a.population // 2, generations=a.generations)
    table = LatencyTable.load(Path(a.work) / "latency_table.json")
    return search("evolution", space, model, data, 0.0, settings, 0, table, a.target_ms)


def retrain_job(a, arch, seed: int) -> dict:
    from _nas import retrain
    from elastic_nas.data import build_dataset

    cfg = cfg_of(a, "spos")
    space = build_space(cfg.space)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    top1 = retrain(space, space.validate(arch), splits, a.retrain_steps, BATCH, 0.1, seed, warmup=a.retrain_steps // 20)
    return {"test_top1": top1}


def run(a) -> dict:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    space = build_space(from_dict(SpaceConfig, SPACE))
    # Timing first, one job at a time in this process: nothing else of this run competes.
    table = cached(work, "latency_build", table_job, a)
    a.target_ms = a.target_ms or table["random_arch_ms_median"]
    a.loss = "mul_log" if a.target_ms > 1.0 else "add_linear"  # log T must be positive
    costs = cached(work, f"step_costs_{a.target_ms}", step_costs, a)
    steps = {v: max(10, int(a.supernet_minutes * 60 / costs[f"{v}_step_s"])) for v in VARIANTS}
    print(f"target {a.target_ms:.3f} ms ({a.loss}); steps at equal time: {steps}; step costs {costs}", flush=True)
    nets = run_jobs(cached, [(work, f"supernet_{v}_{steps[v]}_{a.target_ms}", supernet_job, a, v, steps[v])
                             for v in VARIANTS], a.procs)
    evo = cached(work, f"evolution_{steps['spos']}_{a.target_ms}_{a.population}_{a.generations}", evolution_job, a,
                 steps["spos"])
    picks = {"proxyless": nets[0]["arch"], "evolution": evo["arch"]}
    jobs = [(work, f"retrain_{name}_{hashlib.sha1(json.dumps(arch).encode()).hexdigest()[:10]}_s{s}_{a.retrain_steps}",
             retrain_job, a, arch, s) for name, arch in picks.items() for s in range(3)]
    top1 = [r["test_top1"] for r in run_jobs(cached, jobs, a.procs)]
    lat = LatencyTable.load(work / "latency_table.json")
    measured = {name: [] for name in picks}
    for _ in range(5):  # interleaved: a slow spell of the machine hits both picks alike
        for name, arch in picks.items():
            measured[name].append(measure_arch_ms(space, space.validate(arch)))
    out = {"space": SPACE, "data": DATA, "table": table, "target_ms": a.target_ms, "latency_loss": a.loss,
           "step_costs": costs, "supernet_steps": steps, "supernets": dict(zip(VARIANTS, nets)),
           "evolution": {k: evo[k] for k in ("best_accuracy", "evaluated", "best_by_generation")}, "picks": {}}
    for i, (name, arch) in enumerate(picks.items()):
        seeds = top1[3 * i:3 * i + 3]
        out["picks"][name] = {"arch": arch, "macs": space.macs(arch), "predicted_ms": round(lat.predict_ms(space, arch), 4),
                              "measured_ms": round(statistics.median(measured[name]), 4),
                              "measured_ms_runs": [round(m, 4) for m in measured[name]],
                              "within_target": statistics.median(measured[name]) <= a.target_ms,
                              "retrained_top1_seeds": seeds, "retrained_top1_mean": round(float(np.mean(seeds)), 2),
                              "retrained_top1_sd": round(float(np.std(seeds, ddof=1)), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "elastic-nas" / "proxyless-v1"))
    ap.add_argument("--data", default="", help="synthetic cache dir (default: the shared one)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--target-ms", type=float, default=0.0, help="latency target (0: median of random archs)")
    ap.add_argument("--warmup-fraction", type=float, default=0.33)
    ap.add_argument("--supernet-minutes", type=float, default=12.0, help="of one core, per supernet")
    ap.add_argument("--retrain-steps", type=int, default=2000)
    ap.add_argument("--calib-images", type=int, default=1000)
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--name", default="proxyless")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of every phase")
    a = ap.parse_args()
    if a.quick:
        a.supernet_minutes, a.retrain_steps, a.population, a.generations = 0.1, 20, 8, 1
        a.val_images, a.calib_images, a.name = 200, 200, a.name + "_quick"
    torch.set_num_threads(1)
    t0 = time.time()
    out = run(a)
    out["wall_seconds"] = round(time.time() - t0, 1)
    out["settings"] = {k: v for k, v in vars(a).items() if k not in ("work", "data")}
    write_result(a.name, out)


if __name__ == "__main__":
    main()
