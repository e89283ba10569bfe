"""``strategy: sandwich``: the sandwich rule with in-place distillation (BigNAS, US-Nets).

Each step trains, on the same batch, the largest arch on the labels, then the smallest arch
and ``sandwich.num_random`` random archs on the largest arch's detached soft predictions
(KL to them; in-place distillation: the teacher is the supernet itself, this very step).
Largest and smallest are taken within the configured MACs range (``sampling.flops_min`` /
``flops_max``); the random archs come from the same per-step arch sampler as SPOS, so
every arch of step t is a function of (seed, t). ``sandwich.random_macs_min`` / ``max`` draw
the random archs from another MACs range (the search's band, say) while largest and smallest
stay the sampling range's; ``sampling.method: fair`` draws them strictly fair (FairNAS: every block
takes every op once in each window of the space's op count of draws). ``sandwich.smallest:
deepest`` trains the cheapest op of every block at full depth in the smallest's place, so the later blocks' small ops get an update every step (the
smallest arch uses only each stage's first block); ``deepest_wide`` the smallest kernel at the
widest expansion there (k3e6), so the small kernels train on every channel, and
``deepest_alternate`` the two on alternate steps. ``sandwich.largest: random_kernels`` makes the
teacher the full-depth, widest arch with each block's kernel drawn per step, so the shared later
blocks are not fitted to one kernel's features by the teacher's every-step update.
``sandwich.largest: small_kernels`` makes it that arch with the smallest kernel in every block
(k3e6; under progressive shrinking k7e6 until the kernel opens, as every arch), to see whether the
teacher's kernel sets the kernel the supernet prefers.
``sandwich.largest: prioritized`` makes Cream's prioritized paths the teacher: each step's random
archs inside ``board_macs_min``/``max`` (the search's band, say) offer their batch top-1 on the
labels (all-reduced over the workers) to a board of ``board_size`` archs under Cream's entry rule;
once it is full, each step's teacher is one of them, drawn per step, so the archs the search ends
in learn from the labels and teach the rest (the random_kernels teacher until then; under
progressive shrinking the board opens with the last dimension).
``sandwich.progressive`` is Once-for-All's progressive shrinking on the same step: the kernel,
the depth and the expansion become elastic one after another at given shares of the run's
samples; until then every arch of the step has that dimension at its largest, and an arch the
shrinking makes equal to an earlier one of the step is trained once (before the kernel opens,
the step trains the teacher alone). The samples seen are checkpointed, so a resumed or resized
run shrinks on schedule. The step
accumulates the gradients of all archs before one all-reduce and one optimizer step; the
per-step sample count stays the batch, and the extra archs are extra compute.

It works best with ``space.weight_sharing: entangled``, where every arch updates the same
shared tensors, but runs on independent weights too.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from elastic_nas.errors import ArchError, ConfigError
from elastic_nas.spaces.base import ELASTIC, Arch, SearchSpace
from elastic_nas.train import distributed
from elastic_nas.train.losses import kd_per_sample
from elastic_nas.train.strategies.base import ArchSampler, SupernetStrategy
from elastic_nas.train.strategies.cream_board import BoardEntry, PrioritizedBoard

TEACHER_STREAM = 1000  # the teacher's draws: apart from the random archs' streams 1..num_random
SHRINK_STREAM = 1001  # the ops of blocks that progressive shrinking's full depth adds


def require_in_range(space: SearchSpace, arch_sampler: ArchSampler, archs, setting: str, what: str) -> None:
    """One line naming ``setting`` if any of ``archs`` (a path or the ends of a family) lies outside
    the sampling range."""
    lo, hi = (arch_sampler.lo, arch_sampler.hi) if arch_sampler.constrained else (0.0, float("inf"))
    macs = [space.macs(a) for a in archs]
    if not all(lo <= m <= hi for m in macs):
        raise ConfigError(setting, f"{what} {'-'.join(f'{m / 1e6:.3f}' for m in macs)}M MACs, outside the "
                                   "sampling range")


class SandwichStrategy(SupernetStrategy):
    name = "sandwich"

    def __init__(self, cfg, space: SearchSpace, model, splits):
        super().__init__(cfg, space, model, splits)
        self.largest, self.lowers = self.sandwich_bounds(space, self.arch_sampler, cfg.sandwich.smallest)
        self.full_depth_teacher = self.check_teacher(space, self.arch_sampler, cfg.sandwich.largest)
        self.random_sampler = self.make_random_sampler(cfg, space, self.arch_sampler)
        self.num_random = cfg.sandwich.num_random
        self.distill = cfg.sandwich.distill
        self._teacher: torch.Tensor | None = None  # the largest arch's predictions on this micro-batch
        self.progressive = tuple(cfg.sandwich.progressive)
        prioritized = cfg.sandwich.largest == "prioritized"
        self.board = PrioritizedBoard(cfg.sandwich.board_size, cfg.sandwich.board_gap) if prioritized else None
        self.board_range = self.macs_range(cfg.sandwich.board_macs_min, cfg.sandwich.board_macs_max, self.arch_sampler)
        # (step, the random archs' argmax per micro-batch): set anew as each step draws its archs
        self._predicted: tuple[int, dict[int, list[torch.Tensor]]] = (-1, {})
        # the dimensions whose opening the supernet has been told of: from the run's count at this
        # process's first step (a resumed run's weights already hold earlier openings), then by
        # every step that ends past a share, so a skipped step that crossed one is caught up
        self._opened: tuple[str, ...] | None = None

    @staticmethod
    def sandwich_bounds(space: SearchSpace, arch_sampler, smallest: str = "min_macs") -> tuple[Arch, tuple[Arch, ...]]:
        """The largest arch and the lower path(s), taken in turn step by step."""
        lo = arch_sampler.lo if arch_sampler.constrained else 0.0
        hi = arch_sampler.hi if arch_sampler.constrained else 0.0
        if smallest == "min_macs":
            return space.extreme_arch(True, lo, hi), (space.extreme_arch(False, lo, hi),)
        lowers = []
        for name in ("deepest", "deepest_wide") if smallest == "deepest_alternate" else (smallest,):
            try:
                lower = space.deepest_smallest_arch() if name == "deepest" else space.deepest_wide_arch()
            except ArchError as e:
                raise ConfigError("sandwich.smallest", str(e)) from None
            require_in_range(space, arch_sampler, [lower], "sandwich.smallest", f"the {name} lower path has")
            lowers.append(lower)
        return space.extreme_arch(True, lo, hi), tuple(lowers)

    @staticmethod
    def check_teacher(space: SearchSpace, arch_sampler, largest: str) -> bool:
        """Whether the teacher is a full-depth, widest arch (its kernels drawn per step, or the
        smallest); one line if the space or range cannot."""
        if largest == "max_macs":
            return False
        try:  # MACs are monotone in the kernel: the family's ends
            family = (space.deepest_wide_arch(),) + (() if largest == "small_kernels" else (space.largest_arch(),))
        except ArchError as e:
            raise ConfigError("sandwich.largest", str(e)) from None
        require_in_range(space, arch_sampler, family, "sandwich.largest", f"{largest} teachers reach")
        return True

    @staticmethod
    def macs_range(lo_millions: float, hi_millions: float, arch_sampler: ArchSampler) -> tuple[float, float]:
        """A range set in millions of MACs, the sampling range where a bound is 0."""
        return (lo_millions * 1e6 if lo_millions else arch_sampler.lo,
                hi_millions * 1e6 if hi_millions else arch_sampler.hi)

    def teacher(self, step: int) -> Arch:
        if not self.full_depth_teacher:
            return self.largest
        if self.cfg.sandwich.largest == "small_kernels":
            return self.space.deepest_wide_arch()
        rng = self.arch_sampler.rng(step, stream=TEACHER_STREAM)
        if self.board is not None and self.board.full() and self.board_open():
            return self.board.entries[int(rng.integers(len(self.board)))].arch
        return self.space.deepest_wide_arch(rng)

    def board_open(self) -> bool:
        """The board takes and teaches once every dimension is elastic: shrunk archs are not the band's."""
        return len(self.elastic()) == len(ELASTIC)

    @classmethod
    def make_arch_sampler(cls, cfg, space: SearchSpace) -> ArchSampler:
        # the random archs are a step's draws: with sampling.method fair, num_random of a fair window
        return ArchSampler(space, cfg.sampling, cfg.run.seed, draws_per_step=cfg.sandwich.num_random)

    @staticmethod
    def make_random_sampler(cfg, space: SearchSpace, arch_sampler: ArchSampler) -> ArchSampler:
        """The random archs' sampler: the arch sampler, or one bounded to ``random_macs_*``."""
        lo, hi = cfg.sandwich.random_macs_min, cfg.sandwich.random_macs_max
        if not lo and not hi:
            return arch_sampler
        if arch_sampler.fair:
            raise ConfigError("sandwich.random_macs_min", "sampling.method fair draws over the whole space: "
                                                          "drop random_macs_min/random_macs_max")
        return ArchSampler(space, replace(cfg.sampling, method="uniform", flops_min=lo, flops_max=hi), cfg.run.seed)

    @classmethod
    def check(cls, cfg, space: SearchSpace) -> None:
        super().check(cfg, space)
        arch_sampler = cls.make_arch_sampler(cfg, space)
        cls.sandwich_bounds(space, arch_sampler, cfg.sandwich.smallest)
        cls.check_teacher(space, arch_sampler, cfg.sandwich.largest)
        if cfg.sandwich.largest == "small_kernels" and cfg.sandwich.smallest in ("deepest_wide", "deepest_alternate"):
            raise ConfigError("sandwich.largest", f"small_kernels is the {cfg.sandwich.smallest} lower path's k3e6 arch: "
                                                  "the step would train it twice, once on its own predictions")
        try:
            cls.make_random_sampler(cfg, space, arch_sampler)(0, stream=1)
        except ArchError as e:  # name the setting that asked for the impossible range
            raise ConfigError("sandwich.random_macs_min", str(e)) from None
        if cfg.sandwich.largest == "prioritized":  # a board no random arch can enter would never teach
            lo, hi = cls.macs_range(cfg.sandwich.board_macs_min, cfg.sandwich.board_macs_max, arch_sampler)
            try:
                space.sample_constrained(arch_sampler.rng(0), max(lo, arch_sampler.lo), min(hi, arch_sampler.hi), 1,
                                         arch_sampler.max_tries)
            except ArchError as e:
                raise ConfigError("sandwich.board_macs_min", f"no random arch can enter the board: {e}") from None
        if cfg.sandwich.progressive:
            cls.check_progressive(cfg, space, arch_sampler)

    @staticmethod
    def check_progressive(cfg, space: SearchSpace, arch_sampler: ArchSampler) -> None:
        """One line if the space cannot shrink, or if a MACs range or fair draws would be broken by it."""
        if arch_sampler.constrained or arch_sampler.fair or cfg.sandwich.random_macs_min or cfg.sandwich.random_macs_max:
            raise ConfigError("sandwich.progressive", "progressive shrinking draws over the whole space: drop "
                                                      "sampling.flops_min/flops_max, sampling.method fair and "
                                                      "sandwich.random_macs_min/random_macs_max")
        try:
            space.shrink(space.largest_arch(), (), arch_sampler.rng(0))
        except ArchError as e:
            raise ConfigError("sandwich.progressive", str(e)) from None

    def fingerprint(self) -> dict:
        out = {"num_random": self.num_random, "distill": self.distill}
        if self.random_sampler is not self.arch_sampler:  # named only when set: older checkpoints resume
            out["random_macs"] = [self.cfg.sandwich.random_macs_min, self.cfg.sandwich.random_macs_max]
        if self.cfg.sandwich.smallest != "min_macs":
            out["smallest"] = self.cfg.sandwich.smallest
        if self.full_depth_teacher:
            out["largest"] = self.cfg.sandwich.largest
        if self.board is not None:
            out["board"] = [self.board.size, self.board.accuracy_gap, *self.board_range]
        if self.progressive:
            out["progressive"] = list(self.progressive)
        return {"sandwich": out}

    def archs(self, step: int) -> list[Arch]:
        self._predicted = (step, {})  # a step that was skipped (non-finite gradients) offers nothing
        self._opened = self.opened()
        lower = self.lowers[step % len(self.lowers)]
        archs = [self.teacher(step), lower] + [self.random_sampler(step, stream=i + 1) for i in range(self.num_random)]
        elastic = self.elastic()
        if len(elastic) == len(ELASTIC):
            return archs
        rng = self.arch_sampler.rng(step, stream=SHRINK_STREAM)
        shrunk = [self.space.shrink(a, elastic, rng) for a in archs]
        return [a for i, a in enumerate(shrunk) if a not in shrunk[:i]]  # the teacher stays first

    def opened(self) -> tuple[str, ...]:
        """The dimensions the supernet has been told are open (see ``_opened``)."""
        return self.elastic() if self._opened is None else self._opened

    def elastic(self, samples_seen: int | None = None) -> tuple[str, ...]:
        """The dimensions open after ``samples_seen`` of the run's samples (default: at this step;
        all of them without progressive shrinking)."""
        if not self.progressive:
            return ELASTIC
        done = (self.samples_seen if samples_seen is None else samples_seen) / self.total_samples
        return tuple(dim for dim, share in zip(ELASTIC, self.progressive) if done >= share)

    def after_step(self, step: int, archs: list[Arch], batch, stats) -> None:
        if self.board is not None and self.board_open() and self._predicted[0] == step:
            self.offer(step, archs, batch, self._predicted[1])
        before = self.opened()
        now = self.elastic(self.samples_seen + stats.global_count)
        new = [dim for dim in now if dim not in before]
        for dim in new:
            self.model.open_dimension(dim)
        self._opened = tuple(dim for dim in ELASTIC if dim in now or dim in before)
        if new and distributed.rank() == 0:
            print(f"elastic-nas: progressive shrinking: {', '.join(now)} elastic from step {step + 1}", flush=True)

    def offer(self, step: int, archs: list[Arch], batch, predicted: dict[int, list[torch.Tensor]]) -> None:
        """The step's random archs inside the board's range, by their top-1 on the labels over the
        global batch (one all-reduce; every rank then takes the same decisions)."""
        lo, hi = self.board_range
        macs = {i: self.space.macs(archs[i]) for i in sorted(predicted)}
        offered = [i for i, m in macs.items() if lo <= m <= hi]
        if not offered:
            return
        right = [float(((torch.cat(predicted[i]) == batch.y).float() * batch.weight).sum()) for i in offered]
        *correct, count = distributed.allreduce_sum(right + [float(batch.weight.sum())], batch.y.device)
        for i, c in zip(offered, correct if count > 0 else []):
            if self.board.would_enter(archs[i], 100.0 * c / count, macs[i]):
                self.board.add(BoardEntry(archs[i], 100.0 * c / count, macs[i], step))

    def report(self) -> dict[str, float]:
        # the dimensions open so far: TensorBoard shows where each phase began beside the loss
        out = {"elastic_dims": len(self.elastic())} if self.progressive else {}
        return {**out, "board_archs": len(self.board)} if self.board is not None else out

    def state_dict(self) -> dict | None:
        return {"board": self.board.state()} if self.board is not None else None

    def load_state_dict(self, state: dict) -> None:
        if self.board is not None:
            self.board.load_state(state["board"], self.space)

    def loss(self, forward, x: torch.Tensor, y: torch.Tensor, arch: Arch, step: int, index: int):
        logits = forward(x, arch)
        if index == 0:  # the teacher (the largest arch by default) learns from the labels, teaches the others
            self._teacher = logits.detach()
        if self.board is not None and index >= 2 and self.board_open():  # a random arch may enter the board
            self._predicted[1].setdefault(index, []).append(logits.argmax(1).detach())
        if index == 0 or not self.distill:
            return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing, reduction="none"), logits
        return kd_per_sample(logits, self._teacher), logits


__all__ = ["SandwichStrategy"]
