"""Cream's board as search results: the supernet's own search, written like ``elastic-nas search``.

The board (``strategy: cream``) keeps the best archs it saw while training. After
training, each board arch is rescored as a search candidate and written in the search's
output format, so ``retrain`` takes ``arch.search: <run>/board`` as it takes a search.
The checkpoint's ``extra.board`` entries are plain lists and tensors; this module reads
them without the training code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from elastic_nas.config import SupernetConfig, to_dict
from elastic_nas.elastic.checkpoint import read_checkpoint
from elastic_nas.io import redact
from elastic_nas.search.evaluator import eval_data, evaluate_arch
from elastic_nas.search.outputs import write_outputs
from elastic_nas.spaces import build_space


def board_table(cfg: SupernetConfig, state: dict, splits=None):
    """The board as a search results table (arch, macs, params, accuracy, loss, generation, ...).

    With ``cream.eval_images`` > 0 each board arch is rescored like a search candidate:
    exact BN recalibration on that many train images, then top-1 on as many class-balanced
    search_val images; ``board_accuracy`` keeps the batch top-1 it entered with.
    ``generation`` is the step it entered.
    """
    space = build_space(cfg.space)
    entries = state["extra"]["board"]
    n = cfg.cream.eval_images
    scores: list[dict] = [{"accuracy": float(e["accuracy"]), "loss": math.nan} for e in entries]
    if n > 0 and entries:
        scores = rescore(cfg, state, [e["arch"] for e in entries], n, splits)
    rows = []
    for e, s in zip(entries, scores):
        arch = space.validate(e["arch"])
        rows.append({"arch": json.dumps(space.to_json(arch), separators=(",", ":")), "macs": space.macs(arch),
                     "params": space.params(arch), "accuracy": float(s["accuracy"]), "loss": float(s["loss"]),
                     "generation": int(e["step"]), "board_accuracy": float(e["accuracy"])})
    return pd.DataFrame(rows, columns=["arch", "macs", "params", "accuracy", "loss", "generation",
                                       "board_accuracy"])


def rescore(cfg, state: dict, archs: list, n: int, splits=None) -> list[dict]:
    """Each arch scored on the checkpoint's supernet as a search candidate: exact BN recalibration
    on ``n`` train images, then top-1 and loss on ``n`` class-balanced search_val images."""
    from elastic_nas.data import build_dataset

    space = build_space(cfg.space)
    splits = splits or build_dataset(cfg.data, cfg.space.input_size)
    data = eval_data(splits, min(n, len(splits.train)), min(n, len(splits.search_val)), cfg.run.seed)
    model = space.build_supernet()
    model.load_state_dict(state["model"])
    return [evaluate_arch(model, space.validate(arch), data) for arch in archs]


def write_board_results(cfg: SupernetConfig, checkpoint_path: str, out_dir: Path) -> dict[str, str]:
    """The final board in the search's results format (``chosen_arch.json``,
    ``best_per_budget.json``, tables, plot), so ``retrain`` takes ``arch.search: <out_dir>``."""
    state = read_checkpoint(checkpoint_path).state
    table = board_table(cfg, state)
    if not len(table):
        return {"board": "empty (training ended before the warm-up: no board results)"}
    source = (f"top-1 on {cfg.cream.eval_images} search_val images after BN recalibration"
              if cfg.cream.eval_images else "batch top-1 when the arch entered the board")
    extra = {"strategy": "cream", "snapshot": redact(checkpoint_path), "accuracy_source": source}
    title = f"Cream board: {len(table)} archs ({cfg.space.name})"
    return write_outputs(table, out_dir, to_dict(cfg.space), cfg.cream.budgets, extra, title)


__all__ = ["board_table", "rescore", "write_board_results"]
