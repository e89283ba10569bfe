"""The divergence guard without Ray: a step with non-finite gradients never reaches the
weights, and enough of them in a row roll the run back to its newest checkpoint at a lower LR."""

from __future__ import annotations

import pytest
import torch

from elastic_nas.elastic.checkpoint import checkpoint_dir_name, write_checkpoint
from elastic_nas.train.state import TrainState
from elastic_nas.train.step import Batch, TrainStep
from elastic_nas.train.supernet import build_supernet_task
from tests.test_strategies import cfg


def state_of(tmp_path, *extra: str) -> TrainState:
    c = cfg(tmp_path, "strategy=spos", *extra)
    torch.manual_seed(0)
    return TrainState(build_supernet_task(c), c.optim, c.elastic, seed=0)


def batch(nan: bool = False, n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=g)
    if nan:
        x[0, 0, 0, 0] = float("nan")  # one poisoned pixel poisons the whole batch's gradients
    return Batch(x, torch.randint(0, 10, (n,), generator=g), torch.ones(n))


def snapshot(state: TrainState) -> dict[str, torch.Tensor]:
    out = {f"p:{k}": v.detach().clone() for k, v in state.model.state_dict().items()}
    for i, s in enumerate(state.optimizer.state.values()):
        out.update({f"o{i}:{k}": v.clone() for k, v in s.items() if torch.is_tensor(v)})
    return out


def test_a_non_finite_step_changes_no_weight_buffer_or_momentum(tmp_path):
    state = state_of(tmp_path)
    step = TrainStep(state.model, state.task.strategy)
    assert not step(0, state.optimizer, 0.1, batch(), num_real=8).skipped  # momentum buffers exist now
    before = snapshot(state)
    stats = step(1, state.optimizer, 0.1, batch(nan=True), num_real=8)
    assert stats.skipped
    after = snapshot(state)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed  # BN running stats included: the poisoned forward is undone
    assert all(p.grad is None for p in state.model.parameters())
    assert not step(2, state.optimizer, 0.1, batch(), num_real=8).skipped  # and training goes on
    assert all(torch.isfinite(v).all() for v in state.model.state_dict().values() if v.is_floating_point())


def test_bad_steps_in_a_row_roll_back_to_the_newest_checkpoint_at_a_lower_lr(tmp_path):
    state = state_of(tmp_path, "optim.rollback_after_bad_steps=3", "optim.rollback_lr_scale=0.25",
                     "optim.max_rollbacks=1")
    run = tmp_path / "run"
    for _ in range(5):
        state.step += 1  # five good steps
    write_checkpoint(run / checkpoint_dir_name(state.step), state.state_dict(), state.meta("periodic", 1))
    good = {k: v.clone() for k, v in state.model.state_dict().items()}
    lr = state.lr()
    with torch.no_grad():
        for p in state.model.parameters():
            p.add_(1.0)  # training went on past the checkpoint
    state.step += 4
    assert [state.rollback_due(s) for s in (True, False, True, True, True)] == [False, False, False, False, True]
    loaded = state.roll_back(None, str(run))
    assert loaded is not None and state.step == 5
    assert all(torch.equal(v, good[k]) for k, v in state.model.state_dict().items())
    assert state.lr() == pytest.approx(0.25 * lr)
    assert (state.skipped_steps, state.rollbacks, state.bad_in_a_row) == (4, 1, 0)
    # The scale and the counts travel with the next checkpoint.
    saved = state.state_dict()
    assert (saved["lr_scale"], saved["skipped_steps"], saved["rollbacks"]) == (0.25, 4, 1)
    # One rollback allowed: the next streak ends the run with a clear error.
    assert [state.rollback_due(True) for _ in range(3)] == [False, False, True]
    diverged = r"training diverged: 3 steps in a row .*after 1 rollback\(s\) \(optim\.max_rollbacks\)"
    with pytest.raises(FloatingPointError, match=diverged):
        state.roll_back(None, str(run))


def test_without_a_checkpoint_the_rollback_goes_on_from_here_at_the_lower_lr(tmp_path):
    state = state_of(tmp_path, "optim.rollback_after_bad_steps=1")
    state.step = 7
    lr = state.lr()
    assert state.rollback_due(True)
    assert state.roll_back(None, str(tmp_path / "no-run")) is None
    assert state.step == 7 and state.lr() == pytest.approx(0.5 * lr)


def test_zero_turns_the_rollback_off_but_still_counts_skipped_steps(tmp_path):
    state = state_of(tmp_path, "optim.rollback_after_bad_steps=0")
    assert not any(state.rollback_due(True) for _ in range(10))
    assert state.skipped_steps == 10
