"""`ray job submit` against a real local cluster (`ray start --head` on 127.0.0.1).

The pipeline runs as a Ray job to SUCCEEDED with its outputs in place; then a supernet job
is stopped mid-training with `ray job stop`, submitted again, and resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.ray_utils import REPO

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1500)]

RAY = str(Path(sys.executable).parent / "ray")
TINY_DATA = ["data.num_train=3000", "data.num_test=500", "data.search_val_size=500"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """A loopback head run in the foreground (`--block`), so stopping it touches no other
    Ray cluster on the machine. It gets its own auth token (Ray 2.60 clusters use token
    auth), and every client here is a `ray job` subprocess given that token: nothing in
    this test process talks to Ray, so no Ray state leaks into other tests."""

    def __init__(self):
        self.temp = tempfile.mkdtemp(prefix="rayj")  # short: unix socket paths are limited
        token = Path(self.temp) / "auth_token"
        token.write_text(secrets.token_hex(32))
        port, dash = free_port(), free_port()
        self.address = f"http://127.0.0.1:{dash}"
        # As with an activated venv: the job's `python` is this interpreter.
        self.env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
                        RAY_AUTH_TOKEN_PATH=str(token),
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.proc = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
             "--include-dashboard", "true", "--temp-dir", self.temp, "--disable-usage-stats"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=self.env)

    def job(self, verb: str, *args: str) -> subprocess.CompletedProcess:
        return self.ray("job", verb, "--address", self.address, *args)

    def status(self, job_id: str) -> str:
        out = self.job("status", job_id)
        text = out.stdout + out.stderr
        # Running: "Status for job 'X': RUNNING"; finished: "Job 'X' succeeded" (or failed, stopped).
        m = re.search(r"Status for job '[^']+': (\w+)", text) or re.search(
            r"Job '[^']+' (?:was |has )?(succeeded|failed|stopped)", text)
        return m.group(1).upper() if m else "UNKNOWN"

    def logs(self, job_id: str) -> str:
        return self.job("logs", job_id).stdout

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    h = Head()
    end = time.monotonic() + 180
    while h.job("list").returncode != 0:
        if time.monotonic() > end or h.proc.poll() is not None:
            h.stop()
            pytest.fail("the local Ray head did not come up")
        time.sleep(2)
    yield h
    h.stop()


def submit(head: Head, args: list[str]) -> str:
    out = head.job("submit", "--working-dir", str(REPO), "--no-wait", "--",
                   "python", "-m", "elastic_nas", *args)
    assert out.returncode == 0, out.stderr + out.stdout
    m = re.search(r"raysubmit_\w+", out.stdout + out.stderr)
    assert m, out.stdout
    return m.group(0)


def wait_status(head: Head, job_id: str, statuses: set[str], timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = head.status(job_id)
        if status in statuses:
            return status
        if status in {"FAILED", "STOPPED"}:
            raise AssertionError(f"job {job_id} {status}:\n{head.logs(job_id)[-5000:]}")
        time.sleep(3)
    raise AssertionError(f"job {job_id} not {statuses} after {timeout}s:\n{head.logs(job_id)[-5000:]}")


def test_pipeline_job_succeeds_with_outputs(head, tmp_path):
    sets = [f"storage_path={tmp_path / 'runs'}", "name=job", *TINY_DATA,
            "supernet.optim.epochs=1", "retrain.optim.epochs=1",
            "search.evolution.population=4", "search.evolution.top_k=2",
            "search.evolution.mutation_children=2", "search.evolution.crossover_children=2",
            "search.evolution.generations=1", "search.evaluator.calib_images=200",
            "search.evaluator.val_images=200"]
    job = submit(head, ["pipeline", "--config", "jobs/pipeline.yaml", *[a for s in sets for a in ("--set", s)]])
    wait_status(head, job, {"SUCCEEDED"}, 1200)
    logs = head.logs(job)
    assert "pipeline report:" in logs and "test top-1 / top-5" in logs
    runs = tmp_path / "runs"
    chosen = json.loads((runs / "job-search" / "chosen_arch.json").read_text())
    card = json.loads((runs / "job-retrain" / "export" / "model.json").read_text())
    assert card["arch"] == chosen["arch"]
    assert 0 <= card["test_top1"] <= 100 and card["export_max_abs_diff"] <= 1e-5
    assert (runs / "job-supernet" / "elastic_history.png").exists()
    assert list((runs / "job-search").glob("*.png"))


def test_stopped_job_resumes_from_checkpoint(head, tmp_path):
    args = ["supernet", "--config", "jobs/supernet.yaml",
            *[a for s in [f"run.storage_path={tmp_path / 'runs'}", "run.name=stopme", *TINY_DATA,
                          "space.width_mult=0.25", "optim.epochs=3", "elastic.max_workers=1",
                          "elastic.checkpoint_every_steps=10", "elastic.report_every_steps=5"]
              for a in ("--set", s)]]
    run_dir = tmp_path / "runs" / "stopme"
    first = submit(head, args)
    wait_status(head, first, {"RUNNING"}, 300)
    end = time.monotonic() + 600
    while not [p for p in run_dir.glob("checkpoint_step*") if (p / "meta.json").exists()]:
        assert time.monotonic() < end, head.logs(first)[-5000:]
        time.sleep(1)
    stop = head.job("stop", first)
    assert stop.returncode == 0, stop.stderr
    end = time.monotonic() + 120
    while head.status(first) != "STOPPED":
        assert time.monotonic() < end
        time.sleep(1)
    second = submit(head, args)
    wait_status(head, second, {"SUCCEEDED"}, 900)
    logs = head.logs(second)
    m = re.search(r"resumed at step (\d+)", logs)
    assert m and int(m.group(1)) >= 10, logs[-3000:]
