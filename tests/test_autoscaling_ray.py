"""The autoscaler in the loop: `elastic-nas cluster local` (Ray's fake node provider on
127.0.0.1) starts with no worker nodes; jobs submitted with `ray job submit` make it launch
nodes, and it releases them after the idle timeout.

What a user of an autoscaling spot cluster relies on: a supernet run grows from 1 to 3
workers as the launched nodes arrive (Dynamic SGD rescaling each time); a node the provider
takes away mid-run (a spot reclaim) is replaced and the run grows back, each sample trained
exactly once; the nodes go once the job ends, with no resource request left behind; a
search's queued evaluators make the autoscaler add nodes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.ray_utils import attempts, start_head, submit, wait_nodes, wait_status, worker_nodes
from tests.test_elastic_ray import BASE_LR, REF_BATCH, WORKER_BATCH, assert_exactly_once, history, supernet_args

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

IDLE_TIMEOUT_S = 10
# Each node boots this long (cloud instances take a minute or more): longer than a lost
# node takes to be seen plus a worker group to start here (about 25 s on 2 cores), so the
# run trains at each size before the next node arrives.
BOOT_S = 40


@pytest.fixture(scope="module")
def head():
    h = start_head({"max_workers": 3, "idle_timeout_s": IDLE_TIMEOUT_S, "boot_s": BOOT_S})
    yield h
    h.stop()


def launched_nodes() -> dict[str, list[int]]:
    """The processes of each node the provider launched (raylet, workers, agents), by the
    node id it gives each in ``RAY_OVERRIDE_NODE_ID_FOR_TESTING``; the head's ends in 00000."""
    by_node: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RAY_OVERRIDE_NODE_ID_FOR_TESTING="):
                node = item.split(b"=", 1)[1].decode()
                if not node.endswith("00000"):
                    by_node.setdefault(node, []).append(int(proc.name))
    return by_node


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it ended
            os.kill(pid, sig)


def reclaim_one_node() -> str:
    """Kill every process of the newest launched node, as a cloud provider ends a spot instance."""
    by_node = launched_nodes()
    assert by_node, "no launched node found"
    node = max(by_node)
    signal_all(by_node[node], signal.SIGKILL)
    return node


def train_workers() -> list[int]:
    """The training worker processes (Ray titles them after their actor class)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def slow_until_nodes(count: int, timeout: float = 3 * BOOT_S, run_s: float = 0.1, period_s: float = 1.0) -> None:
    """Let the training workers run ``run_s`` in every ``period_s`` (SIGSTOP, SIGCONT) until
    ``count`` launched nodes have processes: the run steps as one whose steps take ten times
    longer would, so how far it gets before each node arrives does not depend on this
    machine's speed, and rank 0 still looks for the node's join-checkpoint request."""
    end = time.monotonic() + timeout
    while len(launched_nodes()) < count:
        assert time.monotonic() < end, f"not {count} launched nodes within {timeout:.0f}s"
        pids = train_workers()
        assert pids, "no training worker to slow down"
        signal_all(pids, signal.SIGSTOP)
        try:
            time.sleep(period_s - run_s)
        finally:
            signal_all(pids, signal.SIGCONT)
        time.sleep(run_s)


def wait_for_world(head, job: str, world: int, start: int) -> int:
    """Until the job's logs past ``start`` hold a progress line trained at ``world`` workers;
    the logs' length then."""
    end = time.monotonic() + 300
    while not re.search(rf" world {world} ", (logs := head.logs(job))[start:]):
        assert time.monotonic() < end, logs[-4000:]
        assert head.status(job) in {"PENDING", "RUNNING"}, logs[-4000:]
        time.sleep(1)
    return len(logs)


def test_supernet_grows_with_launched_nodes_survives_a_reclaim_and_releases_them(head, tmp_path, data_dir):
    """One run on a spot cluster with no worker nodes at submission: it starts once one node
    is up and grows to 3 as the autoscaler launches the rest, each size with its scaled batch
    and LR; the provider then ends a node (no notice), the run goes on with 2 workers, the
    autoscaler launches a replacement and the run grows back to 3; every sample of every
    epoch is trained exactly once. After the job every worker node is released within the
    idle timeout and no resource request of the job is left."""
    assert worker_nodes(head) == 0
    epochs = 16  # steps left for the final size after each size has trained a while
    args = supernet_args(tmp_path, data_dir, "spot", epochs, **{"elastic.max_workers": 3})
    job = submit(head, args)
    seen = 0
    for world in (1, 2):  # each size trains, then steps slowly while the next node boots
        seen = wait_for_world(head, job, world, seen)
        slow_until_nodes(world + 1)
    wait_for_world(head, job, 3, seen)
    reclaim_one_node()
    wait_for_world(head, job, 2, len(head.logs(job)))  # the run goes on with the 2 nodes left
    slow_until_nodes(3)  # the replacement
    wait_status(head, job, {"SUCCEEDED"}, 600)
    logs = head.logs(job)
    # The world size of every worker group that trained, from rank 0's sample logs: the run's
    # history keeps only the checkpointed lineage, and a group reclaimed before its first
    # checkpoint leaves no start there.
    worlds = [a["world"] for a in attempts(tmp_path / "samples")]
    assert worlds[:3] == [1, 2, 3] and 2 in worlds[3:] and worlds[-1] == 3, (worlds, logs[-3000:])
    h = history(tmp_path, "spot")
    # Dynamic mini-batch SGD: the global batch follows the world size at once; the LR ramps
    # between the linearly scaled values (0.05 per worker here) and ends at 3 workers' value.
    reports = [e for e in h if e["event"] == "report"]
    lr_per_worker = BASE_LR * WORKER_BATCH / REF_BATCH
    for e in reports:
        assert e["global_batch"] == WORKER_BATCH * e["world_size"]
        assert lr_per_worker - 1e-9 <= e["lr"] <= 3 * lr_per_worker + 1e-9
    assert [e["lr"] for e in reports if e["world_size"] == 1][-1] == pytest.approx(lr_per_worker)
    assert reports[-1]["lr"] == pytest.approx(3 * lr_per_worker)
    assert_exactly_once(tmp_path, data_dir, epochs)

    released = wait_nodes(head, 0, IDLE_TIMEOUT_S + 60)
    status = head.ray("status", "--address", head.gcs).stdout
    assert re.search(r"From request_resources:\s+\(none\)", status), status
    assert "(no resource demands)" in status, status
    print(f"worker nodes released {released:.0f}s after the job ended")


def test_search_evaluators_make_the_autoscaler_add_nodes(head, tmp_path, data_dir):
    """A search queues more evaluator trials than the cluster has CPUs for (the head has
    none): the autoscaler launches nodes for them and the search finishes."""
    wait_nodes(head, 0, IDLE_TIMEOUT_S + 60)
    runs = tmp_path / "runs"
    common = [f"run.storage_path={runs}", f"data.path={data_dir}", "data.num_train=1280", "data.num_test=128",
              "data.search_val_size=128"]
    sn = submit(head, ["supernet", "--config", "jobs/supernet.yaml",
                       *[a for s in [*common, "run.name=sn", "space.width_mult=0.25", "optim.epochs=1", "elastic.max_workers=1",
                                     "elastic.resources_per_worker={CPU: 1, slot: 1}"] for a in ("--set", s)]])
    wait_status(head, sn, {"SUCCEEDED"}, 600)
    search = submit(head, ["search", "--config", "jobs/search.yaml",
                           *[a for s in [*common, "run.name=search", f"snapshot={runs / 'sn'}",
                                         "evolution.population=6", "evolution.top_k=2", "evolution.generations=1",
                                         "evolution.mutation_children=2", "evolution.crossover_children=2",
                                         "evaluator.calib_images=64", "evaluator.val_images=64",
                                         "evaluator.candidates_per_trial=1"] for a in ("--set", s)]])
    # Nodes boot one at a time here, and the small search may end before the second is up:
    # what counts is that the autoscaler set out to launch them.
    before = most = worker_nodes(head, launching=True)  # the supernet's node, until it is idle long enough
    while (status := head.status(search)) not in {"SUCCEEDED", "FAILED", "STOPPED"}:
        most = max(most, worker_nodes(head, launching=True))
        time.sleep(1)
    assert status == "SUCCEEDED", head.logs(search)[-4000:]
    assert most >= 2 and most > before, f"{before} worker node(s) at submission, at most {most} up or launching"
    assert (runs / "search" / "chosen_arch.json").exists()
