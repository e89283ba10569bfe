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


@pytest.fixture(scope="module")
def head():
    """A loopback head node run in the foreground (`--block`), so stopping it touches no
    other Ray cluster on the machine."""
    port, dash = free_port(), free_port()
    # Ray's session paths must stay short (unix socket limit): not pytest's tmp_path.
    temp = tempfile.mkdtemp(prefix="rayj")
    # Ray 2.60 clusters use token auth; this one gets its own token, and the clients here
    # (the SDK and `ray job` subprocesses) present it.
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    # As with an activated venv: the job's `python` is this interpreter.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
         "--include-dashboard", "true", "--temp-dir", temp, "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    from ray.job_submission import JobSubmissionClient

    client = None
    end = time.monotonic() + 120
    while client is None and time.monotonic() < end:
        try:
            client = JobSubmissionClient(address)
            client.list_jobs()
        except Exception:
            client = None
            time.sleep(1)
    if client is None:
        os.killpg(proc.pid, signal.SIGKILL)
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        pytest.fail("the local Ray head did not come up")
    yield address, client
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def submit(address: str, args: list[str]) -> str:
    out = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--no-wait", "--",
         "python", "-m", "elastic_nas", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    m = re.search(r"raysubmit_\w+", out.stdout + out.stderr)
    assert m, out.stdout
    return m.group(0)


def wait_status(client, job_id: str, statuses: set[str], timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        if status in statuses:
            return status
        if status in {"FAILED", "STOPPED"}:
            raise AssertionError(f"job {job_id} {status}:\n{client.get_job_logs(job_id)[-5000:]}")
        time.sleep(2)
    raise AssertionError(f"job {job_id} not {statuses} after {timeout}s:\n{client.get_job_logs(job_id)[-5000:]}")


def test_pipeline_job_succeeds_with_outputs(head, tmp_path):
    address, client = head
    sets = [f"storage_path={tmp_path / 'runs'}", "name=job", *TINY_DATA,
            "supernet.optim.epochs=1", "retrain.optim.epochs=1",
            "search.evolution.population=4", "search.evolution.top_k=2",
            "search.evolution.mutation_children=2", "search.evolution.crossover_children=2",
            "search.evolution.generations=1", "search.evaluator.calib_images=200",
            "search.evaluator.val_images=200"]
    job = submit(address, ["pipeline", "--config", "jobs/pipeline.yaml", *[a for s in sets for a in ("--set", s)]])
    wait_status(client, job, {"SUCCEEDED"}, 1200)
    logs = client.get_job_logs(job)
    assert "pipeline report:" in logs and "test top-1 / top-5" in logs
    runs = tmp_path / "runs"
    chosen = json.loads((runs / "job-search" / "chosen_arch.json").read_text())
    card = json.loads((runs / "job-retrain" / "export" / "model.json").read_text())
    assert card["arch"] == chosen["arch"]
    assert 0 <= card["test_top1"] <= 100 and card["export_max_abs_diff"] <= 1e-5
    assert (runs / "job-supernet" / "elastic_history.png").exists()
    assert list((runs / "job-search").glob("*.png"))


def test_stopped_job_resumes_from_checkpoint(head, tmp_path):
    address, client = head
    args = ["supernet", "--config", "jobs/supernet.yaml",
            *[a for s in [f"run.storage_path={tmp_path / 'runs'}", "run.name=stopme", *TINY_DATA,
                          "space.width_mult=0.25", "optim.epochs=3", "elastic.max_workers=1",
                          "elastic.checkpoint_every_steps=10", "elastic.report_every_steps=5"]
              for a in ("--set", s)]]
    run_dir = tmp_path / "runs" / "stopme"
    first = submit(address, args)
    wait_status(client, first, {"RUNNING"}, 300)
    end = time.monotonic() + 600
    while not [p for p in run_dir.glob("checkpoint_step*") if (p / "meta.json").exists()]:
        assert time.monotonic() < end, client.get_job_logs(first)[-5000:]
        time.sleep(1)
    stop = subprocess.run([RAY, "job", "stop", "--address", address, first], capture_output=True, text=True,
                          timeout=120)
    assert stop.returncode == 0, stop.stderr
    end = time.monotonic() + 120
    while str(client.get_job_status(first)).split(".")[-1] != "STOPPED":
        assert time.monotonic() < end
        time.sleep(1)
    second = submit(address, args)
    wait_status(client, second, {"SUCCEEDED"}, 900)
    logs = client.get_job_logs(second)
    m = re.search(r"resumed at step (\d+)", logs)
    assert m and int(m.group(1)) >= 10, logs[-3000:]
