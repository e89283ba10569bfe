"""Losses the strategies share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per sample, at temperature 1: the distillation loss of Cream
    and of in-place distillation (its gradient is that of the soft cross-entropy)."""
    # fp32 even under autocast (log_softmax is not autocast to fp32 on CPU).
    log_t = F.log_softmax(teacher_logits.float(), 1)
    return (log_t.exp() * (log_t - F.log_softmax(student_logits.float(), 1))).sum(1)


__all__ = ["kd_per_sample"]
