"""EfficientNet's compound scaling of a found architecture, as data.

A scaled architecture is a base arch plus ``(phi, alpha, beta, gamma)``: every stage
``ceil(alpha^phi x)`` blocks deep (new blocks repeat the stage's choices in order), every width
``beta^phi`` times wider (the space rounds widths to multiples of 8) and the input
``gamma^phi`` times larger, rounded to a multiple of 8. With EfficientNet's
``alpha * beta^2 * gamma^2 ~= 2`` each step of ``phi`` about doubles the MACs. It works
for every space through :meth:`SearchSpace.deepen`; the cost model then prices the
scaled net like any other arch.

``alpha * beta^2 * gamma^2`` is EfficientNet's stand-in for the MACs growth, true where MACs
grow with the block count (MBConv stages). A ShuffleNetV2 stage's added blocks are stride-1
blocks, cheaper than its first, so depth buys less there; :func:`fit_gamma` takes the
growth of depth and width from the cost model instead and leaves resolution the rest.
"""

from __future__ import annotations

import math
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


def fit_gamma(space_cfg: SpaceConfig, arch: Any, alpha: float, beta: float, flops_factor: float = 2.0,
              phis: range = range(1, 4)) -> float:
    """The resolution coefficient under which each step of phi multiplies the MACs by
    ``flops_factor``: depth and width priced by the cost model on this arch at each phi in
    ``phis``, resolution as the input's area (every conv's MACs grow with it), fitted in log
    space over ``phis`` (ceil makes depth's growth uneven over phi). Below 1 where depth and
    width alone grow the MACs faster: no gamma >= 1 keeps the factor."""
    from elastic_nas.spaces import build_space

    space = build_space(space_cfg)
    base = space.macs(space.validate(arch))
    num = den = 0.0
    for phi in phis:  # least squares of log(MACs_phi / base) = phi * log(flops_factor)
        cfg, scaled = scale_arch(space_cfg, arch, Scaling(phi, alpha, beta, 1.0))
        rest = phi * math.log(flops_factor) - math.log(build_space(cfg).macs(scaled) / base)
        num, den = num + 2 * phi * rest, den + (2 * phi) ** 2
    return round(math.exp(num / den), 4)


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


__all__ = ["ALPHA", "BETA", "GAMMA", "Scaling", "family", "fit_gamma", "round8", "scale_arch"]
