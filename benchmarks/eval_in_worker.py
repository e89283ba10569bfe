"""Why is a candidate's evaluation slower inside a Ray worker than in a plain process?

``search_speed.py`` finds each evaluation 0-15 % slower in Tune's evaluators and in bare Ray
tasks than in plain processes, varying from run to run (issue 19). This benchmark takes the
suspects apart, one process at a time so that no two evaluations share the cores:

* ``plain``: a spawned plain process, Ray not running (the baseline);
* ``plain_ray_up``: the same while a local Ray (GCS, raylet, agents) idles beside it;
* ``ray_task``: a Ray task reading the snapshot and images from the object store (read-only
  views on shared memory), as Tune's evaluators read them;
* ``ray_task_private``: the same task on private copies of the images;
* ``ray_task_thread``: the same task evaluating on a second thread, as Tune runs a function
  trainable;
* ``plain_gc_frozen``: the plain process with its heap frozen (``gc.freeze``);
* ``plain_omp1``: the plain process started with ``OMP_NUM_THREADS=1``, as Ray starts a
  worker for a 1-CPU task (the plain process starts OpenMP at the machine's cores and sets
  one torch thread after);
* ``ray_task_omp2``: the Ray task with ``OMP_NUM_THREADS`` set to the cores (Ray then keeps it);
* ``ray_task_nice0``: the Ray task in a worker at niceness 0 (Ray's default is 15);
* ``ray_task_child``: the Ray task handing the loop to a plain process it spawns (a process
  without the Ray worker's runtime: its threads, its connections).

Each phase evaluates the same random candidates; every round runs all phases (reversed every
other round) and each ratio (mean evaluation wall and main-thread CPU seconds against
``plain``'s) is taken within its round, reported as median (min-max) over the rounds.

    python benchmarks/eval_in_worker.py --candidates 12 --rounds 3

Writes ``benchmarks/results/eval_in_worker.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import multiprocessing as mp
import os
import statistics
import threading
from pathlib import Path

import numpy as np
from search_speed import NICENESS_ENV, _plain_loop, add_setup_args, generator, setup, start_ray

from _common import env_var, write_result

PHASES = ("plain", "plain_ray_up", "ray_task", "ray_task_private", "ray_task_thread", "plain_gc_frozen",
          "plain_omp1", "ray_task_omp2", "ray_task_nice0", "ray_task_child")


def _loop(snapshot, data, archs, private: bool = False, in_thread: bool = False, gc_frozen: bool = False) -> dict:
    """``_plain_loop`` with one suspect switched on: each evaluation's wall and main-thread CPU
    seconds, and the process's niceness and ``OMP_NUM_THREADS`` (to show the phase ran as named)."""
    if private:
        data = dataclasses.replace(data, calib_x=np.array(data.calib_x), val_x=np.array(data.val_x),
                                   val_y=np.array(data.val_y))
    if gc_frozen:
        gc.collect()
        gc.freeze()
    out = []
    if in_thread:
        t = threading.Thread(target=lambda: out.append(_plain_loop(snapshot, data, archs)))
        t.start()
        t.join()
    else:
        out.append(_plain_loop(snapshot, data, archs))
    return {"eval_s_mean": statistics.mean(out[0]["evals"]), "eval_thread_cpu_s_mean": statistics.mean(out[0]["cpu"]),
            "niceness": os.nice(0), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def run_phase(name: str, snapshot, data, archs) -> dict:
    env = {"plain_omp1": ("OMP_NUM_THREADS", "1"), "ray_task_omp2": ("OMP_NUM_THREADS", str(os.cpu_count())),
           "ray_task_nice0": (NICENESS_ENV, "0")}.get(name)
    with env_var(*env) if env else contextlib.nullcontext():
        return _run_phase(name, snapshot, data, archs)


def _in_child(*args, **kwargs) -> dict:
    from eval_in_worker import _loop  # by module name: in a Ray worker this script is not __main__

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_loop, args, kwargs)


def _run_phase(name: str, snapshot, data, archs) -> dict:
    import ray

    kwargs = {"private": name == "ray_task_private", "in_thread": name == "ray_task_thread",
              "gc_frozen": name == "plain_gc_frozen"}
    if name == "plain_ray_up" or not name.startswith("plain"):
        start_ray(1)
    try:
        if name.startswith("plain"):
            return _in_child(snapshot, data, archs, **kwargs)
        task = ray.remote(num_cpus=1)(_in_child if name == "ray_task_child" else _loop)
        return ray.get(task.remote(ray.put(snapshot), ray.put(data), archs, **kwargs))
    finally:
        ray.shutdown()  # a no-op where Ray was not started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    add_setup_args(p)
    p.add_argument("--name", default="eval_in_worker")
    args = p.parse_args()
    if args.rounds < 1 or args.candidates < 1:
        p.error("--rounds and --candidates must be >= 1")
    # Ray's workers import this script's module by name: they inherit the raylet's environment
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH", "")]))
    space, snapshot, data = setup(args)
    archs = [c.arch for c in generator(space, args.candidates).next_generation()]
    rounds = []
    for i in range(args.rounds):
        phases = {}
        for name in PHASES if i % 2 == 0 else PHASES[::-1]:
            phases[name] = run_phase(name, snapshot, data, archs)
            print(f"round {i + 1}/{args.rounds} {name}: evaluation {phases[name]['eval_s_mean']:.3f} s wall, "
                  f"{phases[name]['eval_thread_cpu_s_mean']:.3f} s CPU (niceness {phases[name]['niceness']}, "
                  f"OMP_NUM_THREADS {phases[name]['omp_num_threads']})", flush=True)
        base = phases["plain"]
        rounds.append({"phases": phases, "vs_plain": {
            name: {k: r[k] / base[k] for k in ("eval_s_mean", "eval_thread_cpu_s_mean")}
            for name, r in phases.items() if name != "plain"}})
    summary = {name: {k: {"median": statistics.median(v := [r["vs_plain"][name][k] for r in rounds]),
                          "min": min(v), "max": max(v)}
                      for k in ("eval_s_mean", "eval_thread_cpu_s_mean")}
               for name in PHASES if name != "plain"}
    for name, s in summary.items():
        w, c = s["eval_s_mean"], s["eval_thread_cpu_s_mean"]
        print(f"{name} / plain: wall {w['median']:.3f} ({w['min']:.3f}-{w['max']:.3f}), "
              f"CPU {c['median']:.3f} ({c['min']:.3f}-{c['max']:.3f})")
    write_result(args.name, {"settings": vars(args), "vs_plain": summary, "rounds": rounds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
