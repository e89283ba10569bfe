"""Rank statistics for judging a supernet: does it order subnets as stand-alone training does?

Pure numpy: Kendall's tau-b, Spearman's rho, bootstrap confidence intervals over the
subnets (of one ranker's figure, and of its lead over another's), and precision@k.
``benchmarks/ranking.py`` reports them with the cheap baselines (MACs, params, random order) a
supernet must beat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b: ties in either list count as neither concordant nor discordant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denom = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float((da * db).sum() / denom) if denom else 0.0


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        out[tied] = out[tied].mean()
    return out


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom else 0.0


def bootstrap_ci(stat: Callable[[np.ndarray, np.ndarray], float], a: Sequence[float], b: Sequence[float],
                 resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(a, b)``, resampling the (a, b) pairs with replacement."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    # A resample with one side all tied has no rank statistic: leave it out rather than count a 0.
    draws = [stat(a[idx], b[idx]) for idx in rng.integers(0, len(a), size=(resamples, len(a)))
             if np.ptp(a[idx]) > 0 and np.ptp(b[idx]) > 0]
    return _percentile_ci(draws, level)


def lead_ci(stat: Callable[[np.ndarray, np.ndarray], float], pred: Sequence[float], baseline: Sequence[float],
            truth: Sequence[float], resamples: int = 2000, seed: int = 0,
            level: float = 0.95) -> tuple[float, float, float]:
    """``stat(pred, truth) - stat(baseline, truth)`` (e.g. a supernet's Kendall tau less the MACs
    proxy's) and its percentile bootstrap CI, both rankers judged on the same resampled subnets:
    whether ``pred`` leads ``baseline`` on subnets like these. Comparing ``pred``'s own CI with
    ``baseline``'s figure instead treats that figure as exact, though it moves with the subnets
    drawn too."""
    pred, baseline, truth = (np.asarray(x, dtype=float) for x in (pred, baseline, truth))
    rng = np.random.default_rng(seed)
    draws = [stat(pred[idx], truth[idx]) - stat(baseline[idx], truth[idx])
             for idx in rng.integers(0, len(truth), size=(resamples, len(truth)))
             if min(np.ptp(pred[idx]), np.ptp(baseline[idx]), np.ptp(truth[idx])) > 0]
    return (stat(pred, truth) - stat(baseline, truth), *_percentile_ci(draws, level))


def _percentile_ci(draws, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def precision_at_k(predicted: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Share of the ``k`` best by ``predicted`` that are among the ``k`` best by ``truth``."""
    k = min(k, len(truth))
    top_pred = set(np.argsort(-np.asarray(predicted, dtype=float), kind="stable")[:k].tolist())
    top_true = set(np.argsort(-np.asarray(truth, dtype=float), kind="stable")[:k].tolist())
    return len(top_pred & top_true) / k


def rank_report(predicted: Sequence[float], truth: Sequence[float], k: int = 5, seed: int = 0) -> dict:
    """Kendall tau and Spearman rho with bootstrap 95% CIs, and precision@k."""
    return {
        "kendall_tau": round(kendall_tau(predicted, truth), 4),
        "kendall_tau_ci95": [round(v, 4) for v in bootstrap_ci(kendall_tau, predicted, truth, seed=seed)],
        "spearman_rho": round(spearman_rho(predicted, truth), 4),
        "spearman_rho_ci95": [round(v, 4) for v in bootstrap_ci(spearman_rho, predicted, truth, seed=seed)],
        f"precision_at_{k}": round(precision_at_k(predicted, truth, k), 4),
        "n": len(truth),
    }


def seed_agreement(runs: Sequence[Sequence[float]]) -> dict:
    """How far repeated trainings of the same subnets agree: ``runs[i][s]`` is subnet ``i``'s
    result with seed ``s``. Kendall tau of every pair of seeds (the truth's noise ceiling) and
    one run's seed SD: the two-way residual's (the subnet's and the seed's mean taken out, so a
    seed that is better on every subnet adds nothing), which for two seeds is
    ``std(seed 0 - seed 1) / sqrt(2)``."""
    runs = np.asarray(runs, dtype=float)
    n, k = runs.shape
    pairs = [(s, t) for s in range(k) for t in range(s + 1, k)]
    taus = [kendall_tau(runs[:, s], runs[:, t]) for s, t in pairs]
    resid = runs - runs.mean(1, keepdims=True) - runs.mean(0, keepdims=True) + runs.mean()
    return {"pairwise_kendall_tau": {f"{s}-{t}": round(v, 4) for (s, t), v in zip(pairs, taus)},
            "pairwise_kendall_tau_mean": round(float(np.mean(taus)), 4) if taus else None,
            "seed_sd": round(float(np.sqrt((resid ** 2).sum() / ((n - 1) * (k - 1)))), 4) if n > 1 and k > 1 else None}


def held_out_tau(runs: Sequence[Sequence[float]], predicted: Sequence[float] | None = None) -> float:
    """Kendall tau against each seed's held-out truth, the mean of the other seeds' runs
    (``runs[i][s]`` as in ``seed_agreement``), averaged over the seeds: of ``predicted`` or,
    without it, of the held-out seed's own run. So a ranker and one stand-alone training are
    judged on the same targets: the supernet must beat what training every subnet once gives."""
    runs = np.asarray(runs, dtype=float)
    k = runs.shape[1]
    if k < 2:
        raise ValueError("held_out_tau needs at least 2 seeds")
    rest = [np.delete(runs, s, axis=1).mean(1) for s in range(k)]
    return float(np.mean([kendall_tau(runs[:, s] if predicted is None else predicted, rest[s]) for s in range(k)]))


def truth_ceiling(runs: Sequence[Sequence[float]], baseline: Sequence[float], truth_seeds: Sequence[int] = (),
                  draws: int = 200, resamples: int = 500, seed: int = 0, level: float = 0.95) -> list[dict]:
    """What a perfect ranker could show against a stand-alone truth of ``k`` seeds, for each ``k``
    in ``truth_seeds`` (default: the measured count), with ``baseline`` (e.g. MACs) beside it.

    Model: a run is its subnet's true top-1 plus seed noise of one run's SD (``seed_agreement``'s);
    the true values are the seed means drawn in toward their mean so that their spread is the
    measured one less the noise's share (``var(mean) - sd**2 / k_measured``), in the same order.
    Each of ``draws`` simulated truths is the mean of ``k`` noisy runs. Per ``k``: the perfect
    ranker's (the true order's) Kendall tau against them, the lower bound of its bootstrap CI
    (``resamples`` per draw), the baseline's tau, the share of draws in which that lower bound
    clears the baseline's tau (what a supernet ranking perfectly would need to show it beats the
    baseline), and the lower bound of its paired lead over the baseline (``lead_ci``) with the
    share of draws in which that lies above 0. Medians over the draws."""
    runs, baseline = np.asarray(runs, dtype=float), np.asarray(baseline, dtype=float)
    n, k_measured = runs.shape
    sd = seed_agreement(runs)["seed_sd"]
    means = runs.mean(1)
    spread = means.var(ddof=1)
    shrink = np.sqrt(max(spread - sd ** 2 / k_measured, 0.0) / spread) if spread > 0 else 0.0
    true = means.mean() + shrink * (means - means.mean())
    rankable = np.ptp(true) > 0  # else nothing to rank, and no CI: every resample of ``true`` is tied
    rng = np.random.default_rng(seed)
    out = []
    for k in truth_seeds or (k_measured,):
        oracle, low, base, lead_low = [], [], [], []
        for d in range(draws):
            truth = true + rng.normal(0.0, sd / np.sqrt(k), n)
            oracle.append(kendall_tau(true, truth))
            low.append(bootstrap_ci(kendall_tau, true, truth, resamples, seed + d, level)[0] if rankable else 0.0)
            base.append(kendall_tau(baseline, truth))
            lead_low.append(lead_ci(kendall_tau, true, baseline, truth, resamples, seed + d, level)[1]
                            if rankable and np.ptp(baseline) > 0 else 0.0)
        out.append({"truth_seeds": int(k), "oracle_kendall_tau": round(float(np.median(oracle)), 4),
                    "oracle_ci_low": round(float(np.median(low)), 4),
                    "baseline_kendall_tau": round(float(np.median(base)), 4),
                    "share_ci_low_above_baseline": round(float(np.mean(np.array(low) > np.array(base))), 4),
                    "oracle_lead_ci_low": round(float(np.median(lead_low)), 4),
                    "share_lead_ci_above_zero": round(float(np.mean(np.array(lead_low) > 0)), 4)})
    return out


def mean_difference_ci(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` of two independent samples (e.g. the retrained top-1 of a search's
    picks and of random archs) and its percentile bootstrap CI, each sample resampled on its own."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    draws = (a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(1)
             - b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(1))
    return (float(a.mean() - b.mean()), *_percentile_ci(draws, level))


__all__ = ["bootstrap_ci", "held_out_tau", "kendall_tau", "lead_ci", "mean_difference_ci", "precision_at_k",
           "rank_report", "ranks", "seed_agreement", "spearman_rho", "truth_ceiling"]
