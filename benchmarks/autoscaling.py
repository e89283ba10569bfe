"""A supernet job on an autoscaling cluster: how long from submission to training, and from
the job's end to the nodes' release.

``elastic-nas cluster local`` (Ray's autoscaler with the fake node provider on 127.0.0.1,
each node booting ``--boot-s``, one at a time, ``--idle-timeout-s``) runs ``--repeats``
cycles of:

* ``launched``: `ray job submit` of ``elastic-nas supernet`` (1-3 workers) to a cluster with
  no worker nodes; the autoscaler launches the three;
* ``nodes_up``: the same job submitted again at once, its three nodes still up (the baseline);
* the release: seconds from the second job's end to the last worker node gone.

Figures per run (seconds from submission, the job's own clock): the first step (the first
worker group's start in ``history.json``) and the first step at 3 workers. A launched run
pays the boot of its nodes (``boot_s`` each, one at a time): ``overhead_s`` is what is left
after subtracting it (1 x boot for the first step, 3 x boot at full size).

    python benchmarks/autoscaling.py [--repeats 2] [--boot-s 20] [--idle-timeout-s 20]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from _common import SPOS_WORKLOAD, write_result
from tests.ray_utils import start_head, submit, wait_nodes, wait_status, worker_nodes

DATA = {"data.num_train": 2560, "data.num_test": 256, "data.search_val_size": 256}


def job_times(head, job: str) -> tuple[float, float]:
    """(start, end) of a finished job in wall seconds, from the job server (`ray job list`
    prints each job's details, times in ms)."""
    out = head.job("list").stdout
    for details in out.split("JobDetails(")[1:]:
        if f"submission_id='{job}'" in details:
            start = re.search(r"start_time=(\d+)", details)
            end = re.search(r"end_time=(\d+)", details)
            return int(start.group(1)) / 1000, int(end.group(1)) / 1000
    raise RuntimeError(f"job {job} not in `ray job list`: {out[-2000:]}")


def one_run(head, tmp: Path, name: str, epochs: int) -> dict:
    sets = {"run.name": name, "run.storage_path": str(tmp / "runs"), "data.path": str(tmp / "data"), **DATA,
            **SPOS_WORKLOAD, "optim.epochs": epochs, "elastic.min_workers": 1, "elastic.max_workers": 3,
            "elastic.resources_per_worker": "{CPU: 1, slot: 1}", "elastic.per_worker_batch": 32}
    nodes_before = worker_nodes(head)
    job = submit(head, ["supernet", "--config", "jobs/supernet.yaml", *[a for k, v in sets.items()
                                                                          for a in ("--set", f"{k}={v}")]])
    wait_status(head, job, {"SUCCEEDED"}, 1200)
    start, end = job_times(head, job)
    history = json.loads((tmp / "runs" / name / "history.json").read_text())
    starts = [e for e in history if e["event"] == "start"]
    full = next(e for e in starts if e["world_size"] == 3)
    return {"nodes_at_submission": nodes_before, "world_sizes": [e["world_size"] for e in starts],
            "first_step_s": round(starts[0]["time"] - start, 1), "full_size_s": round(full["time"] - start, 1),
            "job_end": end}


def release_s(head, job_end: float) -> float:
    """Seconds from the job's end to its last worker node gone."""
    wait_nodes(head, 0, 300)
    return round(time.time() - job_end, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--boot-s", type=float, default=20.0)
    ap.add_argument("--idle-timeout-s", type=float, default=20.0)
    ap.add_argument("--epochs", type=int, default=12, help="long enough to reach 3 workers after three boots")
    a = ap.parse_args()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        head = start_head({"max_workers": 3, "idle_timeout_s": a.idle_timeout_s, "boot_s": a.boot_s})
        try:
            for r in range(a.repeats):
                wait_nodes(head, 0, 600)  # a cycle starts with no worker nodes
                launched = one_run(head, tmp, f"launched{r}", a.epochs)
                print("launched", launched, flush=True)
                up = one_run(head, tmp, f"up{r}", a.epochs)
                up["release_s"] = release_s(head, up["job_end"])
                print("nodes_up", up, flush=True)
                runs.append({"launched": launched, "nodes_up": up})
        finally:
            head.stop()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[kind][key] for r in runs)

    boot = a.boot_s
    figures = {
        "boot_s": boot, "idle_timeout_s": a.idle_timeout_s, "repeats": a.repeats, "runs": runs,
        "launched_first_step_s": med("launched", "first_step_s"),
        "launched_full_size_s": med("launched", "full_size_s"),
        "nodes_up_first_step_s": med("nodes_up", "first_step_s"),
        "nodes_up_full_size_s": med("nodes_up", "full_size_s"),
        "launched_first_step_overhead_s": round(med("launched", "first_step_s") - boot, 1),
        "launched_full_size_overhead_s": round(med("launched", "full_size_s") - 3 * boot, 1),
        "release_after_job_end_s": med("nodes_up", "release_s"),
    }
    write_result("autoscaling", figures)


if __name__ == "__main__":
    main()
