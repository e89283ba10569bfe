"""Search quality on the synthetic set: evolution vs random search, and how well the
supernet ranks subnets (Kendall tau against stand-alone training).

1. Train one SPOS supernet (in-process, the elastic loop's task hooks, one worker).
2. For each of ``--seeds`` seeds, run the SPOS evolution and the random-search baseline
   with the same number of evaluations and the same MACs budget, both scoring candidates
   exactly as the Tune evaluators do (exact BN recalibration, class-balanced search_val);
   report each one's best accuracy under the budget.
3. Draw ``--subnets`` random subnets, score each on the supernet the same way, train
   each from scratch for ``--retrain-steps`` and test it; report Kendall's tau-b between
   the two rankings. The stand-alone training does not depend on the supernet, so it runs
   in a second process from the start (``--retrain-procs``; one thread each).

    python benchmarks/search_quality.py            # writes benchmarks/results/search_quality.json
    python benchmarks/search_quality.py --quick    # a smoke run
    # the figures in RESULTS.md: SPOS arch sampling on the Cream space, which leaves chance
    # within a CPU budget (the SPOS ShuffleNetV2 space does not; see supernet_learning.py)
    python benchmarks/search_quality.py --config jobs/supernet-cream.yaml --set strategy=spos \
        --steps 4000 --lr 0.1 --retrain-steps 400
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import numpy as np
import torch

import _common
from _nas import eval_data, retrain, search, train_task
from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.data import build_dataset
from elastic_nas.search.evaluator import evaluate_arch
from elastic_nas.search.evolution import EvolutionSettings
from elastic_nas.search.ranking import kendall_tau
from elastic_nas.spaces import build_space
from elastic_nas.train.supernet import build_supernet_task


def _standalone(config: str, overrides: list[str], archs: list, steps: int, batch: int, lr: float) -> list[float]:
    """Test top-1 of each arch trained from scratch (a child process: one thread)."""
    torch.set_num_threads(1)
    cfg = load_config(SupernetConfig, config, overrides)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    out = []
    for i, arch in enumerate(archs):
        out.append(retrain(space, space.validate(arch), splits, steps, batch, lr, seed=i))
        print(f"stand-alone subnet {i}: test top-1 {out[-1]:.2f}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="jobs/supernet.yaml")
    p.add_argument("--set", action="append", default=[], help="config override, as for elastic-nas")
    p.add_argument("--steps", type=int, default=1500, help="supernet SGD steps")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--warmup", type=int, default=50, help="linear LR warm-up steps of the supernet")
    p.add_argument("--grad-clip", type=float, default=0.0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--children", type=int, default=20)
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--budget-quantile", type=float, default=0.5,
                   help="MACs budget = this quantile of random archs' MACs")
    p.add_argument("--eval-images", type=int, default=500)
    p.add_argument("--subnets", type=int, default=10)
    p.add_argument("--retrain-steps", type=int, default=600)
    p.add_argument("--retrain-procs", type=int, default=1,
                   help="processes training the stand-alone subnets beside the supernet (0 = after it, in this one)")
    p.add_argument("--name", default="search_quality", help="results/<name>.json")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.steps, a.seeds, a.population, a.children, a.generations, a.subnets, a.retrain_steps = 20, 1, 4, 4, 1, 3, 10
    torch.set_num_threads(1)
    overrides = ["data.num_train=20000", "data.num_test=2000", "data.search_val_size=2000", *a.set]
    cfg = load_config(SupernetConfig, a.config, overrides)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    rng = np.random.default_rng(12345)
    budget = float(np.quantile([space.macs(space.sample(rng)) for _ in range(2000)], a.budget_quantile))

    rng = np.random.default_rng(777)
    archs = [space.sample(rng) for _ in range(a.subnets)]
    t0 = time.perf_counter()
    pool = standalone = None
    if a.retrain_procs > 0:
        pool = mp.get_context("spawn").Pool(a.retrain_procs)
        chunks = [list(range(i, a.subnets, a.retrain_procs)) for i in range(a.retrain_procs)]
        standalone = [(c, pool.apply_async(_standalone, (a.config, overrides, [space.to_json(archs[i]) for i in c],
                                                         a.retrain_steps, a.batch, a.lr))) for c in chunks]
    torch.manual_seed(cfg.run.seed)
    task = build_supernet_task(cfg)
    train_task(task, splits.train, a.steps, a.batch, a.lr, cfg.run.seed, a.grad_clip,
               warmup=a.warmup)
    supernet_s = time.perf_counter() - t0
    model = task.model
    data = eval_data(splits, a.eval_images, cfg.run.seed)
    print(f"supernet: {a.steps} steps in {supernet_s:.0f} s; MACs budget {budget / 1e6:.2f}M", flush=True)

    settings = EvolutionSettings(population=a.population, top_k=a.top_k, mutation_children=a.children // 2,
                                 crossover_children=a.children - a.children // 2, generations=a.generations)
    runs = []
    for seed in range(a.seeds):
        r = {"seed": seed, **{m: search(m, space, model, data, budget, settings, seed) for m in ("evolution", "random")}}
        print(f"seed {seed}: evolution {r['evolution']['best_accuracy']} random {r['random']['best_accuracy']}",
              flush=True)
        runs.append(r)

    t1 = time.perf_counter()
    top1s: dict[int, float] = {}
    if pool is not None:
        for chunk, res in standalone:
            top1s.update(zip(chunk, res.get()))
        pool.close()
    ranking = []
    for i, arch in enumerate(archs):
        proxy = evaluate_arch(model, arch, data)["accuracy"]
        top1 = top1s[i] if i in top1s else retrain(space, arch, splits, a.retrain_steps, a.batch, a.lr, seed=i)
        ranking.append({"arch": space.to_json(arch), "macs": space.macs(arch), "supernet_top1": round(proxy, 2),
                        "standalone_test_top1": round(top1, 2)})
        print(f"subnet {i}: supernet {proxy:.2f} stand-alone {top1:.2f}", flush=True)
    tau = kendall_tau([r["supernet_top1"] for r in ranking], [r["standalone_test_top1"] for r in ranking])

    evo = [r["evolution"]["best_accuracy"] for r in runs]
    rnd = [r["random"]["best_accuracy"] for r in runs]
    name = a.name + "_quick" if a.quick else a.name
    _common.write_result(name, {
        "settings": {**vars(a), "space": vars(cfg.space), "strategy": cfg.strategy, "budget_macs": budget},
        "supernet_seconds": round(supernet_s, 1), "ranking_seconds": round(time.perf_counter() - t1, 1),
        "chance_top1": 100.0 / cfg.space.num_classes,
        "supernet_top1_mean": round(statistics.mean(r["supernet_top1"] for r in ranking), 2),
        "evolution_best_mean": round(statistics.mean(evo), 2), "random_best_mean": round(statistics.mean(rnd), 2),
        "evolution_minus_random": round(statistics.mean(evo) - statistics.mean(rnd), 2),
        "kendall_tau": round(tau, 3),
        "standalone_top1_range": [min(r["standalone_test_top1"] for r in ranking),
                                  max(r["standalone_test_top1"] for r in ranking)],
        "supernet_top1_range": [min(r["supernet_top1"] for r in ranking), max(r["supernet_top1"] for r in ranking)],
        "runs": runs, "ranking": ranking,
    })


if __name__ == "__main__":
    main()
