"""Landmark regularisation (Yu, Ranftl and Salzmann, CVPR 2021): a ranking term on the supernet.

A few archs of known stand-alone accuracy (the landmarks, ``landmarks.path``) teach the supernet
their order. Every ``landmarks.every`` steps the step draws a pair of landmarks with different
scores (a function of (seed, step) only, so every rank agrees) and adds, on each micro-batch,
``weight * max(0, loss(better) - loss(worse))``: the better landmark's cross-entropy must not exceed
the worse one's. The hinge is taken per micro-batch and weighted by its real samples, so padding
counts for nothing and the term needs no collective beyond the step's one all-reduce.

The landmarks cost their stand-alone training, once; they must not be the archs a ranking is
judged on (``benchmarks/ranking.py`` draws them apart from its truth).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.errors import ArchError, ConfigError
from elastic_nas.spaces.base import Arch, SearchSpace

LANDMARK_STREAM = 3000  # the pairs' draws: apart from every step's arch streams
WHERE = "landmarks.path"


@dataclass(frozen=True)
class Landmark:
    arch: Arch
    score: float  # stand-alone top-1: higher is better


def load_landmarks(path: str, space: SearchSpace) -> list[Landmark]:
    """The landmarks of ``path``, their archs checked against ``space``; one line (ConfigError)
    for a file that cannot give at least two landmarks of different scores."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(WHERE, f"cannot read landmarks {path}: {e}") from None
    rows = data.get("landmarks") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(WHERE, f'{path}: expected {{"landmarks": [{{"arch": ..., "score": ...}}, ...]}}')
    out = []
    for i, row in enumerate(rows):
        score = row.get("score") if isinstance(row, dict) else None
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ConfigError(WHERE, f"{path}: landmark {i} needs a finite number as its score")
        try:
            out.append(Landmark(space.validate(row.get("arch")), float(score)))
        except ArchError as e:
            raise ConfigError(WHERE, f"{path}: landmark {i}: {e}") from None
    if len({lm.score for lm in out}) < 2:
        raise ConfigError(WHERE, f"{path}: needs at least 2 landmarks of different scores, got {len(out)}")
    return out


class LandmarkTerm:
    """The pairs of landmarks step by step and their hinge on a micro-batch."""

    def __init__(self, cfg, space: SearchSpace, seed: int):
        """``cfg``: a ``LandmarksConfig`` with its path set."""
        self.landmarks = load_landmarks(cfg.path, space)
        self.weight, self.every, self.seed = cfg.weight, cfg.every, seed
        # every ordered pair (better, worse): a tie says nothing about the order
        self.pairs = [(a.arch, b.arch) for a in self.landmarks for b in self.landmarks if a.score > b.score]
        body = json.dumps([[space.to_json(lm.arch), lm.score] for lm in self.landmarks])
        self.digest = hashlib.sha256(body.encode()).hexdigest()[:16]

    def archs(self, step: int) -> list[Arch]:
        """[better, worse] on the steps that take a pair, else []."""
        if step % self.every:
            return []
        rng = np.random.default_rng([self.seed, step, LANDMARK_STREAM])
        return list(self.pairs[int(rng.integers(len(self.pairs)))])

    def loss(self, forward, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, archs: list[Arch]) -> torch.Tensor:
        """Per-sample loss whose weighted sum is the hinge times the micro-batch's real samples."""
        count = weight.sum().clamp(min=1.0)
        better, worse = ((F.cross_entropy(forward(x, arch).float(), y, reduction="none") * weight).sum() / count
                         for arch in archs)
        return (self.weight * F.relu(better - worse)).expand(len(y))

    def fingerprint(self) -> dict:
        return {"landmarks": {"digest": self.digest, "weight": self.weight, "every": self.every}}


__all__ = ["LANDMARK_STREAM", "Landmark", "LandmarkTerm", "load_landmarks"]
