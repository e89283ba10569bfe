"""Cream's meta matching network, its loss, and the one-step look-ahead that trains it.

For each board arch other than the student, ``Linear(num_classes * slice -> 1)`` scores
``softmax(student(images)) - stored softmax`` on that entry's images; the highest score
names the teacher, and ``m = sigmoid(score)``. The per-sample loss is
``(m * KD + (2 - m) * CE) / 2``, KD being KL(teacher || student).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elastic_nas.spaces.base import Arch
from elastic_nas.spaces.bn import frozen_bn_stats
from elastic_nas.train.losses import kd_per_sample


class MetaMatchingNetwork(nn.Module):
    """``Linear(num_classes * slice_images -> 1)`` on softmax differences, one score per board entry.

    Zero-initialised: every score starts at 0 (m = 0.5), and the first candidate -- the
    board's most accurate arch -- is the teacher until the network learns otherwise.
    """

    def __init__(self, num_classes: int, slice_images: int):
        super().__init__()
        self.fc = nn.Linear(num_classes * slice_images, 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, diffs: torch.Tensor) -> torch.Tensor:
        """``diffs`` [entries, slice, classes] -> scores [entries]."""
        return self.fc(diffs.flatten(1)).squeeze(1)


def cream_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor,
               m: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample ``(m * KD + (2 - m) * CE) / 2``; plain CE without a teacher."""
    ce = F.cross_entropy(student_logits, y, label_smoothing=label_smoothing, reduction="none")
    if teacher_logits is None:
        return ce
    return (m * kd_per_sample(student_logits, teacher_logits) + (2.0 - m) * ce) / 2.0


def lookahead_dl_dm(model: nn.Module, student: Arch, teacher: Arch, x: torch.Tensor, y: torch.Tensor,
                    val: tuple[torch.Tensor, torch.Tensor], m: float, lr: float,
                    label_smoothing: float = 0.0) -> float:
    """How the held-out loss after one student step changes with ``m``.

    The student's loss on the board's images (``x``, ``y``) depends on the meta network
    only through ``m``. With ``g_kd`` and ``g_ce`` the gradients of KD and CE over the
    student's weights, the look-ahead weights are ``w' = w - lr * (g_ce + m/2 * (g_kd - g_ce))``
    and the validation loss ``L`` (CE on ``val``) changes with m as
    ``dL/dm = -lr/2 * <grad L(w'), g_kd - g_ce>`` -- exact for the one step, without
    second-order graphs. The supernet's weights and BN statistics do not change.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    params = [p for p in model.arch_parameters(student) if p.requires_grad]
    with frozen_bn_stats(model):
        with torch.no_grad():
            teacher_logits = model(x, teacher)
        logits = model(x, student)
        kd = kd_per_sample(logits, teacher_logits).mean()
        ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        g_kd = _grads(kd, params, retain_graph=True)
        g_ce = _grads(ce, params)
        ahead = {names[id(p)]: (p.detach() - lr * (gc + m / 2 * (gk - gc))).requires_grad_()
                 for p, gk, gc in zip(params, g_kd, g_ce)}
        x_val, y_val = val
        val_logits = torch.func.functional_call(model, ahead, (x_val, student))
        g_val = _grads(F.cross_entropy(val_logits, y_val), list(ahead.values()))
    return -lr / 2 * sum(float((gv * (gk - gc)).sum()) for gv, gk, gc in zip(g_val, g_kd, g_ce))


def _grads(loss: torch.Tensor, params: list[torch.Tensor], retain_graph: bool = False) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


__all__ = ["MetaMatchingNetwork", "cream_loss", "lookahead_dl_dm"]
