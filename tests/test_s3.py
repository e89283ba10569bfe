"""Runs on s3:// storage against a real local S3 endpoint (moto's server on 127.0.0.1).

The pipeline on s3:// gives the same results as on local disk with the same seed and
never shows the credentials; storage that cannot be written fails at once with one line;
a checkpoint whose upload a kill cut short is skipped on resume, and the run says so.
Credentials travel in the URI (``s3://KEY:SECRET@bucket/...``), the form that leaks
most easily into logs and outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from tests.ray_utils import REPO, CliRun

KEY, SECRET = "AKIDELASTICNAS", "s3cr3t-hunter2"
BUCKET = "nas-runs"
MOTO = str(Path(sys.executable).parent / "moto_server")
TINY = ["data.num_train=1500", "data.num_test=500", "data.search_val_size=500",
        "supernet.optim.epochs=1", "retrain.optim.epochs=1", "search.evolution.population=4",
        "search.evolution.top_k=2", "search.evolution.mutation_children=2",
        "search.evolution.crossover_children=2", "search.evolution.generations=1",
        "search.evaluator.calib_images=200", "search.evaluator.val_images=200"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    """moto's S3 server on a loopback port; ``auth`` makes it refuse every access key."""

    def __init__(self, auth: bool = False):
        self.port = free_port()
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0") if auth else None
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto_server did not come up")
                time.sleep(0.2)
        self.fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, region="us-east-1", scheme="http",
                                    endpoint_override=f"127.0.0.1:{self.port}", allow_bucket_creation=True)

    def uri(self, path: str, bucket: str = BUCKET) -> str:
        return (f"s3://{KEY}:{SECRET}@{bucket}/{path}"
                f"?endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1")

    def upload(self, folder: Path, prefix: str) -> None:
        """``folder``'s files into the bucket under ``prefix``, with boto3: pyarrow's own writes
        to moto are unreliable for large objects."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}", region_name="us-east-1",
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
            s3.create_bucket(Bucket=BUCKET)
        for f in folder.iterdir():
            s3.upload_file(str(f), BUCKET, f"{prefix}/{f.name}")

    def read(self, path: str) -> bytes:
        with self.fs.open_input_stream(f"{BUCKET}/{path}") as f:
            return f.read()

    def files(self, prefix: str) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True))
        return [i.path[len(BUCKET) + 1:] for i in infos if i.type == pafs.FileType.File]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Relay:
    """A TCP relay to the endpoint that can go dark: while cut, live connections are closed
    and new ones refused at once, as when a network path to S3 drops."""

    def __init__(self, target: int):
        self.target, self.cut_off = target, threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.live: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                conn.close()
                continue
            up = socket.create_connection(("127.0.0.1", self.target))
            self.live += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def cut(self) -> None:
        self.cut_off.set()
        for s in self.live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.live.clear()

    def restore(self) -> None:
        self.cut_off.clear()

    def close(self) -> None:
        self.server.close()
        self.cut()


@pytest.fixture(scope="module")
def s3():
    e = Endpoint()
    e.fs.create_dir(BUCKET)
    yield e
    e.stop()


def cli(*args: str, cache: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: no AWS variables, the credentials only in the URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(ELASTIC_NAS_CACHE=str(cache), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run([sys.executable, "-m", "elastic_nas", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def final_losses(stdout: str) -> list[str]:
    return re.findall(r"final metrics +\{.*'loss': ([0-9.]+)", stdout)


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


@pytest.mark.parametrize("case", ["unreachable", "no such bucket", "credentials refused"])
def test_storage_that_cannot_be_written_fails_before_any_work(case, s3, tmp_path):
    """One line, exit 2, no credentials, and no training or Ray started."""
    refusing = Endpoint(auth=True) if case == "credentials refused" else None
    try:
        uri = {"unreachable": s3.uri("runs").replace(str(s3.port), str(free_port())),
               "no such bucket": s3.uri("runs", bucket="no-such-bucket"),
               "credentials refused": refusing and refusing.uri("runs")}[case]
        proc = cli("supernet", *sets(f"run.storage_path={uri}"), cache=tmp_path, timeout=120)
    finally:
        if refusing:
            refusing.stop()
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to run.storage_path s3://" in lines[0], proc.stderr
    assert KEY not in proc.stderr + proc.stdout and SECRET not in proc.stderr + proc.stdout
    assert "supernet" not in proc.stdout and "Ray" not in proc.stdout + proc.stderr  # nothing started


@pytest.fixture(scope="module")
def pipelines(s3, tmp_path_factory):
    """The same tiny pipeline, seed 0, on s3:// and on local disk."""
    cache = tmp_path_factory.mktemp("cache")
    local = tmp_path_factory.mktemp("local")
    on_s3 = cli("pipeline", *sets(f"storage_path={s3.uri('runs')}", "name=p", *TINY), cache=cache)
    on_disk = cli("pipeline", *sets(f"storage_path={local}", "name=p", *TINY), cache=cache)
    return on_s3, on_disk, local, cache


@pytest.mark.ray
@pytest.mark.timeout(1500)
def test_pipeline_on_s3_matches_a_local_run_of_the_same_seed(s3, pipelines):
    on_s3, on_disk, local, cache = pipelines
    assert on_s3.returncode == 0, on_s3.stderr[-5000:]
    assert on_disk.returncode == 0, on_disk.stderr[-5000:]
    published = set(s3.files("runs"))
    for path in ["p-supernet/elastic_history.png", "p-search/chosen_arch.json", "p-search/search.png",
                 "p-search/results.csv", "p-retrain/result.json", "p-retrain/export/model.json"]:
        assert f"runs/{path}" in published, sorted(published)
    # Same seed, same results: the searched candidates' scores, the choice, the retrained subnet.
    scores = ["arch", "macs", "params", "accuracy", "loss", "generation"]  # not trial ids or timings
    remote = pd.read_csv(io.BytesIO(s3.read("runs/p-search/results.csv")))[scores]
    assert remote.equals(pd.read_csv(local / "p-search" / "results.csv")[scores])
    chosen = json.loads(s3.read("runs/p-search/chosen_arch.json"))
    assert chosen["arch"] == json.loads((local / "p-search" / "chosen_arch.json").read_text())["arch"]
    card = json.loads(s3.read("runs/p-retrain/export/model.json"))
    local_card = json.loads((local / "p-retrain" / "export" / "model.json").read_text())
    assert card["arch"] == chosen["arch"]
    assert (card["test_top1"], card["test_top5"]) == (local_card["test_top1"], local_card["test_top5"])
    assert card["export"].startswith(f"s3://{BUCKET}/runs/p-retrain/export/")
    assert final_losses(on_s3.stdout) == final_losses(on_disk.stdout)  # supernet, retrain
    # The credentials appear nowhere: console, published files, staging copies.
    assert KEY not in on_s3.stdout + on_s3.stderr and SECRET not in on_s3.stdout + on_s3.stderr
    for path in published:
        data = s3.read(path)
        assert KEY.encode() not in data and SECRET.encode() not in data, path
    for path in (cache / "staging").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and SECRET.encode() not in data, path


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_a_checkpoint_cut_short_in_upload_is_skipped_on_resume(s3, pipelines, tmp_path):
    """A rank killed mid-upload leaves a newer checkpoint directory without its state file
    (each S3 object appears whole or not at all): resuming skips it, says so, and goes on
    from the last complete checkpoint (here the final one: the run ends at once)."""
    on_s3, *_, cache = pipelines
    assert on_s3.returncode == 0, on_s3.stderr[-5000:]
    run = "runs/p-supernet"
    done = sorted(p for p in s3.files(run) if p.endswith("/meta.json"))[-1]
    meta = json.loads(s3.read(done))
    partial = f"{BUCKET}/{run}/checkpoint_step{meta['step'] + 1:09d}_1"
    with s3.fs.open_output_stream(f"{partial}/meta.json") as f:
        f.write(json.dumps(dict(meta, step=meta["step"] + 1)).encode())
    cfg = [f"run.storage_path={s3.uri('runs')}", "run.name=p-supernet",
           *[s.removeprefix("supernet.") for s in TINY if s.startswith(("data.", "supernet."))]]
    proc = cli("supernet", "--config", "supernet", *sets(*cfg), cache=cache)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert f"checkpoint_step{meta['step'] + 1:09d}_1 is incomplete: no state.pt" in out
    assert f"(step {meta['step']}) after skipping 1" in out
    assert f"resumed at step {meta['step']}" in out


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_storage_lost_mid_run_costs_no_training(s3, tmp_path):
    """S3 drops mid-run: checkpoints fail, the run says so and trains on, retries with
    backoff, and the next checkpoint lands once the endpoint is back; the run completes."""
    relay = Relay(s3.port)
    uri = s3.uri("outage").replace(f":{s3.port}&", f":{relay.port}&")
    cfg = [f"run.storage_path={uri}", "run.name=o", "optim.epochs=8", "elastic.checkpoint_every_steps=8",
           "elastic.report_every_steps=4", "elastic.checkpoint_every_s=1000", "elastic.per_worker_batch=32",
           *[s.removeprefix("supernet.") for s in TINY if s.startswith("data.")]]
    env = {k: "" for k in os.environ if k.startswith("AWS_")}
    run = CliRun(["supernet", "--config", "supernet", *sets(*cfg)], env=dict(env, ELASTIC_NAS_CACHE=str(tmp_path)))
    try:
        run.wait_for(r"\[ *\d+\.\d%\] step +(1[6-9]|[2-9]\d)\b", 300)  # two checkpoints in
        relay.cut()
        refused = run.wait_for(r"storage refused the checkpoint of step (\d+) .*training goes on", 300)
        at = len(run.lines)
        # Trained on, and tried again later (backoff), while storage was gone.
        again = run.wait_for(r"storage refused the checkpoint of step (\d+) .*next try in 4s", 300, start=at)
        assert int(again.group(1)) > int(refused.group(1))
        relay.restore()
        back = run.wait_for(r"storage is back: checkpoint of step (\d+) written", 300)
        assert run.finish(600) == 0, run.output()[-5000:]
    finally:
        run.kill()
        relay.close()
    assert int(back.group(1)) > int(again.group(1))
    steps = sorted(int(re.search(r"checkpoint_step(\d+)", p).group(1)) for p in s3.files("outage/o")
                   if p.endswith("/meta.json"))
    assert steps[-1] == 128  # 1,000 images, batch 64 (32 a worker): 16 steps an epoch, 8 epochs
    assert KEY not in run.output() and SECRET not in run.output()


def test_a_run_folder_copied_up_whole_is_fetched_and_one_cut_short_is_refused(s3, tmp_path):
    """On a real S3 endpoint: a search's folder goes up with its marker last and comes down on
    another machine; a folder whose first copy up never finished (a meta.json without its
    state, no marker) is refused in one line, without its credentials."""
    from elastic_nas.errors import UserError
    from elastic_nas.io import PUBLISHED, RunFolder

    def staged(name: str, machine: str) -> RunFolder:
        folder = RunFolder(s3.uri("folders"), name)
        folder.local = tmp_path / machine / name
        return folder

    first = staged("whole", "a")
    (first.local / "snapshot").mkdir(parents=True)
    (first.local / "snapshot" / "state.pt").write_bytes(b"w" * 1000)
    (first.local / "snapshot" / "meta.json").write_text('{"step": 1}')
    assert first.publish()
    assert sorted(s3.files("folders/whole")) == [f"folders/whole/{PUBLISHED}", "folders/whole/snapshot/meta.json",
                                                  "folders/whole/snapshot/state.pt"]
    other = staged("whole", "b")
    assert other.fetch() and (other.local / "snapshot" / "state.pt").read_bytes() == b"w" * 1000

    with s3.fs.open_output_stream(f"{BUCKET}/folders/cut/snapshot/meta.json") as f:
        f.write(b'{"step": 1}')
    cut = staged("cut", "a")
    with pytest.raises(UserError, match="never copied up whole") as refused:
        cut.fetch()
    assert not cut.local.exists() and KEY not in str(refused.value) and SECRET not in str(refused.value)
    assert s3.files("folders/cut") == ["folders/cut/snapshot/meta.json"]  # left as it was


def test_ray_checkpoint_record_cut_short_on_s3_is_removed_without_credentials(s3, capsys):
    """The same repair on a real S3 endpoint, and its line names no credentials."""
    from elastic_nas.cluster.launcher import RAY_CHECKPOINT_RECORD, drop_cut_checkpoint_record

    with s3.fs.open_output_stream(f"{BUCKET}/records/run/{RAY_CHECKPOINT_RECORD}") as f:
        f.write(b'{"checkpoint_res')
    assert drop_cut_checkpoint_record(s3.uri("records"), "run")
    assert s3.files("records/run") == []
    out = capsys.readouterr().out
    assert f"records/run/{RAY_CHECKPOINT_RECORD}: a kill cut its write short" in out
    assert KEY not in out and SECRET not in out
