"""Shared by the benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Benchmarks' local clusters stay on loopback, like the tests.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


# The supernet the elastic benchmarks have always measured (the pre-ranking laptop default, in
# the plain layout): pinned, so that their figures stay comparable whatever jobs/supernet.yaml ships.
SPOS_WORKLOAD = {"strategy": "spos", "space.name": "spos", "space.stem_stride": 1, "space.width_mult": 0.25,
                 "optim.channels_last": False}


def cpu_model() -> str | None:
    """The CPU's model name (Linux), e.g. to tell which runs shared a machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),  # float results differ between CPU models (RESULTS.md, ranking)
        # The vector ISA torch's CPU kernels use: hosts named alike ("AMD EPYC") differ in it
        # (AVX2 or AVX-512), and the laptop flow's speed with them.
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        pass
    return info


def timed_blocks(run: dict, steps: int, block: int) -> dict[str, float]:
    """Median seconds of each of ``run``'s two step functions (``fn(step)``), in alternating blocks
    of ``block`` steps, every step started together on all ranks (a torch.distributed group is up);
    the first block of each is warm-up. Drift then hits both alike."""
    import statistics
    import time

    import torch.distributed as dist

    names = list(run)
    times = {name: [] for name in names}
    for step in range(steps):
        name = names[(step // block) % 2]
        dist.barrier()
        t0 = time.perf_counter()
        run[name](step)
        if step >= 2 * block:
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


PROGRESS_EVERY_S = 10.0


def run_jobs(fn, jobs: list[tuple], procs: int) -> list:
    """``fn(*job)`` for every job, ``procs`` at a time in spawned processes (1 = in this one), in
    the jobs' order; a line as a job ends, since a benchmark's jobs can take hours, but at most one
    every ``PROGRESS_EVERY_S`` (cached jobs end hundreds a second), and always the first and the last."""
    t0, out, shown = time.monotonic(), [], -float("inf")

    def ended(result) -> None:  # called in the jobs' order
        nonlocal shown
        out.append(result)
        now = time.monotonic()
        if now - shown >= PROGRESS_EVERY_S or len(out) == len(jobs):
            shown = now
            print(f"{Path(sys.argv[0]).stem}: {len(out)}/{len(jobs)} jobs done, {now - t0:.0f} s", flush=True)

    if procs <= 1:
        for job in jobs:
            ended(fn(*job))
        return out
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(procs) as pool:
        pending = [pool.apply_async(fn, job) for job in jobs]
        for r in pending:  # in submission order: a line may wait on an earlier, longer job
            ended(r.get())
    return out


@contextlib.contextmanager
def env_var(name: str, value: str):
    """``os.environ[name] = value`` inside: processes started there (a raylet, a spawned pool) inherit it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name)
        else:
            os.environ[name] = old


def write_result(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    data = {"command": " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "machine": machine(), **figures}
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps(data, indent=1))
    print(f"wrote {out}")
    return out
