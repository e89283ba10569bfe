"""``elastic-nas arch info``: MACs, params and the normalised arch of one architecture."""

from __future__ import annotations

import argparse
import json
from typing import Any

from elastic_nas.config import SpaceConfig, from_dict
from elastic_nas.errors import ArchError
from elastic_nas.spaces import PUBLISHED, build_space
from elastic_nas.spaces.latency import LatencyTable


def arch_info(args: argparse.Namespace) -> int:
    """Print JSON for ``args.arch`` (a JSON list or a published name) in the published layout.

    The published layout is used (``stem_stride`` 2, ``width_mult`` 1.0). Cream stage depths
    are not capped here: ``max_depths`` only bounds a supernet, not the cost of an arch.
    """
    info = describe(args.arch, args.space, args.input_size, args.num_classes, args.latency_table)
    print(json.dumps(info, indent=2))
    return 0


def describe(arch_text: str, space: str | None, input_size: int | None, num_classes: int,
             latency_table: str = "") -> dict[str, Any]:
    """With ``latency_table``, the arch is costed in the table's space (its tags) and its
    predicted latency is added."""
    table = LatencyTable.load(latency_table, "--latency-table") if latency_table else None
    if table is not None:
        table_cfg = from_dict(SpaceConfig, table.tags["space"])
        if space not in (None, table_cfg.name) or input_size not in (None, table_cfg.input_size):
            raise ArchError(f"--latency-table {latency_table} is of the {table_cfg.name} space at "
                            f"{table_cfg.input_size} px; leave --space and --input-size out or make them match")
        space, input_size, num_classes = table_cfg.name, table_cfg.input_size, table_cfg.num_classes
    name = None
    if arch_text in PUBLISHED:
        name = arch_text
        pub_space, raw, pub_input = PUBLISHED[name]
        if space is not None and space != pub_space:
            raise ArchError(f"--arch {name} belongs to space {pub_space!r}, not {space!r}")
        space, input_size = pub_space, input_size or pub_input
    else:
        try:
            raw = json.loads(arch_text)
        except json.JSONDecodeError:
            raise ArchError(
                f"--arch must be a JSON list or a published name ({', '.join(PUBLISHED)}), got {arch_text!r}"
            ) from None
        if space is None:
            raise ArchError("--space is needed with a JSON --arch (spos or cream)")
        input_size = input_size or 224
    if input_size <= 0 or num_classes <= 0:
        raise ArchError(f"--input-size and --num-classes must be > 0, got {input_size} and {num_classes}")
    cfg = SpaceConfig(name=space, input_size=input_size, num_classes=num_classes, stem_stride=2)
    if table is not None:
        cfg = table_cfg
    elif space == "spos":
        # [[ops], [scale ids]] is the block+channel format.
        cfg.channel_search = isinstance(raw, (list, tuple)) and len(raw) == 2
    elif space == "cream":
        cfg.max_depths = _depths_bound(raw, cfg.max_depths)
    search_space = build_space(cfg)
    arch = search_space.validate(raw)
    info: dict[str, Any] = {"space": space}
    if name:
        info["name"] = name
    info.update(
        arch=search_space.to_json(arch),
        input_size=input_size,
        num_classes=num_classes,
        stem_stride=cfg.stem_stride,
        macs=search_space.macs(arch),
        params=search_space.params(arch),
        mmacs=round(search_space.macs(arch) / 1e6, 2),
        mparams=round(search_space.params(arch) / 1e6, 3),
    )
    if space == "spos":
        info["channel_search"] = cfg.channel_search
    if table is not None:
        info["latency_ms"] = round(table.predict_ms(search_space, arch), 4)
        info["latency_device"] = table.describe()
    return info


def _depths_bound(raw: Any, default: list[int]) -> list[int]:
    """Per-stage max depth that admits ``raw``'s stages (validation still checks the rest)."""
    if not isinstance(raw, (list, tuple)) or len(raw) not in (5, 7):
        return list(default)
    stages = raw[1:6] if len(raw) == 7 else raw
    return [max(d, len(s)) if isinstance(s, (list, tuple)) else d for d, s in zip(default, stages)]
