"""A killed driver started again: seconds to the first training step at the full size.

On a local cluster of two one-slot worker nodes (the head runs nothing), ``elastic-nas
supernet`` with ``min_workers 1, max_workers 2`` (this project's defaults otherwise). Each
setting runs on a fresh cluster:

1. the baseline, a node loss: ``remove_node`` to the first step at 1 worker (then the node
   is added back and the run returns to 2 workers);
2. ``--repeats`` driver restarts: the driver's process group killed with SIGKILL mid-run,
   the same command started again at once; seconds from that start to the first step at
   2 workers, and the steps redone.

Settings: ``release`` (the default, ``elastic.release_dead_driver``: the new driver cancels
the resource request the dead one's controller left with Ray) and ``no_release`` (Ray's
own behaviour: the request expires after 180 s).

    python benchmarks/driver_restart.py [--settings release,no_release] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import write_result
from elastic_recovery import args_for, first_step_after, wait_checkpoint
from tests.ray_utils import CliRun, add_worker_node, attempts, slot_cluster

SETTINGS = {"release": {}, "no_release": {"elastic.release_dead_driver": False}}
SETTLE_S = 30  # trained this long before each fault: a run minutes in


def first_new_start(log_dir: Path, t0: float, world: int, timeout: float) -> float:
    """Seconds from ``t0`` to the first step of a worker group started after it at ``world``
    workers (the killed driver's workers may step on for a moment: they do not count)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for a in attempts(log_dir):
            if a["t_first"] > t0 and a["world"] == world:
                return a["t_first"] - t0
        time.sleep(0.2)
    raise RuntimeError(f"no worker group at {world} workers within {timeout}s")


def scenario(tmp: Path, setting: str, repeats: int) -> dict:
    name = setting
    cluster = slot_cluster()
    env = {"RAY_ADDRESS": cluster.address}
    args = args_for(tmp, name, SETTINGS[setting], repeats + 2)
    log_dir = tmp / "samples" / name
    run = None
    out: dict = {"restart_s": [], "redone_at_restart": []}
    try:
        add_worker_node(cluster)
        victim = add_worker_node(cluster)
        run = CliRun(args, env=env)
        run.wait_for(r"started with 2 worker", 300)
        wait_checkpoint(tmp / "runs" / name, 300)
        time.sleep(SETTLE_S)
        t_remove = time.time()
        cluster.remove_node(victim)
        out["node_loss_s"] = round(first_step_after(log_dir, t_remove, 1, 300), 2)
        t_add = time.time()
        add_worker_node(cluster)
        first_step_after(log_dir, t_add, 2, 300)
        print(f"   node loss: first step at 1 worker after {out['node_loss_s']} s", flush=True)
        for cycle in range(repeats):
            time.sleep(SETTLE_S)
            run.kill()
            t_start = time.time()
            run = CliRun(args, env=env)
            out["restart_s"].append(round(first_new_start(log_dir, t_start, 2, 400), 2))
            out["redone_at_restart"].append(attempts(log_dir)[-1]["redone"])
            released = any("released the resources" in line for line in run.lines)
            print(f"   restart {cycle + 1}: first step at 2 workers after {out['restart_s'][-1]} s "
                  f"(redone {out['redone_at_restart'][-1]}; released: {released})", flush=True)
        out["restart_median_s"] = round(statistics.median(out["restart_s"]), 2)
        return out
    finally:
        if run is not None:
            run.kill()
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default="release,no_release")
    ap.add_argument("--repeats", type=int, default=3, help="driver restarts per setting")
    a = ap.parse_args()
    figures: dict = {"repeats": a.repeats, "settle_s": SETTLE_S, "settings": {}}
    with tempfile.TemporaryDirectory() as d:
        for setting in a.settings.split(","):
            repeats = a.repeats if setting == "release" else 1  # Ray's expiry: minutes a cycle
            print(f"== {setting}", flush=True)
            figures["settings"][setting] = scenario(Path(d), setting, repeats)
    s = figures["settings"]
    if "release" in s:
        figures["restart_vs_node_loss"] = round(s["release"]["restart_median_s"] / s["release"]["node_loss_s"], 2)
        if "no_release" in s:
            figures["speedup_vs_no_release"] = round(s["no_release"]["restart_median_s"]
                                                     / s["release"]["restart_median_s"], 2)
    write_result("driver_restart", figures)


if __name__ == "__main__":
    main()
