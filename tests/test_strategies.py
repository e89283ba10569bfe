"""Supernet strategies without Ray: the registry, the sandwich rule's archs and losses, and
one real training step of each strategy on an entangled supernet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elastic_nas.config import SupernetConfig, load_config
from elastic_nas.errors import ArchError, ConfigError
from elastic_nas.spaces import build_space
from elastic_nas.train.step import Batch, TrainStep
from elastic_nas.train.strategies import STRATEGIES, SandwichStrategy
from elastic_nas.train.supernet import build_supernet_task

BASE = ["space.name=cream", "space.width_mult=0.25", "space.stem_stride=2", "space.max_depths=[1,2,2,2,1]",
        "space.weight_sharing=entangled", "data.num_train=300", "data.num_test=50", "data.search_val_size=60",
        "cream.meta_val_images=20", "cream.eval_images=20", "cream.warmup_epochs=0", "proxyless.arch_batch=16",
        "proxyless.eval_images=20"]


def cfg(tmp_path, *extra: str) -> SupernetConfig:
    return load_config(SupernetConfig, None, [*BASE, f"data.path={tmp_path}", *extra])


def test_every_configured_strategy_is_registered():
    from typing import get_args, get_type_hints

    assert set(get_args(get_type_hints(SupernetConfig)["strategy"])) == set(STRATEGIES)


def test_sandwich_trains_largest_smallest_and_seeded_random_archs_within_the_macs_range(tmp_path):
    space = build_space(cfg(tmp_path).space)
    lo, hi = space.macs_range()
    bounded = cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=3",
                  f"sampling.flops_min={(lo + 0.2 * (hi - lo)) / 1e6}", f"sampling.flops_max={(lo + 0.7 * (hi - lo)) / 1e6}")
    task = build_supernet_task(bounded)
    strategy = task.strategy
    archs = strategy.archs(5)
    assert len(archs) == 5 and archs == strategy.archs(5) and archs[2:] != strategy.archs(6)[2:]
    macs = [space.macs(a) for a in archs]
    assert all(lo + 0.2 * (hi - lo) - 1 <= m <= lo + 0.7 * (hi - lo) + 1 for m in macs), macs
    assert max(macs) == macs[0] and min(macs) == macs[1]  # the sandwich's two slices
    with pytest.raises(ArchError):
        space.extreme_arch(True, 0, lo * 0.5)


def test_sandwich_draws_its_random_archs_from_their_own_macs_range(tmp_path):
    """``sandwich.random_macs_*`` (the search's band) bounds the random archs only: largest and
    smallest stay the whole space's, and a resumed run without the setting keeps its fingerprint."""
    space = build_space(cfg(tmp_path).space)
    lo, hi = space.macs_range()
    band = (lo + 0.4 * (hi - lo), lo + 0.5 * (hi - lo))
    plain = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=2")).strategy
    banded = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=2",
                                     f"sandwich.random_macs_min={band[0] / 1e6}",
                                     f"sandwich.random_macs_max={band[1] / 1e6}")).strategy
    assert plain.fingerprint() == {"sandwich": {"num_random": 2, "distill": True}}
    assert banded.fingerprint()["sandwich"]["random_macs"] == [band[0] / 1e6, band[1] / 1e6]
    for step in range(20):
        archs = banded.archs(step)
        assert archs[:2] == plain.archs(step)[:2] and archs == banded.archs(step)
        assert space.macs(archs[0]) == hi and space.macs(archs[1]) == lo
        assert all(band[0] - 1 <= space.macs(a) <= band[1] + 1 for a in archs[2:])
    with pytest.raises(ConfigError, match="sandwich.random_macs_min.*no architecture"):  # before any work starts
        SandwichStrategy.check(cfg(tmp_path, "strategy=sandwich", f"sandwich.random_macs_min={2 * hi / 1e6}"), space)


def test_fair_sampling_gives_every_block_every_op_once_a_window(tmp_path):
    """``sampling.method: fair`` (FairNAS): six random archs of a sandwich step take each of the six
    ops once in every block they reach; SPOS's one arch a step does so over six consecutive steps."""
    fair = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=6",
                                   "sampling.method=fair")).strategy
    for step in (0, 7):
        randoms = fair.archs(step)[2:]
        assert randoms == fair.archs(step)[2:] and len(randoms) == 6
        for stage in range(5):
            first = [a[stage][0] for a in randoms]  # every arch has a stage's first block
            assert sorted(first) == list(range(6)), (step, stage, first)
            second = [a[stage][1] for a in randoms if len(a[stage]) > 1]  # where the depth reaches it
            assert len(second) == len(set(second))
    assert fair.archs(0)[2:] != fair.archs(1)[2:]
    spos_task = build_supernet_task(cfg(tmp_path, "strategy=spos", "sampling.method=fair"))
    assert spos_task.fingerprint["sampling"] == "fair"  # a resume must draw the same archs
    assert "sampling" not in build_supernet_task(cfg(tmp_path, "strategy=spos")).fingerprint
    spos = spos_task.strategy
    for window in (0, 3):
        archs = [spos.archs(6 * window + i)[0] for i in range(6)]
        assert all(sorted(a[s][0] for a in archs) == list(range(6)) for s in range(5)), archs
    with pytest.raises(ConfigError, match="sampling.method"):
        cfg(tmp_path, "sampling.method=fair", "sampling.flops_max=5")
    with pytest.raises(ConfigError, match="sampling.method.*cream"):
        cfg(tmp_path, "strategy=cream", "sampling.method=fair")
    with pytest.raises(ConfigError, match="sandwich.random_macs_min"):
        SandwichStrategy.check(cfg(tmp_path, "strategy=sandwich", "sampling.method=fair",
                                   "sandwich.random_macs_max=5"), fair.space)


def test_fair_sampling_in_the_spos_space_permutes_each_blocks_ops():
    from elastic_nas.config import SamplingConfig, SpaceConfig
    from elastic_nas.train.strategies.base import ArchSampler

    space = build_space(SpaceConfig(name="spos", width_mult=0.25))
    sampler = ArchSampler(space, SamplingConfig(method="fair"), seed=3)
    archs = [sampler(t) for t in range(8)]
    for window in (archs[:4], archs[4:]):
        assert all(sorted(ops) == [0, 1, 2, 3] for ops in zip(*window))
    assert archs[:4] != archs[4:] and archs == [ArchSampler(space, SamplingConfig(method="fair"), seed=3)(t)
                                                for t in range(8)]


def test_sandwich_deepest_smallest_trains_the_cheapest_op_of_every_block(tmp_path):
    """``sandwich.smallest: deepest``: the lower path is every stage at its deepest with each block's
    cheapest op, not the one-block smallest arch; named in the fingerprint only when set (older
    checkpoints resume), and refused before any work where the sampling range excludes it."""
    space = build_space(cfg(tmp_path).space)
    lo, hi = space.macs_range()
    deep = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=1",
                                   "sandwich.smallest=deepest")).strategy
    lower = deep.archs(3)[1]
    assert [len(ops) for ops in lower] == list(space.max_depths)
    assert lower == tuple(tuple(0 for _ in ops) for ops in lower)  # op 0: kernel 3, expansion 4, the cheapest
    assert lo < space.macs(lower) < hi and deep.archs(3)[0] == space.largest_arch()
    assert deep.fingerprint() == {"sandwich": {"num_random": 1, "distill": True, "smallest": "deepest"}}
    with pytest.raises(ConfigError, match="sandwich.smallest.*outside the sampling range"):
        SandwichStrategy.check(cfg(tmp_path, "strategy=sandwich", "sandwich.smallest=deepest",
                                   f"sampling.flops_min={(space.macs(lower) + 1000) / 1e6}"), space)
    spos = build_space(load_config(SupernetConfig, None, [f"data.path={tmp_path}"]).space)
    assert spos.deepest_smallest_arch() == spos.smallest_arch()  # one depth: the smallest arch


def test_sandwich_deepest_wide_runs_the_small_kernel_on_every_channel(tmp_path):
    """``sandwich.smallest: deepest_wide``: every block at full depth with kernel 3 at expansion 6
    (``deepest_alternate``: k3e4 and k3e6 on alternate steps); refused before any work in a space
    without those choices."""
    from elastic_nas.spaces.cream import OPS

    space = build_space(cfg(tmp_path).space)
    wide = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=1",
                                   "sandwich.smallest=deepest_wide")).strategy
    lower = wide.archs(3)[1]
    assert [len(ops) for ops in lower] == list(space.max_depths)
    assert {OPS[op] for ops in lower for op in ops} == {(3, 6)}
    assert space.macs(space.deepest_smallest_arch()) < space.macs(lower) < space.macs(space.largest_arch())
    assert wide.fingerprint()["sandwich"]["smallest"] == "deepest_wide"
    alternate = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=1",
                                        "sandwich.smallest=deepest_alternate")).strategy
    assert [alternate.archs(step)[1] for step in range(4)] == [space.deepest_smallest_arch(), lower] * 2
    spos_cfg = load_config(SupernetConfig, None, [f"data.path={tmp_path}", "strategy=sandwich",
                                                  "sandwich.smallest=deepest_wide"])
    with pytest.raises(ConfigError, match="sandwich.smallest.*no kernel and expansion choices"):
        SandwichStrategy.check(spos_cfg, build_space(spos_cfg.space))


def test_sandwich_random_kernel_teacher_is_full_width_and_agrees_across_ranks(tmp_path):
    """``sandwich.largest: random_kernels``: the teacher is every block at full depth and expansion 6,
    its kernels drawn per step as a function of (seed, step) (every rank builds the same teacher);
    refused before any work in a space without those choices or where the range cuts the family."""
    from elastic_nas.spaces.cream import OPS

    space = build_space(cfg(tmp_path).space)
    sets = ("strategy=sandwich", "sandwich.num_random=1", "sandwich.largest=random_kernels")
    strategy = build_supernet_task(cfg(tmp_path, *sets)).strategy
    again = build_supernet_task(cfg(tmp_path, *sets)).strategy
    teachers = [strategy.archs(step)[0] for step in range(8)]
    assert teachers == [again.archs(step)[0] for step in range(8)]
    assert all([len(ops) for ops in t] == list(space.max_depths) for t in teachers)
    assert {OPS[op][1] for t in teachers for ops in t for op in ops} == {6}
    assert {OPS[op][0] for t in teachers for ops in t for op in ops} == {3, 5, 7}
    assert len(set(teachers)) == 8
    assert strategy.fingerprint()["sandwich"]["largest"] == "random_kernels"
    assert "largest" not in build_supernet_task(cfg(tmp_path, "strategy=sandwich")).strategy.fingerprint()["sandwich"]
    with pytest.raises(ConfigError, match="sandwich.largest.*outside the sampling range"):
        SandwichStrategy.check(cfg(tmp_path, *sets, f"sampling.flops_max={(space.macs(space.largest_arch()) - 1000) / 1e6}"),
                               space)
    spos_cfg = load_config(SupernetConfig, None, [f"data.path={tmp_path}", "strategy=sandwich",
                                                  "sandwich.largest=random_kernels"])
    with pytest.raises(ConfigError, match="sandwich.largest.*no kernel and expansion choices"):
        SandwichStrategy.check(spos_cfg, build_space(spos_cfg.space))
    # small_kernels: the same family's k3e6 member, every step
    small = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.largest=small_kernels")).strategy
    assert [small.archs(step)[0] for step in range(3)] == [space.deepest_wide_arch()] * 3
    assert small.fingerprint()["sandwich"]["largest"] == "small_kernels"
    with pytest.raises(ConfigError, match="sandwich.largest.*twice"):  # the k3e6 lower path is the same arch
        SandwichStrategy.check(cfg(tmp_path, "strategy=sandwich", "sandwich.largest=small_kernels",
                                   "sandwich.smallest=deepest_wide"), space)


def test_sandwich_prioritized_teacher_is_drawn_from_the_board_of_the_best_random_archs(tmp_path):
    """``sandwich.largest: prioritized``: the step's random archs inside the board's MACs range enter
    by their top-1 on the labels (Cream's rule); until the board is full the teacher is the drawn
    kernels' one, then one of the board's archs a step; the board goes into checkpoints, so a
    resumed run draws the same teachers; a range no random arch can reach is refused up front."""
    space = build_space(cfg(tmp_path).space)
    lo, hi = space.macs_range()
    band = (lo + 0.2 * (hi - lo), lo + 0.8 * (hi - lo))
    sets = ("strategy=sandwich", "sandwich.num_random=2", "sandwich.largest=prioritized", "sandwich.board_size=3",
            f"sandwich.board_macs_min={band[0] / 1e6}", f"sandwich.board_macs_max={band[1] / 1e6}")
    task = build_supernet_task(cfg(tmp_path, *sets))
    strategy = task.strategy
    assert strategy.fingerprint()["sandwich"]["board"] == [3, 5.0, *band] and strategy.report() == {"board_archs": 0}
    optimizer = torch.optim.SGD(task.model.parameters(), lr=0.05)
    step, offered = 0, set()
    while not strategy.board.full():
        archs = strategy.archs(step)
        assert archs[0] == space.deepest_wide_arch(strategy.arch_sampler.rng(step, stream=1000))
        offered |= {a for a in archs[2:] if band[0] <= space.macs(a) <= band[1]}
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        TrainStep(task.model, strategy)(step, optimizer, 0.05, Batch(x, y, torch.ones(8)), num_real=8)
        step += 1
        assert step < 50
    entries = strategy.board.entries
    assert {e.arch for e in entries} <= offered and all(band[0] <= e.macs <= band[1] for e in entries)
    assert all(0 <= e.accuracy <= 100 and e.images is None for e in entries)
    teachers = [strategy.archs(t)[0] for t in range(step, step + 12)]
    assert set(teachers) <= {e.arch for e in entries} and len(set(teachers)) > 1
    resumed = build_supernet_task(cfg(tmp_path, *sets)).strategy
    resumed.load_state_dict(strategy.state_dict())
    assert [resumed.archs(t)[0] for t in range(step, step + 12)] == teachers
    assert resumed.report() == {"board_archs": 3}
    empty = f"sandwich.board_macs_max={(lo - 1000) / 1e6}"
    with pytest.raises(ConfigError, match="sandwich.board_macs_min.*no random arch can enter the board"):
        SandwichStrategy.check(cfg(tmp_path, *sets[:-2], empty), space)


def test_sandwich_distils_the_others_from_the_largest_detached(tmp_path):
    task = build_supernet_task(cfg(tmp_path, "strategy=sandwich", "sandwich.num_random=1"))
    strategy, model = task.strategy, task.model
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    archs = strategy.archs(0)
    loss0, logits0 = strategy.loss(model, x, y, archs[0], 0, 0)
    logits0.retain_grad()
    assert torch.allclose(loss0, F.cross_entropy(logits0, y, label_smoothing=0.1, reduction="none"))
    loss1, logits1 = strategy.loss(model, x, y, archs[1], 0, 1)
    soft = F.softmax(logits0.detach(), 1)
    assert torch.allclose(loss1, (soft * (soft.log() - F.log_softmax(logits1, 1))).sum(1), atol=1e-6)
    model.zero_grad(set_to_none=True)
    loss1.sum().backward()
    # The child's loss moves the shared weights only through the child: no gradient reaches
    # the teacher's logits, although they carry a graph.
    assert logits0.grad_fn is not None and logits0.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_progressive_shrinking_opens_kernel_then_depth_then_expansion_on_schedule(tmp_path, capsys):
    """``sandwich.progressive``: the teacher alone first, then every arch at full depth and expansion 6
    (kernels drawn), then at expansion 6 (depths drawn), then the sandwich rule itself; the schedule
    follows the run's own samples seen, which the step hands it (a resumed run's, from its
    checkpoint), and every rank draws the same archs."""
    from elastic_nas.spaces.cream import OPS
    from elastic_nas.train.step import StepStats

    sets = ("strategy=sandwich", "sandwich.num_random=2", "sandwich.smallest=deepest", "sandwich.largest=random_kernels",
            "optim.epochs=1")
    space = build_space(cfg(tmp_path).space)
    shrinking = build_supernet_task(cfg(tmp_path, *sets, "sandwich.progressive=[0.2,0.4,0.6]")).strategy
    plain = build_supernet_task(cfg(tmp_path, *sets)).strategy
    assert shrinking.fingerprint()["sandwich"]["progressive"] == [0.2, 0.4, 0.6]
    assert "progressive" not in plain.fingerprint()["sandwich"] and plain.state_dict() is None
    total = shrinking.total_samples
    assert [shrinking.archs(step) for step in range(3)] == [[space.largest_arch()]] * 3
    assert shrinking.report() == {"elastic_dims": 0} and plain.report() == {}  # a report's TensorBoard figure

    def ops(archs):
        return [OPS[op] for arch in archs for stage in arch for op in stage]

    def advance(samples: int) -> None:  # a step's hook, then the run's count moves on
        shrinking.after_step(0, [], None, StepStats(global_count=samples))
        shrinking.samples_seen += samples

    advance(int(0.2 * total))
    kernel_phase = [a for step in range(10) for a in shrinking.archs(step)]
    assert all([len(stage) for stage in arch] == list(space.max_depths) for arch in kernel_phase)
    assert {e for _, e in ops(kernel_phase)} == {6} and {k for k, _ in ops(kernel_phase)} == {3, 5, 7}
    assert shrinking.archs(3)[1] == space.deepest_wide_arch()  # the deepest lower path, k3e4 -> k3e6
    advance(int(0.2 * total))
    depth_phase = [a for step in range(10) for a in shrinking.archs(step)]
    assert {e for _, e in ops(depth_phase)} == {6}
    assert any([len(stage) for stage in arch] != list(space.max_depths) for arch in depth_phase)
    resumed = build_supernet_task(cfg(tmp_path, *sets, "sandwich.progressive=[0.2,0.4,0.6]"))
    assert resumed.strategy.state_dict() is None  # nothing of its own to checkpoint: the run's count is the schedule's
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    TrainStep(resumed.model, resumed.strategy)(7, torch.optim.SGD(resumed.model.parameters(), lr=0.0), 0.0,
                                               Batch(x, y, torch.ones(4)), num_real=4, samples_seen=shrinking.samples_seen)
    resumed = resumed.strategy
    assert resumed.elastic() == ("kernel", "depth") and resumed.archs(7) == shrinking.archs(7)
    assert resumed.report() == {"elastic_dims": 2}
    advance(int(0.2 * total))
    assert all(shrinking.archs(step) == plain.archs(step) for step in range(10))
    printed = capsys.readouterr().out
    assert "progressive shrinking: kernel, depth, expansion elastic from step 1" in printed
    with pytest.raises(ConfigError, match="sandwich.progressive"):
        cfg(tmp_path, *sets, "sandwich.progressive=[0.4,0.2,0.6]")
    bounded = cfg(tmp_path, *sets, "sandwich.progressive=[0.2,0.4,0.6]", "sampling.flops_max=100")
    with pytest.raises(ConfigError, match="sandwich.progressive.*draws over the whole space"):
        SandwichStrategy.check(bounded, space)
    spos_cfg = load_config(SupernetConfig, None, [f"data.path={tmp_path}", "strategy=sandwich",
                                                  "sandwich.progressive=[0.2,0.4,0.6]"])
    with pytest.raises(ConfigError, match="sandwich.progressive.*no elastic kernel"):
        SandwichStrategy.check(spos_cfg, build_space(spos_cfg.space))


def test_own_kernels_start_from_the_trained_largest_kernel_as_it_opens(tmp_path):
    """``space.own_kernel_stages`` under progressive shrinking: k = 5 and 3 run unused while only the
    7x7 kernel trains, so as the kernel opens they start from its trained centre, as copies that
    then train apart from it; once, even where the step that crossed the share was skipped (non-finite
    gradients: no hook), and not again later or in a run resumed past it."""
    from elastic_nas.spaces.layers import centre_kernel
    from elastic_nas.train.step import StepStats

    sets = ("strategy=sandwich", "sandwich.smallest=deepest", "sandwich.largest=random_kernels",
            "sandwich.progressive=[0.2,0.4,0.6]", "space.own_kernel_stages=[0]", "optim.epochs=1")
    task = build_supernet_task(cfg(tmp_path, *sets))
    own, shared = task.model.stages[0][0], task.model.stages[1][0]
    strategy, tenth = task.strategy, int(0.1 * task.strategy.total_samples) + 1

    def centred() -> list[bool]:
        return [torch.equal(own.kernel(k), centre_kernel(own.conv_dw.weight, k)) for k in (3, 5)]

    assert shared.own_kernels is None and centred() == [True, True]  # at first, the entangled block
    with torch.no_grad():
        own.conv_dw.weight.add_(1.0)  # what the 7x7 kernel's training alone did
    for step in range(2):  # step 1 crosses the kernel's share and is skipped: no after_step
        strategy.archs(step)
        if step == 0:
            strategy.after_step(step, [], None, StepStats(global_count=tenth))
        strategy.samples_seen += tenth
    assert centred() == [False, False]
    strategy.archs(2)
    strategy.after_step(2, [], None, StepStats(global_count=tenth))  # the next step catches up
    assert centred() == [True, True]
    with torch.no_grad():
        own.conv_dw.weight.add_(1.0)
    for step in range(3, 9):  # later shares open depth and expansion: the kernels stay apart
        strategy.samples_seen += tenth
        strategy.archs(step)
        strategy.after_step(step, [], None, StepStats(global_count=tenth))
    assert strategy.elastic() == ("kernel", "depth", "expansion") and centred() == [False, False]
    resumed = build_supernet_task(cfg(tmp_path, *sets))
    resumed.model.load_state_dict(task.model.state_dict())
    resumed.strategy.samples_seen = 3 * tenth  # a checkpoint past the kernel's share
    resumed.strategy.archs(3)
    resumed.strategy.after_step(3, [], None, StepStats(global_count=tenth))
    own = resumed.model.stages[0][0]
    assert centred() == [False, False]


def test_a_reports_metrics_carry_the_strategys_own_figures(tmp_path):
    """What a report writes (the run's metrics, TensorBoard's ``train/*`` scalars) includes the
    strategy's ``report()``: under progressive shrinking, how many dimensions are elastic."""
    from types import SimpleNamespace

    from elastic_nas.train.progress import Progress

    sets = ("strategy=sandwich", "sandwich.smallest=deepest", "sandwich.progressive=[0.2,0.4,0.6]")
    task = build_supernet_task(cfg(tmp_path, *sets))
    sampler = SimpleNamespace(epoch=0, cursor=0, num_samples=1)
    state = SimpleNamespace(task=task, step=1, sampler=sampler, samples_seen=0, skipped_steps=0)
    m = Progress(0, "", 1.0).metrics(state, 1, 64, 0.1, torch.device("cpu"))
    assert m["elastic_dims"] == 0 and m["step"] == 1


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_one_real_step_of_every_strategy(tmp_path, strategy):
    task = build_supernet_task(cfg(tmp_path, f"strategy={strategy}", "cream.warmup_steps=0"))
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    optimizer = torch.optim.SGD(task.model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    stats = TrainStep(task.model, task.strategy)(0, optimizer, 0.1, Batch(x, y, torch.ones(8)), num_real=8)
    assert stats.count == 8 and stats.loss_sum > 0
    moved = [n for n, p in task.model.named_parameters() if not torch.equal(p, before[n])]
    assert moved  # the step trained the supernet
    if strategy == "sandwich":
        assert isinstance(task.strategy, SandwichStrategy) and len(task.strategy.archs(0)) == 4


def write_landmarks(path, rows) -> str:
    path.write_text(json.dumps({"landmarks": rows}))
    return str(path)


def test_landmarks_draw_ordered_pairs_per_step_and_bad_files_are_one_line(tmp_path):
    """The pairs are [better, worse] by score, a function of (seed, step) on every ``every``-th
    step; the fingerprint names the file's content; a file that cannot rank is a ConfigError
    before work starts, and so are landmarks with a strategy that has none."""
    space = build_space(cfg(tmp_path).space)
    rng = np.random.default_rng(0)
    archs = [space.to_json(space.sample(rng)) for _ in range(4)]
    path = write_landmarks(tmp_path / "lm.json", [{"arch": a, "score": s} for a, s in zip(archs, (70, 60, 80, 60))])
    task = build_supernet_task(cfg(tmp_path, "strategy=sandwich", f"landmarks.path={path}", "landmarks.every=2"))
    term = task.strategy.landmarks
    score = {json.dumps(a): s for a, s in zip(archs, (70, 60, 80, 60))}
    pairs = [task.strategy.ranking_archs(step) for step in range(40)]
    assert all(p == [] for p in pairs[1::2])
    assert all(score[json.dumps(space.to_json(b))] > score[json.dumps(space.to_json(w))] for b, w in pairs[::2])
    assert len({str(p) for p in pairs[::2]}) > 2  # several of the 5 ordered pairs (the tie is none)
    again = build_supernet_task(cfg(tmp_path, "strategy=sandwich", f"landmarks.path={path}", "landmarks.every=2"))
    assert [again.strategy.ranking_archs(s) for s in range(40)] == pairs
    assert task.fingerprint["landmarks"] == {"digest": term.digest, "weight": 1.0, "every": 2}
    assert "landmarks" not in build_supernet_task(cfg(tmp_path, "strategy=sandwich")).fingerprint
    other = write_landmarks(tmp_path / "other.json", [{"arch": a, "score": s} for a, s in zip(archs, (70, 60, 80, 61))])
    assert build_supernet_task(cfg(tmp_path, "strategy=sandwich", f"landmarks.path={other}")).strategy.landmarks.digest \
        != term.digest  # another score: a resume cannot switch files silently
    stats = TrainStep(task.model, task.strategy)(0, torch.optim.SGD(task.model.parameters(), lr=0.1), 0.1,
                                                 Batch(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)),
                                                       torch.ones(8)), num_real=8)
    assert stats.count == 8 and not stats.skipped
    bad = {
        "missing.json": None,
        "one.json": [{"arch": archs[0], "score": 70}],
        "ties.json": [{"arch": archs[0], "score": 70}, {"arch": archs[1], "score": 70}],
        "noscore.json": [{"arch": archs[0]}, {"arch": archs[1], "score": 70}],
        "arch.json": [{"arch": [[9]], "score": 60}, {"arch": archs[1], "score": 70}],
    }
    for name, rows in bad.items():
        bad_path = tmp_path / name if rows is None else write_landmarks(tmp_path / name, rows)
        with pytest.raises(ConfigError, match="landmarks.path"):
            build_supernet_task(cfg(tmp_path, "strategy=spos", f"landmarks.path={bad_path}"))
    with pytest.raises(ConfigError, match="landmarks.path"):
        cfg(tmp_path, "strategy=cream", f"landmarks.path={path}")
