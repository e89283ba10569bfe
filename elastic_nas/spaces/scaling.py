"""EfficientNet's compound scaling of a found architecture, as data.

A scaled architecture is a base arch plus ``(phi, alpha, beta, gamma)``: every stage
``ceil(alpha^phi x)`` blocks deep (new blocks repeat the stage's choices in order), every width
``beta^phi`` times wider (the space rounds widths to multiples of 8) and the input
``gamma^phi`` times larger, rounded to a multiple of 8. With EfficientNet's
``alpha * beta^2 * gamma^2 ~= 2`` each step of ``phi`` about doubles the MACs. It works
for every space through :meth:`SearchSpace.deepen`; the cost model then prices the
scaled net like any other arch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ArchError

# EfficientNet's coefficients (Tan and Le, 2019), found by grid search at phi = 1.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


@dataclass(frozen=True)
class Scaling:
    phi: int = 1
    alpha: float = ALPHA  # depth
    beta: float = BETA  # width
    gamma: float = GAMMA  # resolution

    def __post_init__(self):
        if self.phi < 0 or min(self.alpha, self.beta, self.gamma) < 1:
            raise ArchError(f"scaling needs phi >= 0 and coefficients >= 1, got {self}")

    @property
    def flops_factor(self) -> float:
        """alpha * beta^2 * gamma^2: the MACs growth per step of phi (EfficientNet: ~2)."""
        return self.alpha * self.beta ** 2 * self.gamma ** 2


def round8(x: float) -> int:
    return max(8, 8 * round(x / 8))


def scale_arch(space_cfg: SpaceConfig, arch: Any, s: Scaling) -> tuple[SpaceConfig, Any]:
    """(space config, normalised arch) of ``arch`` scaled by ``s``."""
    from elastic_nas.spaces import build_space

    changes, deeper = build_space(space_cfg).deepen(arch, s.alpha ** s.phi)
    cfg = replace(space_cfg, width_mult=space_cfg.width_mult * s.beta ** s.phi,
                  input_size=round8(space_cfg.input_size * s.gamma ** s.phi) if s.phi else space_cfg.input_size,
                  **changes)
    cfg.validate("space")
    return cfg, build_space(cfg).validate(deeper)


def family(space_cfg: SpaceConfig, arch: Any, phis: range, alpha: float = ALPHA, beta: float = BETA,
           gamma: float = GAMMA) -> list[dict]:
    """One row per phi: the scaled arch and space, its input size, MACs and params."""
    from elastic_nas.spaces import build_space

    rows = []
    for phi in phis:
        s = Scaling(phi, alpha, beta, gamma)
        cfg, scaled = scale_arch(space_cfg, arch, s)
        space = build_space(cfg)
        rows.append({"phi": phi, "alpha": alpha, "beta": beta, "gamma": gamma, "arch": space.to_json(scaled),
                     "space": asdict(cfg), "input_size": cfg.input_size, "width_mult": round(cfg.width_mult, 6),
                     "macs": space.macs(scaled), "params": space.params(scaled)})
    return rows


__all__ = ["ALPHA", "BETA", "GAMMA", "Scaling", "family", "round8", "scale_arch"]
