"""What each supernet rewards: its ranking against the subnets' arch features, beside the truth's.

Averaging supernet seeds does not lift the band's tau (the pipeline's six seeds: 0.28 each by the
loss, 0.26 as one consensus), so its error inside the band is systematic, not seed noise. This reads
every supernet's kept scores of the 36 subnets (``ranking_table.ROWS``, judged by top-1, and the
runs of ``ranking_table.LOSS_ROWS``, judged by the search_val loss as the laptop search scores) and,
per subset, Kendall tau between each arch feature (depth, each stage's mean kernel size and
expansion) and the ranker's scores, beside the same tau for the stand-alone truth. A feature a
supernet rewards more than the truth does is its bias; ``across_rows`` says which feature's bias
goes with a poor band ranking over all the supernets (read with care: the band tau and the biases
come from the same scores).

    python benchmarks/ranking_bias.py --truth benchmarks/results/ranking_t2000_s9_nr1_cl_steps1970.json

Writes ``benchmarks/results/<--name>.json`` and ``.png`` (each feature's band tau for the truth and
the pipeline's supernets; every supernet's band tau against its depth bias), and prints the table
as Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ranking_ceiling import subset_indices
from ranking_table import LOSS_ROWS, Refused, exits_on_refusal, load_truth, longer_runs, read_rows

from _common import RESULTS, write_result
from elastic_nas.search.ranking import kendall_tau
from elastic_nas.spaces.cream import OPS

SHOWN = ("kernel s0", "expansion s0", "depth", "expansion s1")  # the features the Markdown table prints


def arch_features(arch) -> dict[str, float]:
    """Depth and each stage's mean kernel size and expansion of a Cream arch (op ids per stage)."""
    out = {"depth": float(sum(len(stage) for stage in arch))}
    for i, stage in enumerate(arch):
        out[f"kernel s{i}"] = float(np.mean([OPS[op][0] for op in stage]))
        out[f"expansion s{i}"] = float(np.mean([OPS[op][1] for op in stage]))
    return out


def preferences(score, features: dict[str, np.ndarray], idx: list[int]) -> dict[str, float]:
    """Kendall tau between each feature and ``score`` (higher: better) on the subnets ``idx``."""
    score = np.asarray(score, dtype=float)
    return {name: round(kendall_tau(f[idx], score[idx]), 4) for name, f in features.items()}


def judged(preds: list, targets: dict[str, np.ndarray], features: dict[str, np.ndarray], subsets: dict) -> dict:
    """One ranker (a prediction per supernet seed): each subset's tau (against that subset's
    target) and feature preferences, the mean over seeds, and the seeds' mean prediction (their
    consensus) as one ranker."""
    preds = [np.asarray(p, dtype=float) for p in preds]
    consensus = np.mean(preds, 0)
    out = {}
    for name, idx in subsets.items():
        prefs = [preferences(p, features, idx) for p in preds]
        target = targets[name]
        out[name] = {"tau": round(float(np.mean([kendall_tau(p[idx], target[idx]) for p in preds])), 4),
                     "consensus_tau": round(kendall_tau(consensus[idx], target[idx]), 4),
                     "prefers": {f: round(float(np.mean([p[f] for p in prefs])), 4) for f in features}}
    return out


def across_rows(rows: dict, truth_prefers: dict) -> dict[str, float]:
    """Over the supernets: Kendall tau between each feature's band bias (the supernet's preference
    minus the truth's) and the band tau; negative: the more a supernet rewards it, the worse it ranks."""
    taus = [r["band"]["tau"] for r in rows.values()]
    return {f: round(kendall_tau([r["band"]["prefers"][f] - truth_prefers[f] for r in rows.values()], taus), 4)
            for f in truth_prefers}


def markdown(rows: dict, truth: dict) -> str:
    head = " | ".join(f"prefers {f}: band / all" for f in SHOWN)
    lines = [f"| ranker | score | steps | seeds | tau band (consensus) | {head} |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in SHOWN) + " |",
             f"| **the truth** ({truth['label']}) | | | | | " +
             " | ".join(f"{truth['band'][f]:+.2f} / {truth['all'][f]:+.2f}" for f in SHOWN) + " |"]
    for label, r in rows.items():
        prefs = " | ".join(f"{r['band']['prefers'][f]:+.2f} / {r['all']['prefers'][f]:+.2f}" for f in SHOWN)
        lines.append(f"| {label} | {r['score']} | {r['steps']} | {r['seeds']} | {r['band']['tau']:.2f} "
                     f"({r['band']['consensus_tau']:.2f}) | {prefs} |")
    return "\n".join(lines)


def plot(rows: dict, truth: dict, features: list[str], across: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    # the pipeline's supernets as the search scores them (by the loss), where those runs are there
    shown = {"the truth (stand-alone)": truth["band"]}
    for label in LOSS_ROWS:
        if label in rows:
            shown[label.split(", by the")[0]] = rows[label]["band"]["prefers"]
    x, width = np.arange(len(features)), 0.8 / len(shown)
    for i, (label, prefers) in enumerate(shown.items()):
        ax1.bar(x + (i - (len(shown) - 1) / 2) * width, [prefers[f] for f in features], width, label=label)
    ax1.set_xticks(x, features, rotation=60, ha="right", fontsize=7)
    ax1.set_ylabel("Kendall tau, feature vs ranking (band)")
    ax1.set_title("what each ranks by, inside the band (supernets by the loss)")
    ax1.axhline(0, color="grey", lw=0.5)
    ax1.legend(fontsize=6)
    f0 = "depth"
    for r in rows.values():
        ax2.scatter(r["band"]["prefers"][f0] - truth["band"][f0], r["band"]["tau"],
                    marker="o" if r["score"] == "top-1" else "s", color="C0" if r["score"] == "top-1" else "C3")
    ax2.set_xlabel(f"supernet's band preference for {f0} minus the truth's")
    ax2.set_ylabel("band tau (mean of supernet seeds)")
    ax2.set_title(f"every supernet (squares: by the loss); across them tau {across[f0]:+.2f}")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="a ranking.py results JSON: its subnets' stand-alone seeds")
    ap.add_argument("--longer", default="", help="standalone_noise.py JSON(s) of the band's subnets at more "
                    "steps (comma-separated, pooled seed by seed): the band is judged against them")
    ap.add_argument("--other-truth", action="append", default=[], metavar="JSON",
                    help="another ranking.py JSON of the same subnets at another stand-alone budget (repeatable): "
                    "what its truth prefers, beside this one's")
    ap.add_argument("--name", default="ranking_bias")
    a = ap.parse_args()
    with exits_on_refusal(ap, "ranking_bias"):
        truth, runs = load_truth(a.truth)
        rankers = read_rows(truth)
        subsets = subset_indices(truth)
        targets = {name: runs.mean(1) for name in subsets}
        truth_label = f"{runs.shape[1]} stand-alone seeds' mean"
        if a.longer:
            longer, idx, lruns = longer_runs(a.longer, truth)
            if sorted(idx) != sorted(subsets["band"]):
                raise Refused(f"{a.longer} reran other subnets than the band's {len(subsets['band'])}")
            targets["band"] = np.full(len(runs), np.nan)
            targets["band"][idx] = lruns.mean(1)
            truth_label += f"; band: {lruns.shape[1]} seeds of {longer['truth_steps']:,} steps"
        others = {path: load_truth(path) for path in a.other_truth}  # other budgets' truths of these subnets
        for path, (other, _) in others.items():
            if [s["arch"] for s in other["subnets"]] != [s["arch"] for s in truth["subnets"]]:
                raise Refused(f"{path} trained other subnets than {a.truth}")
    feats = [arch_features(s["arch"]) for s in truth["subnets"]]
    features = {f: np.array([x[f] for x in feats]) for f in feats[0]}
    truth_prefers = {name: preferences(targets[name], features, idx) for name, idx in subsets.items()}
    other_truths = {path: {"truth_steps": other.get("truth_steps"), "seeds": other_runs.shape[1],
                           **{name: preferences(other_runs.mean(1), features, idx) for name, idx in subsets.items()}}
                    for path, (other, other_runs) in others.items()}
    for path, o in other_truths.items():
        print(f"{path} ({o['seeds']} seeds of {o['truth_steps']:,} steps) prefers, band / all: " + ", ".join(
            f"{f} {o['band'][f]:+.2f} / {o['all'][f]:+.2f}" for f in SHOWN))
    rows = {label: {"source": r["source"], "variant": r["variant"], "score": r["score"], "steps": r["steps"],
                    "seeds": len(r["scores"]), **judged(r["scores"], targets, features, subsets)}
            for label, r in rankers.items()}
    across = across_rows(rows, truth_prefers["band"])
    table = markdown(rows, {**truth_prefers, "label": truth_label})
    print(table)
    print("across the supernets, each feature's band bias against the band tau: " +
          ", ".join(f"{f} {t:+.2f}" for f, t in sorted(across.items(), key=lambda kv: kv[1])))
    png = RESULTS / f"{a.name}.png"
    plot(rows, truth_prefers, list(features), across, png)
    write_result(a.name, {"truth": a.truth, "truth_seeds": runs.shape[1], "longer": a.longer, "subsets": subsets,
                          "features": list(features), "truth_prefers": truth_prefers, "other_truths": other_truths, "rows": rows,
                          "across_rows_band": across, "table": table,
                          "plot": png.name})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
