"""Search throughput: Tune with N evaluator slots vs a sequential single-process loop.

Every side does the same work per candidate (exact BN recalibration on the calibration
images, then top-1 on the validation images) with one torch thread, on the same
snapshot and the same random legal candidates. Reports

* candidates/s of each and their ratio, Tune with one candidate per trial and with the
  runner's batched trials (targets with 2 evaluators on 2 cores: >= 1.9x sequential and
  >= 0.93 of the plain-process ceiling);
* Tune's overhead per candidate: (slot-seconds per candidate - evaluation time) / evaluation
  time, where slot-seconds = fit wall time x slots / candidates (target <= 3%), and where the
  slot-seconds outside evaluations went (each evaluator's start, reports within a trial, the
  switch between trials, the tail), from each candidate's wall-clock end and evaluation time;
* supernet builds per evaluator process (the snapshot is deserialised once per process);
* the machine's ceiling: the same candidates split over N plain processes (no Ray), and
  Tune's candidates/s as a fraction of it; between the two, the same loop as N Ray tasks
  (no Tune), which splits the gap into what Ray's presence costs and what Tune adds;
* each evaluation's wall and main-thread CPU seconds in plain processes and Ray tasks (an
  evaluation slower on its own thread ran slower, one slower only in wall time waited);
* where the CPU went during each Tune run: CPU-seconds of the evaluators, the driver (Tune's
  controller) and Ray's own processes (GCS, raylet, agents, monitors), read from /proc; the
  share left to the evaluators bounds Tune's fraction of the ceiling on this machine;
* the evaluating thread's CPU, kernel CPU, minor page faults and context switches per candidate
  (faults: buffers the allocator handed back to the kernel and took again), in plain processes and in
  Tune's evaluators (``getrusage(RUSAGE_THREAD)``; in Tune around each trial): whether an
  evaluation in a Ray worker costs more CPU because it is preempted more often (involuntary
  switches), and the evaluator process's CPU against its evaluating thread's (Ray's threads);
* ``--compare-sched-batch`` adds batched Tune with each evaluator's thread under SCHED_BATCH:
  whether the policy cuts the preemptions (measured: it does not, as it only keeps the thread
  itself from preempting others; ``RESULTS.md``);
* ``--compare-idle-threads`` adds batched Tune with each evaluator process's other threads (Ray's
  main thread, its io and gRPC threads) under SCHED_IDLE, so that their wakeups do not preempt
  the evaluation (measured: 1.01x, a tenth fewer preemptions: they come from other processes);
* ``--compare-pinned`` adds batched Tune with each evaluator's thread bound to a CPU of its own:
  whether the preemptions cost CPU because the scheduler moves the evaluation to the other core
  (every thread's moves between CPUs are counted beside its context switches);
* ``--compare-wakers HZ`` adds the plain processes beside one that wakes HZ times a second with
  next to no work: whether being preempted as often as in Tune costs a plain evaluation the
  same CPU (then the cost is the preemptions, not the Ray worker's process);
* ``--compare-default-allocator`` adds batched Tune with the evaluators' allocator left at glibc's
  drifting thresholds (the evaluator before ``elastic_nas.allocator``): the A/B of that change;
* ``--generations G`` splits the candidates into G + 1 generations of random legal archs, and the
  Tune phases search them as the product does, each generation behind the searcher's barrier (the
  plain phases evaluate the same archs without one); ``--compare-barrier-at-trial-end`` adds
  batched Tune with the barrier lifted only when the generation's last trial ends (the searcher
  before it lifted on that trial's report), when Tune stopped an evaluator at every barrier and
  started a fresh process for the next generation;
* ``--compare-no-holds`` adds batched Tune with the searcher before hold trials (needs
  ``--generations`` and 3+ evaluators): an evaluator that freed up at a barrier then got no trial,
  Tune kept one such actor at most and started fresh processes for the next generation; the
  figures count evaluator processes and the slot-seconds of those restarts;
* ``--compare-early-start`` adds batched Tune with ``evolution.early_start`` (needs
  ``--generations``): an evaluator that frees up at a barrier starts the next generation instead
  of waiting for this one's last candidates; the Tune phases count the trials of a withdrawn
  early generation (none for these random archs, whose next generation never depends on the
  scores);
* ``--compare-report-each`` adds batched Tune with a report per candidate (the evaluator as it
  was before a batch was reported once) to every round: the A/B of that change;
* ``--skip ray_tasks,tune_one_per_trial`` leaves out the phases that explain the gaps (and
  their figures) when only the targets are measured;
* Ray's worker niceness (default 15): ``--worker-niceness N`` runs every Ray phase at N,
  ``--compare-niceness N[,N...]`` adds batched Tune at each N to every round beside the
  default's.

Every phase runs once per round (``--rounds``, default 3), in reverse order every other round,
and each ratio is taken within one round: this machine's speed drifts by up to a quarter over
tens of minutes, which phases run far apart would read as Tune's cost or gain. Within a round
the phases compared still run up to ~15 minutes apart, so the rounds' spread is reported with
each ratio: its median, min and max over the rounds.

    python benchmarks/search_speed.py --candidates 24 --evaluators 2

Writes ``benchmarks/results/search_speed.json`` (command, machine, figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from _common import env_var, machine
from elastic_nas.config import DataConfig, SpaceConfig
from elastic_nas.search.barrier import HOLD
from elastic_nas.search.evaluator import EvalData, Snapshot, evaluate_arch
from elastic_nas.search.evolution import Constraints, EvolutionSettings, make_generator
from elastic_nas.search.searcher import GenerationSearcher
from elastic_nas.spaces import build_space

SPEEDUP_TARGET, CEILING_TARGET, OVERHEAD_TARGET = 1.9, 0.93, 0.03


def add_setup_args(p: argparse.ArgumentParser) -> None:
    """What :func:`setup` reads: the supernet's width, the images and their batch."""
    p.add_argument("--calib", type=int, default=1000)
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--data-path", default=str(Path("~/.cache/elastic-nas/bench-synthetic").expanduser()))
    p.add_argument("--channels-last", action="store_true",
                   help="score in fp32 channels_last, as jobs/search.yaml does (3x on CPUs: memory_format.py)")


def setup(args):
    from elastic_nas.data import build_dataset, class_balanced_subset

    space_cfg = SpaceConfig(width_mult=args.width)
    space = build_space(space_cfg)
    torch.manual_seed(0)
    net = space.build_supernet()
    snapshot = Snapshot("bench#0", asdict(space_cfg), {k: v.numpy() for k, v in net.state_dict().items()})
    splits = build_dataset(DataConfig(path=args.data_path, num_train=4000, num_test=256, search_val_size=1000), 32)
    calib = class_balanced_subset(splits.train, args.calib, 0)
    val = class_balanced_subset(splits.search_val, args.val, 0)
    cx, _, _ = calib.get_batch(np.arange(len(calib)))
    vx, vy, _ = val.get_batch(np.arange(len(val)))
    data = EvalData(cx.numpy(), vx.numpy(), vy.numpy(), args.batch, channels_last=args.channels_last)
    return space, snapshot, data


GENERATIONS = 0  # --generations: the candidates split into this many more generations, each behind a barrier


def generator(space, n: int):
    """Random legal candidates, ``n`` in all: one generation, or ``GENERATIONS + 1`` of equal size with
    the product's generation barrier between them in the Tune phases (random search's candidates do
    not depend on the scores, so every phase evaluates the same ones)."""
    from elastic_nas.search.runner import SpaceCost

    size = n // (GENERATIONS + 1)
    settings = EvolutionSettings(population=n - GENERATIONS * size, generations=GENERATIONS, mutation_children=size,
                                 crossover_children=0, max_tries=50)
    return make_generator("random", space, SpaceCost(space), Constraints(), settings, 0)


def candidates(space, n: int) -> list:
    """Every generation's archs, in order (a dummy score lets the generator past each barrier)."""
    gen, archs = generator(space, n), []
    while (fresh := gen.next_generation()) is not None:
        archs += [c.arch for c in fresh]
        for c in fresh:
            gen.tell(c.key, 0.0)
    return archs


class BarrierAtTrialEnd(GenerationSearcher):
    """The searcher before the barrier lifted on the last batch's report: only once its trial ended,
    when Tune had no staged trial to keep that trial's evaluator for (``--compare-barrier-at-trial-end``)."""

    def _scored_in_full(self, trial_id: str) -> bool:
        return False


class EarlyStart(GenerationSearcher):
    """``evolution.early_start``: at a barrier an idle evaluator starts the next generation instead
    of waiting for this one's last candidates (``--compare-early-start``; needs --generations)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs, early_start=True)


class NoHolds(GenerationSearcher):
    """The searcher before hold trials: at a barrier an idle evaluator got no trial, and Tune kept
    one such actor at most (``--compare-no-holds``; matters from 3 evaluators on)."""

    def _hold(self, trial_id: str) -> None:
        return None


class NoKeptSaves(GenerationSearcher):
    """The searcher before it kept whole copies of Tune's saves (search/saves.py) at each save
    (``--compare-no-kept-saves``)."""

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        from ray.tune.search import Searcher

        self._state_path = os.path.join(checkpoint_dir, self.CKPT_FILE_TMPL.format(session_str))
        Searcher.save_to_dir(self, checkpoint_dir, session_str)


def sequential(space, snapshot, data, n: int) -> dict:
    """The candidates one after another in one plain process, spawned like the parallel
    ones (a loop in this process, which has built the data and imported Ray, ran each
    candidate up to 20 % slower than a fresh process did: a baseline that flattered Tune)."""
    return plain_parallel(space, snapshot, data, n, 1)


def thread_counters() -> tuple[float, int, int, int, float, int]:
    """This thread's CPU seconds, voluntary and involuntary context switches, moves to
    another CPU, kernel CPU seconds and minor page faults so far (an involuntary switch: the
    thread was preempted, and may find its caches refilled by another; a move: it resumes on a
    core whose L2 holds none of its data; a fault: a page the allocator handed back to the kernel
    and took again, zeroed on the thread's CPU). Moves are read from ``/proc/thread-self/sched``
    (0 where the kernel has no scheduler stats)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_THREAD)
    moves = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/thread-self/sched").read_text().splitlines():
            if line.startswith("se.nr_migrations"):
                moves = int(line.split(":")[1])
    return time.thread_time(), r.ru_nvcsw, r.ru_nivcsw, moves, r.ru_stime, r.ru_minflt


def per_candidate(cpu_s: float, voluntary: int, involuntary: int, moves: int, sys_s: float, faults: int,
                  n: int) -> dict:
    return {"cpu_s": cpu_s / n, "voluntary_switches": voluntary / n, "involuntary_switches": involuntary / n,
            "cpu_moves": moves / n, "sys_cpu_s": sys_s / n, "minor_faults": faults / n}


def _plain_loop(snapshot, data, archs) -> dict:
    """Wall-clock start and end, each candidate's wall and main-thread CPU seconds (their
    gap: time the evaluation waited for a core while other threads or processes ran), and the
    loop's context switches."""
    from elastic_nas.allocator import keep_freed_memory
    from elastic_nas.search.evaluator import get_supernet

    torch.set_num_threads(1)
    keep_freed_memory()  # as the evaluator does: the ceiling is the best a plain process does
    _, model = get_supernet(snapshot, "cpu", data.channels_last)
    t0, evals, cpu, before = time.time(), [], [], thread_counters()
    for arch in archs:
        t, c = time.perf_counter(), time.thread_time()
        evaluate_arch(model, arch, data)
        evals.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    counters = [a - b for a, b in zip(thread_counters(), before)]
    return {"start": t0, "end": time.time(), "evals": evals, "cpu": cpu, "counters": counters}


def _summary(out: list[dict], n: int) -> dict:
    wall = max(o["end"] for o in out) - min(o["start"] for o in out)
    totals = [sum(o["counters"][k] for o in out) for k in range(len(out[0]["counters"]))]
    return {"wall_s": wall, "candidates_per_s": n / wall,
            "eval_s_mean": statistics.mean(e for o in out for e in o["evals"]),
            "eval_thread_cpu_s_mean": statistics.mean(c for o in out for c in o["cpu"]),
            "eval_thread": per_candidate(*totals, n)}


def plain_parallel(space, snapshot, data, n: int, procs: int) -> dict:
    """The same candidates split over ``procs`` plain processes (no Ray), timed from the first
    one's first candidate (process start and supernet build left out): what this machine gives
    for parallel evaluation at best, the ceiling for Tune's speed-up."""
    import multiprocessing as mp

    archs = candidates(space, n)
    shares = [(snapshot, data, archs[i::procs]) for i in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:
        return _summary(pool.starmap(_plain_loop, shares), n)


def _waker(hz: float, stop) -> None:
    """Wake ``hz`` times a second and do a few microseconds of work each time, as Ray's
    processes do (``worker_wakeups.py``): preemptions that take almost no CPU."""
    while not stop.is_set():
        time.sleep(1.0 / hz)
        sum(range(100))


def plain_parallel_wakers(space, snapshot, data, n: int, procs: int, hz: float) -> dict:
    """:func:`plain_parallel` beside one process that wakes ``hz`` times a second: whether
    being preempted that often costs a plain evaluation the CPU it costs in a Tune evaluator."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    waker = ctx.Process(target=_waker, args=(hz, stop), daemon=True)
    waker.start()
    try:
        return plain_parallel(space, snapshot, data, n, procs)
    finally:
        stop.set()
        waker.join(timeout=10)


def start_ray(slots: int) -> None:
    import ray

    ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=False)


def ray_tasks(space, snapshot, data, n: int, procs: int) -> dict:
    """The plain processes' loop as ``procs`` Ray tasks (no Tune), the snapshot and images
    read from the object store as Tune's evaluators read them: what Ray's own processes
    and a worker process cost before any Tune bookkeeping."""
    import ray

    archs = candidates(space, n)
    start_ray(procs)
    try:
        task = ray.remote(num_cpus=1)(_plain_loop)
        snapshot_ref, data_ref = ray.put(snapshot), ray.put(data)
        return _summary(ray.get([task.remote(snapshot_ref, data_ref, archs[i::procs]) for i in range(procs)]), n)
    finally:
        ray.shutdown()


def descendants(snap: dict[int, tuple]) -> set[int]:
    """This process and its descendants in ``snap`` (pid -> (parent pid, ...), as
    :meth:`CpuAccount._sample` reads /proc): driver -> Ray daemons -> raylet's workers and agents."""
    mine = {os.getpid()}
    for _ in range(4):
        mine |= {pid for pid, (ppid, *_) in snap.items() if ppid in mine}
    return mine


class CpuAccount:
    """CPU-seconds of this process and its descendants (Ray's processes and workers, all
    started by this driver's ``ray.init``), sampled from /proc until :meth:`stop`: processes
    that exit keep their last sample."""

    def __init__(self, period: float = 0.5):
        import threading

        self.period, self.last, self.base = period, {}, self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _sample() -> dict[int, tuple[int, float, int]]:
        """pid -> (parent pid, CPU-seconds, niceness) of every process readable in /proc."""
        tick, out = os.sysconf("SC_CLK_TCK"), {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()  # after the command, which may hold spaces
            out[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, int(fields[16]))
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._record()

    def _record(self) -> None:
        snap = self._sample()
        self.last.update({pid: snap[pid] for pid in descendants(snap)})

    def stop(self, evaluator_pids: set[int]) -> dict:
        self._record()
        self._stop.set()
        self._thread.join()
        used = {pid: cpu - self.base.get(pid, (0, 0.0))[1] for pid, (_, cpu, _) in self.last.items()}
        evaluators = sum(cpu for pid, cpu in used.items() if pid in evaluator_pids)
        driver = used.get(os.getpid(), 0.0)
        nice = sorted({self.last[pid][2] for pid in evaluator_pids if pid in self.last})
        return {"evaluators": evaluators, "driver": driver, "ray": sum(used.values()) - evaluators - driver,
                "evaluator_niceness": nice}


def idle_slot_seconds(reports: list[dict], started: float, ended: float, slots: int) -> dict[str, float]:
    """Where the slots' time outside evaluations went, summed over slots: before the first
    candidates (Tune's start, the workers' imports, the supernet build), between candidates of one
    trial (reporting, while evaluators reported each candidate), between trials (the batch's report,
    ending the trial, the searcher's next, the actor's reset), after the last candidates (the other
    evaluators' tail, Tune's shutdown), and ``restarts``: the rest, a slot's time between one evaluator
    process's last candidate and the next process's first (0 while every evaluator lives through
    the search; each process's own start and tail count only for the first and last ``slots``)."""
    out = dict.fromkeys(("start", "within_trials", "between_trials", "tail"), 0.0)
    firsts, lasts = [], []
    for pid in {m["pid"] for m in reports}:
        mine = sorted((m["ended_at"] - m["eval_s"], m["ended_at"], m["index"]) for m in reports if m["pid"] == pid)
        firsts.append(mine[0][0] - started)
        lasts.append(ended - mine[-1][1])
        for (_, end, _), (begin, _, index) in zip(mine, mine[1:]):
            out["between_trials" if index == 0 else "within_trials"] += begin - end
    out["start"], out["tail"] = sum(sorted(firsts)[:slots]), sum(sorted(lasts)[:slots])
    out["restarts"] = (ended - started) * slots - sum(m["eval_s"] for m in reports) - sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def tuned(space, snapshot, data, n: int, slots: int, tmp: str, per_trial: int, policy: str = "",
          searcher_cls=GenerationSearcher) -> dict:
    """The product's Tune run (``search.runner.run_tune``) on the same candidates, ``per_trial``
    candidates a trial (0: the runner's automatic batch)."""
    import ray

    from elastic_nas.config import SearchConfig
    from elastic_nas.search import runner
    from elastic_nas.search.runner import run_tune, standing, trial_batching, trial_reports

    cfg = SearchConfig()
    cfg.evaluator.candidates_per_trial = per_trial
    tune_path = Path(tmp) / f"tune{per_trial}"  # named before batching sets per_trial: a fresh search each
    counts = Path(tmp) / f"thread_counters{per_trial}"  # beside the search dir: it would read as a search to resume
    counts.mkdir(parents=True)
    start_ray(slots)
    try:
        t_sizing = time.perf_counter()
        per_trial, slots = trial_batching(cfg)
        sizing_s = time.perf_counter() - t_sizing
        searcher = searcher_cls(generator(space, n), candidates_per_trial=per_trial, slots=slots)
        account = CpuAccount()
        t0, started = time.perf_counter(), time.time()
        with trainable(counted(runner.evaluate_candidate, str(counts), policy)):
            grid = run_tune(cfg, searcher, snapshot, data, tune_path)
        wall = time.perf_counter() - t0
        kept = standing([r.config or {} for r in grid])  # a withdrawn early generation's trials left out
        reports = [c for r, keep in zip(grid, kept) if keep for c in trial_reports(r.path)]
        cpu = account.stop({m["pid"] for m in reports})  # before shutdown: Ray's processes still listed
    finally:
        ray.shutdown()
    evals = [m["eval_s"] for m in reports]
    builds: dict[int, int] = {}
    for m in reports:
        builds[m["pid"]] = max(builds.get(m["pid"], 0), m["builds_in_process"])
    slot_s_per_cand = wall * slots / len(reports)
    eval_mean = statistics.mean(evals)
    niceness = cpu.pop("evaluator_niceness")
    return {
        "candidates_per_trial": searcher.candidates_per_trial, "trials": len(grid),
        "hold_trials": sum(1 for r in grid if HOLD in (r.config or {})),
        "withdrawn_trials": kept.count(False),  # their evaluations count as time not evaluating
        "batch_sizing_s": round(sizing_s, 2),  # the runner's work before the fit
        "slot_seconds_not_evaluating": idle_slot_seconds(reports, started, started + wall, slots),
        "wall_s": wall, "candidates": len(reports), "candidates_per_s": len(reports) / wall,
        "eval_s_mean": eval_mean,
        "overhead_per_candidate": (slot_s_per_cand - eval_mean) / eval_mean,
        "evaluator_processes": len(builds), "builds_per_process": builds,
        "max_builds_per_process": max(builds.values()),
        # CPU-seconds during the run (the machine had wall x cpu_count); what Ray's processes
        # and the driver take is not available to the evaluators
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "machine_share": {k: round(v / (wall * os.cpu_count()), 4) for k, v in cpu.items()},
        "evaluator_niceness": niceness,
        "eval_thread": counted_threads(counts),  # the thread that ran the trials, per candidate
        "evaluator_starts": evaluator_starts(counts, started),
    }


PHASES = ("sequential", "plain_parallel", "ray_tasks", "tune_one_per_trial", "tune_batched")
OPTIONAL_PHASES = ("ray_tasks", "tune_one_per_trial")  # explain the gaps; the targets need the others
NICENESS_ENV = "RAY_worker_niceness"  # read by each raylet as it starts; Ray's default is 15
BATCHED_VARIANT = "tune_batched_"  # the batched run again with one change: figures <tag>_*
NICE_PHASE = "tune_batched_nice"  # + the niceness: a --compare-niceness phase
# --compare-<tag>: the batched run again with one change, in every round (phase tune_batched_<tag>):
# tag -> (the change, the evaluators' policy in counted(); "" where the phase changes the trainable)
BATCHED_COMPARISONS = {
    "report_each": ("a report per candidate (as before a batch was reported once)", ""),
    "sched_batch": ("each evaluator's thread under SCHED_BATCH", "batch"),
    "idle_threads": ("each evaluator process's other threads under SCHED_IDLE (needs CAP_SYS_NICE)", "idle_others"),
    "pinned": ("each evaluator's thread bound to a CPU of its own", "pinned"),
    "default_allocator": ("the evaluators' allocator thresholds left to glibc", "default_allocator"),
    "barrier_at_trial_end": ("the generation barrier lifted when the last trial ends, not on its report "
                             "(the searcher before; needs --generations)", ""),
    "early_start": ("evolution.early_start: idle evaluators at a generation barrier start the next "
                    "generation (needs --generations)", ""),
    "no_holds": ("no hold trials at the barriers (the searcher before them; needs --generations and 3+ "
                 "evaluators)", ""),
    "no_kept_saves": ("no whole copies of Tune's saves (the searcher before search/saves.py)", ""),
}
REPORT_EACH_PHASE = BATCHED_VARIANT + "report_each"
WAKERS_PHASE = "plain_parallel_wakers"  # --compare-wakers HZ
POLICIES = {BATCHED_VARIANT + tag: policy for tag, (_, policy) in BATCHED_COMPARISONS.items() if policy}


def run_phase(name: str, space, snapshot, data, args, tmp: str) -> dict:
    n, slots = args.candidates, args.evaluators
    if name == "sequential":
        return sequential(space, snapshot, data, n)
    if name == "plain_parallel":
        return plain_parallel(space, snapshot, data, n, slots)
    if name == WAKERS_PHASE:
        return plain_parallel_wakers(space, snapshot, data, n, slots, args.compare_wakers)
    if name == "ray_tasks":
        return ray_tasks(space, snapshot, data, n, slots)
    if name == REPORT_EACH_PHASE:  # the batched run again, a report per candidate as before
        with trainable(report_each_candidate):
            return tuned(space, snapshot, data, n, slots, f"{tmp}/{name}", 0)
    if name == BATCHED_VARIANT + "barrier_at_trial_end":
        return tuned(space, snapshot, data, n, slots, f"{tmp}/{name}", 0, searcher_cls=BarrierAtTrialEnd)
    if name == BATCHED_VARIANT + "early_start":
        return tuned(space, snapshot, data, n, slots, f"{tmp}/{name}", 0, searcher_cls=EarlyStart)
    if name == BATCHED_VARIANT + "no_holds":
        return tuned(space, snapshot, data, n, slots, f"{tmp}/{name}", 0, searcher_cls=NoHolds)
    if name == BATCHED_VARIANT + "no_kept_saves":
        return tuned(space, snapshot, data, n, slots, f"{tmp}/{name}", 0, searcher_cls=NoKeptSaves)
    if name in POLICIES:
        return tuned(space, snapshot, data, n, slots, f"{tmp}/{name}", 0, POLICIES[name])
    if name.startswith(NICE_PHASE):  # the batched run again, Ray's workers at one --compare-niceness value
        with env_var(NICENESS_ENV, name[len(NICE_PHASE):]):
            return tuned(space, snapshot, data, n, slots, f"{tmp}/{name}", 0)  # its own search dir
    return tuned(space, snapshot, data, n, slots, tmp, 1 if name == "tune_one_per_trial" else 0)


def report_each_candidate(config: dict, snapshot, data) -> None:
    """The evaluator as it was before a batch was reported once: a ``tune.report`` per
    candidate, each waiting for the driver's next call (every gap between candidates then
    counts as between trials in the breakdown)."""
    from elastic_nas.search.evaluator import evaluate_candidate

    if HOLD in config:  # a hold trial (3+ evaluators) reports once, as before
        return evaluate_candidate(config, snapshot, data)
    for cand in config["candidates"]:
        evaluate_candidate({**config, "candidates": [cand]}, snapshot, data)


def counted(fn, out_dir: str, policy: str = ""):
    """The trainable ``fn`` with its thread's CPU and context switches added up per evaluator
    process in ``out_dir/<pid>.json`` after each trial (with each trial's report; the supernet
    is built before counting, as in the plain loop). ``policy`` "batch": the thread runs under
    Linux's SCHED_BATCH; "idle_others": the process's other threads (Ray's) under SCHED_IDLE,
    whose wakeups never preempt a normal thread (leaving SCHED_IDLE needs CAP_SYS_NICE: root here);
    "pinned": the thread bound to one CPU of its own (the lowest no other evaluator process has
    claimed in ``out_dir``), so a preemption never moves it to another core; "default_allocator":
    the evaluator leaves glibc's thresholds as they are."""
    def evaluate(config: dict, snapshot, data) -> None:
        from elastic_nas.search.evaluator import get_supernet

        if HOLD in config:  # a hold trial evaluates nothing: its wait stays out of the per-candidate counts
            return fn(config, snapshot, data)
        if policy == "batch":
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: this thread
        elif policy == "idle_others":
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # made by an idle thread: inherited
            me = threading.get_native_id()
            for tid in map(int, os.listdir("/proc/self/task")):
                if tid != me:
                    with contextlib.suppress(OSError):  # the thread ended
                        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif policy == "pinned":
            os.sched_setaffinity(0, {claim_cpu(out_dir)})  # 0: this thread
        elif policy == "default_allocator":
            from elastic_nas.search import evaluator

            evaluator.keep_freed_memory = lambda: False  # a fresh worker process each phase: nothing set yet
        begin = Path(out_dir) / f"{os.getpid()}.begin"
        if not begin.exists():  # its first trial: when the process started and when the trial began
            begin.write_text(json.dumps([process_started(), time.time()]))
        get_supernet(snapshot, "cpu", data.channels_last)  # the evaluator's own call then finds it built
        before = (*thread_counters(), time.process_time(), 0)
        try:
            fn(config, snapshot, data)
        finally:
            path = Path(out_dir) / f"{os.getpid()}.json"
            total = json.loads(path.read_text()) if path.exists() else [0] * len(before)
            now = (*thread_counters(), time.process_time(), len(config["candidates"]))
            path.write_text(json.dumps([t + a - b for t, a, b in zip(total, now, before)]))
    return evaluate


def process_started() -> float:
    """This process's start, wall clock (``/proc/self/stat``'s start time, in clock ticks since boot,
    against ``/proc/uptime``: psutil's ``create_time`` adds a boot time rounded to the second)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def evaluator_starts(out_dir: Path, fit_started: float) -> dict:
    """Per evaluator process, seconds after ``fit`` began: when the process started (negative: a
    worker Ray had started before, e.g. at ``ray.init``) and when its first trial began; the gap
    is the process's own start (Ray's worker, then the trainable's imports: Ray Tune, torch)."""
    rows = [json.loads(f.read_text()) for f in sorted(out_dir.glob("*.begin"))]
    return {"process_started_after_fit_s": [round(p - fit_started, 2) for p, _ in rows],
            "first_trial_after_fit_s": [round(t - fit_started, 2) for _, t in rows]}


def claim_cpu(out_dir: str) -> int:
    """This process's CPU: the one it claimed before (a reused actor), else the lowest unclaimed."""
    for cpu in sorted(os.sched_getaffinity(0)):
        path = Path(out_dir) / f"cpu{cpu}.claim"
        try:
            with open(path, "x") as f:
                f.write(str(os.getpid()))
            return cpu
        except FileExistsError:
            if path.read_text() == str(os.getpid()):
                return cpu
    raise RuntimeError(f"every CPU is claimed by another evaluator in {out_dir}")


def counted_threads(out_dir: Path) -> dict:
    """What :func:`counted` wrote, summed over the evaluators, per candidate; ``process_cpu_s``:
    all the evaluator process's threads during its trials (Ray's own threads beside the evaluation)."""
    rows = [json.loads(f.read_text()) for f in out_dir.glob("*.json")]
    *thread, process_cpu, n = (sum(r[k] for r in rows) for k in range(len(rows[0])))
    return {**per_candidate(*thread, n), "process_cpu_s": process_cpu / n}


@contextlib.contextmanager
def trainable(fn):
    """The search runner's Tune trainable replaced by ``fn`` inside."""
    from elastic_nas.search import runner

    old, runner.evaluate_candidate = runner.evaluate_candidate, fn
    try:
        yield
    finally:
        runner.evaluate_candidate = old


def phase_line(name: str, r: dict) -> str:
    t = r["eval_thread"]
    line = (f"{name}: {r['candidates_per_s']:.3f} candidates/s ({r['eval_s_mean']:.2f}s each; per candidate the "
            f"evaluating thread's CPU {t['cpu_s']:.2f}s, context switches {t['voluntary_switches']:.1f} voluntary / "
            f"{t['involuntary_switches']:.1f} involuntary, moves to another CPU {t['cpu_moves']:.1f}, kernel CPU "
            f"{t['sys_cpu_s']:.3f}s, minor faults {t['minor_faults']:.0f}")
    if "eval_thread_cpu_s_mean" in r:
        return line + ")"
    return line + (f"); {r['candidates_per_trial']} candidate(s) per trial, overhead per candidate "
                   f"{100 * r['overhead_per_candidate']:.1f}%, builds per process {r['builds_per_process']}; CPU "
                   f"share: evaluators {100 * r['machine_share']['evaluators']:.1f}%, driver "
                   f"{100 * r['machine_share']['driver']:.1f}%, Ray's processes {100 * r['machine_share']['ray']:.1f}%; "
                   f"slot-seconds not evaluating {r['slot_seconds_not_evaluating']}; evaluator processes started "
                   f"{r['evaluator_starts']['process_started_after_fit_s']} s after fit began, first trials at "
                   f"{r['evaluator_starts']['first_trial_after_fit_s']} s")


def round_figures(r: dict) -> dict:
    """One round's ratios: every phase of it ran within minutes of the others (the figures of a
    phase left out with --skip are left out too)."""
    seq, par, tun = r["sequential"], r["plain_parallel"], r["tune_batched"]
    out = {
        "speedup_vs_sequential": tun["candidates_per_s"] / seq["candidates_per_s"],
        "plain_parallel_speedup_vs_sequential": par["candidates_per_s"] / seq["candidates_per_s"],
        "tune_vs_plain_parallel": tun["candidates_per_s"] / par["candidates_per_s"],
        "tune_overhead_per_candidate": tun["overhead_per_candidate"],
        "eval_time_ratio_tune_vs_sequential": tun["eval_s_mean"] / seq["eval_s_mean"],
        "eval_time_ratio_tune_vs_plain": tun["eval_s_mean"] / par["eval_s_mean"],
        "sequential_eval_s": seq["eval_s_mean"],
        "max_supernet_builds_per_process": tun["max_builds_per_process"],
        "evaluator_processes": tun["evaluator_processes"],
        "restart_slot_seconds": tun["slot_seconds_not_evaluating"]["restarts"],
        # the evaluating thread per candidate: its CPU against a plain process's, and how often it
        # was preempted in each; the evaluator process's CPU against its evaluating thread's
        "eval_thread_cpu_ratio_tune_vs_plain": tun["eval_thread"]["cpu_s"] / par["eval_thread"]["cpu_s"],
        "involuntary_switches_per_candidate_plain": par["eval_thread"]["involuntary_switches"],
        "involuntary_switches_per_candidate_tune": tun["eval_thread"]["involuntary_switches"],
        "cpu_moves_per_candidate_plain": par["eval_thread"]["cpu_moves"],
        "cpu_moves_per_candidate_tune": tun["eval_thread"]["cpu_moves"],
        "sys_cpu_s_per_candidate_plain": par["eval_thread"]["sys_cpu_s"],
        "sys_cpu_s_per_candidate_tune": tun["eval_thread"]["sys_cpu_s"],
        "minor_faults_per_candidate_plain": par["eval_thread"]["minor_faults"],
        "minor_faults_per_candidate_tune": tun["eval_thread"]["minor_faults"],
        "evaluator_process_vs_thread_cpu": tun["eval_thread"]["process_cpu_s"] / tun["eval_thread"]["cpu_s"],
        # the most of the ceiling Tune could reach here with no per-trial cost at all
        "ceiling_fraction_bound": 1 - tun["machine_share"]["driver"] - tun["machine_share"]["ray"],
    }
    if "tune_one_per_trial" in r:
        one = r["tune_one_per_trial"]
        out["one_per_trial_speedup_vs_sequential"] = one["candidates_per_s"] / seq["candidates_per_s"]
        out["one_per_trial_overhead_per_candidate"] = one["overhead_per_candidate"]
    if "ray_tasks" in r:  # Ray's share of the gap to the ceiling, before any Tune bookkeeping
        tasks = r["ray_tasks"]
        out["ray_tasks_vs_plain_parallel"] = tasks["candidates_per_s"] / par["candidates_per_s"]
        out["eval_time_ratio_ray_tasks_vs_plain"] = tasks["eval_s_mean"] / par["eval_s_mean"]
        out["eval_thread_cpu_ratio_ray_tasks_vs_plain"] = tasks["eval_thread_cpu_s_mean"] / par["eval_thread_cpu_s_mean"]
    if WAKERS_PHASE in r:  # plain processes again, preempted about as often as in Tune
        w = r[WAKERS_PHASE]
        out.update({"wakers_vs_plain_parallel": w["candidates_per_s"] / par["candidates_per_s"],
                    "wakers_eval_thread_cpu_ratio_vs_plain": w["eval_thread"]["cpu_s"] / par["eval_thread"]["cpu_s"],
                    "wakers_involuntary_switches_per_candidate": w["eval_thread"]["involuntary_switches"],
                    "wakers_cpu_moves_per_candidate": w["eval_thread"]["cpu_moves"]})
    # every tune_batched_<tag> phase (nice<N>, report_each, sched_batch, idle_threads, pinned, default_allocator)
    others = [(k, k[len(BATCHED_VARIANT):]) for k in r if k.startswith(BATCHED_VARIANT)]
    for name, tag in others:  # the batched run again: the workers at another niceness, or a report per candidate
        other = r[name]
        out.update({
            f"{tag}_vs_plain_parallel": other["candidates_per_s"] / par["candidates_per_s"],
            f"{tag}_speedup_vs_sequential": other["candidates_per_s"] / seq["candidates_per_s"],
            f"{tag}_vs_tune_batched": other["candidates_per_s"] / tun["candidates_per_s"],
            f"{tag}_overhead_per_candidate": other["overhead_per_candidate"],
            f"{tag}_evaluator_processes": other["evaluator_processes"],
            f"{tag}_restart_slot_seconds": other["slot_seconds_not_evaluating"]["restarts"],
            f"{tag}_eval_time_ratio_vs_plain": other["eval_s_mean"] / par["eval_s_mean"],
            f"{tag}_eval_thread_cpu_ratio_vs_plain": other["eval_thread"]["cpu_s"] / par["eval_thread"]["cpu_s"],
            f"{tag}_involuntary_switches_per_candidate": other["eval_thread"]["involuntary_switches"],
            f"{tag}_cpu_moves_per_candidate": other["eval_thread"]["cpu_moves"],
            f"{tag}_sys_cpu_s_per_candidate": other["eval_thread"]["sys_cpu_s"],
            f"{tag}_minor_faults_per_candidate": other["eval_thread"]["minor_faults"],
        })
    return out


def across_rounds(per_round: list[dict]) -> dict:
    """Each figure's median, min and max over the rounds."""
    return {k: {"median": statistics.median(f[k] for f in per_round), "min": min(f[k] for f in per_round),
                "max": max(f[k] for f in per_round)} for k in per_round[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=24)
    p.add_argument("--evaluators", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="every phase once per round, the order reversed each round")
    p.add_argument("--generations", type=int, default=0,
                   help="split the candidates into this many more generations, the Tune phases waiting at each "
                   "barrier as a search does (jobs/search.yaml: 6, 224 = 7 x 32); 0: one generation")
    add_setup_args(p)
    p.add_argument("--worker-niceness", type=int, default=None,
                   help="niceness of Ray's worker processes (Ray's default 15 yields to every nice-0 process)")
    p.add_argument("--compare-niceness", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                   metavar="N[,N...]", help="also run batched Tune with Ray's workers at each of these "
                   "nicenesses, in every round (figures nice<N>_*)")
    for tag, (change, _) in BATCHED_COMPARISONS.items():
        p.add_argument(f"--compare-{tag.replace('_', '-')}", action="store_true",
                       help=f"also run batched Tune with {change}, in every round (figures {tag}_*)")
    p.add_argument("--compare-wakers", type=float, default=None, metavar="HZ",
                   help="also run the plain processes beside one that wakes HZ times a second, in every round "
                   "(figures wakers_*; 600: what worker_wakeups.py counts on a 2-evaluator search)")
    p.add_argument("--skip", type=lambda v: [x for x in v.split(",") if x], default=[], metavar="PHASE[,PHASE...]",
                   help=f"leave out these of the optional phases {', '.join(OPTIONAL_PHASES)}")
    p.add_argument("--out", default="benchmarks/results/search_speed.json")
    args = p.parse_args()
    if args.rounds < 1 or args.candidates < args.evaluators:
        p.error("--rounds must be >= 1 and --candidates >= --evaluators")
    if not 0 <= args.generations < args.candidates // args.evaluators:
        p.error("--generations takes 0 to candidates / evaluators - 1")
    global GENERATIONS
    GENERATIONS = args.generations
    if args.compare_wakers is not None and args.compare_wakers <= 0:
        p.error("--compare-wakers takes wakeups per second > 0")
    if set(args.skip) - set(OPTIONAL_PHASES):
        p.error(f"--skip takes only {', '.join(OPTIONAL_PHASES)}")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if args.worker_niceness is not None:  # every phase's raylet
        os.environ[NICENESS_ENV] = str(args.worker_niceness)
    import tempfile

    space, snapshot, data = setup(args)
    rounds = []
    phases_run = tuple(p for p in PHASES if p not in args.skip) + tuple(f"{NICE_PHASE}{v}"
                                                                       for v in args.compare_niceness)
    phases_run += tuple(BATCHED_VARIANT + tag for tag in BATCHED_COMPARISONS if getattr(args, f"compare_{tag}"))
    phases_run += (WAKERS_PHASE,) if args.compare_wakers else ()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            phases = {}
            # reversed every other round: a drift in one direction does not favour the same side each round
            for name in (phases_run if i % 2 == 0 else phases_run[::-1]):
                phases[name] = run_phase(name, space, snapshot, data, args, f"{tmp}/round{i}")
                print(f"round {i + 1}/{args.rounds} {phase_line(name, phases[name])}", flush=True)
            rounds.append({"phases": phases, "figures": round_figures(phases)})
            f = rounds[-1]["figures"]
            print(f"round {i + 1}/{args.rounds}: tune x{args.evaluators} batched {f['speedup_vs_sequential']:.2f}x "
                  f"sequential (target {SPEEDUP_TARGET}), {f['tune_vs_plain_parallel']:.2f} of the ceiling (target "
                  f"{CEILING_TARGET}), overhead {100 * f['tune_overhead_per_candidate']:.1f}% (target "
                  f"{100 * OVERHEAD_TARGET:.0f}%)" + (f"; Ray tasks {f['ray_tasks_vs_plain_parallel']:.2f} of the "
                                                       "ceiling" if "ray_tasks_vs_plain_parallel" in f else ""),
                  flush=True)
    result = {
        "command": "python " + shlex.join(sys.argv),
        "machine": machine(),  # with the CPU model and torch's vector ISA
        "settings": vars(args),
        "targets": {"speedup_vs_sequential": SPEEDUP_TARGET, "tune_vs_plain_parallel": CEILING_TARGET,
                    "tune_overhead_per_candidate": OVERHEAD_TARGET},
        "figures": across_rounds([r["figures"] for r in rounds]),
        "rounds": rounds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    fig = result["figures"]
    print("median (min-max) of " + f"{args.rounds} rounds: " + "; ".join(
        f"{k} {fig[k]['median']:.3f} ({fig[k]['min']:.3f}-{fig[k]['max']:.3f})"
        for k in ("speedup_vs_sequential", "tune_vs_plain_parallel", "tune_overhead_per_candidate",
                  "ray_tasks_vs_plain_parallel") if k in fig))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
