"""Rank statistics of the ranking benchmark, against brute-force definitions."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elastic_nas.search.ranking import (
    bootstrap_ci,
    held_out_tau,
    kendall_tau,
    lead_ci,
    mean_difference_ci,
    precision_at_k,
    rank_report,
    ranks,
    seed_agreement,
    spearman_rho,
    truth_ceiling,
)


def brute_tau_b(a, b) -> float:
    conc = disc = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        if da == 0:
            ties_a += 1
        if db == 0:
            ties_b += 1
        if da * db > 0:
            conc += 1
        elif da * db < 0:
            disc += 1
    pairs = len(a) * (len(a) - 1) // 2
    denom = np.sqrt((pairs - ties_a) * (pairs - ties_b))
    return (conc - disc) / denom if denom else 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=12))
def test_kendall_tau_b_matches_pair_counting_with_ties(pairs):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    assert kendall_tau(a, b) == pytest.approx(brute_tau_b(a, b))


def test_perfect_reversed_and_known_values():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(x, x) == 1.0 and kendall_tau(x, x[::-1]) == -1.0
    assert spearman_rho(x, [v**3 for v in x]) == pytest.approx(1.0)
    # One swapped neighbour pair among 5: tau = (9 - 1) / 10, rho = 1 - 6*2/(5*24)
    y = [1, 2, 4, 3, 5]
    assert kendall_tau(x, y) == pytest.approx(0.8)
    assert spearman_rho(x, y) == pytest.approx(0.9)


def test_ranks_share_ties():
    assert ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_precision_at_k():
    truth = [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]
    assert precision_at_k(truth, truth, 3) == 1.0
    assert precision_at_k([0.9, 0.1, 0.8, 0.7, 0.2, 0.3], truth, 3) == pytest.approx(2 / 3)


def test_bootstrap_ci_brackets_the_statistic_and_is_wide_for_few_points():
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    b = a + rng.normal(scale=0.5, size=40)
    lo, hi = bootstrap_ci(kendall_tau, a, b)
    assert lo < kendall_tau(a, b) < hi and hi - lo < 0.4
    lo10, hi10 = bootstrap_ci(kendall_tau, a[:10], b[:10])
    assert hi10 - lo10 > hi - lo  # fewer subnets, wider interval
    report = rank_report(b, a)
    assert report["n"] == 40 and report["kendall_tau_ci95"][0] < report["kendall_tau"] < report["kendall_tau_ci95"][1]


def test_lead_ci_brackets_one_rankers_lead_over_another_on_the_same_resamples():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=30)
    better = truth + rng.normal(scale=0.3, size=30)
    worse = truth + rng.normal(scale=1.5, size=30)
    lead, lo, hi = lead_ci(kendall_tau, better, worse, truth)
    assert lead == pytest.approx(kendall_tau(better, truth) - kendall_tau(worse, truth))
    assert 0 < lo < lead < hi  # a clear lead: the interval excludes 0
    assert lead_ci(kendall_tau, worse, better, truth)[0] == pytest.approx(-lead)
    twin = truth + rng.normal(scale=0.3, size=30)  # as good as ``better``: no lead either way
    _, lo, hi = lead_ci(kendall_tau, twin, better, truth)
    assert lo < 0 < hi
    same = lead_ci(kendall_tau, better, better, truth)
    assert same == (0.0, 0.0, 0.0)  # a ranker never leads itself


def test_seed_agreement_two_seeds_is_the_difference_sd_and_their_tau():
    rng = np.random.default_rng(3)
    runs = rng.normal(60, 5, size=(20, 2))
    out = seed_agreement(runs)
    assert out["pairwise_kendall_tau"] == {"0-1": round(kendall_tau(runs[:, 0], runs[:, 1]), 4)}
    assert out["seed_sd"] == pytest.approx(np.std(runs[:, 0] - runs[:, 1], ddof=1) / np.sqrt(2), abs=1e-4)


def test_seed_agreement_ignores_a_seed_better_everywhere_and_averages_the_pairs():
    base = np.arange(10.0)
    runs = np.stack([base, base + 3.0, base - 1.0], axis=1)  # seeds shift every subnet alike: no noise
    out = seed_agreement(runs)
    assert out["seed_sd"] == pytest.approx(0.0)
    assert out["pairwise_kendall_tau"] == {"0-1": 1.0, "0-2": 1.0, "1-2": 1.0}
    noisy = np.stack([base, base[::-1], base], axis=1)
    assert seed_agreement(noisy)["pairwise_kendall_tau_mean"] == pytest.approx((-1 + 1 - 1) / 3, abs=1e-4)


def test_held_out_tau_judges_a_ranker_and_one_run_on_the_same_targets():
    base = np.arange(12.0)
    runs = np.stack([base, base[::-1], base + 1.0], axis=1)
    # seed 0 held out: truth is the mean of seeds 1 and 2 (constant), so tau 0; seed 1: the mean of
    # 0 and 2 (base order), tau -1; seed 2: mean of 0 and 1 (constant), tau 0
    assert held_out_tau(runs) == pytest.approx(-1 / 3)
    assert held_out_tau(runs, base) == pytest.approx(1 / 3)
    two = np.random.default_rng(5).normal(size=(15, 2))
    assert held_out_tau(two) == pytest.approx(kendall_tau(two[:, 0], two[:, 1]))
    with pytest.raises(ValueError):
        held_out_tau(two[:, :1])


def test_mean_difference_ci_covers_the_difference_and_excludes_zero_when_apart():
    rng = np.random.default_rng(1)
    picks, random_archs = rng.normal(82, 2, size=10), rng.normal(76, 4, size=8)
    diff, lo, hi = mean_difference_ci(picks, random_archs)
    assert diff == pytest.approx(picks.mean() - random_archs.mean())
    assert 0 < lo < diff < hi
    same, lo, hi = mean_difference_ci(random_archs, random_archs)
    assert same == 0 and lo < 0 < hi


def test_truth_ceiling_is_perfect_without_noise_and_zero_without_differences():
    rng = np.random.default_rng(0)
    true = np.linspace(60, 80, 12)
    exact = np.repeat(true[:, None], 3, axis=1)  # every seed agrees: no noise
    [row] = truth_ceiling(exact, rng.permutation(12), draws=20, resamples=50)
    assert row["truth_seeds"] == 3 and row["oracle_kendall_tau"] == 1.0 and row["oracle_ci_low"] == 1.0
    assert row["share_ci_low_above_baseline"] == 1.0  # a random order never reaches 1
    assert row["oracle_lead_ci_low"] > 0 and row["share_lead_ci_above_zero"] == 1.0
    noise = rng.normal(0, 2, (12, 3))
    alike = 70 + noise - noise.mean(1, keepdims=True)  # seed noise only: every subnet's mean is 70
    [row] = truth_ceiling(alike, true, draws=20, resamples=50)
    assert row["oracle_kendall_tau"] == 0.0 and row["oracle_ci_low"] == 0.0
    assert abs(row["baseline_kendall_tau"]) < 0.3  # any order is as good as chance against noise


def test_truth_ceiling_rises_with_truth_seeds_and_sees_the_baseline_through_the_same_noise():
    rng = np.random.default_rng(1)
    true = np.linspace(60, 70, 24)
    runs = true[:, None] + rng.normal(0, 3, (24, 3))
    rows = truth_ceiling(runs, true, (3, 12, 48), draws=40, resamples=100)
    taus = [r["oracle_kendall_tau"] for r in rows]
    assert [r["truth_seeds"] for r in rows] == [3, 12, 48]
    assert taus[0] < taus[1] < taus[2] < 1.0 and rows[0]["oracle_ci_low"] < taus[0]
    # a baseline in the model's true order (the seed means') is the perfect ranker, draw by draw
    rows = truth_ceiling(runs, runs.mean(1), (3, 12), draws=40, resamples=100)
    assert all(r["baseline_kendall_tau"] == r["oracle_kendall_tau"] and r["share_ci_low_above_baseline"] == 0.0
               and r["share_lead_ci_above_zero"] == 0.0 for r in rows)  # no lead over itself


def test_score_images_figures_rank_a_lower_loss_higher_and_pool_blocks_by_size(monkeypatch):
    """``ranking.py --score-images``: the figures behind "the loss ranks the band better". A loss
    that falls as the truth rises ranks perfectly (lower loss first); pooling the first k blocks
    weighs each by its images; loss minus top-1 is paired per seed and block."""
    from pathlib import Path
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking

    target = np.arange(6, dtype=float)  # subnet 5 is the best
    a = SimpleNamespace(score_images=300, val_images=100, supernet_seeds=2)
    # top-1: block 0 reversed, blocks 1-2 right, so one block alone is -1 and all three pooled are +1
    top1 = np.stack([-target, target, target], 1) * 10
    loss = np.stack([-target] * 3, 1) + 5.0  # lower for the better subnets, every block
    results = {ranking.score_images_key(a, "v", s, 7): {"block_images": [100, 100, 100], "top1": top1.tolist(),
                                                         "loss": loss.tolist()} for s in range(2)}
    subsets = {"all": list(range(6)), "band": [3, 4, 5]}
    out = ranking.images_figures(a, ["v"], target, subsets, results, {"v": 7})["v"]
    assert out["loss"]["by_images"][100] == {"all": 1.0, "band": 1.0}
    assert out["top1"]["by_images"][100]["all"] == -1.0 and out["top1"]["by_images"][300]["all"] == 1.0
    assert out["top1"]["each_block_range"]["all"] == [-1.0, 1.0]
    diff = out["loss_minus_top1_each_block"]["all"]
    assert diff["mean"] == pytest.approx(2 / 3, abs=1e-4) and (diff["loss_ahead"], diff["of"]) == (2, 6)
    assert out["seeds"][0]["loss"]["pooled"] == pytest.approx(list(loss.mean(1)))  # the mean loss, not negated


def test_picks_order_judges_each_supernet_on_the_searches_picks_and_checks_the_chooser(monkeypatch, tmp_path):
    """``ranking.py --score-picks``: every supernet seed's loss on the picks against their retrained
    top-1 (a lower loss ranks higher), held out per retrain seed; the chooser's rescored losses are
    checked against the scores its searches saw; a supernet not yet scored is listed as missing."""
    from pathlib import Path
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking

    def pick(i: int, top1: float, score: float | None) -> dict:
        return {"arch": [[i]], "macs": 100 - i, "retrained_top1_seeds": [top1 - 1, top1, top1 + 1], "supernet_score": score}

    seeds = [{"evolution": pick(0, 90, 0.70), "random": pick(1, 85, 0.75)},
             {"evolution": pick(2, 88, 0.72), "random": pick(0, 90, 0.70)}]  # the same arch found twice: scored once
    largest = pick(3, 80, None)  # the MACs proxy's pick: no supernet score
    source = tmp_path / "search.json"
    source.write_text(json.dumps({"truth_steps": 2000, "search_quality": {
        "variant": "v", "search_seeds": seeds, "picks": {"largest_macs": largest}}}))
    a = SimpleNamespace(score_picks=str(source), supernet_seeds=2, calib_images=10, finetune_steps=0)
    losses = {"v": [[0.70, 0.75, 0.72, 0.90], [0.70, 0.72, 0.75, 0.90]], "w": [[0.9, 0.8, 0.7, 0.6]] * 2}
    # after a fine-tune (--finetune-steps): from v's weights in the reverse order, from scratch in v's seed-0 order
    tuned = {"inherited": [0.9, 0.7, 0.8, 0.6], "scratch": losses["v"][0]}

    def finished(a, work, jobs):  # the recorded losses of the jobs "done": supernet w's seed 1 is not
        return [None if (j[4], j[5]) == ("w", 1) else
                {"val_losses": tuned[j[10]] if j[2] is ranking.finetuned else losses[j[4]][j[5]]} for j in jobs]

    monkeypatch.setattr(ranking, "finished", finished)
    out, missing = ranking.picks_order(a, tmp_path, ["v", "w"], {}, {"v": 5, "w": 5})
    assert out["archs"] == 4 and out["retrained_top1"] == [90.0, 85.0, 88.0, 80.0]
    assert out["v"]["seeds"][0] == {"tau": 1.0, "held_out": 1.0}  # seed 0 orders 90 > 88 > 85 > 80
    assert out["v"]["seeds"][1]["tau"] == pytest.approx(4 / 6, abs=1e-4)  # 85 and 88 swapped
    assert out["macs"]["tau"] == pytest.approx(4 / 6, abs=1e-4)  # MACs fall with the arch index: 85 and 88 swapped
    assert out["chooser_max_abs_diff_to_search"] == pytest.approx(0.0)
    assert "w" not in out and len(missing) == 1 and missing[0].endswith("_w_s1_5")
    assert "finetuned_0" not in out

    a = SimpleNamespace(**{**vars(a), "finetune_steps": 7, "finetune_lr": 0.02, "truth_lr": 0.1, "finetune_scratch_seeds": 1})
    out, missing = ranking.picks_order(a, tmp_path, ["v", "w"], {}, {"v": 5, "w": 5})
    ft = out["finetuned_7"]
    assert ft["v"]["tau_mean"] == -1.0 and ft["scratch"]["tau_mean"] == 1.0 and "w" not in ft
    assert len(missing) == 2 and all(m.endswith("_w_s1_5") for m in missing)  # w's seed 1: scored, fine-tuned


def test_ranking_calibration_fits_a_correction_and_judges_it_on_archs_it_did_not_see(monkeypatch):
    """benchmarks/ranking_calibration.py: an arch's features are per-stage depth, mean kernel and mean
    expansion; the ridge recovers a linear truth, its leave-one-out penalty is the smallest where
    nothing is noise; and a fitted correction is judged on the picks alone (never on its own archs)."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_calibration as rc

    assert rc.features([[5, 4], [0]]) == [2, 7.0, 5.0, 1, 3.0, 4.0]  # (7,6) (7,4) / (3,4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = 2.0 * x[:, 0] - x[:, 2] + 5.0
    model, alpha = rc.loo_ridge(x, y)
    assert alpha == min(rc.ALPHAS) and np.allclose(model(x), y, atol=0.05)
    archs = [[[a], [b, c]] for a in range(6) for b in (0, 3) for c in (1, 5)]  # 24 distinct archs
    truth = [float(np.sum(rc.features(a))) for a in archs]  # a truth the features explain exactly
    subnets = {"subnets": [{"arch": a, "group": "band" if i % 2 else "stratified", "test_top1_seeds": [t, t]}
                           for i, (a, t) in enumerate(zip(archs[:16], truth[:16]))],
               "variants": {"v": {"val_losses": [[-t for t in truth[:16]]]}}}
    picks = {"picks_order": {"chosen_by": "v seed 0", "retrained_top1": truth[16:], "v": {"val_losses": [
        [-t for t in truth[16:]]]}}}
    search = {"search_quality": {"search_seeds": [{"evolution": {"arch": a}, "random": {"arch": b}}
                                                  for a, b in zip(archs[16::2], archs[17::2])], "picks": {}}}
    out = rc.judged(subnets, picks, search)
    # the loss orders the picks exactly; the features, fitted on the other 16, nearly (ties, the penalty)
    assert out["picks"] == 8 and out["seeds"][0]["loss"] == 1.0 and out["features"]["tau"] > 0.8
    search["search_quality"]["search_seeds"][0]["evolution"]["arch"] = archs[0]  # a pick the fit saw
    with pytest.raises(SystemExit, match="overlap"):
        rc.judged(subnets, picks, search)


def test_ranking_bias_reads_what_a_ranker_rewards_and_which_bias_goes_with_a_poor_band(monkeypatch):
    """benchmarks/ranking_bias.py: a ranker that orders by one feature prefers it at tau 1; a
    supernet's bias is its preference minus the truth's, and across supernets a larger bias on a
    feature that goes with a lower band tau reads negative."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_bias

    f = ranking_bias.arch_features([[5, 4], [0], [1, 3, 2], [0], [3]])  # (kernel, expansion) (7,6) (7,4) / (3,4) / (3,6) (5,6) (5,4) ...
    assert f["depth"] == 8 and f["kernel s0"] == 7 and f["expansion s0"] == 5 and f["kernel s2"] == pytest.approx(13 / 3)
    archs = [[[op]] for op in (0, 2, 4, 1, 3, 5)]  # kernel 3, 5, 7, then the same with expansion 6
    features = {k: np.array([ranking_bias.arch_features(a)[k] for a in archs]) for k in ("kernel s0", "expansion s0")}
    prefs = ranking_bias.preferences([1, 2, 3, 1, 2, 3], features, list(range(6)))  # ranks by the kernel only
    assert prefs["kernel s0"] == pytest.approx(1.0) and prefs["expansion s0"] == pytest.approx(0.0)
    rows = {name: {"band": {"tau": tau, "prefers": {"kernel s0": bias, "expansion s0": 0.1 * i}}}
            for i, (name, tau, bias) in enumerate([("a", 0.4, 0.1), ("b", 0.2, 0.3), ("c", 0.0, 0.5)])}
    across = ranking_bias.across_rows(rows, {"kernel s0": -0.1, "expansion s0": 0.0})
    assert across["kernel s0"] == pytest.approx(-1.0) and across["expansion s0"] == pytest.approx(-1.0)


def test_search_picks_judges_evolution_paired_by_search_seed_and_against_the_seed_sd(monkeypatch):
    """benchmarks/search_picks.py: evolution's lead over random search is paired by search seed,
    its lead over the largest-MACs arch is against that arch's retrain seeds, and the target holds
    only where both leads exceed one run's seed SD."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import search_picks
    from ranking_table import Refused

    def run(evolution: list[float], random: list[float], largest: list[float], sd: float) -> dict:
        seeds = [{m: {"arch": [[i, k]], "retrained_top1_mean": v, "retrained_top1_seeds": [v] * 3}
                  for k, (m, v) in enumerate((("evolution", e), ("random", r)))}
                 for i, (e, r) in enumerate(zip(evolution, random))]
        truth = [{"macs": m, "test_top1_seeds": [t, t + 2]} for m, t in ((90, 70), (100, 80), (110, 99))]
        return {"subnets": truth, "search_quality": {"variant": "v", "evaluations": 64, "budget_macs": 100,
                                                     "standalone_seed_sd": sd, "search_seeds": seeds,
                                                     "picks": {**seeds[0], "largest_macs": {
                                                         "arch": [[9]], "retrained_top1_seeds": largest}}}}

    # random search's picks vary a lot between seeds, but evolution is 2 points ahead in every one
    far = search_picks.judged("x", run([72, 82, 92, 77], [70, 80, 90, 75], [60, 61, 62], sd=1.5))
    assert far["evolution_minus_random"]["mean"] == pytest.approx(2.0)
    assert far["evolution_minus_random"]["ci95"] == pytest.approx([2.0, 2.0])  # paired: no spread left
    assert far["evolution_minus_largest_macs"]["mean"] == pytest.approx(19.75) and far["target_met"]
    assert far["truth_under_budget"] == {"subnets": 2, "best": 81.0, "median": 76.0}  # the headroom, over budget left out
    assert not search_picks.judged("x", run([72, 82, 92, 77], [70, 80, 90, 75], [60, 61, 62], sd=3.0))["target_met"]
    assert "tau_score_vs_picks" not in far  # no supernet scores kept with these picks
    scored = run([72, 82, 92, 77], [70, 80, 90, 75], [60, 61, 62], sd=1.5)
    scored["search_quality"]["search_score"] = "loss"
    for p in scored["search_quality"]["search_seeds"]:  # a lower loss for every higher top-1 but one pair
        for m in search_picks.METHODS:
            p[m]["supernet_score"] = 1.0 - p[m]["retrained_top1_mean"] / 100
    seeds = scored["search_quality"]["search_seeds"]
    seeds[0]["evolution"]["supernet_score"], seeds[0]["random"]["supernet_score"] = 0.30, 0.28  # 72 % and 70 %
    t = search_picks.judged("x", scored)["tau_score_vs_picks"]
    assert t["archs"] == 8 and t["tau"] == pytest.approx(1 - 2 / 28, abs=0.005) and t["ci95"][0] <= t["tau"] <= t["ci95"][1]
    # every retrain seed is the pick's mean here: held out, the score reads as against the mean, one retrain perfectly
    assert t["held_out"] == pytest.approx(1 - 2 / 28, abs=0.005) and t["one_retrain_held_out"] == 1.0
    archs = search_picks.retrained_archs(run([72, 82], [70, 80], [60, 61, 62], sd=1.0))
    assert archs[json.dumps([[9]])] == [60, 61, 62] and len(archs) == 5
    with pytest.raises(Refused):
        search_picks.judged("x", run([72], [70], [60, 61, 62], sd=1.0))
    # the same picks rerun at another budget: read by arch, judged against the reruns' own seed SD
    reruns = {"archs": [[[9]], [[0, 0]], [[0, 1]], [[1, 0]], [[1, 1]]], "truth_steps": 4000,
              "top1": {"final": [[80, 80, 80], [85, 86, 87], [83, 84, 85], [91, 90, 89], [87, 88, 89]]}}
    by_arch, sd, steps = search_picks.rerun_seeds("r", reruns)
    assert sd == round(np.sqrt(0.8), 2) and steps == 4000
    again = search_picks.judged("x", run([72, 82], [70, 80], [60, 61, 62], sd=9.0), (by_arch, sd, steps))
    assert again["mean_over_search_seeds"] == {"evolution": 88.0, "random": 86.0}
    assert again["largest_macs_mean"] == 80.0 and again["retrain_steps"] == 4000 and again["target_met"]
    # recorded means 72, 70, 82, 80, 61 against reruns 86, 84, 90, 88, 80: the same order
    assert again["tau_recorded_vs_reruns"]["archs"] == 5 and again["tau_recorded_vs_reruns"]["tau"] == 1.0
    assert "random_archs" not in again  # the reruns hold no random archs of the band
    chance = run([72, 82], [70, 80], [60, 61, 62], sd=9.0)
    chance["search_quality"]["against_random_archs"] = {"subnets": [0, 1]}
    with_chance = ({**by_arch, json.dumps(90): [80, 82], json.dumps(100): [84, 86]}, sd, steps)
    for i, t in enumerate(chance["subnets"]):
        t["arch"] = 90 + 10 * i
    judged = search_picks.judged("x", chance, with_chance)
    assert judged["random_archs"] == {"archs": 2, "mean": 83.0}
    assert judged["evolution_minus_random_archs"]["mean"] == pytest.approx(5.0)
    assert judged["random_minus_random_archs"]["mean"] == pytest.approx(3.0)
    with pytest.raises(Refused):  # a pick the reruns do not have
        search_picks.judged("x", run([72, 82, 92], [70, 80, 90], [60, 61, 62], sd=1.0), (by_arch, sd, steps))


def test_ranking_table_judges_rankers_on_the_subnets_a_longer_run_retrained(monkeypatch, tmp_path):
    """benchmarks/ranking_table.py --longer: the reruns are matched to the truth's subnets by arch
    (any order), each ranker is judged against both budgets on those subnets only, later seeds of
    the same batch are pooled (a repeated seed is refused), and a rerun of an arch the truth never
    trained is refused."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_table

    truth = {"subnets": [{"arch": [[i]]} for i in range(5)]}
    runs = np.array([[70, 71], [80, 81], [75, 76], [90, 91], [60, 61]], dtype=float)  # order 4 < 0 < 2 < 1 < 3
    # the longer budget reverses subnets 1 and 2, and leaves 4 out
    rerun = {"archs": [[[3]], [[2]], [[0]], [[1]]], "truth_steps": 4000,
             "top1": {"final": [[95, 94], [89, 90], [85, 86], [87, 88]]}}
    path = tmp_path / "rerun.json"
    path.write_text(json.dumps(rerun))
    _, idx, longer = ranking_table.longer_runs(str(path), truth)
    assert idx == [3, 2, 0, 1] and longer.shape == (4, 2)
    by_truth, by_longer = [70, 80, 75, 90, 60], [50, 87, 89, 95, 99]  # subnet 4's 99 must not count
    r = ranking_table.judged_longer({"short": [by_truth], "long": [by_longer]}, runs, idx, longer)
    assert r["truth_vs_longer"]["tau"] == pytest.approx(4 / 6, abs=1e-4)  # one of six pairs swapped
    assert r["rankers"]["short"]["truth"]["mean"] == 1.0 and r["rankers"]["long"]["longer"]["mean"] == 1.0
    assert r["rankers"]["long"]["truth"]["mean"] == pytest.approx(4 / 6, abs=1e-4)
    assert r["longer_seeds"] == 2 and r["subnets"] == [3, 2, 0, 1]
    # more seeds of the same batch, run later in another order: pooled seed by seed
    more = {"archs": [[[0]], [[1]], [[2]], [[3]]], "truth_steps": 4000, "first_seed": 2,
            "top1": {"final": [[84, 83], [86, 85], [88, 87], [96, 97]]}}
    (tmp_path / "more.json").write_text(json.dumps(more))
    both = f"{path},{tmp_path / 'more.json'}"
    _, idx, pooled = ranking_table.longer_runs(both, truth)
    assert idx == [3, 2, 0, 1] and pooled.tolist() == [[95, 94, 96, 97], [89, 90, 88, 87], [85, 86, 84, 83],
                                                       [87, 88, 86, 85]]
    with pytest.raises(ranking_table.Refused, match="repeats seeds"):
        (tmp_path / "again.json").write_text(json.dumps({**more, "first_seed": 1}))
        ranking_table.longer_runs(f"{path},{tmp_path / 'again.json'}", truth)
    rerun["archs"][0] = [[7]]
    path.write_text(json.dumps(rerun))
    with pytest.raises(ranking_table.Refused):
        ranking_table.longer_runs(str(path), truth)


def test_ranking_table_judges_loss_rows_by_the_lowest_loss(monkeypatch, tmp_path):
    """benchmarks/ranking_table.py: a row of ``LOSS_ROWS`` ranks a run's subnets by their search_val
    loss, the lowest first, as the laptop search orders them; the same run's ``ROWS`` row by top-1;
    a run that kept no losses is refused."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_table

    run = {"subnets": [{"arch": [[i]]} for i in range(3)], "truth_steps": 2000, "batch": 64, "space": {}, "data": {},
           "variants": {"v": {"steps": 10, "scores": [[50.0, 60.0, 70.0]], "val_losses": [[0.9, 0.5, 0.7]]}}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    monkeypatch.setattr(ranking_table, "RESULTS", tmp_path)
    monkeypatch.setattr(ranking_table, "ROWS", {"by top-1": ("run.json", "v")})
    monkeypatch.setattr(ranking_table, "LOSS_ROWS", {"by the loss": ("run.json", "v")})
    rows = ranking_table.read_rows(run)
    assert [rows[k]["score"] for k in rows] == ["top-1", "loss"]
    truth = np.array([1.0, 3.0, 2.0])  # subnet 1 best, then 2, then 0: the loss's order, not top-1's
    everything = {"all": [0, 1, 2]}
    assert ranking_table.taus(rows["by the loss"]["scores"][0], truth, everything)["all"] == pytest.approx(1.0)
    assert ranking_table.taus(rows["by top-1"]["scores"][0], truth, everything)["all"] == pytest.approx(1 / 3)
    del run["variants"]["v"]["val_losses"]
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(ranking_table.Refused, match="no search_val losses"):
        ranking_table.read_rows(run)


def test_ranking_table_gives_each_rankers_lead_over_macs_with_a_paired_ci(monkeypatch):
    """benchmarks/ranking_table.py: every ranker's tau less the MACs proxy's, per supernet seed, with
    the paired CI; MACs leads itself by exactly 0, and the MACs-prior row sums z-scores."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_table

    rng = np.random.default_rng(0)
    true = rng.normal(60, 5, 30)
    runs = true[:, None] + rng.normal(0, 1, (30, 3))
    macs = np.exp(true / 20 + rng.normal(0, 0.3, 30))  # a noisy proxy of the true order
    subsets = {"all": list(range(30)), "stratified": list(range(20)), "band": list(range(20, 30))}
    perfect = ranking_table.judged([true, true + rng.normal(0, 0.1, 30)], runs, subsets, macs)
    lead = perfect["stratified"]["lead_over_macs"]
    assert len(lead["per_seed"]) == len(lead["ci95_per_seed"]) == 2
    assert all(lo < t < hi for t, (lo, hi) in zip(lead["per_seed"], lead["ci95_per_seed"]))
    assert lead["mean"] > 0 and "lead_over_macs" in perfect["band"]
    itself = ranking_table.judged([macs], runs, subsets, macs)["stratified"]["lead_over_macs"]
    assert itself["per_seed"] == [0.0] and itself["ci95_per_seed"] == [[0.0, 0.0]]
    blended = ranking_table.with_macs([true], macs)[0]
    assert blended.mean() == pytest.approx(0) and np.argmax(blended) in np.argsort(true)[-5:]
    assert set(ranking_table.WITH_MACS.values()) <= set(ranking_table.ROWS) | set(ranking_table.LOSS_ROWS)


def test_the_ranking_benchmarks_batch_128_supernet_is_the_one_the_laptop_trains(monkeypatch):
    """benchmarks/ranking.py's ``entangled_sandwich_deep_rteacher_psofa_b128`` (one process) stands for
    what jobs/supernet.yaml trains on its two workers: the same rule, shrinking schedule and space,
    the global batch of two workers and the LR the trainer's batch policy gives it there (the deep
    variant stays at 64)."""
    from pathlib import Path
    from types import SimpleNamespace

    from elastic_nas.config import SupernetConfig, load_config
    from elastic_nas.elastic.policy import ElasticLRPolicy, LRSettings

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking

    shipped = load_config(SupernetConfig, "jobs/supernet.yaml", [])
    policy = ElasticLRPolicy(LRSettings.from_config(shipped.optim, shipped.elastic, 18000))
    plan = policy.on_world_size(0, shipped.elastic.max_workers)
    a = SimpleNamespace(supernet_lr=shipped.optim.lr * ranking.BATCH / shipped.optim.reference_batch, budget=1.54,
                        source="synthetic", num_train=20000, difficulty="standard", data="", num_random=1)
    pipeline = "entangled_sandwich_deep_rteacher_psofa_b128"
    batch, lr = ranking.supernet_batch(a, pipeline)
    assert batch == plan.global_batch == 128
    assert lr == pytest.approx(shipped.optim.lr * policy.ramp.to_mult) == pytest.approx(0.2)
    assert ranking.supernet_batch(a, "entangled_sandwich_deep") == (64, pytest.approx(0.1))
    cfg = ranking.supernet_cfg(a, pipeline, 0)
    assert (cfg.strategy, cfg.sandwich, cfg.space) == (shipped.strategy, shipped.sandwich, shipped.space)


def test_benchmark_jobs_return_in_order_with_a_line_each_interval(monkeypatch, capsys):
    """benchmarks/_common.run_jobs: results in the jobs' order, in spawned processes or in this one,
    and a progress line as jobs finish (a ranking run's jobs take hours), but not one for each of
    hundreds of cached jobs ending in the same second: the first, the last, one per interval."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import _common

    def shown() -> list[str]:
        lines = [line for line in capsys.readouterr().out.splitlines() if "jobs done" in line]
        return [line.split(": ")[1].split(" ")[0] for line in lines]

    jobs = [(2, 10), (3, 2), (5, 1)]
    assert _common.run_jobs(pow, jobs, 2) == [1024, 9, 5]
    assert _common.run_jobs(pow, jobs, 1) == [1024, 9, 5]
    assert shown() == ["1/3", "3/3"] * 2  # quick jobs: within one interval
    monkeypatch.setattr(_common, "PROGRESS_EVERY_S", 0.0)  # every job ends an interval
    assert _common.run_jobs(pow, jobs, 1) == [1024, 9, 5]
    assert shown() == ["1/3", "2/3", "3/3"]


def test_zero_cost_proxies_follow_their_definitions(monkeypatch):
    """benchmarks/ranking_zero_cost.py: NASWOT reads which activation inputs are positive (an
    in-place SiLU overwrites its input, keeping its sign), and SynFlow is the synaptic flow: for a
    chain of layers with positive weights, each layer's sum of |w * dR/dw| is R (Euler), so L x R.
    On the space's subnets a residual block adds to SynFlow and SNIP only because every BN scale
    starts at 1: the space zero-initialises each residual branch's last BN, hiding the block."""
    import copy
    import math
    from pathlib import Path

    import torch
    from torch import nn

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_zero_cost as zc

    torch.manual_seed(0)
    x = torch.randn(6, 4)
    lin = nn.Linear(4, 8)
    codes = (lin(x) > 0).double()
    brute = torch.linalg.slogdet(codes @ codes.T + (1 - codes) @ (1 - codes).T)[1]
    for inplace in (False, True):
        net = nn.Sequential(lin, nn.SiLU(inplace=inplace))
        assert zc.naswot(net, x) == pytest.approx(float(brute))
    chain = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Conv2d(4, 2, 1, bias=False), nn.Flatten())
    ones = torch.ones(1, 3, 5, 5, dtype=torch.float64)
    positive = copy.deepcopy(chain).double()
    with torch.no_grad():
        for p in positive.parameters():
            p.abs_()
        r = float(positive(ones).sum())
    assert zc.synflow(chain, (1, 3, 5, 5)) == pytest.approx(math.log(2 * r))

    from elastic_nas.config import SpaceConfig
    from elastic_nas.spaces import build_space

    space = build_space(SpaceConfig(name="cream", input_size=32, stem_stride=2, width_mult=0.25,
                                    max_depths=[2, 3, 3, 3, 2]))
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    shallow, deep = (space.validate(a) for a in ([[1], [1], [1], [1], [1]], [[1], [1, 1], [1], [1], [1]]))
    one, two = zc.scores(space, shallow, x, y, 0), zc.scores(space, deep, x, y, 0)
    assert two["synflow"] > one["synflow"] + 1 and two["snip"] > one["snip"]
    assert zc.scores(space, deep, x, y, 0) == two  # each proxy on its own fresh net: SynFlow's |w| leaks nowhere

    def as_built(arch):  # the residual branches' last BNs at zero, as the space initialises them
        torch.manual_seed(0)
        return space.build_subnet(arch)

    assert zc.synflow(as_built(deep), x.shape) < zc.synflow(as_built(shallow), x.shape) + 0.1
    assert zc.snip(as_built(deep), x, y) < zc.snip(as_built(shallow), x, y)


def test_zero_cost_picks_keep_each_arch_once_and_each_run_its_own_scores(monkeypatch):
    """benchmarks/ranking_zero_cost.py --picks: an arch retrained in two runs keeps its first run's
    retrains, each run keeps the score its own supernet gave each of its picks (higher ranking
    higher, whether the search scored by the loss or by top-1), and a run of another space or
    without a search is refused."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_zero_cost as zc
    from ranking_table import Refused

    truth = {"space": {"name": "cream"}, "data": {"num_train": 10}, "truth_steps": 2000}

    def run(picks: list[tuple[list, list, float]]) -> dict:
        seeds = [{"evolution": {"arch": a, "retrained_top1_seeds": r, "supernet_score": s}} for a, r, s in picks]
        return {**truth, "search_quality": {"search_score": "loss", "search_seeds": seeds, "picks": {
            "largest_macs": {"arch": [[9]], "retrained_top1_seeds": [60, 61, 62], "supernet_score": None}}}}

    files = {"a.json": run([([[1]], [80, 81, 82], 0.5), ([[2]], [70, 71, 72], 0.6)]),
             "b.json": run([([[2]], [90, 91, 92], 0.4), ([[3]], [75, 76, 77], 0.7)])}
    monkeypatch.setattr(zc, "load", lambda path: files[Path(path).name])
    picks = zc.retrained_picks(["a.json", "b.json"], truth)
    assert picks["archs"] == [[[1]], [[2]], [[9]], [[3]]]
    assert picks["retrains"][1].tolist() == [70, 71, 72]  # the first run's retrains of [[2]]
    assert picks["scored"] == {"a.json": {0: -0.5, 1: -0.6}, "b.json": {1: -0.4, 3: -0.7}}  # losses: lower ranks higher
    files["e.json"] = run([([[5]], [80, 82, 84], 81.5), ([[6]], [70, 72, 74], 71.5)])
    files["e.json"]["search_quality"]["search_score"] = "top1"
    assert zc.retrained_picks(["e.json"], truth)["scored"] == {"e.json": {0: 81.5, 1: 71.5}}  # top-1: higher ranks higher
    files["c.json"] = {**run([([[4]], [1, 2, 3], 0.1)]), "space": {"name": "spos"}}
    files["d.json"] = dict(truth)
    for bad in ("c.json", "d.json"):
        with pytest.raises(Refused):
            zc.retrained_picks(["a.json", bad], truth)


def test_neighbourhood_scores_draw_distinct_networks_one_op_away(monkeypatch):
    """benchmarks/ranking_neighbours.py: an arch's neighbours differ from it in one block's op with
    every stage's depth kept, each is another network than the arch and than the others (a kernel
    whose outer taps meet only padding is the smaller kernel), and the smoothed score is the mean
    loss of the arch and its neighbours."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ranking_neighbours as rn

    from elastic_nas.config import SpaceConfig
    from elastic_nas.spaces import build_space

    space = build_space(SpaceConfig(name="cream", input_size=32, stem_stride=2, width_mult=0.5,
                                    max_depths=[2, 3, 3, 3, 2]))
    arch = space.validate([[5, 2], [2, 4, 4], [3], [1], [1]])
    near = rn.op_neighbours(space, arch, 200, np.random.default_rng(0))
    assert near and len({space.canonical(n) for n in near}) == len(near)
    assert space.canonical(arch) not in {space.canonical(n) for n in near}
    for n in near:
        assert [len(s) for s in n] == [len(s) for s in arch]
        assert sum(a != b for s, t in zip(n, arch) for a, b in zip(s, t)) == 1
    # fewer networks than ops: on the 1 x 1 maps of the last stages k5/k7 are k3
    assert len(near) < sum(len(s) for s in arch) * 5
    drawn = rn.op_neighbours(space, arch, 3, np.random.default_rng(1))
    assert len(drawn) == 3 and drawn == rn.op_neighbours(space, arch, 3, np.random.default_rng(1))
    scores = rn.ranked([{"loss": 1.0, "neighbour_losses": [2.0, 3.0]}, {"loss": 0.5, "neighbour_losses": [4.0]}])
    assert scores["the arch alone"].tolist() == [-1.0, -0.5]
    assert scores["the arch and its neighbours"].tolist() == [-2.0, -2.25]
    assert scores["its neighbours alone"].tolist() == [-2.5, -4.0]
