"""ProxylessNAS's alpha as search results: the derived arch, written like ``elastic-nas search``.

``strategy: proxyless`` ends with architecture parameters, not a population. The derived
arch (the likeliest depth per stage, the likeliest op per block of it) is rescored as a
search candidate and written in the search's output format, so ``retrain`` takes
``arch.search: <run>/proxyless`` as it takes a search. The checkpoint's ``extra`` holds
alpha as plain tensors; this module reads them without the training code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from elastic_nas.config import SupernetConfig, to_dict
from elastic_nas.elastic.checkpoint import read_checkpoint
from elastic_nas.io import redact
from elastic_nas.search.board import rescore
from elastic_nas.search.outputs import write_outputs
from elastic_nas.spaces import build_space


def derived_arch(alpha_ops: torch.Tensor, alpha_depths: torch.Tensor, max_depths: list[int]) -> tuple:
    """Per stage the likeliest depth d (logits ``alpha_depths[s, :max_depth]``), then the
    likeliest op of each of its d blocks (``alpha_ops``, one row per block position)."""
    offsets = np.cumsum([0, *max_depths])[:-1]
    return tuple(tuple(int(alpha_ops[offsets[s] + j].argmax()) for j in range(1 + int(alpha_depths[s, :d].argmax())))
                 for s, d in enumerate(max_depths))


def write_proxyless_results(cfg: SupernetConfig, checkpoint_path: str, out_dir: Path) -> dict[str, str]:
    """The derived arch in the search's results format (``chosen_arch.json``, tables, plot)."""
    state = read_checkpoint(checkpoint_path).state
    extra = state["extra"]
    if not extra["arch_updates"]:
        return {"proxyless": "no alpha step (training ended before proxyless.warmup_fraction): no derived arch"}
    space = build_space(cfg.space)
    derived = space.validate(derived_arch(extra["alpha_ops"], extra["alpha_depths"], list(cfg.space.max_depths)))
    (score,) = rescore(cfg, state, [derived], cfg.proxyless.eval_images)  # the path alpha chose
    arch = space.canonical(derived)  # written under its cheapest name, as the search names its candidates
    row = {"arch": json.dumps(space.to_json(arch), separators=(",", ":")), "macs": space.macs(arch),
           "params": space.params(arch), "accuracy": float(score["accuracy"]), "loss": float(score["loss"]),
           "generation": int(extra["arch_updates"])}
    if cfg.proxyless.latency_table:
        from elastic_nas.spaces.latency import LatencyTable

        row["latency_ms"] = LatencyTable.load(cfg.proxyless.latency_table).predict_ms(space, arch)
    probs = {"ops": torch.softmax(extra["alpha_ops"], 1).tolist(),
             "depths": [torch.softmax(extra["alpha_depths"][s, :d], 0).tolist()
                        for s, d in enumerate(cfg.space.max_depths)]}
    info = {"strategy": "proxyless", "snapshot": redact(checkpoint_path), "arch_updates": int(extra["arch_updates"]),
            "alpha_probs": probs, "target_ms": cfg.proxyless.target_ms or None,
            "accuracy_source": f"top-1 on {cfg.proxyless.eval_images} search_val images after BN recalibration"}
    budget = math.ceil(row["macs"] / 1e4) / 100  # the derived arch's own MACs (millions), rounded up
    title = f"ProxylessNAS derived arch ({cfg.space.name}, {info['arch_updates']} alpha steps)"
    return write_outputs(pd.DataFrame([row]), out_dir, to_dict(cfg.space), [budget], info, title)


__all__ = ["derived_arch", "write_proxyless_results"]
