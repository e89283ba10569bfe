"""Nodes that join together: restarts and pauses for two joins at once against one.

On a local cluster of one-slot worker nodes (the head runs nothing), ``elastic-nas supernet``
with ``min_workers 1, max_workers 3`` starts on one node. Then: one node is added (a lone
join); later it is removed; later two nodes are added back to back (``add_node`` twice, as
an autoscaler launching two). For each join: the worker-group restarts it caused, the
pause in training at each (last step of the old group to the first of the new), and the
seconds from the first ``add_node`` call to the first step at the final size. Each setting
on a fresh cluster: ``settle`` (this project's default, ``elastic.join_settle_s`` 2.5) and
``no_settle`` (0: the node watcher shows Ray every join at once).

    python benchmarks/joins.py [--settings settle,no_settle] [--repeats 2]
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

SETTINGS = {"settle": {}, "no_settle": {"elastic.join_settle_s": 0}}
SETTLE_S = 30  # trained this long before each change: a run minutes in


def restarts_since(log_dir: Path, t0: float) -> list[dict]:
    """The worker-group starts after ``t0``, each with the pause before it."""
    runs = attempts(log_dir)
    out = []
    for prev, cur in zip(runs, runs[1:]):
        if cur["t_first"] > t0:
            out.append({"world": cur["world"], "pause_s": round(cur["t_first"] - prev["t_last"], 2)})
    return out


def join(cluster, log_dir: Path, nodes: int) -> tuple[dict, list]:
    """Add ``nodes`` nodes back to back; figures once the run trains at its new size."""
    before = attempts(log_dir)[-1]["world"]
    t_add = time.time()
    added = [add_worker_node(cluster) for _ in range(nodes)]
    t_added = time.time()
    up = first_step_after(log_dir, t_add, before + nodes, 300)
    time.sleep(5)  # a restart right after the last one would still be counted
    restarts = restarts_since(log_dir, t_add)
    return {"nodes": nodes, "add_node_calls_s": round(t_added - t_add, 2), "to_full_size_s": round(up, 2),
            "restarts": len(restarts), "worlds": [r["world"] for r in restarts], "pauses_s": [r["pause_s"] for r in restarts],
            "paused_s": round(sum(r["pause_s"] for r in restarts), 2)}, added


def scenario(tmp: Path, setting: str, repeats: int) -> dict:
    cluster = slot_cluster()
    extra = {"elastic.max_workers": 3, **SETTINGS[setting]}
    args = args_for(tmp, setting, extra, 4 * repeats)
    log_dir = tmp / "samples" / setting
    run = None
    out: dict = {"one": [], "two": []}
    try:
        add_worker_node(cluster)
        run = CliRun(args, env={"RAY_ADDRESS": cluster.address})
        run.wait_for(r"started with 1 worker", 300)
        wait_checkpoint(tmp / "runs" / setting, 300)
        for cycle in range(repeats):
            for key, nodes in (("one", 1), ("two", 2)):
                time.sleep(SETTLE_S)
                figures, added = join(cluster, log_dir, nodes)
                out[key].append(figures)
                print(f"   {setting} cycle {cycle + 1}, {nodes} join(s): {figures}", flush=True)
                time.sleep(SETTLE_S)
                t_remove = time.time()
                for node in added:
                    cluster.remove_node(node)
                first_step_after(log_dir, t_remove, 1, 300)
        for key in ("one", "two"):
            out[f"{key}_restarts_median"] = statistics.median(f["restarts"] for f in out[key])
            out[f"{key}_paused_s_median"] = round(statistics.median(f["paused_s"] for f in out[key]), 2)
            out[f"{key}_to_full_size_s_median"] = round(statistics.median(f["to_full_size_s"] for f in out[key]), 2)
        return out
    finally:
        if run is not None:
            run.kill()
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default="settle,no_settle")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    figures: dict = {"repeats": a.repeats, "settle_s": SETTLE_S, "settings": {}}
    with tempfile.TemporaryDirectory() as d:
        for setting in a.settings.split(","):
            print(f"== {setting}", flush=True)
            figures["settings"][setting] = scenario(Path(d), setting, a.repeats)
    write_result("joins", figures)


if __name__ == "__main__":
    main()
