"""Search spaces: architectures as data, cost model, supernets and standalone subnets.

``build_space(cfg)`` returns the :class:`SearchSpace` named by ``cfg.name``; ``PUBLISHED``
maps published model names to ``(space name, arch, input size)``.
"""

from __future__ import annotations

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ArchError
from elastic_nas.spaces.base import Arch, SearchSpace, Supernet, inherit_weights
from elastic_nas.spaces.cream import CreamSpace
from elastic_nas.spaces.spos import SposSpace

SPACES: dict[str, type[SearchSpace]] = {"spos": SposSpace, "cream": CreamSpace}

# name -> (space, arch, input size). Cream archs are Cream's INPUT_ARCH (imported with the
# one-block-stage quirk); every one is built with stem_stride 2 and width_mult 1.0.
PUBLISHED: dict[str, tuple[str, Arch, int]] = {
    # block search: 322.9M MACs, 3.56M params at 224 (published 323M FLOPs, 3.5M)
    "spos-323m": ("spos", (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3), 224),
    "cream-14": ("cream", ((0,), (3,), (3, 3), (3, 3), (3,), (3,), (0,)), 64),
    "cream-43": ("cream", ((0,), (3,), (3, 1), (3, 1), (3, 3, 3), (3, 3), (0,)), 96),
    "cream-114": ("cream", ((0,), (3,), (3, 3), (3, 3), (3, 3, 3), (3, 3), (0,)), 160),
    "cream-287": ("cream", ((0,), (3,), (3, 3), (3, 1, 3), (3, 3, 3, 3), (3, 3, 3), (0,)), 224),
    "cream-481": (
        "cream",
        ((0,), (3, 4, 3, 1), (3, 2, 3, 0), (3, 3, 3, 1, 1), (3, 3, 3, 3), (3, 3, 3, 3), (0,)),
        224,
    ),
    "cream-604": (
        "cream",
        ((0,), (3, 3, 2, 3, 3), (3, 2, 3, 2, 3), (3, 2, 3, 2, 3), (3, 3, 2, 2, 3, 3), (3, 3, 2, 3, 3, 3), (0,)),
        224,
    ),
}


def build_space(cfg: SpaceConfig) -> SearchSpace:
    try:
        cls = SPACES[cfg.name]
    except KeyError:
        raise ArchError(f"unknown search space {cfg.name!r} (known: {', '.join(SPACES)})") from None
    return cls(cfg)


__all__ = [
    "PUBLISHED",
    "SPACES",
    "Arch",
    "CreamSpace",
    "SearchSpace",
    "SposSpace",
    "Supernet",
    "build_space",
    "inherit_weights",
]
