"""Can a few stand-alone trainings correct the supernet's bias? A fitted correction, judged on the search's picks.

The supernets' errors are common to their seeds (``ranking_bias.py``: the wide stage-0 expansion
over-rated, depth under-rated), so a user who trains some archs stand-alone could fit that bias
out of the score. This fits, on the truth's 36 subnets (their stand-alone top-1, seed mean),
ridge regressions of the truth on each arch's per-stage depth, mean kernel and mean expansion,
with and without the supernet's search_val loss (the ridge penalty chosen by leave-one-out), and
judges each on archs none of them saw: the 21 picks of ``--score-picks``'s searches, near the top
of the band, by Kendall tau against their retrained top-1, per supernet seed:

- ``features``: the arch's features alone (a predictor that needs no supernet);
- ``loss_and_features``: the supernet's loss with the features, fitted on all 36;
- ``band_residual_<alpha>``: the loss mapped linearly to top-1 on the band's 12, plus a ridge of
  the features on what it leaves (fixed penalties: too few archs to choose one).

    python benchmarks/ranking_calibration.py \\
        --subnets results/ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_b128_steps1200_s8.json \\
        --picks results/ranking_t2000_s11_nr1_cl_picks_order_s8.json \\
        --search results/ranking_t2000_s11_nr1_cl_deep_rteacher_psofa_search10_p32g6.json

Writes ``benchmarks/results/<--name>.json`` and prints one line per scorer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ranking_bias import arch_features
from search_picks import retrained_picks

from _common import write_result
from elastic_nas.search.ranking import kendall_tau

ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
BAND_ALPHAS = (1.0, 10.0, 100.0)


def features(arch) -> list[float]:
    """Per choice stage: depth, and ``ranking_bias``'s mean kernel and mean expansion."""
    f = arch_features(arch)
    return [v for i, ops in enumerate(arch) for v in (len(ops), f[f"kernel s{i}"], f[f"expansion s{i}"])]


class Ridge:
    """Least squares with an L2 penalty on the standardised features (the intercept free)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, alpha: float):
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-9
        z = np.c_[np.ones(len(x)), (x - self.mu) / self.sd]
        penalty = alpha * np.eye(z.shape[1])
        penalty[0, 0] = 0.0
        self.w = np.linalg.solve(z.T @ z + penalty, z.T @ y)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.c_[np.ones(len(x)), (x - self.mu) / self.sd] @ self.w


def loo_ridge(x: np.ndarray, y: np.ndarray) -> tuple[Ridge, float]:
    """The ridge whose penalty has the least leave-one-out squared error, and that penalty."""
    def loo_error(alpha: float) -> float:
        keep = ~np.eye(len(y), dtype=bool)
        return sum(float((Ridge(x[k], y[k], alpha)(x[i:i + 1])[0] - y[i]) ** 2) for i, k in enumerate(keep))

    alpha = min(ALPHAS, key=loo_error)
    return Ridge(x, y, alpha), alpha


def judged(subnets: dict, picks: dict, search: dict) -> dict:
    variant = picks["picks_order"]["chosen_by"].split(" seed ")[0]
    truth = np.array([np.mean(s["test_top1_seeds"]) for s in subnets["subnets"]])
    x = np.array([features(s["arch"]) for s in subnets["subnets"]])
    band = np.array([s["group"] == "band" for s in subnets["subnets"]])
    pick_archs = [p["arch"] for p in retrained_picks(search)]
    px, found = np.array([features(a) for a in pick_archs]), np.array(picks["picks_order"]["retrained_top1"])
    if len(px) != len(found) or any(s["arch"] in pick_archs for s in subnets["subnets"]):
        raise SystemExit("ranking_calibration: the picks JSON does not hold the search's picks, or they overlap the truth")
    model, alpha = loo_ridge(x, truth)
    out = {"variant": variant, "subnets": len(truth), "picks": len(found),
           "features": {"alpha": alpha, "tau": round(kendall_tau(model(px), found), 4)}, "seeds": []}
    losses = zip(subnets["variants"][variant]["val_losses"], picks["picks_order"][variant]["val_losses"])
    for loss, pick_loss in losses:
        score, pick_score = -np.array(loss), -np.array(pick_loss)
        both, both_alpha = loo_ridge(np.c_[score, x], truth)
        line = np.polyfit(score[band], truth[band], 1)
        residual = truth[band] - np.polyval(line, score[band])
        seed = {"loss": round(kendall_tau(pick_score, found), 4),
                "loss_and_features": round(kendall_tau(both(np.c_[pick_score, px]), found), 4),
                "loss_and_features_alpha": both_alpha}
        for a in BAND_ALPHAS:
            fitted = np.polyval(line, pick_score) + Ridge(x[band], residual, a)(px)
            seed[f"band_residual_{a:g}"] = round(kendall_tau(fitted, found), 4)
        out["seeds"].append(seed)
    out["mean"] = {k: round(float(np.mean([s[k] for s in out["seeds"]])), 4) for k in out["seeds"][0]
                   if not k.endswith("_alpha")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnets", required=True, help="a ranking.py JSON with the chooser variant's subnet scores")
    ap.add_argument("--picks", required=True, help="a ranking.py --score-picks JSON (picks_order) of that variant")
    ap.add_argument("--search", required=True, help="the ranking.py --search-seeds JSON whose picks those are")
    ap.add_argument("--name", default="ranking_calibration")
    a = ap.parse_args()
    runs = [json.loads(Path(p).read_text()) for p in (a.subnets, a.picks, a.search)]
    out = judged(*runs)
    print(f"over the {out['picks']} picks, fitted on the {out['subnets']} truth subnets: the features alone "
          f"tau {out['features']['tau']:+.2f} (alpha {out['features']['alpha']:g})")
    for key, mean in out["mean"].items():
        per_seed = " / ".join(f"{s[key]:+.2f}" for s in out["seeds"])
        print(f"  {key}: {per_seed} (mean {mean:+.2f})")
    write_result(a.name, {**out, "inputs": {"subnets": a.subnets, "picks": a.picks, "search": a.search}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
