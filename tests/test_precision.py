"""Mixed precision and channels_last without a GPU: the bf16/fp16 training step learns,
fp16's overflows do not count as a divergence, checkpoints stay fp32 in the plain layout and
load across precisions, and the evaluator and test evaluation agree with fp32."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from elastic_nas.data import build_dataset
from elastic_nas.elastic.checkpoint import checkpoint_dir_name, read_checkpoint, write_checkpoint
from elastic_nas.search.evaluator import Snapshot, eval_data, evaluate_arch, get_supernet
from elastic_nas.spaces.precision import Precision
from elastic_nas.train.evaluate import evaluate
from elastic_nas.train.state import TrainState
from elastic_nas.train.step import Batch, TrainStep
from elastic_nas.train.supernet import build_supernet_task
from tests.conftest import follows_input, live_bn
from tests.test_strategies import cfg

MODES = [("bf16", False), ("bf16", True), ("fp16", False), ("fp32", True)]


def state_of(tmp_path, precision: str, channels_last: bool, *extra: str) -> TrainState:
    c = cfg(tmp_path, f"optim.precision={precision}", f"optim.channels_last={channels_last}", *extra)
    torch.manual_seed(0)
    return TrainState(build_supernet_task(c), c.optim, c.elastic, seed=0)


def batches(state: TrainState, n: int = 32, count: int = 2) -> list[Batch]:
    split = state.task.train_split
    out = []
    for i in range(count):
        x, y, _ = split.get_batch(np.arange(i * n, (i + 1) * n))
        out.append(Batch(x, y, torch.ones(n)))
    return out


@pytest.mark.parametrize("precision,channels_last", MODES)
def test_the_step_trains_in_each_precision_and_layout(tmp_path, precision, channels_last):
    state = state_of(tmp_path, precision, channels_last, "strategy=sandwich", "sandwich.num_random=1")
    step = TrainStep(state.model, state.task.strategy, precision=state.precision)
    if channels_last:
        conv = next(p for p in state.model.parameters() if p.dim() == 4 and p.shape[2] > 1)
        assert conv.is_contiguous(memory_format=torch.channels_last)
    data = batches(state)

    def loss() -> float:  # the largest arch's training loss on both batches
        return sum(s.loss_sum for s in (step(0, state.optimizer, 0.0, b, num_real=len(b.y)) for b in data))

    before = loss()  # lr 0: no update, but it warms the fp16 scaler like any step
    for i in range(12):
        stats = step(i, state.optimizer, 0.05, data[i % 2], num_real=32)
        assert not stats.skipped
    assert loss() < 0.8 * before
    assert all(p.dtype == torch.float32 for p in state.model.parameters())
    assert all(b.dtype == torch.float32 for b in state.model.buffers() if b.is_floating_point())


def test_fp16_overflow_halves_the_scale_and_is_not_a_divergence(tmp_path):
    state = state_of(tmp_path, "fp16", False, "optim.rollback_after_bad_steps=1")
    state.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)  # sure to overflow
    step = TrainStep(state.model, state.task.strategy, precision=state.precision)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    stats = step(0, state.optimizer, 0.1, batches(state, 8, 1)[0], num_real=8)
    assert not stats.skipped and not state.rollback_due(stats.skipped)  # no rollback for fp16's range
    assert state.precision.scaler.get_scale() == 2.0 ** 39
    assert all(torch.equal(before[k], v) for k, v in state.model.state_dict().items())  # nothing updated
    for i in range(1, 40):  # the scale comes down to fp16's range and training goes on
        step(i, state.optimizer, 0.1, batches(state, 8, 1)[0], num_real=8)
    assert state.precision.scaler.get_scale() < 2.0 ** 20
    assert any(not torch.equal(before[k], v) for k, v in state.model.state_dict().items())


def test_checkpoints_are_fp32_plain_and_load_across_precisions(tmp_path):
    src = state_of(tmp_path, "fp16", True)
    step = TrainStep(src.model, src.task.strategy, precision=src.precision)
    for i, b in enumerate(batches(src, 16, 3)):
        step(i, src.optimizer, 0.05, b, num_real=16)
        src.advance(src.sampler.plan(1, 16))
    x = batches(src, 8, 1)[0].x
    arch = src.task.strategy.archs(0)[0]
    live_bn(src.model, lambda b: src.model(b, arch), x)
    path = write_checkpoint(tmp_path / "run" / checkpoint_dir_name(src.step), src.state_dict(), src.meta("periodic", 1))
    loaded = read_checkpoint(str(path))  # weights_only=True
    weights = loaded.state["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    assert all(v.is_contiguous() for v in weights.values())
    assert loaded.state["scaler"]["scale"] == src.precision.scaler.get_scale()

    with torch.no_grad():
        want = src.model.eval()(x, arch)
    assert follows_input(want)
    for precision, channels_last in [("fp32", False), ("bf16", True), ("fp16", False)]:
        dst = state_of(tmp_path, precision, channels_last)
        dst.load_state_dict(loaded.state)
        assert dst.step == src.step
        with torch.no_grad():
            assert torch.allclose(dst.model.eval()(x, arch), want, atol=1e-5)  # both forwards in fp32
        if precision == "fp16":
            assert dst.precision.scaler.get_scale() == src.precision.scaler.get_scale()
    fp32 = state_of(tmp_path, "fp32", False)
    fp32.load_state_dict(loaded.state)  # a checkpoint without a scaler state loads into fp16 and back
    state_of(tmp_path, "fp16", False).load_state_dict(fp32.state_dict())


@pytest.mark.parametrize("precision,channels_last", [("bf16", False), ("bf16", True)])
def test_evaluator_and_test_evaluation_in_bf16_agree_with_fp32(tmp_path, precision, channels_last):
    c = cfg(tmp_path)
    torch.manual_seed(0)
    task = build_supernet_task(c)
    snap = Snapshot("s0", asdict(c.space), {k: v.numpy() for k, v in task.model.state_dict().items()})
    splits = build_dataset(c.data, c.space.input_size)
    archs = [task.strategy.archs(s)[0] for s in range(3)]
    scores = {}
    for mode in (("fp32", False), (precision, channels_last)):
        data = eval_data(splits, 64, 60, 0, 32, *mode)
        space, model = get_supernet(snap, "cpu", mode[1])
        scores[mode] = [evaluate_arch(model, a, data) for a in archs]
        assert all(b.dtype == torch.float32 for b in model.buffers() if b.is_floating_point())
    for full, half in zip(*scores.values()):
        assert abs(full["accuracy"] - half["accuracy"]) <= 5.0  # 3 of 60 images
        assert half["loss"] == pytest.approx(full["loss"], rel=0.05)
    net = space.build_subnet(archs[0])
    calib, _, _ = splits.train.get_batch(np.arange(64))
    live_bn(net, net, calib)  # else every image is one class, in any precision
    full = evaluate(net, splits.test, 64)
    half = evaluate(net, splits.test, 64, precision=Precision(precision, channels_last))
    assert abs(full["top1"] - half["top1"]) <= 2.0 and half["loss"] == pytest.approx(full["loss"], rel=0.05)


def test_the_device_check_dry_runs_on_cpu(tmp_path):
    """``benchmarks/gpu_check.py --device cpu --quick``: the script a GPU session runs once,
    kept from rotting. Every part runs and the export matches the trained model."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    for part in result["train_step"].values():
        assert set(part["modes"]) == {"fp32", "bf16", "bf16+channels_last", "fp32+channels_last"}
        assert all(m["samples_per_s"] > 0 for m in part["modes"].values())
        assert set(part["supernet_path_vs_subnet"]) == {"fp32", "bf16"}
    assert result["evaluator"]["processes"]["two_candidates_per_s"] > 0
    trials = result["evaluator"]["trials"]  # issue 19's core: trials of 1 and of a batch, a new process
    assert set(trials["per_trial"]) == {"1", "2"} and trials["cold_process"]["first_trial_s"] > 0
    assert trials["profile"]["host_waits_per_candidate"] == 0 and trials["profile"]["top_ops"]
    assert result["retrain_export"]["loss_falls"] and result["retrain_export"]["exported_matches"]
    assert "evaluator" in (tmp_path / "gpu_check_cpu.txt").read_text()
