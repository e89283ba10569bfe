"""``strategy: proxyless`` without Ray: binary gates, the BinaryConnect estimate, the pair
rescaling, expected latency, the latency-driven choice, checkpoints and config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.errors import ConfigError
from elastic_nas.spaces import build_space
from elastic_nas.spaces.latency import build_table
from elastic_nas.train.strategies.proxyless import _pair_grad_, gated_forward, latency_tensor
from elastic_nas.train.supernet import build_supernet_task
from tests.conftest import follows_input, live_bn

BASE = ["strategy=proxyless", "space.name=cream", "space.width_mult=0.25", "space.stem_stride=2",
        "space.max_depths=[1,2,2,2,1]", "space.weight_sharing=entangled", "data.num_train=300", "data.num_test=50",
        "data.search_val_size=60", "proxyless.arch_batch=16", "proxyless.eval_images=20",
        "proxyless.warmup_fraction=0"]


def cfg(tmp_path, *extra: str) -> SupernetConfig:
    return load_config(SupernetConfig, None, [*BASE, f"data.path={tmp_path / 'data'}", *extra])


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    """A latency table of the test space, measured here (a few repeats: the values only need to differ)."""
    path = tmp_path_factory.mktemp("latency") / "table.json"
    space = build_space(load_config(SupernetConfig, None, BASE).space)
    build_table(space, warmup=1, repeats=2, max_copies=2).save(path)
    return path


def test_the_binary_connect_estimate_is_the_gradient_through_the_pairs_softmax():
    alpha = torch.randn(3, 6)
    gate_grad = torch.tensor([0.7, -0.2])
    _pair_grad_(alpha, 1, (4, 2), gate_grad)
    # dL/dalpha_i = sum_j dL/dg_j dp_j/dalpha_i, p the softmax over the pair
    leaf = alpha.detach().clone().requires_grad_()
    (F.softmax(leaf[1, [4, 2]], 0) * gate_grad).sum().backward()
    assert torch.allclose(alpha.grad, leaf.grad, atol=1e-6)
    assert alpha.grad[[0, 2]].abs().sum() == 0 and alpha.grad[1, [0, 1, 3, 5]].abs().sum() == 0


def test_gated_forward_is_the_active_path_and_gives_every_gate_a_gradient(tmp_path):
    task = build_supernet_task(cfg(tmp_path))
    strategy, model = task.strategy, task.model.eval()
    plan = strategy.alpha.plan(np.random.default_rng(3))
    x = torch.randn(4, 3, 32, 32)
    active = tuple(tuple(ops[j][0] for j in range(d)) for (d, _), ops in zip(plan.depths, plan.ops))
    other = tuple(tuple(ops[j][1] for j in range(d)) for (d, _), ops in zip(plan.depths, plan.ops))
    live_bn(model, lambda b: model(b, active), x)
    logits, op_gates, depth_gates = gated_forward(model, x, plan)
    with torch.no_grad():
        want = model(x, active)
        assert follows_input(want) and (want - model(x, other)).abs().max() > 1e-2  # another path differs
    assert torch.allclose(logits, want, atol=1e-5)
    gates = [g for stage in op_gates for g in stage] + [g for g in depth_gates if g is not None]
    assert len(gates) == sum(d for d, _ in plan.depths) + sum(o is not None for _, o in plan.depths)
    grads = torch.autograd.grad(logits.logsumexp(1).sum(), gates)
    assert all(g.shape == (2,) and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_an_alpha_step_moves_only_the_drawn_pairs_and_keeps_the_others_probabilities(tmp_path):
    task = build_supernet_task(cfg(tmp_path))
    strategy = task.strategy
    _, plan = strategy.draws(4)  # the draws the step will make
    before_ops = strategy.alpha.probs()[0].detach().clone()
    before_logits = strategy.alpha.ops.detach().clone()
    strategy.arch_step(4)
    after_ops = strategy.alpha.probs()[0].detach()
    moved = 0
    for s, d in enumerate(strategy.alpha.max_depths):
        for j in range(d):
            row, pair = strategy.alpha.offsets[s] + j, list(plan.ops[s][j])
            others = [c for c in range(6) if c not in pair]
            assert torch.allclose(after_ops[row, others], before_ops[row, others], atol=1e-6)
            moved += int(not torch.equal(strategy.alpha.ops[row].detach(), before_logits[row]))
    assert moved > 0 and strategy.arch_updates == 1


def test_expected_latency_of_a_certain_alpha_is_the_tables_latency_of_its_arch(tmp_path, table_path):
    c = cfg(tmp_path, f"proxyless.latency_table={table_path}", "proxyless.target_ms=2",
            "proxyless.latency_loss=add_linear")
    task = build_supernet_task(c)
    alpha, space = task.strategy.alpha, build_space(c.space)
    with torch.no_grad():  # near one-hot logits: the expectation is one arch's latency
        alpha.ops.mul_(0).add_(torch.randn(alpha.ops.shape) * 100)
        alpha.depths.mul_(0).add_(torch.randn(alpha.depths.shape) * 100)
    from elastic_nas.spaces.latency import LatencyTable

    expected = float(alpha.expected_latency(*latency_tensor(c, space)).detach())
    assert expected == pytest.approx(LatencyTable.load(table_path).predict_ms(space, alpha.derived()), rel=1e-4)


def test_the_latency_term_drives_alpha_under_the_target(tmp_path, table_path):
    """With weights frozen and a target below every arch but the fastest, alpha steps alone
    move the derived arch's predicted latency to the fast end of the space."""
    from elastic_nas.spaces.latency import LatencyTable

    probe = cfg(tmp_path)
    space = build_space(probe.space)
    table = LatencyTable.load(table_path)
    fastest = min(table.predict_ms(space, space.sample(np.random.default_rng(i))) for i in range(300))
    target = fastest * 1.05
    c = cfg(tmp_path, f"proxyless.latency_table={table_path}", f"proxyless.target_ms={target}",
            "proxyless.latency_loss=add_linear", "proxyless.loss_lambda=50", "proxyless.arch_lr=0.05")
    strategy = build_supernet_task(c).strategy
    start = table.predict_ms(space, strategy.alpha.derived())
    for step in range(60):
        strategy.arch_step(step)
    derived = table.predict_ms(space, strategy.alpha.derived())
    assert derived <= target < start, (derived, target, start)


def test_alpha_and_its_adam_round_trip_through_a_checkpoint(tmp_path):
    a = build_supernet_task(cfg(tmp_path)).strategy
    for step in range(3):
        a.arch_step(step)
    state = a.state_dict()
    torch.save(state, tmp_path / "s.pt")
    b = build_supernet_task(cfg(tmp_path)).strategy  # the same supernet, alpha as at the start
    assert b.alpha.digest() != a.alpha.digest()
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert b.alpha.digest() == a.alpha.digest() and b.arch_updates == 3
    a.arch_step(3)
    b.arch_step(3)
    assert b.alpha.digest() == a.alpha.digest()  # Adam's state came back too
    assert a.archs(7) == b.archs(7)


@pytest.mark.parametrize("sets, key", [
    (["space.name=spos"], "strategy"),
    (["proxyless.arch_batch=100"], "proxyless.arch_batch"),
    (["sampling.flops_max=2"], "sampling"),
    (["proxyless.target_ms=3"], "proxyless.target_ms"),
    (["proxyless.latency_table=t.json", "proxyless.target_ms=0.5"], "proxyless.target_ms"),
])
def test_bad_proxyless_settings_fail_before_work(tmp_path, sets, key):
    with pytest.raises(ConfigError) as e:
        cfg(tmp_path, *sets)
    assert key in str(e.value)


def test_a_table_of_another_space_is_refused(tmp_path, table_path):
    c = cfg(tmp_path, f"proxyless.latency_table={table_path}", "proxyless.target_ms=2", "space.width_mult=0.5")
    with pytest.raises(ConfigError, match="another space"):
        latency_tensor(c, build_space(c.space))
