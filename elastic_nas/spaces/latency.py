"""Latency lookup tables: every choice of every block position timed on the device that will
run the net (ProxylessNAS, Once-for-All).

A space lists its parts (:meth:`SearchSpace.latency_parts`): the fixed ones every arch runs
(stem, head) and, per block position, one standalone block per choice at that position's
input size, width and stride (the modules the standalone subnet is built from). Each part is
timed alone (warm-up, then the median of repeated runs, cycling through copies so its weights
are as cold as in a whole net); an arch's predicted latency is the sum of its parts. A table
is tagged with what decides the figures (device, torch version, batch, threads, precision,
memory format and the space); a search refuses a table of another space.
No Ray in here: ``elastic-nas latency build`` may run it as a Ray task on a chosen node type.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from elastic_nas.config import SpaceConfig
from elastic_nas.errors import ArchError, ConfigError
from elastic_nas.spaces.precision import Precision

# 2: depthwise kernels cut to their map (spaces/depthwise.py) made small-map blocks faster than
# format 1 tables timed them
FORMAT = "elastic-nas latency table 2"
FORMAT_NAME = "elastic-nas latency table"
TAGS = ("device", "device_type", "torch", "batch", "threads", "precision", "channels_last", "space")
# The space keys that decide a part's shape (weight sharing only changes the supernet).
SPACE_KEYS = ("name", "input_size", "num_classes", "stem_stride", "width_mult", "channel_search", "max_depths",
              "stage_repeats")


@dataclass
class Part:
    """One timed module: ``make()`` builds it, it runs on ``(batch, chs, size, size)`` inputs."""

    make: Callable[[], nn.Module]
    chs: int
    size: int


@dataclass
class LatencyParts:
    """A space's parts: ``fixed`` run by every arch; ``choices[position][choice]``."""

    fixed: dict[str, Part]
    choices: dict[str, dict[str, Part]] = field(default_factory=dict)


def space_tag(cfg: SpaceConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k in SPACE_KEYS}


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    try:  # the CPU model, as /proc/cpuinfo names it
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_ms(make: Callable[[], nn.Module], x: torch.Tensor, prec: Precision, copies: int = 1, warmup: int = 10,
               repeats: int = 30, min_repeat_s: float = 0.002) -> float:
    """Median milliseconds of one forward of the module ``make()`` builds, on ``x``.

    ``copies`` modules run in turn: in a whole net the other blocks' weights evict a block's
    from the cache between its calls, so a part timed alone, warm, is too fast; cycling
    through as many copies as make up a typical net's weights reproduces that. Each repeat
    runs enough forwards to last ``min_repeat_s`` (timer resolution and call overhead stay
    small next to it); CUDA is synchronised around every repeat."""
    cuda = x.device.type == "cuda"
    modules = [prec.model(make().to(x.device).eval()) for _ in range(copies)]
    x = prec.input(x)

    def run(n: int) -> float:
        if cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        for i in range(n):
            modules[i % copies](x)
        if cuda:
            torch.cuda.synchronize(x.device)
        return time.perf_counter() - t0

    with torch.inference_mode(), prec.autocast():
        run(max(warmup, copies))
        number = max(1, int(min_repeat_s / max(run(1), 1e-7)))
        number = copies * -(-number // copies)  # whole cycles
        times = [run(number) / number for _ in range(repeats)]
    return 1000.0 * statistics.median(times)


def weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


@dataclass
class LatencyTable:
    tags: dict
    fixed_ms: dict[str, float]
    choices_ms: dict[str, dict[str, float]]
    settings: dict = field(default_factory=dict)  # warm-up and repeats: how it was measured

    def predict_ms(self, space, arch: Any) -> float:
        """The arch's latency: its fixed parts plus the chosen block at each position."""
        total = sum(self.fixed_ms.values())
        for position, choice in space.latency_keys(arch):
            try:
                total += self.choices_ms[position][choice]
            except KeyError:
                raise ArchError(f"latency table has no entry for choice {choice} at {position}") from None
        return total

    def check(self, space_cfg: SpaceConfig, where: str = "latency_table") -> None:
        """Refuse a table measured for another space (one line, before any work)."""
        ours = space_tag(space_cfg)
        theirs = self.tags.get("space", {})
        differ = sorted(k for k in ours if ours[k] != theirs.get(k))
        if differ:
            raise ConfigError(where, "the table was measured for another space (" + ", ".join(
                f"{k}: table {theirs.get(k)!r}, search {ours[k]!r}" for k in differ) + ")")

    def describe(self) -> str:
        t = self.tags
        return (f"{t['device']} ({t['device_type']}), batch {t['batch']}, {t['threads']} threads, {t['precision']}"
                f"{', channels_last' if t['channels_last'] else ''}, torch {t['torch']}")

    def to_json(self) -> dict:
        return {"format": FORMAT, "tags": self.tags, "settings": self.settings, "fixed_ms": self.fixed_ms,
                "choices_ms": self.choices_ms}

    def save(self, path: str | Path) -> Path:
        from elastic_nas.io import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, where: str = "latency_table") -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(where, f"cannot read latency table {path}: {e}") from None
        found = data.get("format") if isinstance(data, dict) else None
        if isinstance(found, str) and found.startswith(FORMAT_NAME) and found != FORMAT:
            raise ConfigError(where, f"{path} is {found!r}, from an earlier elastic-nas that timed blocks "
                                     f"otherwise (this one reads {FORMAT!r}); rebuild it: elastic-nas latency build")
        if found != FORMAT:
            raise ConfigError(where, f"{path} is not an elastic-nas latency table ({FORMAT!r})")
        try:
            table = cls(data["tags"], data["fixed_ms"], data["choices_ms"], data.get("settings", {}))
            complete = all(key in table.tags for key in TAGS)
        except (KeyError, TypeError):
            complete = False
        if not complete:
            raise ConfigError(where, f"{path}: a latency table needs tags ({', '.join(TAGS)}), fixed_ms and "
                                     "choices_ms")
        return table


def build_table(space, device: str = "cpu", batch: int = 1, threads: int = 1, precision: str = "fp32",
                channels_last: bool = False, warmup: int = 10, repeats: int = 30, max_copies: int = 64,
                progress: Callable[[str], None] | None = None) -> LatencyTable:
    """Time every part of ``space`` on this machine's ``device`` (each cycling through up to
    ``max_copies`` copies of itself, see :func:`measure_ms`)."""
    import numpy as np

    torch.set_num_threads(threads)
    prec = Precision(precision, channels_last, device)
    parts = space.latency_parts()
    rng = np.random.default_rng(0)
    net_bytes = 4 * float(np.median([space.params(space.sample(rng)) for _ in range(200)]))  # a typical subnet's
    torch.manual_seed(0)

    def timed(part: Part) -> float:
        x = torch.randn(batch, part.chs, part.size, part.size, device=device)
        copies = max(1, min(max_copies, round(net_bytes / max(1, weight_bytes(part.make())))))
        return round(measure_ms(part.make, x, prec, copies, warmup, repeats), 5)

    fixed = {name: timed(part) for name, part in parts.fixed.items()}
    choices, t0 = {}, time.perf_counter()
    for i, (position, options) in enumerate(parts.choices.items()):
        choices[position] = {choice: timed(part) for choice, part in options.items()}
        if progress is not None:
            progress(f"position {i + 1}/{len(parts.choices)} ({position}): "
                     + ", ".join(f"{c} {ms:.3f}" for c, ms in choices[position].items())
                     + f" ms ({time.perf_counter() - t0:.0f} s)")
    tags = {"device": device_name(device), "device_type": torch.device(device).type, "torch": torch.__version__,
            "batch": batch, "threads": threads, "precision": precision, "channels_last": channels_last,
            "space": space_tag(space.cfg)}
    return LatencyTable(tags, fixed, choices, {"warmup": warmup, "repeats": repeats, "typical_net_bytes": net_bytes})


def measure_arch_ms(space, arch: Any, device: str = "cpu", batch: int = 1, precision: str = "fp32",
                    channels_last: bool = False, warmup: int = 10, repeats: int = 30) -> float:
    """Measured end-to-end latency of the standalone subnet of ``arch``."""
    cfg = space.cfg
    x = torch.randn(batch, 3, cfg.input_size, cfg.input_size, device=device)
    return measure_ms(lambda: space.build_subnet(arch), x, Precision(precision, channels_last, device), 1, warmup,
                      repeats)


__all__ = ["FORMAT", "LatencyParts", "LatencyTable", "Part", "build_table", "device_name", "measure_arch_ms",
           "measure_ms", "space_tag", "weight_bytes"]
