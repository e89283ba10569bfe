"""``strategy: spos``: single-path one-shot (Guo et al., ECCV 2020).

Each step trains one arch drawn uniformly (or uniformly over MACs bins, ``sampling``),
with plain cross-entropy; every choice's weights are trained only on the steps that draw
it. The base class already does exactly this: this module names it.
"""

from __future__ import annotations

from elastic_nas.train.strategies.base import SupernetStrategy


class SposStrategy(SupernetStrategy):
    name = "spos"


__all__ = ["SposStrategy"]
