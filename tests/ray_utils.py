"""Helpers for integration tests on real local Ray clusters (no mocks)."""

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
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def slot_cluster():
    """A local ``Cluster`` whose head runs nothing: training workers need a ``slot`` node."""
    from ray.cluster_utils import Cluster

    return Cluster(initialize_head=True, head_node_args={"num_cpus": 0})


def preload_worker_nodes(on: bool) -> None:
    """Worker nodes added from now on start with (or without) the training imports
    preloaded, as ``cluster.yaml`` starts them: their raylets read the variable at start."""
    from elastic_nas.cluster.warm_workers import preload_env

    for key, value in preload_env().items():
        if on:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)


def add_worker_node(cluster):
    """A 1-CPU node with one ``slot``, the custom resource the elastic policy counts."""
    node = cluster.add_node(num_cpus=1, resources={"slot": 1})
    cluster.wait_for_nodes()
    return node


def wait_for_free_slots(cluster, slots: int, timeout: float) -> None:
    """Until ``slots`` worker slots are free: every training worker of a dead driver is gone
    (after that nothing writes into its run directory)."""
    import ray

    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        end = time.monotonic() + timeout
        while ray.available_resources().get("slot", 0) < slots:
            assert time.monotonic() < end, f"slots still taken after {timeout}s: {ray.available_resources()}"
            time.sleep(0.1)
    finally:
        ray.shutdown()


class CliRun:
    """An ``elastic-nas`` command in a subprocess, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "elastic_nas", *args], cwd=REPO, env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match:
        """First match of ``pattern`` in lines[start:], waiting up to ``timeout`` seconds."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines[start:]):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n{self.output()[-6000:]}")

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"run did not finish in {timeout}s; output:\n{self.output()[-6000:]}")
        self._reader.join(timeout=10)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)


def effective_samples(log_dir: Path) -> dict[int, list[int]]:
    """Sample ids that count toward training, per epoch.

    Every worker-group start (an *attempt*) writes its own files. Steps after the last
    checkpoint of a failed attempt are redone by the next one, so for each step only
    the latest attempt's records count.
    """
    records: dict[int, dict[int, list[tuple[int, list[int]]]]] = defaultdict(lambda: defaultdict(list))
    for f in log_dir.glob("rank*_*.jsonl"):
        attempt = int(f.stem.split("_")[1])
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                records[r["step"]][attempt].append((r["epoch"], r["ids"]))
    per_epoch: dict[int, list[int]] = defaultdict(list)
    for step, by_attempt in records.items():
        for epoch, ids in by_attempt[max(by_attempt)]:
            per_epoch[epoch].extend(ids)
    return dict(per_epoch)


def redone_steps(log_dir: Path) -> int:
    """How many step records were trained more than once (by different attempts)."""
    seen: dict[int, set[int]] = defaultdict(set)
    for f in log_dir.glob("rank0_*.jsonl"):
        attempt = int(f.stem.split("_")[1])
        for line in f.read_text().splitlines():
            if line.strip():
                seen[json.loads(line)["step"]].add(attempt)
    return sum(len(a) - 1 for a in seen.values())


def attempts(log_dir: Path) -> list[dict]:
    """Rank 0's worker-group starts in time order: world size, first/last step and time,
    and ``redone``: the steps of the previous attempt this one trained again."""
    runs: dict[int, list[dict]] = defaultdict(list)
    for f in log_dir.glob("rank0_*.jsonl"):
        for line in f.read_text().splitlines():
            if line.strip():
                runs[int(f.stem.split("_")[1])].append(json.loads(line))
    out = []
    for recs in sorted(runs.values(), key=lambda rs: min(r["t"] for r in rs)):
        recs.sort(key=lambda r: r["t"])
        prev = out[-1] if out else None
        out.append({"world": recs[0]["world"], "first_step": recs[0]["step"], "last_step": recs[-1]["step"],
                    "t_first": recs[0]["t"], "t_last": recs[-1]["t"],
                    "redone": max(0, prev["last_step"] - recs[0]["step"] + 1) if prev else 0})
    return out


RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    """A free loopback port outside Ray's worker-port range (10002-19999)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


class Head:
    """A loopback head run in the foreground (`--block`), so stopping it touches no other
    Ray cluster on the machine. It gets its own auth token (Ray 2.60 clusters use token
    auth), and every client here is a `ray job` subprocess given that token: nothing in
    this test process talks to Ray, so no Ray state leaks into other tests.

    ``autoscaling``: ``elastic-nas cluster local`` with these options instead, a head without
    CPUs whose worker nodes the autoscaler launches and releases (same process group)."""

    def __init__(self, autoscaling: dict | None = None):
        self.temp = tempfile.mkdtemp(prefix="rayj")  # short: unix socket paths are limited
        token = Path(self.temp) / "auth_token"
        token.write_text(secrets.token_hex(32))
        port, dash = free_port(), free_port()
        self.address = f"http://127.0.0.1:{dash}"
        # As with an activated venv: the job's `python` is this interpreter.
        self.env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
                        RAY_AUTH_TOKEN_PATH=str(token),
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.gcs = f"127.0.0.1:{port}"
        if autoscaling is None:
            cmd = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                   "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
                   "--include-dashboard", "true", "--temp-dir", self.temp, "--disable-usage-stats"]
        else:
            cmd = [sys.executable, "-m", "elastic_nas", "cluster", "local", "--port", str(port),
                   "--dashboard-port", str(dash), "--temp-dir", self.temp,
                   *[a for k, v in autoscaling.items() for a in (f"--{k.replace('_', '-')}", str(v))]]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

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


def start_head(autoscaling: dict | None = None) -> Head:
    """A :class:`Head` whose job server answers."""
    import pytest

    h = Head(autoscaling)
    end = time.monotonic() + 180
    while h.job("list").returncode != 0:
        if time.monotonic() > end or h.proc.poll() is not None:
            h.stop()
            pytest.fail("the local Ray head did not come up")
        time.sleep(2)
    return h


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


def worker_nodes(head: Head, launching: bool = False) -> int:
    """Active worker nodes of ``elastic-nas cluster local`` in ``ray status`` (``launching``:
    plus those being launched)."""
    end = time.monotonic() + 60
    while "Active:" not in (out := head.ray("status", "--address", head.gcs).stdout):
        assert time.monotonic() < end, f"no autoscaler status: {out}"  # its first report comes seconds after start
        time.sleep(1)
    from elastic_nas.cluster.local import WORKER_TYPE

    active, pending = out.split("Active:", 1)[1].split("Pending:", 1)
    m = re.search(rf"(\d+) {WORKER_TYPE}", active)
    n = re.search(rf"{WORKER_TYPE}, (\d+) launching", pending.split("Recent failures:", 1)[0])
    return (int(m.group(1)) if m else 0) + (int(n.group(1)) if n and launching else 0)


def wait_nodes(head: Head, count: int, timeout: float) -> float:
    """Seconds until exactly ``count`` worker nodes are active."""
    t0 = time.monotonic()
    while (n := worker_nodes(head)) != count:
        assert time.monotonic() - t0 < timeout, f"{n} worker nodes, not {count}, after {timeout}s"
        time.sleep(1)
    return time.monotonic() - t0
