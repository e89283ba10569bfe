"""How well could a perfect supernet rank against this benchmark's stand-alone truth?

Reads a ``ranking.py`` results JSON (each subnet's stand-alone top-1 per seed, its MACs, the
supernets' measured taus) and, per subset of subnets (all, stratified, the MACs band), asks
``elastic_nas.search.ranking.truth_ceiling`` what a ranker that knows every subnet's true
top-1 would score against a truth of 3, 6, 12 and 24 seeds: its Kendall tau, the lower bound of
its bootstrap 95 % CI, the MACs proxy's tau, and how often that lower bound clears the proxy's
tau (issue 17's target asks exactly that of the supernet); and, paired on the same resampled
subnets, how often the CI of its lead over MACs lies above 0. The supernets' measured taus are
reported beside the perfect ranker's at the measured seed count.

    python benchmarks/ranking_ceiling.py --from benchmarks/results/ranking_t2000_s3_nr1_cl_steps1970.json

Writes ``benchmarks/results/ranking_ceiling.json`` and ``ranking_ceiling.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import RESULTS, write_result
from elastic_nas.search.ranking import truth_ceiling

SUBSETS = ("all", "stratified", "band")
# the keys of each subset's tau in ranking.py's JSON (a variant's carry "_mean": the mean of its seeds)
TAU_KEYS = {"all": "kendall_tau", "stratified": "stratified_kendall_tau", "band": "band_kendall_tau"}


def subset_indices(result: dict) -> dict[str, list[int]]:
    subnets = result["subnets"]
    return {"all": list(range(len(subnets))),
            "stratified": [i for i, s in enumerate(subnets) if s["group"] == "stratified"],
            "band": list(result["band_subnets"])}


def plot(figures: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SUBSETS), figsize=(4.2 * len(SUBSETS), 3.6), sharey=True)
    for ax, name in zip(axes, SUBSETS):
        rows = figures[name]["ceiling"]
        seeds = [r["truth_seeds"] for r in rows]
        ax.plot(seeds, [r["oracle_kendall_tau"] for r in rows], "o-", label="perfect ranker")
        ax.plot(seeds, [r["oracle_ci_low"] for r in rows], "o--", label="its 95% CI lower bound")
        ax.plot(seeds, [r["baseline_kendall_tau"] for r in rows], "s:", label="MACs")
        for variant, tau in figures[name]["supernets"].items():
            ax.plot([seeds[0]], [tau], "k*", markersize=10, label=f"supernet ({variant}, measured)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(seeds, [str(s) for s in seeds])
        ax.set_title(f"{name} ({figures[name]['n']} subnets)")
        ax.set_xlabel("stand-alone seeds in the truth")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Kendall tau against the truth (median of draws)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", default=str(RESULTS / "ranking_t2000_s3_nr1_cl_steps1970.json"))
    ap.add_argument("--seeds", default="6,12,24", help="truth seed counts to simulate beside the measured one")
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--name", default="ranking_ceiling")
    a = ap.parse_args()
    result = json.loads(Path(a.source).read_text())
    runs = [s["test_top1_seeds"] for s in result["subnets"]]
    macs = [s["macs"] for s in result["subnets"]]
    counts = [len(runs[0])] + [int(k) for k in a.seeds.split(",") if k and int(k) != len(runs[0])]
    figures = {}
    for name, idx in subset_indices(result).items():
        figures[name] = {
            "n": len(idx),
            "macs_kendall_tau_measured": result["baselines"]["macs"][TAU_KEYS[name]],
            "supernets": {v: r[f"{TAU_KEYS[name]}_mean"] for v, r in result["variants"].items()},
            "ceiling": truth_ceiling([runs[i] for i in idx], [macs[i] for i in idx], counts, a.draws, a.resamples),
        }
        for row in figures[name]["ceiling"]:
            print(f"{name} ({len(idx)} subnets), truth of {row['truth_seeds']} seeds: perfect ranker tau "
                  f"{row['oracle_kendall_tau']:.2f} (CI lower bound {row['oracle_ci_low']:.2f}), MACs "
                  f"{row['baseline_kendall_tau']:.2f}; lower bound above MACs in "
                  f"{100 * row['share_ci_low_above_baseline']:.0f}% of truths; paired lead over MACs: CI lower "
                  f"bound {row['oracle_lead_ci_low']:+.2f}, above 0 in {100 * row['share_lead_ci_above_zero']:.0f}%",
                  flush=True)
    png = RESULTS / f"{a.name}.png"
    plot(figures, png)
    write_result(a.name, {"source": a.source, "truth_steps": result.get("truth_steps"), "draws": a.draws,
                          "resamples": a.resamples, "seed_sd": result.get("standalone_seed_sd"),
                          "subsets": figures, "plot": str(png.relative_to(RESULTS.parent.parent))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
