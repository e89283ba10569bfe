"""A scripted sequence of faults on one elastic run, audited for exactly-once.

On a local cluster of three one-slot worker nodes (the head runs nothing), one
``elastic-nas supernet`` run (``min_workers 1, max_workers 3``, this project's defaults,
worker nodes started as ``cluster.yaml`` starts them) goes through, ``--settle`` seconds
of training apart:

1. ``node_loss``: a worker node removed without notice (3 -> 2);
2. ``join``: a node added back (2 -> 3);
3. ``second_loss_in_recovery``: a node removed, and another one 2 s later, while the run
   is still restarting from the first (3 -> 1);
4. ``two_joins``: two nodes added together (1 -> 3);
5. ``driver_restart``: the driver's process group killed with SIGKILL, the same command
   started again at once (3);
6. ``drain``: a spot notice (``ray drain-node`` with a 15 s deadline), the node removed
   when the run says it waits for the reclaim (3 -> 2).

Per fault: seconds from the fault (for a drain: from the removal) to the first step of a
worker group started after it, the world size there, the worker-group starts it cost and
the steps redone. Then the run is stopped and its per-rank sample logs audited: every
finished epoch holds every sample exactly once, the last one no sample twice.

    python benchmarks/chaos.py [--settle 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import write_result
from elastic_recovery import args_for, wait_checkpoint
from tests.ray_utils import (
    CliRun,
    add_worker_node,
    attempts,
    effective_samples,
    preload_worker_nodes,
    redone_steps,
    slot_cluster,
)

NUM_TRAIN = 20000 - 256  # args_for's dataset less its search_val split


def next_start(log_dir: Path, t0: float, timeout: float = 400) -> dict:
    """The first worker-group start after ``t0`` that has stepped; waits for one that
    reaches a settled size (no further start within 5 s)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        later = [a for a in attempts(log_dir) if a["t_first"] > t0]
        if later and time.time() - later[-1]["t_first"] > 5:
            return {"first": later[0], "last": later[-1], "starts": len(later)}
        time.sleep(0.5)
    raise RuntimeError(f"no worker group started within {timeout}s of the fault")


def audit(log_dir: Path) -> dict:
    """Exactly-once over the run: finished epochs hold each sample once, the last no repeat."""
    per_epoch = effective_samples(log_dir)
    last = max(per_epoch)
    out = {"epochs_seen": len(per_epoch), "finished_epochs_exact": True, "last_epoch_no_repeats": True}
    for epoch, ids in per_epoch.items():
        counts = Counter(ids)
        if epoch < last:
            out["finished_epochs_exact"] &= len(counts) == NUM_TRAIN and max(counts.values()) == 1
        else:
            out["last_epoch_no_repeats"] = max(counts.values()) == 1
    out["exactly_once"] = out["finished_epochs_exact"] and out["last_epoch_no_repeats"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settle", type=float, default=20, help="seconds of training before each fault")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="elastic-chaos-"))  # kept: the sample logs can be re-audited
    print(f"work dir {tmp}", flush=True)
    name = "chaos"
    args = args_for(tmp, name, {"elastic.max_workers": 3}, 6)
    log_dir = tmp / "samples" / name
    ray_bin = str(Path(sys.executable).parent / "ray")
    preload_worker_nodes(False)
    cluster = slot_cluster()
    preload_worker_nodes(True)  # worker nodes only, as cluster.yaml starts them
    env = {"RAY_ADDRESS": cluster.address}
    faults: list[dict] = []
    run = None

    def record(fault: str, t0: float, expect_world: int) -> None:
        s = next_start(log_dir, t0)
        faults.append({"fault": fault, "seconds_to_step": round(s["first"]["t_first"] - t0, 2),
                       "world": s["first"]["world"], "settled_world": s["last"]["world"],
                       "expected_world": expect_world, "group_starts": s["starts"],
                       "steps_redone": s["first"]["redone"]})
        print(f"   {fault}: " + ", ".join(f"{k} {v}" for k, v in faults[-1].items() if k != "fault"), flush=True)

    try:
        nodes = [add_worker_node(cluster) for _ in range(3)]
        run = CliRun(args, env=env)
        run.wait_for(r"(started|resumed at step \d+) with 3 worker", 300)
        wait_checkpoint(tmp / "runs" / name, 300)

        time.sleep(a.settle)
        t0 = time.time()
        cluster.remove_node(nodes.pop())
        record("node_loss", t0, 2)

        time.sleep(a.settle)
        t0 = time.time()
        nodes.append(add_worker_node(cluster))
        record("join", t0, 3)

        time.sleep(a.settle)
        t0 = time.time()
        cluster.remove_node(nodes.pop())
        time.sleep(2)
        cluster.remove_node(nodes.pop())
        record("second_loss_in_recovery", t0, 1)

        time.sleep(a.settle)
        t0 = time.time()
        nodes += [add_worker_node(cluster), add_worker_node(cluster)]
        record("two_joins", t0, 3)

        time.sleep(a.settle)
        run.kill()
        t0 = time.time()
        run = CliRun(args, env=env)
        record("driver_restart", t0, 3)

        time.sleep(a.settle)
        seen = len(run.lines)
        victim = nodes.pop()
        subprocess.run([ray_bin, "drain-node", "--address", cluster.address, "--node-id", victim.node_id,
                        "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot",
                        "--deadline-remaining-seconds", "15"], check=True, capture_output=True, timeout=60)
        run.wait_for(r"waiting for the reclaim", 120, start=seen)
        t0 = time.time()
        cluster.remove_node(victim)
        record("drain", t0, 2)
        time.sleep(a.settle)
    finally:
        if run is not None:
            run.kill()
            (tmp / "driver.log").write_text(run.output())  # the last driver's console, for a post-mortem
        cluster.shutdown()

    write_result("chaos", {"settle_s": a.settle, "faults": faults, "audit": audit(log_dir),
                           "redone_steps_total": redone_steps(log_dir), "work_dir": str(tmp)})


if __name__ == "__main__":
    main()
