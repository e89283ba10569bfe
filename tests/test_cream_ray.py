"""Cream supernet training on real Ray Train V2: a local ``Cluster`` whose worker nodes carry a
``slot`` resource, ``elastic-nas supernet`` as a real driver process (as test_elastic_ray).

Every rank appends its board digest to ``cream.board_log_dir/rank<r>.jsonl`` when the board
changes, at every checkpoint step, at the end, and when it loads a checkpoint.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.ray_utils import CliRun, add_worker_node

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

DATA = dict(num_train=1280, num_test=128, search_val_size=128)
CKPT_EVERY = 5


def cream_args(tmp_path: Path, data_dir: Path, name: str, epochs: int) -> list[str]:
    sets = {
        "run.name": name,
        "run.storage_path": str(tmp_path / "runs"),
        "data.path": str(data_dir),
        **{f"data.{k}": v for k, v in DATA.items()},
        "space.width_mult": 0.25,
        "space.max_depths": "[2, 2, 2, 2, 2]",
        "optim.epochs": epochs,
        "optim.reference_batch": 64,
        "optim.warmup_epochs": 0,
        "cream.board_size": 4,
        "cream.warmup_epochs": 0,
        "cream.warmup_steps": 2,
        "cream.meta_update_every": 4,
        "cream.meta_val_images": 32,
        "cream.eval_images": 64,
        "cream.budgets": "[1.5, 100]",
        "cream.board_log_dir": str(tmp_path / "board_log"),
        "elastic.min_workers": 1,
        "elastic.max_workers": 2,
        "elastic.resources_per_worker": "{CPU: 1, slot: 1}",
        "elastic.per_worker_batch": 32,
        "elastic.checkpoint_every_steps": CKPT_EVERY,
        "elastic.checkpoint_every_s": 3600,
        "elastic.report_every_steps": 5,
        "elastic.preemption_poll_steps": 2,
    }
    args = ["supernet", "--config", "jobs/supernet-cream.yaml"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def board_log(tmp_path: Path) -> list[dict]:
    records = []
    for f in sorted((tmp_path / "board_log").glob("rank*.jsonl")):
        records += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: r["time"])


def assert_ranks_agree(records: list[dict], cut: bool = False) -> int:
    """Within a two-worker attempt, rank 1 logged exactly rank 0's board and meta network at
    every step it logged; returns the number of (step, event) pairs compared. With ``cut``
    (the attempt lost a node, or its records were cut at a time), one rank may be missing
    only at the attempt's last steps: the ranks log the same step a moment apart."""
    by_key = defaultdict(dict)
    for r in records:
        if r["world"] == 2:
            by_key[(r["step"], r["event"])][r["rank"]] = r
    last_complete = max((key[0] for key, ranks in by_key.items() if set(ranks) == {0, 1}), default=-1)
    compared = 0
    for key, ranks in by_key.items():
        if cut and len(ranks) == 1 and key[0] >= last_complete >= 0:
            continue
        assert set(ranks) == {0, 1}, f"{key}: only ranks {sorted(ranks)} logged"
        assert ranks[0]["digest"] == ranks[1]["digest"], f"boards differ at {key}"
        assert ranks[0]["meta_digest"] == ranks[1]["meta_digest"], f"meta networks differ at {key}"
        compared += 1
    return compared


def checkpoint_steps(run_dir: Path) -> list[int]:
    return [json.loads((p / "meta.json").read_text())["step"] for p in run_dir.glob("checkpoint_step*")
            if (p / "meta.json").exists()]


def checkpoint_board_digests(run_dir: Path) -> tuple[dict[int, str], list[int]]:
    """(step -> board digest of the checkpoints on disk that verify, steps of those that do
    not). A directory whose upload a restart cut short keeps a meta.json beside a partial
    state.pt; its sha256 check fails and a resume skips it, as this does."""
    import pyarrow.fs as pafs

    from elastic_nas.elastic.checkpoint import list_checkpoints, read_checkpoint
    from elastic_nas.errors import CheckpointError
    from elastic_nas.train.strategies.cream_board import board_digest

    out, bad = {}, []
    for step, _, path in list_checkpoints(pafs.LocalFileSystem(), str(run_dir)):
        if (Path(path) / "meta.json").exists():
            try:
                ckpt = read_checkpoint(path)
            except CheckpointError:
                bad.append(step)
                continue
            out[int(ckpt.state["step"])] = board_digest(ckpt.state["extra"]["board"])
    return out, bad


def test_cream_board_fills_identically_on_every_rank(cluster, tmp_path, data_dir):
    """Two workers: the board fills, both ranks hold the same board and meta network at every
    logged step, checkpoints hold that board, and the board results are written for retrain."""
    from elastic_nas.config import ArchSelectConfig, RetrainConfig
    from elastic_nas.train.retrain import select_arch

    add_worker_node(cluster)
    add_worker_node(cluster)
    run = CliRun(cream_args(tmp_path, data_dir, "cream", epochs=1), env={"RAY_ADDRESS": cluster.address})
    try:
        run.wait_for(r"started with 2 worker", 240)
        assert run.finish(300) == 0, run.output()[-4000:]
    finally:
        run.kill()

    records = board_log(tmp_path)
    assert assert_ranks_agree(records) >= 5
    done = [r for r in records if r["event"] == "done"]
    assert {r["rank"] for r in done} == {0, 1} and all(r["size"] == 4 for r in done)
    assert done[0]["meta_updates"] >= 2
    final = max(r["step"] for r in records)
    by_step = {r["step"]: r["digest"] for r in records if r["rank"] == 0}
    ckpts, bad = checkpoint_board_digests(tmp_path / "runs" / "cream")
    assert final in ckpts and not bad  # no restart here: every checkpoint verifies
    for step, digest in ckpts.items():
        assert by_step[step] == digest, f"checkpoint at step {step} holds another board"

    board_dir = tmp_path / "runs" / "cream" / "board"
    chosen = json.loads((board_dir / "chosen_arch.json").read_text())
    per_budget = json.loads((board_dir / "best_per_budget.json").read_text())
    assert chosen["strategy"] == "cream" and per_budget[-1]["arch"] is not None
    assert (board_dir / "results.csv").exists()
    space_cfg, arch = select_arch(RetrainConfig(arch=ArchSelectConfig(search=str(board_dir))))
    assert space_cfg.name == "cream" and arch == chosen["arch"]
    assert "board" in run.output()


def test_cream_board_survives_node_removal(cluster, tmp_path, data_dir):
    """A node lost mid-run: every rank of the resumed group loads exactly the checkpointed
    board, and training completes on one worker with the board still full."""
    add_worker_node(cluster)
    second = add_worker_node(cluster)
    run_dir = tmp_path / "runs" / "cream-resize"
    run = CliRun(cream_args(tmp_path, data_dir, "cream-resize", epochs=2), env={"RAY_ADDRESS": cluster.address})
    try:
        run.wait_for(r"started with 2 worker", 240)
        end = time.monotonic() + 240
        while time.monotonic() < end and max(checkpoint_steps(run_dir), default=0) < 2 * CKPT_EVERY:
            time.sleep(0.2)
        assert max(checkpoint_steps(run_dir), default=0) >= 2 * CKPT_EVERY, run.output()[-4000:]
        removed_at = time.time()
        cluster.remove_node(second)
        m = run.wait_for(r"resumed at step (\d+) with 1 worker", 240)
        assert run.finish(400) == 0, run.output()[-4000:]
    finally:
        run.kill()

    resumed_step = int(m.group(1))
    assert resumed_step >= CKPT_EVERY
    records = board_log(tmp_path)
    assert assert_ranks_agree([r for r in records if r["time"] < removed_at], cut=True) >= 2
    before = {r["step"]: r["digest"] for r in records if r["time"] < removed_at and r["rank"] == 0
              and r["event"] != "load"}
    loads = [r for r in records if r["event"] == "load" and r["step"] == resumed_step]
    assert loads and all(r["world"] == 1 for r in loads)
    for r in loads:
        assert r["size"] > 0
        assert r["digest"] == before[resumed_step], "the resumed board is not the checkpointed one"
    done = [r for r in records if r["event"] == "done"]
    assert done and done[-1]["world"] == 1 and done[-1]["size"] == 4
    ckpts, bad = checkpoint_board_digests(run_dir)
    final = max(ckpts)
    assert all(step < final for step in bad), (bad, final)  # the newest checkpoint is always good
    assert done[-1]["step"] == final and done[-1]["digest"] == ckpts[final]
