"""Elastic supernet training on real Ray Train V2, several nodes on one machine.

Each test starts a ``ray.cluster_utils.Cluster`` whose worker nodes carry a ``slot``
resource (one training worker each), runs ``elastic-nas supernet`` as a real driver
process against it, and changes the cluster under it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elastic_nas.config import DataConfig
from tests.ray_utils import CliRun, add_worker_node, effective_samples, redone_steps, wait_for_free_slots

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

DATA = dict(num_train=2560, num_test=256, search_val_size=256)
BASE_LR, REF_BATCH, WORKER_BATCH = 0.1, 64, 32  # 2 workers -> lr 0.1, 1 worker -> lr 0.05


def supernet_args(tmp_path: Path, data_dir: Path, name: str, epochs: int, **extra) -> list[str]:
    sets = {
        "run.name": name,
        "run.storage_path": str(tmp_path / "runs"),
        "data.path": str(data_dir),
        **{f"data.{k}": v for k, v in DATA.items()},
        # The elastic machinery does not depend on the space or strategy: the small SPOS space
        # keeps these runs' step times (and so their timing windows) as they were measured.
        "strategy": "spos",
        "space.name": "spos",
        "space.stem_stride": 1,
        "space.width_mult": 0.25,
        "optim.lr": BASE_LR,
        "optim.reference_batch": REF_BATCH,
        "optim.schedule": "constant",
        "optim.warmup_epochs": 0,
        "optim.epochs": epochs,
        "elastic.min_workers": 1,
        "elastic.max_workers": 2,
        "elastic.resources_per_worker": "{CPU: 1, slot: 1}",
        "elastic.per_worker_batch": WORKER_BATCH,
        "elastic.checkpoint_every_steps": 10,
        "elastic.checkpoint_every_s": 3600,
        "elastic.report_every_steps": 5,
        "elastic.preemption_poll_steps": 2,
        "elastic.sample_log_dir": str(tmp_path / "samples"),
        **extra,
    }
    args = ["supernet", "--config", "jobs/supernet.yaml"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def train_ids(data_dir: Path) -> np.ndarray:
    from elastic_nas.data import build_dataset

    return np.sort(build_dataset(DataConfig(path=str(data_dir), **DATA), 32).train.ids)


def assert_exactly_once(tmp_path: Path, data_dir: Path, epochs: int) -> None:
    ids = train_ids(data_dir)
    per_epoch = effective_samples(tmp_path / "samples")
    assert sorted(per_epoch) == list(range(epochs))
    for epoch, seen in per_epoch.items():
        assert np.array_equal(np.sort(np.asarray(seen)), ids), f"epoch {epoch}: not every sample exactly once"


def wait_checkpoint(run_dir: Path, min_count: int, timeout: float) -> list[Path]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = sorted(p for p in run_dir.glob("checkpoint_step*") if (p / "meta.json").exists())
        if len(done) >= min_count:
            return done
        time.sleep(0.2)
    raise AssertionError(f"fewer than {min_count} checkpoints in {run_dir} after {timeout}s")


def finish_after_losing_a_node(cluster, node, run: CliRun, run_dir: Path) -> None:
    """Once ``run`` has trained on 2 workers and written a checkpoint, remove ``node``; the run
    must resume on 1 worker and finish."""
    try:
        run.wait_for(r"started with 2 worker", 240)
        wait_checkpoint(run_dir, 1, 240)
        cluster.remove_node(node)
        run.wait_for(r"resumed at step \d+ with 1 worker", 240)
        assert run.finish(600) == 0, run.output()[-4000:]
    finally:
        run.kill()


def history(tmp_path: Path, name: str) -> list[dict]:
    return json.loads((tmp_path / "runs" / name / "history.json").read_text())


def test_node_removed_then_added(cluster, tmp_path, data_dir):
    """A node lost mid-epoch: the run goes on with fewer workers, LR halves after a
    ramp, then scales back up when a node joins; every sample exactly once per epoch."""
    add_worker_node(cluster)
    second = add_worker_node(cluster)
    epochs = 3
    keep_all = {"elastic.keep_checkpoints": 1000}  # the join checkpoint is looked at after the run
    run = CliRun(supernet_args(tmp_path, data_dir, "resize", epochs, **keep_all), env={"RAY_ADDRESS": cluster.address})
    try:
        run.wait_for(r"started with 2 worker", 240)
        wait_checkpoint(tmp_path / "runs" / "resize", 1, 240)
        cluster.remove_node(second)
        run.wait_for(r"resumed at step \d+ with 1 worker", 240)
        run.wait_for(r"world 1 ", 240)
        add_worker_node(cluster)
        # The driver's node watcher asks for a checkpoint before Ray sees the new node.
        run.wait_for(r"node joined; checkpoint before the resize", 240)
        resumed = int(run.wait_for(r"resumed at step (\d+) with 2 worker", 240).group(1))
        assert run.finish(600) == 0, run.output()[-4000:]
    finally:
        run.kill()
    # The job log shows our progress lines, not Ray Train's per-report and per-monitor-tick INFO.
    out = run.output()
    assert "Did not detect any changes in the cluster resources" not in out
    assert "Reporting training result" not in out
    assert "broadcast_buffers" not in out  # no deprecation warning from DDP at each restart

    metas = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "resize").glob("checkpoint_*/meta.json")]
    listed = sorted((m["step"], m["reason"], m["world_size"]) for m in metas)
    joins = [m for m in metas if m["reason"] == "join"]
    assert joins, listed
    join = max(joins, key=lambda m: m["step"])
    if join["world_size"] == 1:
        # The watcher's checkpoint came before the resize: only steps after it are redone.
        assert resumed >= join["step"], (resumed, listed)
    else:
        # Ray's own coordinator tick (every 20 s) saw the node first, and the new group answered
        # the watcher's request: the resize still resumed from the newest checkpoint there was.
        assert resumed == max(m["step"] for m in metas if m["world_size"] == 1), (resumed, listed)
    assert_exactly_once(tmp_path, data_dir, epochs)
    h = history(tmp_path, "resize")
    starts = [e["world_size"] for e in h if e["event"] == "start"]
    assert starts[0] == 2 and 1 in starts and starts[-1] == 2, starts
    # Dynamic mini-batch SGD: global batch follows the world size; the LR reaches its
    # linearly scaled value after T*r steps (T=8) and never overshoots on the way.
    full, half = BASE_LR * 2 * WORKER_BATCH / REF_BATCH, BASE_LR * WORKER_BATCH / REF_BATCH
    start_step = {}
    for e in h:
        if e["event"] == "start":
            start_step = e
        if e["event"] != "report":
            continue
        assert e["global_batch"] == WORKER_BATCH * e["world_size"]
        assert half - 1e-9 <= e["lr"] <= full + 1e-9
        ramp = 8 * (e["world_size"] / 2 if e["world_size"] == 1 else 2)
        # A report's lr is the LR of the step it just trained, step e["step"] - 1.
        if e["step"] - 1 - start_step["step"] >= ramp:
            assert e["lr"] == pytest.approx(full if e["world_size"] == 2 else half)
    assert (tmp_path / "runs" / "resize" / "elastic_history.png").stat().st_size > 10_000


def test_sandwich_on_entangled_weights_survives_a_node_loss(cluster, tmp_path, data_dir):
    """The sandwich rule (several archs per step, one all-reduce) under progressive shrinking
    through the same elastic loop, in bf16 with channels_last, its teacher drawn from a board of
    prioritized paths (their top-1 all-reduced over the workers): a node lost mid-run, the run
    resumes with one worker from its (fp32) checkpoint, its shrinking schedule from the run's own
    count of samples in it and its board from the checkpoint, and every sample of every epoch is
    trained exactly once."""
    import torch

    add_worker_node(cluster)
    second = add_worker_node(cluster)
    epochs = 2
    sandwich = {"strategy": "sandwich", "sandwich.num_random": 1, "space.name": "cream", "space.stem_stride": 2,
                "space.weight_sharing": "entangled", "space.max_depths": "[1, 2, 2, 2, 1]",
                "sandwich.progressive": "[0.1, 0.2, 0.3]", "optim.precision": "bf16", "optim.channels_last": "true",
                "sandwich.largest": "prioritized", "sandwich.board_size": 3}
    run = CliRun(supernet_args(tmp_path, data_dir, "sandwich", epochs, **sandwich),
                 env={"RAY_ADDRESS": cluster.address})
    finish_after_losing_a_node(cluster, second, run, tmp_path / "runs" / "sandwich")
    assert "sandwich supernet cream" in run.output()
    assert "progressive shrinking: kernel, depth, expansion elastic" in run.output(), run.output()[-3000:]
    # The schedule keeps no count of its own: it follows the run's, which the checkpoint carries;
    # the board is the strategy's own state, plain lists that load with weights_only.
    last = max((tmp_path / "runs" / "sandwich").glob("checkpoint_step*"), key=lambda p: p.name.split("_")[1])
    state = torch.load(last / "state.pt", weights_only=True)
    assert set(state["extra"]) == {"board"} and state["samples_seen"] > 0
    board = state["extra"]["board"]
    assert len(board) == 3 and len({json.dumps(e["arch"]) for e in board}) == 3, board
    assert all(0 <= e["accuracy"] <= 100 and "images" not in e for e in board)
    assert_exactly_once(tmp_path, data_dir, epochs)
    starts = [e["world_size"] for e in history(tmp_path, "sandwich") if e["event"] == "start"]
    assert starts[0] == 2 and starts[-1] == 1, starts


def test_proxyless_alpha_is_the_same_on_every_rank_through_a_node_loss(cluster, tmp_path, data_dir):
    """ProxylessNAS (alpha steps on search_val between weight steps, a latency term) through the
    same elastic loop: a node lost mid-run, the run resumes with one worker from its checkpoint,
    every rank holds the same alpha at every alpha step, every sample is trained exactly once,
    and the derived arch is written as search results with its predicted latency."""
    from elastic_nas.config import SupernetConfig, load_config
    from elastic_nas.spaces import build_space
    from elastic_nas.spaces.latency import LatencyTable, build_table

    space_sets = {"space.name": "cream", "space.stem_stride": 2, "space.weight_sharing": "entangled",
                  "space.max_depths": "[1, 2, 2, 2, 1]"}
    sets = [f"{k}={v}" for k, v in {"space.width_mult": 0.25, **space_sets}.items()]  # supernet_args' space
    space = build_space(load_config(SupernetConfig, "jobs/supernet.yaml", sets).space)
    table = build_table(space, warmup=1, repeats=3, max_copies=2)
    table.save(tmp_path / "latency.json")
    target = float(np.median([table.predict_ms(space, space.sample(np.random.default_rng(i))) for i in range(50)]))
    add_worker_node(cluster)
    second = add_worker_node(cluster)
    epochs = 2
    proxyless = {"strategy": "proxyless", **space_sets, "proxyless.warmup_fraction": 0, "proxyless.update_every": 2,
                 "proxyless.arch_batch": 32, "proxyless.eval_images": 64,
                 "proxyless.latency_table": str(tmp_path / "latency.json"), "proxyless.target_ms": target,
                 "proxyless.latency_loss": "add_linear", "proxyless.alpha_log_dir": str(tmp_path / "alpha")}
    run = CliRun(supernet_args(tmp_path, data_dir, "proxyless", epochs, **proxyless),
                 env={"RAY_ADDRESS": cluster.address})
    finish_after_losing_a_node(cluster, second, run, tmp_path / "runs" / "proxyless")
    assert "proxyless supernet cream" in run.output()
    assert_exactly_once(tmp_path, data_dir, epochs)
    records = [json.loads(line) for f in sorted((tmp_path / "alpha").glob("rank*.jsonl")) for line in f.open()]
    updates: dict[tuple, dict] = {}
    for r in records:
        if r["event"] == "update":
            updates.setdefault((r["world"], r["step"]), {})[r["rank"]] = r["digest"]
    pairs = [by_rank for (world, _), by_rank in sorted(updates.items()) if world == 2]
    # The node may go between the all-reduce and its rank's log line: only the step the loss
    # interrupted may lack a rank; every rank that logged a step holds the same alpha.
    assert len(pairs) >= 2 and all(len(by_rank) == 2 for by_rank in pairs[:-1]), pairs
    assert all(len(set(by_rank.values())) == 1 for by_rank in pairs), pairs
    assert any(world == 1 for world, _ in updates), "no alpha step after the resize"
    loads = [r for r in records if r["event"] == "load" and r["world"] == 1]
    assert loads  # the one remaining worker took alpha from the checkpoint
    chosen = json.loads((tmp_path / "runs" / "proxyless" / "proxyless" / "chosen_arch.json").read_text())
    arch = space.validate(chosen["arch"])
    assert chosen["strategy"] == "proxyless" and chosen["macs"] == space.macs(arch)
    assert chosen["latency_ms"] == pytest.approx(LatencyTable.load(tmp_path / "latency.json").predict_ms(space, arch))


def test_drained_node_checkpoints_before_it_goes(cluster, tmp_path, data_dir):
    """A spot notice (drain with a deadline): a checkpoint is written before the node
    goes, and no step is trained twice."""
    add_worker_node(cluster)
    doomed = add_worker_node(cluster)
    # Enough work that the run is still training when the deadline nears: a run that
    # finishes before it never waits for the reclaim.
    epochs = 4
    run = CliRun(supernet_args(tmp_path, data_dir, "drain", epochs, **{"elastic.checkpoint_every_steps": 10_000}),
                 env={"RAY_ADDRESS": cluster.address})
    try:
        run.wait_for(r"started with 2 worker", 240)
        run.wait_for(r"world 2 ", 240)
        drain = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "drain-node", "--address", cluster.address,
             "--node-id", doomed.node_id, "--reason", "DRAIN_NODE_REASON_PREEMPTION",
             "--reason-message", "spot", "--deadline-remaining-seconds", "10"],
            capture_output=True, text=True, timeout=60,
        )
        assert drain.returncode == 0, drain.stderr
        run.wait_for(r"preemption notice", 60)
        run.wait_for(r"waiting for the reclaim", 60)
        ckpts = wait_checkpoint(tmp_path / "runs" / "drain", 1, 30)
        cluster.remove_node(doomed)
        run.wait_for(r"resumed at step \d+ with 1 worker", 240)
        assert run.finish(600) == 0, run.output()[-4000:]
    finally:
        run.kill()
    reasons = [json.loads((p / "meta.json").read_text())["reason"] for p in ckpts]
    assert "preemption" in reasons
    assert redone_steps(tmp_path / "samples") == 0
    assert_exactly_once(tmp_path, data_dir, epochs)
    assert any(e["event"] == "preemption_notice" for e in history(tmp_path, "drain"))


def test_killed_driver_is_taken_over_at_once(cluster, tmp_path, data_dir):
    """An elastic run's driver killed outright leaves its controller's resource request with
    Ray for 180 s. The same command started again releases it and resumes at the full size
    at once (Ray's own expiry would hold it for minutes); every sample still exactly once."""
    add_worker_node(cluster)
    add_worker_node(cluster)
    epochs = 2
    args = supernet_args(tmp_path, data_dir, "takeover", epochs)
    first = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    try:
        first.wait_for(r"started with 2 worker", 240)
        wait_checkpoint(tmp_path / "runs" / "takeover", 1, 240)
    finally:
        first.kill()
    wait_for_free_slots(cluster, 2, 60)
    second = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    try:
        second.wait_for(r"released the resources that this run's previous driver \(job \w+, gone\)", 120)
        # Well inside the 180 s that the dead driver's request would otherwise hold the slots.
        second.wait_for(r"resumed at step \d+ with 2 worker", 100)
        assert second.finish(600) == 0, second.output()[-4000:]
    finally:
        second.kill()
    assert_exactly_once(tmp_path, data_dir, epochs)


def test_non_finite_steps_roll_back_to_the_last_checkpoint(cluster, tmp_path, data_dir, monkeypatch):
    """NaNs injected into three steps in a row on 2 workers: the steps are skipped on both
    ranks, the run goes back to its step-10 checkpoint with half the LR and finishes; every
    sample still exactly once (the skipped steps are redone)."""
    monkeypatch.setenv("ELASTIC_NAS_TESTING_NAN_STEPS", "15,16,17")  # the worker nodes' processes inherit it
    add_worker_node(cluster)
    add_worker_node(cluster)
    monkeypatch.delenv("ELASTIC_NAS_TESTING_NAN_STEPS")
    epochs = 1
    run = CliRun(supernet_args(tmp_path, data_dir, "diverge", epochs), env={"RAY_ADDRESS": cluster.address})
    try:
        run.wait_for(r"started with 2 worker", 240)
        run.wait_for(r"3 steps in a row with non-finite gradients; back to step 10 .*LR scaled by 0.5", 240)
        assert run.finish(600) == 0, run.output()[-4000:]
    finally:
        run.kill()
    assert "'skipped_steps': 3" in run.output()
    rollbacks = [e for e in history(tmp_path, "diverge") if e["event"] == "rollback"]
    assert [(e["step"], e["lr_scale"]) for e in rollbacks] == [(10, 0.5)]
    assert_exactly_once(tmp_path, data_dir, epochs)


def test_the_same_seed_trains_the_same_weights(tmp_path, data_dir):
    """Two runs of one config on 2 workers (a private local Ray each) end bit-identical:
    sampling, archs and augmentation draw from (seed, step, rank), never from the clock."""
    import torch

    finals = []
    for name in ("first", "second"):
        run = CliRun(supernet_args(tmp_path, data_dir, name, 1, **{"elastic.resources_per_worker": "{CPU: 1}"}))
        try:
            assert run.finish(600) == 0, run.output()[-4000:]
        finally:
            run.kill()
        last = max((tmp_path / "runs" / name).glob("checkpoint_step*"), key=lambda p: p.name.split("_")[1])
        finals.append(torch.load(last / "state.pt", weights_only=True)["model"])
    assert finals[0].keys() == finals[1].keys()
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])


def test_driver_restart_resumes_past_corrupt_checkpoint(cluster, tmp_path, data_dir):
    """Stop the driver, corrupt the newest checkpoint (and cut Ray's record of them short, as
    a kill mid-write does), launch again with the same name: the run says which checkpoint
    it skipped, resumes from the previous one, finishes."""
    add_worker_node(cluster)
    epochs = 2
    args = supernet_args(tmp_path, data_dir, "restart", epochs, **{"elastic.max_workers": 1})
    run_dir = tmp_path / "runs" / "restart"
    first = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    try:
        ckpts = wait_checkpoint(run_dir, 3, 300)
    finally:
        first.kill()
    wait_for_free_slots(cluster, 1, 60)  # the dead driver's worker can no longer write a newer checkpoint
    newest = max((p for p in run_dir.glob("checkpoint_step*") if (p / "meta.json").exists()),
                 key=lambda p: json.loads((p / "meta.json").read_text())["step"])
    from tests.test_checkpoint import damage_in_place

    damage_in_place(newest)  # a short state would read as an unfinished copy
    # An older copy a kill cut short (meta.json and part of a state.pt, as parallel copies
    # before meta-last uploads left them): nothing reads it, and the resume removes it.
    partial = run_dir / "checkpoint_step000000001_1"
    partial.mkdir()
    (partial / "meta.json").write_bytes((newest / "meta.json").read_bytes())
    (partial / "state.pt").write_bytes(b"\0" * 100)
    # Ray Train's own record of the checkpoints, as a kill in the middle of its write leaves it.
    from elastic_nas.cluster.launcher import RAY_CHECKPOINT_RECORD

    record = run_dir / RAY_CHECKPOINT_RECORD
    record.write_bytes(record.read_bytes()[:len(record.read_bytes()) // 2])

    second = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    try:
        m = second.wait_for(r"resumed at step (\d+)", 240)
        assert second.finish(600) == 0, second.output()[-4000:]
    finally:
        second.kill()
    out = second.output()
    assert f"{newest} is corrupt" in out
    assert "resuming from" in out
    assert f"removed {partial}: its copy into storage never finished" in out
    assert f"removed Ray Train's checkpoint record {record}: a kill cut its write short" in out
    assert not partial.exists()
    assert f"removed {newest}" not in out  # newer than the one resumed: left alone
    assert 0 < int(m.group(1)) < int(newest.name.split("_")[1].removeprefix("step")), (m.group(0), newest)
    assert len(ckpts) >= 3
    assert_exactly_once(tmp_path, data_dir, epochs)
