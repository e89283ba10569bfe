"""Goodput under churn on a 3-node local cluster.

Every ``--period`` seconds one node gets a spot notice (drain with a 30 s deadline) and is
removed at the deadline; it comes back ``--rejoin`` seconds later. The run lasts
``--duration`` seconds (>= 600 for the published figure).

Goodput = useful samples/s (samples that count toward training: a step redone after a
restart counts once) divided by the static samples/s at the same time-averaged world
size. Worker nodes start as ``cluster.yaml`` starts them (training imports preloaded, for
the warm worker processes). The static rates at 2 and 3 workers are measured in the same
invocation, on the same cluster, before and after the churn run (the baseline is their
mean, both are reported: the machine's speed drifts); the average world size is the
time-average of the live worker nodes during the churn run, and the static rate at it is
interpolated. Beside the ratio: the paused fraction (time between the last step of a worker
group and the first of the next, over the run) and the rate while running, against the
same static rate: goodput = (1 - paused) x running rate / static rate.

    python benchmarks/elastic_goodput.py [--duration 600 --period 180 --rejoin 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SPOS_WORKLOAD, write_result
from tests.ray_utils import CliRun, add_worker_node, attempts, preload_worker_nodes, redone_steps, slot_cluster

WORKER_BATCH = 32


def args_for(tmp: Path, name: str, workers: tuple[int, int], epochs: float) -> list[str]:
    sets = {
        "run.name": name, "run.storage_path": str(tmp / "runs"), "data.path": str(tmp / "data"),
        "data.num_train": 50000, "data.num_test": 256, "data.search_val_size": 256,
        **SPOS_WORKLOAD, "optim.epochs": epochs, "optim.schedule": "constant",
        "elastic.min_workers": workers[0], "elastic.max_workers": workers[1],
        "elastic.resources_per_worker": "{CPU: 1, slot: 1}", "elastic.per_worker_batch": WORKER_BATCH,
        "elastic.checkpoint_every_steps": 50, "elastic.checkpoint_every_s": 30,
        "elastic.report_every_steps": 10, "elastic.sample_log_dir": str(tmp / "samples" / name),
    }
    out = ["supernet", "--config", "jobs/supernet.yaml"]
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def rank0_records(log_dir: Path) -> list[dict]:
    recs = []
    for f in log_dir.glob("rank0_*.jsonl"):
        attempt = int(f.stem.split("_")[1])
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r["n"] = len(r.pop("ids"))
                r["attempt"] = attempt
                recs.append(r)
    return sorted(recs, key=lambda r: r["t"])


def useful_samples(recs: list[dict], t0: float, t1: float) -> float:
    """Samples of steps that count (each step's latest attempt), finished in [t0, t1]."""
    latest: dict[int, dict] = {}
    for r in recs:
        if r["step"] not in latest or r["attempt"] > latest[r["step"]]["attempt"]:
            latest[r["step"]] = r
    return sum(r["n"] * r["world"] for r in latest.values() if t0 <= r["t"] <= t1)


def static_rate(cluster, tmp: Path, workers: int, seconds: float, tag: str = "") -> float:
    name = f"static{workers}{tag}"
    run = CliRun(args_for(tmp, name, (workers, workers), 50), env={"RAY_ADDRESS": cluster.address})
    try:
        run.wait_for(rf"(started|resumed at step \d+) with {workers} worker", 300)
        time.sleep(seconds)
    finally:
        run.kill()
    recs = [r for r in rank0_records(tmp / "samples" / name) if r["world"] == workers][5:]
    return sum(r["n"] * workers for r in recs[1:]) / (recs[-1]["t"] - recs[0]["t"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--period", type=float, default=180)
    ap.add_argument("--rejoin", type=float, default=60)
    ap.add_argument("--deadline", type=int, default=30)
    ap.add_argument("--static-seconds", type=float, default=90)
    a = ap.parse_args()
    # Kept after the run: the sample logs let a failed analysis be redone by hand.
    tmp = Path(tempfile.mkdtemp(prefix="elastic-goodput-"))
    print(f"work dir {tmp}", flush=True)
    cluster = slot_cluster()
    preload_worker_nodes(True)  # as cluster.yaml starts worker nodes: warm workers come with torch imported
    try:
        nodes = [add_worker_node(cluster) for _ in range(3)]
        before = {3: static_rate(cluster, tmp, 3, a.static_seconds), 2: static_rate(cluster, tmp, 2, a.static_seconds)}
        print(f"static samples/s before: 3 workers {before[3]:.1f}, 2 workers {before[2]:.1f}", flush=True)

        run = CliRun(args_for(tmp, "churn", (1, 3), 50), env={"RAY_ADDRESS": cluster.address})
        events = []
        try:
            run.wait_for(r"(started|resumed at step \d+) with 3 worker", 300)
            t_start = time.time()
            live = [(t_start, 3)]
            next_drain = t_start + a.period
            pending_add = None
            while time.time() - t_start < a.duration:
                now = time.time()
                if now >= next_drain:
                    victim = nodes.pop()
                    subprocess.run([str(Path(sys.executable).parent / "ray"), "drain-node",
                                    "--address", cluster.address, "--node-id", victim.node_id,
                                    "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot",
                                    "--deadline-remaining-seconds", str(a.deadline)],
                                   check=True, capture_output=True, timeout=60)
                    events.append(("drain", round(now - t_start, 1)))
                    time.sleep(a.deadline)
                    cluster.remove_node(victim)
                    live.append((time.time(), 2))
                    events.append(("remove", round(time.time() - t_start, 1)))
                    pending_add = time.time() + a.rejoin
                    next_drain = now + a.period
                if pending_add and time.time() >= pending_add:
                    nodes.append(add_worker_node(cluster))
                    live.append((time.time(), 3))
                    events.append(("add", round(time.time() - t_start, 1)))
                    pending_add = None
                time.sleep(0.5)
            t_end = time.time()
        finally:
            run.kill()
        while len(nodes) < 3:  # the static runs after churn on the same three nodes
            nodes.append(add_worker_node(cluster))
        after = {3: static_rate(cluster, tmp, 3, a.static_seconds, "after"),
                 2: static_rate(cluster, tmp, 2, a.static_seconds, "after")}
        print(f"static samples/s after: 3 workers {after[3]:.1f}, 2 workers {after[2]:.1f}", flush=True)
    finally:
        cluster.shutdown()

    rate2, rate3 = (before[2] + after[2]) / 2, (before[3] + after[3]) / 2
    (tmp / "churn.json").write_text(json.dumps({"t_start": t_start, "t_end": t_end, "live": live,
                                                "events": events, "before": before, "after": after}))
    log = tmp / "samples" / "churn"
    useful = useful_samples(rank0_records(log), t_start, t_end)
    starts = attempts(log)
    live.append((t_end, live[-1][1]))
    duration = t_end - t_start
    avg_world = sum((t1 - t0) * w for (t0, w), (t1, _) in zip(live, live[1:])) / duration
    static_at_avg = rate2 + (rate3 - rate2) * (avg_world - 2)
    goodput = useful / duration
    # Each worker-group start in the window: the gap since the previous group's last step.
    restarts = [{"world": q["world"], "at_s": round(q["t_first"] - t_start, 1),
                 "gap_s": round(q["t_first"] - p["t_last"], 1), "redone": q["redone"]}
                for p, q in zip(starts, starts[1:]) if p["t_last"] >= t_start]
    paused = sum(r["gap_s"] for r in restarts) / duration
    running_rate = useful / (duration * (1 - paused))
    write_result("elastic_goodput", {
        "duration_s": round(duration, 1), "period_s": a.period, "rejoin_s": a.rejoin,
        "deadline_s": a.deadline, "events": events,
        "static_samples_per_s": {"2": round(rate2, 1), "3": round(rate3, 1)},
        "static_before": {str(k): round(v, 1) for k, v in before.items()},
        "static_after": {str(k): round(v, 1) for k, v in after.items()},
        "time_avg_world_size": round(avg_world, 3), "useful_samples_per_s": round(goodput, 1),
        "static_samples_per_s_at_avg_world": round(static_at_avg, 1),
        "goodput_ratio": round(goodput / static_at_avg, 3),
        "paused_fraction": round(paused, 3),
        "running_samples_per_s": round(running_rate, 1),
        "running_vs_static": round(running_rate / static_at_avg, 3),
        "redone_steps": redone_steps(log), "restarts": restarts,
        "target": ">= 0.90",
    })


if __name__ == "__main__":
    main()
