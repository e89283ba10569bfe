"""Cream strategy without Ray: arch sampling, the board's entry rule, meta matching, the loss,
the hooks in a short single-process loop, checkpoint state and the board results."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.errors import ConfigError
from elastic_nas.spaces import build_space
from elastic_nas.spaces.bn import frozen_bn_stats
from elastic_nas.train.losses import kd_per_sample
from elastic_nas.train.step import Batch, TrainStep
from elastic_nas.train.strategies.cream import CreamArchSampler, CreamStrategy
from elastic_nas.train.strategies.cream_board import BoardEntry, PrioritizedBoard, board_digest
from elastic_nas.train.strategies.cream_meta import MetaMatchingNetwork, cream_loss

torch.set_num_threads(1)

SETS = ["strategy=cream", "space.name=cream", "space.width_mult=0.25", "space.max_depths=[2,2,2,2,2]",
        "data.num_train=400", "data.num_test=100", "data.search_val_size=100", "cream.meta_val_images=40",
        "cream.eval_images=40", "cream.board_size=3", "cream.warmup_epochs=0"]


def make_cfg(*extra: str, tmp_path=None) -> SupernetConfig:
    sets = SETS + (["data.path=" + str(tmp_path)] if tmp_path else []) + list(extra)
    return load_config(SupernetConfig, None, sets)


def entry(arch, accuracy, macs, step=0, n=2, classes=10) -> BoardEntry:
    return BoardEntry(arch, accuracy, macs, step, torch.zeros(n, 3, 8, 8), torch.zeros(n, dtype=torch.int64),
                      torch.full((n, classes), 1.0 / classes))


A, B, C = ((0,),) * 5, ((1,),) * 5, ((2,),) * 5


# -- arch sampling ---------------------------------------------------------------


def test_arch_depends_on_seed_and_step_only():
    cfg = make_cfg()
    space = build_space(cfg.space)
    p1, p2 = CreamArchSampler(space, cfg), CreamArchSampler(space, cfg)
    assert [p1(s) for s in range(20)] == [p2(s) for s in range(20)]
    assert len({p1(s) for s in range(20)}) > 10
    other = CreamArchSampler(space, make_cfg("run.seed=1"))
    assert [p1(s) for s in range(5)] != [other(s) for s in range(5)]


def test_op_probs_and_uniform():
    cfg = make_cfg()
    space = build_space(cfg.space)
    ops = Counter(op for s in range(400) for stage in CreamArchSampler(space, cfg)(s) for op in stage)
    total = sum(ops.values())
    assert 0.43 < ops[3] / total < 0.57  # k5e6 carries half the mass (Cream's PRE_PROB)
    assert ops[0] / total < 0.1
    uni = Counter(op for s in range(400) for stage in CreamArchSampler(space, make_cfg("cream.op_sampling=uniform"))(s)
                  for op in stage)
    assert all(0.11 < uni[k] / sum(uni.values()) < 0.23 for k in range(6))


def test_flops_bounds_respected_with_bounded_fallback():
    cfg = make_cfg()
    space = build_space(cfg.space)
    lo, hi = space.macs_range()
    # A narrow window near the minimum: weighted draws (mostly k5e6) rarely land there.
    w_lo, w_hi = lo / 1e6, (lo + 0.05 * (hi - lo)) / 1e6
    cfg = make_cfg(f"sampling.flops_min={w_lo}", f"sampling.flops_max={w_hi}", "sampling.max_tries=5")
    arch_sampler = CreamArchSampler(space, cfg)
    for s in range(30):
        assert w_lo * 1e6 - 1 <= space.macs(arch_sampler(s)) <= w_hi * 1e6 + 1
    bins = CreamArchSampler(space, make_cfg("sampling.method=flops_bins", "sampling.num_bins=3"))
    assert all(lo <= space.macs(bins(s)) <= hi for s in range(10))


# -- the board -----------------------------------------------------------------------


def test_board_entry_rule():
    board = PrioritizedBoard(size=2, accuracy_gap=5.0)
    assert board.would_enter(A, 10.0, 100)
    board.add(entry(A, 10.0, 100))
    assert not board.would_enter(A, 99.0, 1)  # an arch enters once
    board.add(entry(B, 50.0, 100))
    assert [e.arch for e in board.entries] == [B, A]  # best first
    assert board.full() and board.worst().arch == A
    assert not board.would_enter(C, 14.0, 200)  # not 5 points better, not cheaper
    assert not board.would_enter(C, 15.0, 100)  # exactly the gap is not more than it
    assert not board.would_enter(C, 10.0, 50)  # cheaper but not more accurate
    assert board.would_enter(C, 15.5, 200)  # more than 5 points better
    assert board.would_enter(C, 10.5, 99)  # better with fewer MACs
    board.add(entry(C, 10.5, 99))
    assert [e.arch for e in board.entries] == [B, C]  # the worst (A) left
    assert len(board) == 2
    assert [e.arch for e in board.candidates(B)] == [C]


def test_board_state_round_trip_through_weights_only_load():
    board = PrioritizedBoard(3, 5.0)
    board.add(entry(A, 10.0, 100))
    board.add(entry(B, 20.0, 90, step=3))
    buf = io.BytesIO()
    torch.save({"board": board.state()}, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    space = build_space(make_cfg().space)
    copy = PrioritizedBoard(3, 5.0)
    copy.load_state(loaded["board"], space)
    assert copy.digest() == board.digest() == board_digest(loaded["board"])
    assert [e.arch for e in copy.entries] == [B, A]
    board.entries[0].probs[0, 0] += 1e-6  # the digest sees the exact bytes
    assert board.digest() != copy.digest()


# -- meta matching network and loss -----------------------------------------------------


def test_meta_network_selects_the_highest_score():
    meta = MetaMatchingNetwork(num_classes=3, slice_images=2)
    diffs = torch.tensor([[[0.1, 0.0, 0.0], [0.0, 0.0, 0.0]],
                          [[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]],
                          [[0.2, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    assert torch.equal(meta(diffs), torch.zeros(3))  # zero init: the first (best) entry wins ties
    assert int(meta(diffs).argmax()) == 0
    with torch.no_grad():
        meta.fc.weight.zero_()
        meta.fc.weight[0, 5] = 1.0  # reads image 1, class 2
        meta.fc.bias.fill_(0.25)
    scores = meta(diffs)
    assert scores.tolist() == pytest.approx([0.25, 0.75, 0.25])
    assert int(scores.argmax()) == 1


def test_cream_loss_formula():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    ce = F.cross_entropy(s, y, reduction="none")
    kd = F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="none", log_target=True).sum(1)
    assert torch.allclose(kd_per_sample(s, t), kd, atol=1e-6)
    m = 0.3
    assert torch.allclose(cream_loss(s, t, y, m), (m * kd + (2 - m) * ce) / 2, atol=1e-6)
    assert torch.allclose(cream_loss(s, None, y, m), ce)
    assert torch.allclose(kd_per_sample(s, s), torch.zeros(5), atol=1e-6)  # no teacher, no pull
    ls = cream_loss(s, None, y, 0.0, label_smoothing=0.1)
    assert torch.allclose(ls, F.cross_entropy(s, y, label_smoothing=0.1, reduction="none"))


def test_frozen_bn_stats_keeps_running_stats():
    bn = torch.nn.BatchNorm2d(3)
    before = bn.running_mean.clone()
    with frozen_bn_stats(bn):
        bn(torch.randn(4, 3, 2, 2) + 5)
    assert torch.equal(bn.running_mean, before) and bn.momentum == 0.1
    bn(torch.randn(4, 3, 2, 2) + 5)
    assert not torch.equal(bn.running_mean, before)


# -- the hooks in a short single-process loop -------------------------------------------------


def run_hooks(cfg, steps: int, state=None, start: int = 0):
    """The real training step in a world of one: loss hook, backward, SGD, after_step."""
    from elastic_nas.data import build_dataset
    from elastic_nas.train.supernet import build_supernet_task

    torch.manual_seed(0)
    task = build_supernet_task(cfg)
    if state is not None:
        task.strategy.load_state_dict(state)
    splits = build_dataset(cfg.data, cfg.space.input_size)
    opt = torch.optim.SGD(task.model.parameters(), lr=0.05, momentum=0.9)
    train_step = TrainStep(task.model, task.strategy)
    for step in range(start, start + steps):
        idx = np.random.default_rng(step).choice(len(splits.train), 16, replace=False)
        x, y, _ = splits.train.get_batch(idx)
        train_step(step, opt, 0.05, Batch(x, y, torch.ones(16)), num_real=16, samples_seen=16 * step)
    return task


def test_hooks_fill_board_distil_and_update_meta(tmp_path):
    cfg = make_cfg("cream.meta_update_every=3", "cream.slice_images=2", f"cream.board_log_dir={tmp_path / 'log'}",
                   "cream.warmup_steps=2", tmp_path=tmp_path / "data")
    task = run_hooks(cfg, 8)
    strategy = task.strategy
    assert isinstance(strategy, CreamStrategy)
    board = strategy.board
    assert len(board) == 3
    assert min(e.step for e in board.entries) >= 2  # nothing entered during the warm-up
    assert strategy.meta_updates >= 1
    assert float(strategy.meta.fc.weight.detach().abs().sum()) > 0  # the look-ahead moved the meta network
    for e in board.entries:  # the stored softmax is the entering arch's own (on the weights after its step)
        assert e.probs.shape == (2, 10) and torch.allclose(e.probs.sum(1), torch.ones(2))
    log = [json.loads(line) for line in (tmp_path / "log" / "rank0.jsonl").read_text().splitlines()]
    assert log[-1]["digest"] == board.digest()

    # Checkpoint state: plain tensors, loads with weights_only, resumes the same board and meta network.
    buf = io.BytesIO()
    torch.save(task.strategy.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    r = run_hooks(cfg, 0, state=state).strategy
    assert r.board.digest() == board.digest()
    assert torch.equal(r.meta.fc.weight, strategy.meta.fc.weight)
    assert r.next_step == 8
    assert json.loads((tmp_path / "log" / "rank0.jsonl").read_text().splitlines()[-1])["event"] == "load"


def test_meta_update_is_deterministic(tmp_path):
    cfg = make_cfg("cream.meta_update_every=4", tmp_path=tmp_path / "data")
    a = run_hooks(cfg, 8).strategy
    b = run_hooks(cfg, 8).strategy
    assert a.board.digest() == b.board.digest()
    assert torch.equal(a.meta.fc.weight, b.meta.fc.weight)


def test_board_results_read_by_retrain(tmp_path):
    from elastic_nas.config import ArchSelectConfig, RetrainConfig
    from elastic_nas.elastic.checkpoint import write_checkpoint
    from elastic_nas.search.board import write_board_results
    from elastic_nas.train.retrain import select_arch

    cfg = make_cfg("cream.meta_update_every=100", "cream.budgets=[1.5, 100]", tmp_path=tmp_path / "data")
    task = run_hooks(cfg, 5)
    write_checkpoint(tmp_path / "ckpt", {"model": task.model.state_dict(), "extra": task.strategy.state_dict()},
                     {"kind": "supernet", "step": 5})
    out = write_board_results(cfg, str(tmp_path / "ckpt"), tmp_path / "board")
    assert set(out) >= {"chosen arch", "best per budget"}
    chosen = json.loads((tmp_path / "board" / "chosen_arch.json").read_text())
    assert chosen["strategy"] == "cream" and 0 <= chosen["accuracy"] <= 100
    per_budget = json.loads((tmp_path / "board" / "best_per_budget.json").read_text())
    assert [e["budget_macs"] for e in per_budget] == [1_500_000, 100_000_000]
    board_archs = {json.dumps(e["arch"]) for e in task.strategy.state_dict()["board"]}
    assert json.dumps(per_budget[1]["arch"]) in board_archs
    space_cfg, arch = select_arch(RetrainConfig(arch=ArchSelectConfig(search=str(tmp_path / "board"))))
    assert space_cfg.name == "cream" and arch == chosen["arch"]


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("cream.op_probs=[1, 1]", "cream.op_probs"),
    ("cream.op_probs=[0, 0, 0, 0, 0, 0]", "cream.op_probs"),
    ("cream.board_size=0", "cream.board_size"),
    ("cream.accuracy_gap=-1", "cream.accuracy_gap"),
    ("cream.meta_update_every=0", "cream.meta_update_every"),
    ("cream.meta_val_images=1000", "cream.meta_val_images"),
    ("cream.eval_images=1000", "cream.eval_images"),
    ("cream.budgets=[0]", "cream.budgets"),
    ("cream.op_sampling=weighted", "cream.op_sampling"),
])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        make_cfg(override)
    assert key in str(e.value)


def test_embedded_job_config_loads():
    cfg = load_config(SupernetConfig, "jobs/supernet-cream.yaml")
    space = build_space(cfg.space)
    lo, hi = space.macs_range()
    assert cfg.strategy == "cream" and lo / 1e6 < min(cfg.cream.budgets) and max(cfg.cream.budgets) * 1e6 >= hi
    assert CreamArchSampler(space, cfg)(0)
