"""Search outputs: the results table, the Pareto front, the best arch per budget, a plot, the choice.

Everything is computed from the table of evaluated candidates (one row per candidate:
``arch`` as JSON, ``macs``, ``params``, ``accuracy``, ``loss``, ``generation``), so the
same functions serve a finished search and a partial one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from elastic_nas.errors import UserError
from elastic_nas.io import atomic_write, join, read_bytes, redact, storage_error, write_json

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
PARETO_CSV = "pareto_front.csv"
BEST_PER_BUDGET = "best_per_budget.json"
PLOT = "search.png"
PARETO_LATENCY_CSV = "pareto_front_latency.csv"
PLOT_LATENCY = "search_latency.png"
CHOSEN = "chosen_arch.json"
# evaluator.score -> (the table's column, lower is better)
SCORES = {"top1": ("accuracy", False), "loss": ("loss", True)}


def ranked(table: pd.DataFrame, score: str = "top1") -> pd.DataFrame:
    """The scored rows, best first by ``score`` (ties: fewer MACs)."""
    column, lower = SCORES[score]
    ok = table[table[column].notna()]
    return ok.sort_values([column, "macs"], ascending=[lower, True])


def pareto_front(table: pd.DataFrame, cost: str = "macs", score: str = "top1") -> pd.DataFrame:
    """Rows no other row beats on both ``score`` (top-1 higher, loss lower) and ``cost`` (lower:
    MACs, or predicted latency), by cost ascending."""
    column, lower = SCORES[score]
    sign = -1 if lower else 1
    ok = table[table[column].notna()].sort_values([cost, column], ascending=[True, lower])
    rows, best = [], -math.inf
    for idx, row in ok.iterrows():
        if sign * row[column] > best:
            rows.append(idx)
            best = sign * row[column]
    return ok.loc[rows]


def best_per_budget(table: pd.DataFrame, budgets_m: list[float], score: str = "top1") -> list[dict[str, Any]]:
    """For each MACs budget (millions): the best candidate by ``score`` at or under it (null if none)."""
    ok = ranked(table, score)
    latency = has_latency(table)
    out = []
    for b in sorted(budgets_m):
        under = ok[ok["macs"] <= b * 1e6]
        entry: dict[str, Any] = {"budget_macs": int(round(b * 1e6)), "arch": None, "macs": None,
                                 "params": None, "accuracy": None, "loss": None, "score": score}
        if latency:
            entry["latency_ms"] = None
        if len(under):
            row = under.iloc[0]
            entry.update(arch=json.loads(row["arch"]), macs=int(row["macs"]), params=int(row["params"]),
                         accuracy=float(row["accuracy"]), loss=_number(row["loss"]))
            if latency:
                entry["latency_ms"] = float(row["latency_ms"])
        out.append(entry)
    return out


def has_latency(table: pd.DataFrame) -> bool:
    """Whether the candidates carry predicted latencies (a search with a latency table)."""
    return "latency_ms" in table and bool((table["latency_ms"] > 0).any())


def choose(table: pd.DataFrame, score: str = "top1") -> pd.Series | None:
    """The best candidate by ``score`` (ties: fewer MACs); every row already meets the constraints."""
    ok = ranked(table, score)
    return ok.iloc[0] if len(ok) else None


def plot_search(table: pd.DataFrame, front: pd.DataFrame, budgets_m: list[float], chosen, path: Path,
                title: str, cost: str = "macs", score: str = "top1") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column, lower = SCORES[score]  # the plot shows what ranked the candidates
    ok = table[table[column].notna()]
    scale = 1e6 if cost == "macs" else 1.0  # MACs in millions, latency in ms
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sc = ax.scatter(ok[cost] / scale, ok[column], c=ok["generation"], cmap="viridis", s=14, alpha=0.8,
                    label="candidates")
    if len(ok):
        fig.colorbar(sc, ax=ax, label="generation")
    ax.step(front[cost] / scale, front[column], where="post", color="crimson", lw=1.5, label="Pareto front")
    ax.scatter(front[cost] / scale, front[column], color="crimson", s=24, zorder=3)
    lo, hi = (ok["macs"].min() / 1e6, ok["macs"].max() / 1e6) if len(ok) else (0, 0)
    for b in budgets_m if cost == "macs" else []:
        if lo <= b <= hi * 1.05:
            ax.axvline(b, color="grey", ls=":", lw=1)
    if chosen is not None:
        ax.scatter([chosen[cost] / scale], [chosen[column]], marker="*", s=180, color="gold",
                   edgecolor="black", zorder=4, label="chosen")
    ax.set_xlabel("MACs (millions)" if cost == "macs" else "predicted latency (ms, latency table)")
    ax.set_ylabel("loss on search_val subset (lower is better)" if lower else "top-1 on search_val subset (%)")
    if lower:
        ax.invert_yaxis()  # better stays up
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_outputs(table: pd.DataFrame, out_dir: Path, space_cfg: dict, budgets_m: list[float],
                  extra: dict[str, Any], title: str, score: str = "top1") -> dict[str, str]:
    """Write every output file into ``out_dir``, the candidates ranked by ``score``; returns name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = table.sort_values(["generation", "macs", "arch"]).reset_index(drop=True)
    atomic_write(out_dir / RESULTS_PARQUET, lambda tmp: table.to_parquet(tmp, index=False))
    atomic_write(out_dir / RESULTS_CSV, lambda tmp: table.to_csv(tmp, index=False))
    front = pareto_front(table, score=score)
    atomic_write(out_dir / PARETO_CSV, lambda tmp: front.to_csv(tmp, index=False))
    write_json(out_dir / BEST_PER_BUDGET, best_per_budget(table, budgets_m, score))
    chosen = choose(table, score)
    latency = has_latency(table)
    outputs = {"results": str(out_dir / RESULTS_PARQUET), "results (csv)": str(out_dir / RESULTS_CSV),
               "pareto front": str(out_dir / PARETO_CSV), "best per budget": str(out_dir / BEST_PER_BUDGET)}
    if chosen is not None:
        chosen_latency = {"latency_ms": float(chosen["latency_ms"])} if latency else {}
        write_json(out_dir / CHOSEN, dict(
            space=space_cfg, arch=json.loads(chosen["arch"]), macs=int(chosen["macs"]),
            params=int(chosen["params"]), accuracy=float(chosen["accuracy"]), loss=_number(chosen["loss"]),
            score=score, generation=int(chosen["generation"]), **chosen_latency, **extra))
        outputs["chosen arch"] = str(out_dir / CHOSEN)
    outputs["plot"] = str(plot_search(table, front, budgets_m, chosen, out_dir / PLOT, title, score=score))
    if latency:  # the latency Pareto front beside the MACs one
        front = pareto_front(table, "latency_ms", score)
        atomic_write(out_dir / PARETO_LATENCY_CSV, lambda tmp: front.to_csv(tmp, index=False))
        outputs["pareto front (latency)"] = str(out_dir / PARETO_LATENCY_CSV)
        outputs["plot (latency)"] = str(plot_search(table, front, budgets_m, chosen, out_dir / PLOT_LATENCY, title,
                                                    "latency_ms", score))
    return outputs


def read_choice(search_dir: str, budget_m: float = 0.0) -> tuple[dict, Any]:
    """(space config as a dict, arch JSON) of a search's choice: the chosen arch, or with
    ``budget_m`` > 0 the best arch (by the search's score) at or under that many million MACs.
    Local or a URI."""
    chosen = _read_json(join(search_dir, CHOSEN))
    if not isinstance(chosen, dict) or not {"space", "arch"} <= chosen.keys():
        raise UserError(f"arch.search: {redact(join(search_dir, CHOSEN))} is not a search's choice (no space and arch)")
    if budget_m <= 0:
        return chosen["space"], chosen["arch"]
    entries = _read_json(join(search_dir, BEST_PER_BUDGET))
    fitting = [e for e in entries if e["arch"] is not None and e["macs"] <= budget_m * 1e6]
    if not fitting:
        budgets = ", ".join(f"{e['budget_macs'] / 1e6:g}M" for e in entries)
        raise UserError(f"arch.budget: no searched arch within {budget_m:g}M MACs (budgets: {budgets})")
    column, lower = SCORES[fitting[0].get("score", "top1")]  # searches before evaluator.score: top-1
    best = min(fitting, key=lambda e: ((1 if lower else -1) * e[column], e["macs"]))
    return chosen["space"], best["arch"]


def _number(value) -> float | None:
    """A score for JSON: None where there is none (NaN)."""
    return None if value is None or math.isnan(value) else float(value)


def _read_json(path: str) -> Any:
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        raise UserError(f"arch.search: {path} not found (run `elastic-nas search` first)") from None
    except NotADirectoryError:
        raise UserError(f"arch.search: give the search's folder, not a file in it ({redact(path)})") from None
    except (OSError, ValueError) as e:  # a URI out of reach (pyarrow's errors are either)
        raise UserError(f"arch.search: cannot read {redact(path)}: {storage_error(e)}") from None
    try:
        return json.loads(data)
    except ValueError:  # cut off, or not UTF-8
        raise UserError(f"arch.search: {redact(path)} is not valid JSON (cut off?)") from None


__all__ = ["BEST_PER_BUDGET", "CHOSEN", "PARETO_CSV", "PARETO_LATENCY_CSV", "PLOT", "PLOT_LATENCY", "RESULTS_CSV",
           "RESULTS_PARQUET", "SCORES", "best_per_budget", "choose", "has_latency", "pareto_front", "ranked",
           "read_choice", "write_outputs"]
