"""Supernet training strategies, one module each, picked by ``strategy:`` from :data:`STRATEGIES`.

* :mod:`~elastic_nas.train.strategies.base` -- the interface (and plain subnet training);
* :mod:`~elastic_nas.train.strategies.spos` -- one uniform arch per step;
* :mod:`~elastic_nas.train.strategies.cream` -- prioritized archs distil into the sampled one
  (with :mod:`~.cream_board` and :mod:`~.cream_meta`);
* :mod:`~elastic_nas.train.strategies.sandwich` -- largest, smallest and random archs per
  step, the largest teaching the others (in-place distillation);
* :mod:`~elastic_nas.train.strategies.proxyless` -- architecture parameters learnt by binary
  gates on search_val, with a latency term (ProxylessNAS);
* :mod:`~elastic_nas.train.strategies.landmarks` -- not a strategy: the landmark ranking term
  that spos and sandwich runs add with ``landmarks.path``.

A new strategy is one new module with a :class:`SupernetStrategy` subclass, one line here
and one name in ``SupernetConfig.strategy``.
"""

from __future__ import annotations

from elastic_nas.train.strategies.base import ArchSampler, Strategy, SupernetStrategy
from elastic_nas.train.strategies.cream import CreamStrategy
from elastic_nas.train.strategies.proxyless import ProxylessStrategy
from elastic_nas.train.strategies.sandwich import SandwichStrategy
from elastic_nas.train.strategies.spos import SposStrategy

STRATEGIES: dict[str, type[SupernetStrategy]] = {cls.name: cls for cls in (SposStrategy, CreamStrategy,
                                                                            SandwichStrategy, ProxylessStrategy)}

__all__ = ["STRATEGIES", "ArchSampler", "CreamStrategy", "ProxylessStrategy", "SandwichStrategy", "SposStrategy", "Strategy",
           "SupernetStrategy"]
