"""Mixed precision and memory format: how a model computes, as the config says. No Ray in here.

``precision``: ``fp32``, or autocast to ``bf16`` / ``fp16`` around forwards. Weights, BN
running statistics, optimizer state and checkpoints stay fp32 (autocast casts per op;
losses and BN statistics are computed in fp32); ``fp16`` adds dynamic loss scaling, whose
scale a checkpoint keeps. ``channels_last``: NHWC weights and inputs, the layout GPU
convolution kernels (Tensor Cores) prefer; checkpoints are written in the plain layout,
so a run resumes, is searched and exports whatever either setting was.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """One run's (or evaluator's) numerics on one device; ``Precision()`` is plain fp32."""

    def __init__(self, precision: str = "fp32", channels_last: bool = False, device: Any = "cpu"):
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
        self.name, self.channels_last = precision, channels_last
        self.device_type = torch.device(device).type

    @functools.cached_property
    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16's range is narrow: gradients are scaled up (and back before clipping) so that
        small ones do not flush to zero; bf16 has fp32's range and needs none. Made on first
        use, so evaluation never makes one."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None

    @classmethod
    def of(cls, section, device: Any = "cpu") -> Precision:
        """From a config section with ``precision`` and ``channels_last`` (optim, evaluator, test)."""
        return cls(section.precision, section.channels_last, device)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.name])

    def model(self, model: nn.Module) -> nn.Module:
        """``model`` in this memory format (in place, as ``Module.to``)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    # -- the scaler (fp16) -------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """True gradients again (after the all-reduce: the scale is the same on every rank)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def overflow(self) -> bool:
        """After a step with non-finite gradients: whether it was fp16's range, not a divergence.
        The scaler halves its scale and the step is skipped; only once the scale is below 1
        (16 halvings from the start) does the divergence guard count such steps."""
        if self.scaler is None:
            return False
        overflowed = self.scaler.get_scale() >= 1.0
        self.scaler.update()  # unscale_ recorded the inf: the scale halves
        return overflowed

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        """A checkpoint of another precision loads: a missing scale starts afresh."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state in the default (contiguous) layout, whatever its memory format."""
    return {k: v.contiguous() for k, v in model.state_dict().items()}


__all__ = ["DTYPES", "Precision", "plain_state_dict"]
