"""Did the search find something? Each search's retrained pick against the other pickers'.

``ranking.py --search-seeds N`` retrains every search's pick (evolution and random search, one per
search seed) and the largest arch under the budget (the MACs proxy's pick), 3 stand-alone seeds
each. This reads those retrains back from one or more ranking JSONs and sets them against issue
17's search target: evolution's picks ahead of random search's and of the largest-MACs arch by more
than the stand-alone seed SD. Per JSON, with percentile bootstrap 95 % CIs:

- evolution - random search, paired by search seed (the differences resampled);
- each method - the largest-MACs arch (the picks' means over search seeds; its 3 seeds);
- with ``ranking.py --finalists``, the finalist picks: evolution's against random search's plain
  and finalist picks, and each method's finalist pick against its plain one (paired);
- the supernet's score against the retrained top-1 over the picks (Kendall τ): how well it orders
  archs near the top of the space, where a search's picks are;
- the same arch retrained in more than one JSON: each run's seeds side by side (one arch, one
  recipe, other runs: how far a 3-seed figure moves between machines and layouts);
- with ``--retrains``, the same picks rerun by ``standalone_noise.py --picks all`` (e.g. at twice
  the truth's steps), judged against the seed SD of those reruns; where the reruns also hold the
  random archs of the band that ``ranking.py`` set the picks against (``--subnets``), the picks
  against them at that budget.

    python benchmarks/search_picks.py results/ranking_t2000_s3_nr1_m40_chance.json \\
        results/ranking_t2000_s7_nr1_cl_deep_search5.json \\
        --retrains results/standalone_noise_picks_chance_t4000_cl.json

Writes ``benchmarks/results/<--name>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ranking_table import Refused, exits_on_refusal, load

from _common import write_result
from elastic_nas.search.ranking import bootstrap_ci, held_out_tau, kendall_tau, mean_difference_ci, seed_agreement

METHODS = ("evolution", "random")
FINALISTS = ("evolution_finalists", "random_finalists")  # ranking.py --finalists: a second opinion's picks
# paired by search seed, beside the target's evolution - random: what the second opinion adds, and
# whether evolution still leads when random search gets the same second opinion
FINALIST_PAIRS = (("evolution_finalists", "random"), ("evolution_finalists", "random_finalists"),
                  ("evolution_finalists", "evolution"), ("random_finalists", "random"))


def difference(a, b) -> dict:
    diff, lo, hi = mean_difference_ci(a, b)
    return {"mean": round(diff, 2), "ci95": [round(lo, 2), round(hi, 2)]}


def rerun_seeds(path: str, retrains: dict) -> tuple[dict[str, list[float]], float, int]:
    """A ``standalone_noise.py --picks all`` JSON: each arch's rerun seeds (by arch), their seed SD as the
    truth's is taken (``seed_agreement``: the spread at that budget, not the truth's), and the steps they ran."""
    archs, final = retrains.get("archs"), retrains.get("top1", {}).get("final")
    if not archs or not final or len(archs) != len(final):
        raise Refused(f"{path} names no archs (rerun it with standalone_noise.py --picks all)")
    sd = seed_agreement(final)["seed_sd"]
    return {json.dumps(a): s for a, s in zip(archs, final)}, round(sd, 2), retrains["truth_steps"]


def judged(path: str, run: dict, retrains: tuple | None = None) -> dict:
    """One JSON's picks against each other and against the seed SD (of one run, and of a 3-seed mean).
    With ``retrains`` (``rerun_seeds``) the picks are read from those reruns and judged against their SD."""
    q = run["search_quality"]
    per_seed = q.get("search_seeds")
    if not per_seed or len(per_seed) < 2:
        raise Refused(f"{path} has fewer than 2 search seeds (ranking.py --search-seeds)")
    by_arch, sd, steps = retrains or ({}, q["standalone_seed_sd"], run.get("truth_steps"))

    def rerun(key: str) -> list[float]:
        if key not in by_arch:
            raise Refused(f"the reruns for {path} miss the pick {key}")
        return by_arch[key]

    def seeds(pick: dict) -> list[float]:
        return rerun(json.dumps(pick["arch"])) if retrains else pick["retrained_top1_seeds"]

    methods = tuple(per_seed[0])
    means = {m: [float(np.mean(seeds(p[m]))) for p in per_seed] for m in methods}
    largest = seeds(q["picks"]["largest_macs"])
    out = {"variant": q["variant"], "search_score": q.get("search_score", "top1"), "search_seeds": len(per_seed),
           "retrain_steps": steps, "evaluations": q["evaluations"], "standalone_seed_sd": sd,
           "sd_of_3_seed_mean": round(sd / np.sqrt(3), 2),
           "pick_means": means, "largest_macs_seeds": largest,
           "mean_over_search_seeds": {m: round(float(np.mean(v)), 2) for m, v in means.items()},
           "largest_macs_mean": round(float(np.mean(largest)), 2),
           # paired by search seed: the per-seed differences against 0
           "evolution_minus_random": difference(np.subtract(means["evolution"], means["random"]), [0.0]),
           **{f"{m}_minus_largest_macs": difference(means[m], largest) for m in methods}}
    out["target_met"] = all(out[k]["mean"] > sd for k in ("evolution_minus_random", "evolution_minus_largest_macs"))
    if set(FINALISTS) <= set(methods):
        out |= {f"{m}_minus_{n}": difference(np.subtract(means[m], means[n]), [0.0]) for m, n in FINALIST_PAIRS}
        out["target_met_finalists"] = all(out[f"evolution_finalists_minus_{n}"]["mean"] > sd
                                          for n in ("random", "random_finalists", "largest_macs"))
    # among the picks themselves (near the top of the space): does the supernet's score still order them?
    sign = -1.0 if out["search_score"] == "loss" else 1.0
    score = [np.nan if p[m].get("supernet_score") is None else sign * p[m]["supernet_score"] for p in per_seed for m in METHODS]
    if not np.isnan(score).any():  # older JSONs kept no score with the picks
        runs = [seeds(p[m]) for p in per_seed for m in METHODS]
        lo, hi = bootstrap_ci(kendall_tau, score, np.mean(runs, 1))
        # beside one retrain's own held-out tau: how far one stand-alone training of each pick orders them
        out["tau_score_vs_picks"] = {"archs": len(runs), **{k: round(v, 2) for k, v in order(score, runs).items()},
                                     "ci95": [round(lo, 2), round(hi, 2)],
                                     "one_retrain_held_out": round(held_out_tau(runs), 2)}
    if retrains:  # do the reruns keep the recorded retrains' order of the same archs?
        recorded = retrained_archs(run)
        before = [float(np.mean(v)) for v in recorded.values()]
        after = [float(np.mean(rerun(k))) for k in recorded]
        lo, hi = bootstrap_ci(kendall_tau, before, after)
        out["tau_recorded_vs_reruns"] = {"archs": len(after), "tau": round(kendall_tau(before, after), 2),
                                         "ci95": [round(lo, 2), round(hi, 2)]}
        # chance at the reruns' budget, where they also reran the random archs ranking.py set the picks against
        chance = [json.dumps(run["subnets"][i]["arch"]) for i in q.get("against_random_archs", {}).get("subnets", [])]
        if chance and all(c in by_arch for c in chance):
            base = [float(np.mean(by_arch[c])) for c in chance]
            out["random_archs"] = {"archs": len(base), "mean": round(float(np.mean(base)), 2)}
            out |= {f"{m}_minus_random_archs": difference(means[m], base) for m in methods}
    else:  # the headroom: the truth's own subnets under the budget, same recipe as the retrains
        under = sorted(float(np.mean(t["test_top1_seeds"])) for t in run.get("subnets", [])
                       if t["macs"] <= q["budget_macs"])
        out["truth_under_budget"] = {"subnets": len(under), "best": round(under[-1], 2) if under else None,
                                     "median": round(float(np.median(under)), 2) if under else None}
    return out


def retrained_picks(run: dict) -> list[dict]:
    """Every arch the JSON retrained (picks of all search seeds, then the largest-MACs arch), once each."""
    q = run["search_quality"]
    picks = [pick for p in q.get("search_seeds", []) for pick in p.values()] + list(q["picks"].values())
    return list({json.dumps(p["arch"]): p for p in picks}.values())


def retrained_archs(run: dict) -> dict[str, list[float]]:
    """Every arch the JSON retrained: its seeds."""
    return {json.dumps(p["arch"]): p["retrained_top1_seeds"] for p in retrained_picks(run)}


def order(score, runs) -> dict:
    """Kendall tau of ``score`` (higher ranks higher) against the archs' retrained means, and held
    out: each retrain seed against the other seeds' mean (``runs[arch][seed]``)."""
    return {"tau": kendall_tau(score, np.mean(runs, 1)), "held_out": held_out_tau(runs, score)}


def markdown(rows: dict) -> str:
    def cell(d: dict) -> str:
        return f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"

    lines = ["| JSON | search score | retrain steps | evolution / random search / largest MACs (mean) | "
             "evolution - random search (paired) | evolution - largest | random - largest | seed SD (3-seed mean) | "
             "target met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        m = r["mean_over_search_seeds"]
        lines.append(f"| {name} | {r['search_score']} | {r['retrain_steps']} | {m['evolution']:.2f} / {m['random']:.2f} / "
                     f"{r['largest_macs_mean']:.2f} | {cell(r['evolution_minus_random'])} | "
                     f"{cell(r['evolution_minus_largest_macs'])} | {cell(r['random_minus_largest_macs'])} | "
                     f"{r['standalone_seed_sd']:.2f} ({r['sd_of_3_seed_mean']:.2f}) | {'yes' if r['target_met'] else 'no'} |")
    rows_f = {name: r for name, r in rows.items() if "target_met_finalists" in r}
    if rows_f:
        lines += ["", "| JSON | evolution + finalists / random search + finalists (mean) | "
                  + " | ".join(f"{m.replace('_finalists', ' + finalists')} - {n.replace('_finalists', ' + finalists')} (paired)"
                               for m, n in FINALIST_PAIRS) + " | evolution + finalists - largest | target met |",
                  "| --- | --- | " + "--- | " * len(FINALIST_PAIRS) + "--- | --- |"]
        for name, r in rows_f.items():
            m = r["mean_over_search_seeds"]
            lines.append(f"| {name} | {m['evolution_finalists']:.2f} / {m['random_finalists']:.2f} | "
                         + " | ".join(cell(r[f"{a}_minus_{b}"]) for a, b in FINALIST_PAIRS)
                         + f" | {cell(r['evolution_finalists_minus_largest_macs'])} | "
                         f"{'yes' if r['target_met_finalists'] else 'no'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="ranking.py results JSONs with --search-seeds 2 or more")
    ap.add_argument("--retrains", nargs="*", default=[], metavar="JSON",
                    help="standalone_noise.py --picks all JSONs: the picks of the ranking JSON each names as its "
                         "source, rerun (another budget); judged as one more row against their own seed SD")
    ap.add_argument("--name", default="search_picks")
    a = ap.parse_args()
    with exits_on_refusal(ap, "search_picks"):
        runs = {Path(p).name: load(Path(p)) for p in a.runs}
        rows = {name: judged(name, run) for name, run in runs.items()}
        for path in a.retrains:
            retrains = load(Path(path))
            if (source := Path(retrains.get("source", "?")).name) not in runs:
                raise Refused(f"{path} reran the picks of {source}; name that JSON too")
            rows[f"{source}, reruns {Path(path).name}"] = judged(source, runs[source], rerun_seeds(path, retrains))
    seen: dict[str, dict[str, list[float]]] = {}
    for name, run in runs.items():
        for arch, seeds in retrained_archs(run).items():
            seen.setdefault(arch, {})[name] = seeds
    # the CPU of each run: the same seed rounds differently on another CPU's kernels and ends elsewhere
    again = [{"arch": json.loads(arch), "retrained_top1_seeds": by,
              "cpu_model": {n: runs[n].get("machine", {}).get("cpu_model") for n in by}}
             for arch, by in seen.items() if len(by) > 1]
    table = markdown(rows)
    print(table)
    for name, r in rows.items():
        if c := r.get("random_archs"):
            print(f"{name}: against {c['archs']} random archs of the band (mean {c['mean']:.2f}): " + ", ".join(
                f"{m} {r[f'{m}_minus_random_archs']['mean']:+.2f} [{r[f'{m}_minus_random_archs']['ci95'][0]:+.2f}, "
                f"{r[f'{m}_minus_random_archs']['ci95'][1]:+.2f}]" for m in r["pick_means"]))
        if t := r.get("tau_score_vs_picks"):
            print(f"{name}: Kendall tau of the supernet's score against the retrained top-1 over the {t['archs']} "
                  f"picks {t['tau']:+.2f} [{t['ci95'][0]:+.2f}, {t['ci95'][1]:+.2f}]; held out (a seed against the "
                  f"others' mean) {t['held_out']:+.2f}, one retrain's own {t['one_retrain_held_out']:+.2f}")
        if t := r.get("tau_recorded_vs_reruns"):
            print(f"{name}: Kendall tau of the {t['archs']} archs' recorded means against the reruns' "
                  f"{t['tau']:+.2f} [{t['ci95'][0]:+.2f}, {t['ci95'][1]:+.2f}]")
        if (h := r.get("truth_under_budget")) and h["subnets"]:
            print(f"{name}: the truth's {h['subnets']} subnets under the budget: best {h['best']:.2f}, "
                  f"median {h['median']:.2f} (seed means)")
    for r in again:
        print(f"retrained in {len(r['retrained_top1_seeds'])} runs: {r['arch']}: "
              + "; ".join(f"{n} ({r['cpu_model'][n]}) {s}" for n, s in r["retrained_top1_seeds"].items()))
    write_result(a.name, {"runs": a.runs, "retrains": a.retrains, "rows": rows, "same_arch_in_several_runs": again, "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
