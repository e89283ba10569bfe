"""Cream (best board arch) vs SPOS + evolution, at the same MACs budget and training budget.

Per seed, on the synthetic set (a small Cream space at 32x32):

1. train a supernet twice for the same number of steps, batch and SGD schedule, both
   sampling archs under the same MACs bound (``sampling.flops_max`` = the budget):
   ``strategy: spos`` (uniform archs, CE) and ``strategy: cream`` (Cream's op
   probabilities, board, meta network, distillation);
2. pick one arch each: SPOS by evolution (SPOS rules, a small budget) and Cream by its
   board; both are scored the same way (exact BN recalibration, class-balanced search_val);
3. retrain each chosen arch from scratch for the same steps and report test top-1.

The training runs in-process through the same task hooks the elastic loop calls (one
worker, no Ray), so the comparison is about the strategies, not the cluster. Each
(seed, strategy) run is a job; ``--procs`` jobs run at once, one thread each.

    python benchmarks/cream_vs_spos.py            # 3 seeds, writes benchmarks/results/cream_vs_spos.json
    python benchmarks/cream_vs_spos.py --quick    # a smoke run
    # the figures in RESULTS.md (supernets off chance: see supernet_learning.py)
    python benchmarks/cream_vs_spos.py --steps 2000 --retrain-steps 400 --lr 0.1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import _common
from _nas import eval_data, retrain, search, train_task
from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.data import build_dataset
from elastic_nas.search.board import board_table
from elastic_nas.search.evaluator import evaluate_arch
from elastic_nas.search.evolution import EvolutionSettings
from elastic_nas.spaces import build_space
from elastic_nas.train.supernet import build_supernet_task


def job(strategy: str, seed: int, a) -> SupernetConfig:
    sets = [f"strategy={strategy}", f"run.seed={seed}", "space.width_mult=0.25", "space.max_depths=[2,2,3,3,2]",
            f"data.num_train={a.num_train}", "data.num_test=1000", "data.search_val_size=500",
            f"sampling.flops_max={a.budget}", f"cream.warmup_steps={a.steps // 5}", "cream.warmup_epochs=0",
            f"cream.meta_update_every={max(1, a.steps // 10)}", f"cream.eval_images={a.eval_images}",
            f"cream.budgets=[{a.budget}]"]
    return load_config(SupernetConfig, "jobs/supernet-cream.yaml", sets)


def run_one(strategy: str, seed: int, a) -> dict:
    """Train one supernet, select its arch, retrain it (a job; one thread)."""
    torch.set_num_threads(1)
    cfg = job(strategy, seed, a)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    task = build_supernet_task(cfg)
    train_task(task, splits.train, a.steps, a.batch, a.lr, seed, warmup=a.warmup)
    t1 = time.perf_counter()
    data = eval_data(splits, a.eval_images, cfg.run.seed)
    if strategy == "spos":
        settings = EvolutionSettings(population=a.population, top_k=max(2, a.population // 4),
                                     mutation_children=a.population // 2,
                                     crossover_children=a.population // 2, generations=a.generations)
        best = search("evolution", space, task.model, data, a.budget * 1e6, settings, cfg.run.seed)
        arch, proxy, evaluated = best["arch"], best["best_accuracy"], best["evaluated"]
    else:
        state = {"model": task.model.state_dict(), "extra": task.strategy.state_dict()}
        table = board_table(cfg, state, splits)
        table = table[table["macs"] <= a.budget * 1e6].sort_values(["accuracy", "macs"], ascending=[False, True])
        row = table.iloc[0]
        arch, proxy, evaluated = json.loads(row["arch"]), float(row["accuracy"]), len(table)
    t2 = time.perf_counter()
    # How far the supernet is off chance: the same 10 random archs under the budget, scored
    # as the search scores candidates.
    rng = np.random.default_rng(4321)
    probes = [space.sample_constrained(rng, 0, a.budget * 1e6, 1, 500) for _ in range(10)]
    probe_top1 = statistics.mean(evaluate_arch(task.model, probe, data)["accuracy"] for probe in probes)
    top1 = retrain(space, arch, splits, a.retrain_steps, a.batch, a.lr, seed)
    out = {"arch": arch, "macs": space.macs(space.validate(arch)), "proxy_top1": round(proxy, 2),
           "random_paths_proxy_top1": round(probe_top1, 2),
           "candidates_scored": evaluated, "supernet_s": round(t1 - t0, 1),
           "selection_s": round(t2 - t1, 1), "retrain_test_top1": round(top1, 2)}
    print(f"seed {seed} {strategy}: {out}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=150, help="supernet steps (same for both)")
    p.add_argument("--retrain-steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=50, help="linear LR warm-up steps of the supernets")
    p.add_argument("--procs", type=int, default=2, help="jobs at once, one thread each")
    p.add_argument("--budget", type=float, default=3.0, help="MACs budget, millions")
    p.add_argument("--num-train", type=int, default=6000)
    p.add_argument("--eval-images", type=int, default=250)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.seeds, a.steps, a.retrain_steps, a.population, a.generations = 1, 30, 30, 4, 1
    jobs = [(strategy, seed, a) for seed in range(a.seeds) for strategy in ("cream", "spos")]
    done = _common.run_jobs(run_one, jobs, a.procs)
    runs = [{"seed": seed} for seed in range(a.seeds)]
    for (strategy, seed, _), out in zip(jobs, done):
        runs[seed][strategy] = out
    summary = {}
    for strategy in ("spos", "cream"):
        top1 = [r[strategy]["retrain_test_top1"] for r in runs]
        summary[strategy] = {"retrain_test_top1_mean": round(statistics.mean(top1), 2),
                             "retrain_test_top1_std": round(statistics.pstdev(top1), 2),
                             "supernet_s_mean": round(statistics.mean(r[strategy]["supernet_s"] for r in runs), 1),
                             "random_paths_proxy_top1_mean": round(statistics.mean(
                                 r[strategy]["random_paths_proxy_top1"] for r in runs), 2),
                             "selection_s_mean": round(statistics.mean(r[strategy]["selection_s"] for r in runs), 1)}
    name = "cream_vs_spos_quick" if a.quick else "cream_vs_spos"
    _common.write_result(name, {"settings": vars(a), "chance_top1": 10.0, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
