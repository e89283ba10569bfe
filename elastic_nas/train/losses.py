"""Losses the strategies share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per sample, at temperature 1: the distillation loss of Cream
    and of in-place distillation (its gradient is that of the soft cross-entropy)."""
    log_t = F.log_softmax(teacher_logits, 1)
    return (log_t.exp() * (log_t - F.log_softmax(student_logits, 1))).sum(1)


__all__ = ["kd_per_sample"]
