"""The search-space interface shared by every space.

An architecture (``Arch``) is a plain value: nested tuples of ints, hashable, and written
to JSON as nested lists. A :class:`SearchSpace` validates, samples, mutates, crosses and
costs architectures; it builds the weight-sharing :class:`Supernet` and standalone subnets.

All randomness comes from one explicit ``numpy.random.Generator`` passed by the caller:
the same seed gives the same sequence of architectures.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ArchError
from elastic_nas.spaces.latency import LatencyParts
from elastic_nas.spaces.layers import centre_kernel

# Nested tuples of ints, e.g. (2, 1, 0, ...) or ((3,), (3, 3), ...).
Arch = tuple[Union[int, "Arch"], ...]
# What progressive shrinking opens, in its order (Once-for-All): kernel, then depth, then expansion.
ELASTIC = ("kernel", "depth", "expansion")


class Supernet(nn.Module):
    """A weight-sharing network. It holds no arch state: the arch is an argument."""

    def forward(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def arch_modules(self, arch: Arch) -> list[nn.Module]:  # pragma: no cover - abstract
        """The modules the arch runs (stem, chosen blocks, head)."""
        raise NotImplementedError

    def open_dimension(self, dim: str) -> None:
        """Called on every rank once a run's progressive shrinking makes ``dim`` (kernel, depth,
        expansion) elastic (not again on a resume past it: the checkpoint holds what it did); a
        supernet whose smaller choices hold weights of their own starts them here from the
        trained largest one. Default: nothing."""

    def arch_parameters(self, arch: Arch) -> list[nn.Parameter]:
        """The parameters of the modules the arch runs, each once, in a fixed order.

        A sliced or entangled layer's whole tensor is returned: only the slice the arch
        uses gets a non-zero gradient, but the tensor is one parameter. Likewise an
        entangled block's kernel-transform matrices come with it whatever its kernel size.
        """
        seen: set[int] = set()
        params = []
        for module in self.arch_modules(arch):
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params


class SearchSpace(abc.ABC):
    """Base class: architecture algebra + cost model + network builders."""

    name: str

    def __init__(self, cfg: SpaceConfig):
        self.cfg = cfg

    # -- architectures -------------------------------------------------------
    @abc.abstractmethod
    def validate(self, arch: Any) -> Arch:
        """Return the normalised, hashable arch; raise :class:`ArchError` if it is not in the space."""

    def to_json(self, arch: Any) -> list:
        return arch_to_json(self.validate(arch))

    def canonical(self, arch: Any) -> Arch:
        """The cheapest arch that computes the same functions as ``arch`` (its name for the
        search's dedup: one network is scored once, and as what it costs). Here the arch as it
        is: a space that knows its equivalent names (Cream, SPOS) overrides it."""
        return self.validate(arch)

    @abc.abstractmethod
    def deepen(self, arch: Any, factor: float) -> tuple[dict, Arch]:
        """The arch with every stage about ``factor`` times deeper: (space-config changes, arch)."""

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture."""

    # op choices per block, for FairNAS's strictly fair draws (0: the space has none)
    fair_window = 0

    def sample_fair(self, rng: np.random.Generator, order: np.random.Generator, position: int) -> Arch:
        """The ``position``-th of ``fair_window`` draws in which each block takes every op once
        (FairNAS, Chu et al. 2021): block b's op is entry ``position`` of a permutation that
        ``order``, the same for the whole window, draws per block; every other gene comes from ``rng``."""
        raise NotImplementedError(f"the {type(self).__name__} has no op choices per block")

    @abc.abstractmethod
    def mutate(self, arch: Any, rng: np.random.Generator, prob: float) -> Arch:
        """Resample each gene with probability ``prob`` (uniformly; it may keep its value, as SPOS)."""

    @abc.abstractmethod
    def crossover(self, a: Any, b: Any, rng: np.random.Generator) -> Arch:
        """Gene-wise uniform crossover of two parents."""

    # -- cost model ------------------------------------------------------------
    @abc.abstractmethod
    def macs(self, arch: Any) -> int:
        """Multiply-accumulates of conv and linear layers (SPOS convention)."""

    @abc.abstractmethod
    def params(self, arch: Any) -> int:
        """Parameters of the standalone subnet (affine BN included)."""

    @abc.abstractmethod
    def largest_arch(self) -> Arch:
        """The arch of the most MACs."""

    @abc.abstractmethod
    def smallest_arch(self) -> Arch:
        """The arch of the fewest MACs."""

    def deepest_smallest_arch(self) -> Arch:
        """The cheapest arch at the greatest depth (in a space of one depth: the smallest arch)."""
        return self.smallest_arch()

    def deepest_wide_arch(self, rng: np.random.Generator | None = None) -> Arch:
        """The greatest depth, each block at its widest expansion with its smallest kernel (or,
        given ``rng``, a kernel drawn from it)."""
        raise ArchError(f"the {type(self).__name__} has no kernel and expansion choices per block")

    def shrink(self, arch: Any, elastic: Collection[str], rng: np.random.Generator) -> Arch:
        """``arch`` with every dimension not in ``elastic`` (of ``ELASTIC``) at its largest:
        Once-for-All's progressive shrinking."""
        raise ArchError(f"the {type(self).__name__} has no elastic kernel, depth and expansion to shrink")

    def macs_range(self) -> tuple[int, int]:
        """The smallest and largest MACs of any architecture in the space."""
        return self.macs(self.smallest_arch()), self.macs(self.largest_arch())

    def extreme_arch(self, largest: bool, macs_min: float = 0.0, macs_max: float = 0.0) -> Arch:
        """The largest (or smallest) arch within ``[macs_min, macs_max]`` (0 = unbounded), greedily:
        from the space's extreme, one gene at a time, the change that loses the fewest MACs
        (gains, for the smallest) until the bound holds. Deterministic; every move is strictly
        monotone in MACs, so it ends. Raises :class:`ArchError` if the bound cannot be met."""
        arch = self.largest_arch() if largest else self.smallest_arch()
        sign = 1 if largest else -1  # compare "largeness" as sign * MACs
        bound = macs_max if largest else macs_min

        def outside(m: float) -> bool:
            return bool(bound) and (m > bound if largest else m < bound)

        while outside(self.macs(arch)):
            current = sign * self.macs(arch)
            moves = [(sign * self.macs(n), n) for n in self.neighbours(arch)]
            moves = [(m, n) for m, n in moves if m < current]
            if not moves:
                raise ArchError(f"{self.name}: no arch reaches {_m(bound)} from the {'largest' if largest else 'smallest'}")
            arch = max(moves, key=lambda mn: mn[0])[1]
        if (macs_min and self.macs(arch) < macs_min) or (macs_max and self.macs(arch) > macs_max):
            raise ArchError(f"{self.name}: no arch has MACs in [{_m(macs_min)}, {_m(macs_max)}]")
        return arch

    def sample_constrained(
        self,
        rng: np.random.Generator,
        macs_min: float,
        macs_max: float,
        num_bins: int = 7,
        max_tries: int = 500,
    ) -> Arch:
        """Sample uniformly over MACs bins in ``[macs_min, macs_max]`` (0 = unbounded), as SPOS.

        1. pick one of ``num_bins`` equal-width bins uniformly and rejection-sample into it
           (``max_tries`` draws);
        2. fall back to rejection over the whole range (``max_tries`` draws);
        3. fall back to a bounded greedy repair of the closest draw, gene by gene.
        Raises :class:`ArchError` when the range misses the space or nothing was found.
        """
        space_lo, space_hi = self.macs_range()
        lo = float(macs_min) if macs_min else float(space_lo)
        hi = float(macs_max) if macs_max else float(space_hi)
        if lo > hi or hi < space_lo or lo > space_hi:
            raise ArchError(
                f"{self.name}: no architecture has MACs in [{_m(lo)}, {_m(hi)}]; "
                f"this space spans [{_m(space_lo)}, {_m(space_hi)}]"
            )
        if max_tries < 1 or num_bins < 1:
            raise ValueError("num_bins and max_tries must be >= 1")
        lo_eff, hi_eff = max(lo, space_lo), min(hi, space_hi)
        width = (hi_eff - lo_eff) / num_bins
        b = int(rng.integers(num_bins))
        bin_lo, bin_hi = lo_eff + b * width, lo_eff + (b + 1) * width
        best, best_gap = None, float("inf")
        for _ in range(max_tries):
            arch = self.sample(rng)
            m = self.macs(arch)
            if bin_lo <= m <= bin_hi:
                return arch
            gap = max(lo - m, m - hi, 0.0)
            if gap == 0.0 and best_gap > 0.0:
                best, best_gap = arch, 0.0
            elif gap < best_gap:
                best, best_gap = arch, gap
        if best is not None and best_gap == 0.0:
            return best  # in range, just not in the chosen bin
        for _ in range(max_tries):
            arch = self.sample(rng)
            m = self.macs(arch)
            gap = max(lo - m, m - hi, 0.0)
            if gap == 0.0:
                return arch
            if gap < best_gap:
                best, best_gap = arch, gap
        repaired = self._repair(best, lo, hi, max_tries)
        if repaired is not None:
            return repaired
        raise ArchError(
            f"{self.name}: found no architecture with MACs in [{_m(lo)}, {_m(hi)}] "
            f"after {2 * max_tries} draws and a greedy repair; this space spans "
            f"[{_m(space_lo)}, {_m(space_hi)}]"
        )

    def neighbours(self, arch: Arch) -> list[Arch]:
        """Archs one gene away (used by the greedy repair); spaces override."""
        return []

    def _repair(self, arch: Arch | None, lo: float, hi: float, max_steps: int) -> Arch | None:
        """Greedy descent on the distance to ``[lo, hi]`` over single-gene changes (bounded)."""
        if arch is None:
            return None
        gap = _gap(self.macs(arch), lo, hi)
        for _ in range(max_steps):
            if gap == 0.0:
                return arch
            best, best_gap = None, gap
            for cand in self.neighbours(arch):
                g = _gap(self.macs(cand), lo, hi)
                if g < best_gap:
                    best, best_gap = cand, g
            if best is None:
                return None
            arch, gap = best, best_gap
        return arch if gap == 0.0 else None

    # -- latency (timed by spaces/latency.py) -------------------------------------------
    @abc.abstractmethod
    def latency_parts(self) -> LatencyParts:
        """The standalone subnet's parts: fixed ones, and per block position one per choice."""

    @abc.abstractmethod
    def latency_keys(self, arch: Any) -> list[tuple[str, str]]:
        """(position, choice) of every block the arch runs, as :meth:`latency_parts` names them."""

    # -- networks ------------------------------------------------------------------
    @abc.abstractmethod
    def build_supernet(self) -> Supernet:
        """A fresh weight-sharing supernet holding every choice."""

    @abc.abstractmethod
    def build_subnet(self, arch: Any, supernet: Supernet | None = None) -> nn.Module:
        """A standalone network of only the chosen ops (affine BN), weights inherited if given."""


def inherit_weights(dst: nn.Module, src: nn.Module) -> None:
    """Copy every tensor of ``dst`` from the same name in ``src``: its leading channels, and
    for a conv kernel its centre.

    Sliced layers allocate the maximum width and run the leading channels, and an
    entangled kernel runs its centre, so a subnet's tensor is ``src[:n0, :n1, centre]``.
    Tensors missing in ``src`` (affine BN weights of an ``affine=False`` supernet) keep
    their identity init (1 and 0).
    """
    src_state = src.state_dict()
    with torch.no_grad():
        for name, t in dst.state_dict().items():
            if name not in src_state:
                continue
            source = src_state[name]
            if t.dim() == 0:
                t.copy_(source)
                continue
            if t.dim() == 4:
                source = centre_kernel(source, t.shape[-1])
            t.copy_(source[tuple(slice(0, n) for n in t.shape)])


def arch_to_json(arch: Any) -> Any:
    """An arch (nested tuples of choice indices) as nested lists of plain ints."""
    return [arch_to_json(a) for a in arch] if isinstance(arch, (tuple, list)) else int(arch)


def _gap(m: float, lo: float, hi: float) -> float:
    return max(lo - m, m - hi, 0.0)


def _m(v: float) -> str:
    return f"{v / 1e6:.2f}M MACs"


def as_int(value: Any, where: str) -> int:
    """An int gene from JSON (bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArchError(f"{where}: expected an integer, got {value!r}")
    return int(value)


def as_list(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ArchError(f"{where}: expected a list, got {value!r}")
    return list(value)
