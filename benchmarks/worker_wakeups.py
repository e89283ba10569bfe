"""Who wakes up on the cores while Tune's evaluators work? Wakeups per second of each thread.

``search_speed.py`` finds a Tune evaluator's thread preempted ~180 times per candidate (some 230
times a second) against 11-19 in a plain process, and paying ~14 % more CPU per evaluation
(issue 19). A preemption needs a thread that wakes; this counts them: each thread's voluntary
context switches (it slept, so it woke as often) over ``--seconds``, from
``/proc/<pid>/task/<tid>/status``, in

* a Ray actor that idles, and one whose second thread runs torch ops back to back while its
  main thread waits, as Tune runs a function trainable;
* this driver (what Tune's driver carries before any Tune work);
* Ray's own processes (GCS, raylet, agents, monitors), summed per process.

    python benchmarks/worker_wakeups.py --seconds 5

Writes ``benchmarks/results/worker_wakeups.json``. Light on CPU except for the one busy thread.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from pathlib import Path

from search_speed import CpuAccount, descendants

from _common import write_result


def thread_switches(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, voluntary context switches so far) of every thread of ``pid``."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:  # the thread ended
            continue
        line = next(x for x in status.splitlines() if x.startswith("voluntary_ctxt_switches"))
        out[int(tid)] = (name, int(line.split()[1]))
    return out


def wakeups(pids: list[int], seconds: float) -> dict[int, dict[str, float]]:
    """pid -> {thread name (tid): wakeups per second} over ``seconds``, busiest first."""
    before = {pid: thread_switches(pid) for pid in pids}
    time.sleep(seconds)
    out = {}
    for pid in pids:
        after = thread_switches(pid)
        rates = {f"{name} ({tid})": (n - before[pid][tid][1]) / seconds
                 for tid, (name, n) in after.items() if tid in before[pid]}
        out[pid] = dict(sorted(rates.items(), key=lambda kv: -kv[1]))
    return out


def ray_daemons() -> dict[int, str]:
    """pid -> command name of this driver's Ray processes other than its workers."""
    names = {}
    for pid in descendants(CpuAccount._sample()) - {os.getpid()}:
        with contextlib.suppress(OSError):  # the process ended
            names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
    return {pid: name for pid, name in names.items() if not name.startswith("ray::")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--name", default="worker_wakeups")
    args = p.parse_args()
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        class Evaluator:
            def __init__(self):
                self.busy = None

            def pid(self) -> int:
                return os.getpid()

            def spin(self) -> None:
                """A second thread running torch ops back to back, one torch thread (as Tune runs a
                function trainable and an evaluation runs: each op releases the GIL)."""
                import torch

                def loop():
                    torch.set_num_threads(1)
                    x = torch.randn(256, 256)
                    while True:
                        torch.tanh(x @ x, out=x)
                self.busy = threading.Thread(target=loop, daemon=True)
                self.busy.start()

        idle, busy = Evaluator.remote(), Evaluator.remote()
        idle_pid, busy_pid = ray.get([idle.pid.remote(), busy.pid.remote()])
        ray.get(busy.spin.remote())
        time.sleep(2)  # past the workers' start
        daemons = ray_daemons()
        rates = wakeups([idle_pid, busy_pid, os.getpid(), *daemons], args.seconds)
    finally:
        ray.shutdown()
    out = {"seconds": args.seconds, "idle_actor": rates[idle_pid], "busy_actor": rates[busy_pid],
           "driver": rates[os.getpid()],
           "ray_processes": {f"{daemons[pid]} ({pid})": round(sum(rates[pid].values()), 1) for pid in daemons}}
    out["totals_per_second"] = {k: round(sum(out[k].values()), 1) for k in
                                ("idle_actor", "busy_actor", "driver", "ray_processes")}
    for k in ("idle_actor", "busy_actor", "driver"):
        top = ", ".join(f"{name} {rate:.0f}" for name, rate in list(out[k].items())[:3])
        print(f"{k}: {out['totals_per_second'][k]:.0f} wakeups/s ({top})")
    print(f"Ray's processes: {out['totals_per_second']['ray_processes']:.0f} wakeups/s {out['ray_processes']}")
    write_result(args.name, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
