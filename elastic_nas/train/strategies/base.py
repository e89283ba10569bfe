"""The strategy interface: what the training step trains, and what a strategy keeps.

A strategy answers, for every step:

* ``archs(step)`` -- the arch(s) the step trains, the same on every rank: a function of
  (seed, step) only, never of the world size;
* ``loss(forward, x, y, arch, step, index)`` -- per-sample loss and logits of the
  ``index``-th arch of the step (the step back-propagates each one);
* ``grad_params(archs)`` -- the parameters whose gradients are all-reduced;
* ``after_step(step, archs, batch, stats)`` -- called on every rank after the optimizer
  step (it may run collectives: all ranks call it);
* ``samples_seen`` -- the run's samples trained before the step, set by the step from the
  run's own count (which checkpoints carry): a schedule over the run resumes where it was;
* ``ranking_archs(step)`` and ``ranking_loss(forward, x, y, weight, archs)`` -- a term over
  several archs at once (landmark regularisation), back-propagated once per micro-batch after
  the step's archs; none by default;

and ``state_dict``/``load_state_dict`` (extra checkpoint state). :class:`SupernetStrategy`
adds, around the run: ``fingerprint()`` (what a resumed run must agree on), ``check(cfg,
space)`` (fail before work starts) and ``write_results(cfg, checkpoint, run_dir)``
(outputs at the end, on the driver).

:class:`Strategy` itself trains a standalone subnet (``retrain``); supernet strategies
subclass :class:`SupernetStrategy` and register in :mod:`elastic_nas.train.strategies`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elastic_nas.elastic.policy import run_samples
from elastic_nas.errors import ConfigError
from elastic_nas.io import RunFolder
from elastic_nas.spaces.base import Arch, SearchSpace
from elastic_nas.train.strategies.landmarks import LandmarkTerm, load_landmarks


class Strategy:
    """Plain training of a standalone network: one forward per step, cross-entropy."""

    name = "subnet"
    # DDP's find_unused_parameters: on only where the step's archs leave parameters unused
    # (it costs an extra autograd traversal per step).
    leaves_parameters_unused = False
    samples_seen = 0  # the run's samples before the current step (TrainStep sets it)

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0):
        self.model = model
        self.label_smoothing = label_smoothing

    # -- the step ----------------------------------------------------------------------
    def archs(self, step: int) -> list[Arch | None]:
        return [None]

    def loss(self, forward, x: torch.Tensor, y: torch.Tensor, arch: Arch | None, step: int,
             index: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(x) if arch is None else forward(x, arch)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing, reduction="none"), logits

    def grad_params(self, archs: list[Arch | None]) -> list[nn.Parameter]:
        """The union of the archs' parameters, in a fixed order (every rank builds the same buckets)."""
        if any(a is None for a in archs):
            return list(self.model.parameters())
        seen: set[int] = set()
        out = []
        for arch in archs:
            for p in self.model.arch_parameters(arch):
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def after_step(self, step: int, archs: list, batch, stats) -> None:
        pass

    def ranking_archs(self, step: int) -> list[Arch]:
        """The archs of the step's ranking term ([]: none this step)."""
        return []

    def ranking_loss(self, forward, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                     archs: list[Arch]) -> torch.Tensor:  # pragma: no cover - only with ranking_archs
        raise NotImplementedError

    # -- checkpoints and the run ----------------------------------------------------------
    def report(self) -> dict[str, float]:
        """Figures of the strategy's own state for each report (the run's metrics, TensorBoard)."""
        return {}

    def state_dict(self) -> dict | None:
        """Extra checkpoint state (plain containers and tensors), or None."""
        return None

    def load_state_dict(self, state: dict) -> None:
        pass


FAIR_STREAM = 2000  # the fair windows' permutations: apart from every step's own streams


class ArchSampler:
    """The arch of step t, a function of (seed, t) only: every rank agrees without
    communication and the sequence does not depend on the world size.

    Uniform over the space, or, with a MACs range or ``flops_bins`` (``sampling`` config),
    SPOS's bounded sampling over MACs bins (:meth:`SearchSpace.sample_constrained`), or, with
    ``fair``, FairNAS's strict fairness: the draws, ``draws_per_step`` a step (streams 1.. of a
    step; stream 0 is one a step), run in windows of the space's op count in which every block
    takes every op once (:meth:`SearchSpace.sample_fair`). Within one step where the step draws
    that many (FairNAS proper), across consecutive steps where it draws fewer.
    """

    def __init__(self, space: SearchSpace, sampling, seed: int, draws_per_step: int = 1):
        self.space, self.seed = space, seed
        self.fair, self.draws_per_step = sampling.method == "fair", max(1, draws_per_step)
        if self.fair and not space.fair_window:
            raise ConfigError("sampling.method", f"fair: the {type(space).__name__} has no op choices per block")
        self.constrained = sampling.method == "flops_bins" or sampling.flops_min > 0 or sampling.flops_max > 0
        self.num_bins = sampling.num_bins if sampling.method == "flops_bins" else 1
        lo, hi = space.macs_range()
        self.lo = sampling.flops_min * 1e6 if sampling.flops_min else float(lo)
        self.hi = sampling.flops_max * 1e6 if sampling.flops_max else float(hi)
        self.max_tries = sampling.max_tries

    def rng(self, step: int, stream: int = 0) -> np.random.Generator:
        """The generator of step ``step``; ``stream`` > 0 gives independent draws of the same step."""
        return np.random.default_rng([self.seed, step] + ([stream] if stream else []))

    def __call__(self, step: int, stream: int = 0) -> Arch:
        rng = self.rng(step, stream)
        if self.fair:
            window, position = divmod(step * self.draws_per_step + max(stream - 1, 0), self.space.fair_window)
            return self.space.sample_fair(rng, np.random.default_rng([self.seed, window, FAIR_STREAM]), position)
        if self.constrained:
            return self.space.sample_constrained(rng, self.lo, self.hi, self.num_bins, self.max_tries)
        return self.space.sample(rng)


class SupernetStrategy(Strategy):
    """A weight-sharing supernet trained on archs drawn per step (SPOS: one uniform arch)."""

    leaves_parameters_unused = True

    def __init__(self, cfg, space: SearchSpace, model: nn.Module, splits):
        super().__init__(model, cfg.optim.label_smoothing)
        self.cfg, self.space = cfg, space
        self.arch_sampler = self.make_arch_sampler(cfg, space)
        self.landmarks = LandmarkTerm(cfg.landmarks, space, cfg.run.seed) if cfg.landmarks.path else None
        self.total_samples = run_samples(cfg.optim, len(splits.train)) if splits is not None else 0

    @classmethod
    def make_arch_sampler(cls, cfg, space: SearchSpace) -> ArchSampler:
        return ArchSampler(space, cfg.sampling, cfg.run.seed)

    @classmethod
    def check(cls, cfg, space: SearchSpace) -> None:
        """Fail before any work starts (e.g. a MACs range the space cannot meet, a landmarks file
        that cannot rank)."""
        cls.make_arch_sampler(cfg, space)(0)
        if cfg.landmarks.path:
            load_landmarks(cfg.landmarks.path, space)

    def archs(self, step: int) -> list[Arch]:
        return [self.arch_sampler(step)]

    def ranking_archs(self, step: int) -> list[Arch]:
        return self.landmarks.archs(step) if self.landmarks else []

    def ranking_loss(self, forward, x, y, weight, archs):
        return self.landmarks.loss(forward, x, y, weight, archs)

    def fingerprint(self) -> dict[str, Any]:
        """Settings a resumed run must share with its checkpoints, beyond space and data."""
        return {}

    def run_fingerprint(self) -> dict[str, Any]:
        """:meth:`fingerprint` and the landmark term's, which any spos or sandwich run may add."""
        return {**self.fingerprint(), **(self.landmarks.fingerprint() if self.landmarks else {})}

    @classmethod
    def write_results(cls, cfg, checkpoint_path: str, folder: RunFolder) -> dict[str, str]:
        """Outputs written into the run's folder on the driver after training; returns name -> path."""
        return {}


__all__ = ["ArchSampler", "Strategy", "SupernetStrategy"]
