"""Recovery after a node loss / join, and work lost, on a 2-node local Ray cluster.

The settings run in the same invocation, each on a fresh cluster, each through
``--repeats`` cycles of a node lost and a node added back (the JSON has every cycle and
the medians; single runs on this shared 2-core machine spread by several seconds):

* ``ray_defaults``: Ray Train's defaults (health check 2 s, worker-group start timeout
  60 s, elastic monitor 60 s);
* ``ray_tuned``: the tuned Ray settings of the reference notes (0.5 s, 10 s, 2 s);
* ``elastic_nas``: this project's defaults (0.5 s, 3 s, 1 s, the node watcher of
  ``elastic_nas/cluster/node_watch.py`` and the warm worker processes of
  ``elastic_nas/cluster/warm_workers.py``, its worker nodes started with
  ``RAY_preload_python_modules`` as ``cluster.yaml`` starts them);
* ``elastic_nas_cold``: the same without warm workers or preloading (the previous default).

Figures: seconds from ``remove_node`` to the end of the first step at the smaller size;
from ``add_node`` to the end of the first step at the larger size (``scale_up_s``; the
node's own raylet start is in it) and from when ``add_node`` returns, i.e. the GCS lists the
node alive (``scale_up_from_registered_s``: the part Ray and this project control); the pause in training
at the join (last step at the old size to the first at the new); steps redone after
the loss without notice (checkpoint every 10 steps). A last scenario drains a node with a
deadline first (a spot notice) and counts redone steps (target 0).

    python benchmarks/elastic_recovery.py [--settings elastic_nas,ray_tuned] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SPOS_WORKLOAD, write_result
from tests.ray_utils import CliRun, add_worker_node, attempts, preload_worker_nodes, slot_cluster

SETTINGS = {
    "ray_defaults": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60"},
                     {"elastic.resize_monitor_interval_s": 60, "elastic.node_watch": False}),
    "ray_tuned": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "10"},
                  {"elastic.resize_monitor_interval_s": 2, "elastic.node_watch": False}),
    "elastic_nas": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3"},
                    {}),  # the project's defaults
    "elastic_nas_cold": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3"},
                         {"elastic.warm_workers": False}),
}
# Settings whose nodes start with the worker imports preloaded (a raylet setting).
PRELOAD = {"elastic_nas"}
CKPT_EVERY = 10
# Every setting trains this long before the loss and before the join: a run minutes in,
# whose warm workers (refilled 15 s after a restart, then booting) are ready.
SETTLE_S = 60


def args_for(tmp: Path, name: str, extra: dict, repeats: int) -> list[str]:
    sets = {
        "run.name": name, "run.storage_path": str(tmp / "runs"), "data.path": str(tmp / "data"),
        "data.num_train": 20000, "data.num_test": 256, "data.search_val_size": 256,
        **SPOS_WORKLOAD, "optim.epochs": 2 + 4 * repeats,  # outlasts the cycles
        "elastic.min_workers": 1, "elastic.max_workers": 2,
        "elastic.resources_per_worker": "{CPU: 1, slot: 1}", "elastic.per_worker_batch": 32,
        "elastic.checkpoint_every_steps": CKPT_EVERY, "elastic.checkpoint_every_s": 3600,
        "elastic.report_every_steps": 5, "elastic.sample_log_dir": str(tmp / "samples" / name), **extra,
    }
    out = ["supernet", "--config", "jobs/supernet.yaml"]
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def records(log_dir: Path) -> list[dict]:
    out = []
    for f in log_dir.glob("rank0_*.jsonl"):
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r.pop("ids")
                out.append(r)
    return sorted(out, key=lambda r: r["t"])


def first_step_after(log_dir: Path, t0: float, world: int, timeout: float) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for r in records(log_dir):
            if r["t"] > t0 and r["world"] == world:
                return r["t"] - t0
        time.sleep(0.1)
    raise RuntimeError(f"no step at world size {world} within {timeout}s")


def join_pause(log_dir: Path, t_add: float, world: int) -> float:
    """Seconds without a step around a join: from the last step before the first step at
    ``world`` to that first step (the old group trains until Ray restarts it)."""
    recs = records(log_dir)
    first = next(r for r in recs if r["t"] > t_add and r["world"] == world)
    return first["t"] - max(r["t"] for r in recs if r["t"] < first["t"])


def wait_checkpoint(run_dir: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any((p / "meta.json").exists() for p in run_dir.glob("checkpoint_step*")):
            return
        time.sleep(0.1)
    raise RuntimeError("no checkpoint")


def scenario(tmp: Path, setting: str, drain: bool, repeats: int) -> dict:
    """``repeats`` cycles of: a node lost (or drained, then lost), then a node added back."""
    env, extra = SETTINGS[setting]
    name = f"{setting}{'_drain' if drain else ''}"
    preload_worker_nodes(False)
    cluster = slot_cluster()
    preload_worker_nodes(setting in PRELOAD)  # worker nodes only, as cluster.yaml
    run = None
    runs: dict[str, list] = {k: [] for k in ("recover_s", "scale_up_s", "scale_up_from_registered_s",
                                             "join_pause_s", "redone_at_loss", "redone_at_join")}
    try:
        add_worker_node(cluster)
        victim = add_worker_node(cluster)
        run = CliRun(args_for(tmp, name, extra, repeats), env={"RAY_ADDRESS": cluster.address, **env})
        run.wait_for(r"started with 2 worker", 300)
        wait_checkpoint(tmp / "runs" / name, 300)
        log_dir = tmp / "samples" / name
        for cycle in range(repeats):
            time.sleep(SETTLE_S)  # a run minutes in: warm workers (where used) are ready
            if drain:
                seen = len(run.lines)
                subprocess.run([str(Path(sys.executable).parent / "ray"), "drain-node", "--address",
                                cluster.address, "--node-id", victim.node_id, "--reason",
                                "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot",
                                "--deadline-remaining-seconds", "15"], check=True, capture_output=True, timeout=60)
                run.wait_for(r"waiting for the reclaim", 120, start=seen)
            else:
                time.sleep(2.5)  # land between checkpoints: some steps will be redone
            t_remove = time.time()
            cluster.remove_node(victim)
            runs["recover_s"].append(round(first_step_after(log_dir, t_remove, 1, 300), 2))
            time.sleep(SETTLE_S)  # the node comes back later, not in the middle of the restart
            t_add = time.time()
            victim = add_worker_node(cluster)
            t_registered = time.time()  # add_node returns once the GCS lists the node alive
            up = first_step_after(log_dir, t_add, 2, 300)
            runs["scale_up_s"].append(round(up, 2))
            runs["scale_up_from_registered_s"].append(round(up - (t_registered - t_add), 2))
            runs["join_pause_s"].append(round(join_pause(log_dir, t_add, 2), 2))
            starts = attempts(log_dir)
            runs["redone_at_loss"].append(starts[-2]["redone"])
            runs["redone_at_join"].append(starts[-1]["redone"])
            print(f"   cycle {cycle + 1}: " + ", ".join(f"{k} {v[-1]}" for k, v in runs.items()), flush=True)
        result: dict = {k: round(statistics.median(v), 2) for k, v in runs.items()}
        result["runs"] = runs
        return result
    finally:
        if run is not None:
            run.kill()
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", default="elastic_nas,elastic_nas_cold,ray_tuned,ray_defaults")
    ap.add_argument("--no-drain", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="loss/join cycles per setting (medians reported)")
    a = ap.parse_args()
    figures: dict = {"checkpoint_every_steps": CKPT_EVERY, "repeats": a.repeats, "settings": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for setting in a.settings.split(","):
            print(f"== {setting}: node loss without notice", flush=True)
            figures["settings"][setting] = scenario(tmp, setting, drain=False, repeats=a.repeats)
            print(figures["settings"][setting], flush=True)
        if not a.no_drain:
            print("== elastic_nas: node drained with a 15 s deadline, then removed", flush=True)
            figures["with_notice"] = scenario(tmp, "elastic_nas", drain=True, repeats=1)
    s = figures["settings"]
    if "elastic_nas" in s:
        for base in ("elastic_nas_cold", "ray_tuned", "ray_defaults"):
            if base in s:
                for fig in ("recover_s", "scale_up_s", "scale_up_from_registered_s"):
                    figures[f"{fig[:-2]}_speedup_vs_{base}"] = round(s[base][fig] / s["elastic_nas"][fig], 2)
    write_result("elastic_recovery", figures)


if __name__ == "__main__":
    main()
