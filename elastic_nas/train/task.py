"""What a training run trains: the model, its strategy, the data and the run's fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TrainTask:
    """Built on every worker by a picklable factory (``build_supernet_task``, ``build_subnet_task``)."""

    model: torch.nn.Module
    strategy: Any  # a train.strategies Strategy: the step's archs, loss, hooks, extra state
    train_split: Any  # elastic_nas.data.Split
    fingerprint: dict[str, Any]  # checkpoints from runs with another fingerprint are refused
    kind: str = "supernet"


__all__ = ["TrainTask"]
