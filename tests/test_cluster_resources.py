"""Whether a cluster can hold the training workers: the arithmetic, and the one-line refusal
on a private local Ray that can never hold them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from elastic_nas.cluster.resources import describe_nodes, slots_on, workers_that_fit
from tests.ray_utils import REPO

NODES = [
    {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0, "memory": 16 * 2**30, "node:10.0.0.1": 1.0}},
    {"Alive": True, "Resources": {"CPU": 4.0, "memory": 8 * 2**30}},
    {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
]


def test_slots_on_counts_whole_workers_per_node():
    per_gpu_worker = {"CPU": 2, "GPU": 1}
    assert slots_on({"CPU": 16, "GPU": 4}, per_gpu_worker, cap=8) == 4  # GPUs bound it
    assert slots_on({"CPU": 5, "GPU": 4}, per_gpu_worker, cap=8) == 2  # CPUs bound it
    assert slots_on({"CPU": 16}, per_gpu_worker, cap=8) == 0  # a CPU-only node hosts none
    assert slots_on({"CPU": 16, "GPU": 8}, per_gpu_worker, cap=3) == 3  # never above max_workers
    assert slots_on({"CPU": 1, "slot": 1}, {"CPU": 1, "slot": 1}, cap=2) == 1
    assert slots_on({"CPU": 0.999999999999, "slot": 1}, {"CPU": 1, "slot": 1}, cap=2) == 1  # float noise


def test_workers_fit_per_alive_node_and_the_summary_names_the_resources():
    assert workers_that_fit(NODES, {"CPU": 1, "GPU": 1}, cap=8) == 2  # the dead node's GPUs do not count
    assert workers_that_fit(NODES, {"CPU": 3}, cap=8) == 3  # 2 on the first node, 1 on the second
    assert workers_that_fit(NODES, {"CPU": 3}, cap=2) == 2
    assert describe_nodes(NODES) == "CPU 12, GPU 2, memory 24.0 GiB"


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_gpu_run_on_a_machine_without_gpus_fails_at_once_naming_the_resource(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}  # a private local Ray
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "elastic_nas", "supernet", "--set", f"run.storage_path={tmp_path}",
         "--set", f"data.path={tmp_path / 'data'}", "--set", "data.num_train=600", "--set", "data.num_test=100",
         "--set", "data.search_val_size=100", "--set", "elastic.use_gpu=true",
         "--set", "elastic.resources_per_worker={GPU: 1}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    error = [line for line in out.stderr.splitlines() if line.startswith("elastic-nas:")]
    assert len(error) == 1 and "can never start 1 worker(s) of {'GPU': 1" in error[0] and "CPU" in error[0], error
    assert time.monotonic() - t0 < 120  # before any training: no waiting on resources that never come
    assert "Token authentication" not in out.stderr  # the private cluster's auth is on, and not announced
