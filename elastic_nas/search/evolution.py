"""Generation-based candidate generators: SPOS evolution and the random-search baseline.

Both are plain classes, independent of Ray and of any particular search space: they
take an *arch encoder* (anything with ``sample``, ``mutate``, ``crossover`` and
``to_json``; every :class:`~elastic_nas.spaces.SearchSpace` is one) and a *cost
function* ``arch -> (macs, params)``. A search proceeds in generations:

1. ``next_generation()`` returns the list of new, legal, never-seen architectures to
   evaluate (or ``None`` once the budget is spent);
2. the caller evaluates them and reports each with ``tell(arch, score)``;
3. the next generation may only be asked for when every candidate of this one is told
   (the generation barrier: parents come from complete information). ``start_early()``
   proposes it before that, as if the pending scores left the parents unchanged, and
   ``settle_early()`` keeps it or withdraws it once they are told, so the result is the
   same as waiting.

Generation 0 is ``population`` random legal candidates. Every later generation is
``mutation_children`` mutants of random top-k parents (gene prob ``mutation_prob``) and
``crossover_children`` gene-wise crossovers of two distinct top-k parents; any
shortfall (duplicates, illegal children after ``max_tries`` draws) is filled with random
legal candidates, as SPOS does. So the budget is ``population + generations * children``.

All randomness comes from one ``numpy.random.Generator``; its state is part of
:meth:`get_state`, so a restored search continues with exactly the candidates the
uninterrupted one would have produced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from elastic_nas.errors import ArchError

STATE_VERSION = 1


class ArchEncoder(Protocol):
    """The space-dependent part of the search (a ``SearchSpace`` satisfies it)."""

    def sample(self, rng: np.random.Generator) -> Any: ...
    def mutate(self, arch: Any, rng: np.random.Generator, prob: float) -> Any: ...
    def crossover(self, a: Any, b: Any, rng: np.random.Generator) -> Any: ...
    def to_json(self, arch: Any) -> list: ...
    def validate(self, arch: Any) -> Any: ...
    def canonical(self, arch: Any) -> Any: ...  # validated, under the name of its cheapest equivalent


CostFn = Callable[[Any], tuple]  # arch -> (macs, params) or (macs, params, latency in ms)


@dataclass(frozen=True)
class Constraints:
    """Closed intervals on MACs, parameters and predicted latency (ms); 0 means unbounded on that side."""

    macs_min: float = 0.0
    macs_max: float = 0.0
    params_min: float = 0.0
    params_max: float = 0.0
    latency_min_ms: float = 0.0
    latency_max_ms: float = 0.0

    def admits(self, macs: float, params: float, latency_ms: float = 0.0) -> bool:
        """A pure yes/no check: never evaluates or records anything."""
        return (
            macs >= self.macs_min
            and (not self.macs_max or macs <= self.macs_max)
            and params >= self.params_min
            and (not self.params_max or params <= self.params_max)
            and latency_ms >= self.latency_min_ms
            and (not self.latency_max_ms or latency_ms <= self.latency_max_ms)
        )


@dataclass
class EvolutionSettings:
    population: int = 50
    top_k: int = 10
    mutation_children: int = 25
    crossover_children: int = 25
    mutation_prob: float = 0.1
    generations: int = 20
    max_tries: int = 500  # draws per child before giving up on it (the shortfall is filled randomly)

    @property
    def children(self) -> int:
        return self.mutation_children + self.crossover_children

    @property
    def budget(self) -> int:
        return self.population + self.generations * self.children


@dataclass
class Candidate:
    """One architecture with its cost and, once evaluated, its score."""

    key: str  # canonical JSON of the arch: the dedup key
    arch: Any
    macs: int
    params: int
    generation: int
    score: float | None = None  # None: pending; -inf: its evaluation failed
    latency_ms: float = 0.0  # predicted from a latency table (0: none)

    @property
    def evaluated(self) -> bool:
        return self.score is not None


def arch_key(encoder: ArchEncoder, arch: Any) -> str:
    return json.dumps(encoder.to_json(arch), separators=(",", ":"))


class _Generator:
    """Shared bookkeeping: candidates by key (dedup across the run), RNG, generation counter."""

    method = "base"

    def __init__(self, encoder: ArchEncoder, cost_fn: CostFn, constraints: Constraints,
                 settings: EvolutionSettings, seed: int):
        self.encoder = encoder
        self.cost_fn = cost_fn
        self.constraints = constraints
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        self.candidates: dict[str, Candidate] = {}  # insertion order = proposal order
        self.generation = -1  # the last generation handed out
        self.shortfall = 0  # children replaced by random legal candidates, over the run
        self.exhausted = False  # no new legal candidate could be found
        self._early: dict | None = None  # the next generation, started before this one is scored (start_early)
        # Networks a restored state holds under other names (saved before canonical names):
        # never admitted again under their canonical one.
        self._renamed: set[str] = set()

    # -- the generation protocol ------------------------------------------------------
    def pending(self) -> list[Candidate]:
        return [c for c in self.candidates.values() if not c.evaluated]

    def finished(self) -> bool:
        return not self.pending() and (self.generation >= self.settings.generations or self.exhausted)

    def next_generation(self) -> list[Candidate] | None:
        """The next generation's new candidates; None when the search is over.

        Raises ``RuntimeError`` while candidates of the current generation are pending.
        """
        if self.pending():
            raise RuntimeError(f"generation {self.generation} still has {len(self.pending())} pending candidates")
        if self.finished():
            return None
        self.generation += 1
        fresh = self._propose(self.generation)
        if not fresh:
            self.exhausted = True
            return None
        return fresh

    # -- starting the next generation before the barrier ---------------------------------
    def start_early(self) -> list[Candidate] | None:
        """The next generation while the last candidates of this one are still pending: proposed
        now, as the barrier would propose it if their scores leave the parents as they are (random
        search: always; evolution: unless one of them enters the top k). ``settle_early`` keeps or
        withdraws it once they are told. None: no next generation, or one is started already."""
        if (self._early is not None or not self.pending() or self.exhausted
                or self.generation >= self.settings.generations):
            return None
        before = self._counters()
        parents = self._parent_keys(self.generation)
        self.generation += 1
        fresh = self._propose(self.generation)
        if not fresh:  # exhaustion is decided at the barrier, as without an early start
            self._roll_back(before, [])
            return None
        self._early = {**before, "parents": parents, "keys": [c.key for c in fresh]}
        return fresh

    def settle_early(self) -> bool | None:
        """Once every candidate before the early generation is told: True if it stands (the same
        generation the barrier gives), False if it was withdrawn (its candidates forgotten, the RNG
        and counters as before it: ``next_generation`` proposes anew). None: none was started."""
        early, self._early = self._early, None
        if early is None:
            return None
        if any(not c.evaluated for c in self.candidates.values() if c.generation <= early["generation"]):
            self._early = early
            raise RuntimeError(f"generation {early['generation']} still has pending candidates")
        if self._parent_keys(early["generation"]) == early["parents"]:
            return True
        self._roll_back(early, early["keys"])
        return False

    def _parent_keys(self, generation: int) -> list[str]:
        """What the next generation is drawn from, besides the RNG: nothing for random search."""
        return []

    def _counters(self) -> dict:
        """What an early start changes besides the candidates: restored by ``_roll_back``."""
        return {"rng": self.rng.bit_generator.state, "generation": self.generation,
                "shortfall": self.shortfall, "exhausted": self.exhausted}

    def _roll_back(self, before: dict, keys: list[str]) -> None:
        for key in keys:
            del self.candidates[key]
        self.rng.bit_generator.state = before["rng"]
        self.generation, self.shortfall, self.exhausted = before["generation"], before["shortfall"], before["exhausted"]

    def tell(self, arch_or_key: Any, score: float | None) -> Candidate:
        """Record a score; None or NaN marks a failed evaluation (never a parent)."""
        key = arch_or_key if isinstance(arch_or_key, str) else arch_key(self.encoder, arch_or_key)
        cand = self.candidates[key]
        cand.score = -math.inf if score is None or math.isnan(score) else float(score)
        return cand

    def evaluated(self) -> list[Candidate]:
        return [c for c in self.candidates.values() if c.evaluated]

    def top(self, k: int, upto_generation: int | None = None) -> list[Candidate]:
        """The k best evaluated candidates (ties: fewer MACs, then key), failures excluded; with
        ``upto_generation``, of the generations up to it only."""
        good = [c for c in self.evaluated() if c.score != -math.inf
                and (upto_generation is None or c.generation <= upto_generation)]
        return sorted(good, key=lambda c: (-c.score, c.macs, c.key))[:k]

    # -- helpers ----------------------------------------------------------------------
    def _propose(self, generation: int) -> list[Candidate]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _admit(self, arch: Any, generation: int, batch: list[Candidate]) -> bool:
        """Add ``arch`` to ``batch`` if it is new and legal; new as a network, not as a name."""
        arch = self.encoder.canonical(arch)
        key = arch_key(self.encoder, arch)
        if key in self.candidates or key in self._renamed:
            return False
        macs, params, *latency = self.cost_fn(arch)
        latency_ms = float(latency[0]) if latency else 0.0
        if not self.constraints.admits(macs, params, latency_ms):
            return False
        cand = Candidate(key, arch, int(macs), int(params), generation, latency_ms=latency_ms)
        self.candidates[key] = cand
        batch.append(cand)
        return True

    def _fill_random(self, n: int, generation: int, batch: list[Candidate]) -> None:
        """Up to ``n`` random legal new candidates, with ``max_tries`` draws per candidate."""
        target = len(batch) + n
        for _ in range(n * self.settings.max_tries):
            if len(batch) >= target:
                return
            self._admit(self._draw(), generation, batch)

    def _draw(self) -> Any:
        """One random arch; MACs-binned sampling when the encoder offers it and MACs are bounded."""
        c = self.constraints
        sample_constrained = getattr(self.encoder, "sample_constrained", None)
        if sample_constrained is not None and (c.macs_min or c.macs_max):
            try:
                return sample_constrained(self.rng, c.macs_min, c.macs_max, 1, 20)
            except ArchError:
                pass  # the range is hard to hit; plain draws are still bounded by max_tries
        return self.encoder.sample(self.rng)

    # -- state ------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Plain JSON-able state: RNG, counters and every candidate with its score."""
        # An early generation is not saved: a restored search proposes it again at the barrier.
        at = self._early or {**self._counters(), "keys": []}
        early = set(at["keys"])
        return {
            "version": STATE_VERSION,
            "method": self.method,
            "rng": at["rng"],
            "generation": at["generation"],
            "shortfall": at["shortfall"],
            "exhausted": at["exhausted"],
            "candidates": [
                {"arch": json.loads(c.key), "macs": c.macs, "params": c.params, "latency_ms": c.latency_ms,
                 "generation": c.generation,
                 "score": None if c.score is None else (c.score if c.score != -math.inf else "failed")}
                for c in self.candidates.values() if c.key not in early
            ],
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION or state.get("method") != self.method:
            raise ValueError(f"search state is version {state.get('version')} of {state.get('method')!r}, "
                             f"expected version {STATE_VERSION} of {self.method!r}")
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.generation = int(state["generation"])
        self.shortfall = int(state["shortfall"])
        self.exhausted = bool(state["exhausted"])
        self._early = None
        self.candidates, self._renamed = {}, set()
        for row in state["candidates"]:
            arch = self.encoder.validate(row["arch"])
            score = row["score"]
            score = -math.inf if score == "failed" else (None if score is None else float(score))
            cand = Candidate(arch_key(self.encoder, arch), arch, int(row["macs"]), int(row["params"]),
                             int(row["generation"]), score, float(row.get("latency_ms", 0.0)))
            self.candidates[cand.key] = cand
            if (canon := arch_key(self.encoder, self.encoder.canonical(arch))) != cand.key:
                self._renamed.add(canon)


class EvolutionSearch(_Generator):
    """SPOS evolution: top-k parents, mutation + crossover children, random fill."""

    method = "evolution"

    def _propose(self, generation: int) -> list[Candidate]:
        settings = self.settings
        batch: list[Candidate] = []
        if generation == 0:
            self._fill_random(settings.population, generation, batch)
            return batch
        parents = [c.arch for c in self.top(settings.top_k)]
        if parents:
            self._children(settings.mutation_children, batch, generation,
                           lambda: self.encoder.mutate(parents[self.rng.integers(len(parents))], self.rng,
                                                       settings.mutation_prob))
        if len(parents) >= 2:
            def cross():
                i, j = self.rng.choice(len(parents), size=2, replace=False)
                return self.encoder.crossover(parents[i], parents[j], self.rng)

            self._children(settings.crossover_children, batch, generation, cross)
        missing = settings.children - len(batch)
        self.shortfall += missing
        self._fill_random(missing, generation, batch)
        return batch

    def _parent_keys(self, generation: int) -> list[str]:
        return [c.key for c in self.top(self.settings.top_k, generation)]

    def _children(self, n: int, batch: list[Candidate], generation: int, make: Callable[[], Any]) -> None:
        target = len(batch) + n
        for _ in range(n * self.settings.max_tries):
            if len(batch) >= target:
                return
            self._admit(make(), generation, batch)


class RandomSearch(_Generator):
    """The baseline: the same budget, generations and constraints, all random legal candidates."""

    method = "random"

    def _propose(self, generation: int) -> list[Candidate]:
        settings = self.settings
        batch: list[Candidate] = []
        self._fill_random(settings.population if generation == 0 else settings.children, generation, batch)
        return batch


METHODS: dict[str, type[_Generator]] = {"evolution": EvolutionSearch, "random": RandomSearch}


def make_generator(method: str, encoder: ArchEncoder, cost_fn: CostFn, constraints: Constraints,
                   settings: EvolutionSettings, seed: int) -> _Generator:
    try:
        cls = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown search method {method!r} (known: {', '.join(METHODS)})") from None
    return cls(encoder, cost_fn, constraints, settings, seed)


__all__ = [
    "ArchEncoder",
    "Candidate",
    "Constraints",
    "EvolutionSearch",
    "EvolutionSettings",
    "METHODS",
    "RandomSearch",
    "arch_key",
    "make_generator",
]
