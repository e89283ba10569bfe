"""Unit tests for the search logic (no Ray): evolution generators, state, BN recalibration, outputs."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from elastic_nas.config import SearchConfig, SpaceConfig, load_config
from elastic_nas.errors import ConfigError
from elastic_nas.search.evolution import Constraints, EvolutionSettings, arch_key, make_generator
from elastic_nas.search.outputs import best_per_budget, choose, pareto_front, read_choice, write_outputs
from elastic_nas.spaces import build_space
from elastic_nas.spaces.bn import recalibrate_bn

torch.set_num_threads(1)
SPACE = build_space(SpaceConfig(width_mult=0.25))
SETTINGS = EvolutionSettings(population=12, top_k=4, mutation_children=5, crossover_children=5,
                             mutation_prob=0.1, generations=3, max_tries=50)


def cost(arch):
    return SPACE.macs(arch), SPACE.params(arch)


def score(arch) -> float:
    """A deterministic fitness: more k=7 blocks is better (so evolution has something to climb)."""
    return float(sum(1 for op in arch if op == 2)) + 0.01 * sum(arch)


def run(gen, limit: int = 100) -> list[list]:
    gens = []
    for _ in range(limit):
        fresh = gen.next_generation()
        if fresh is None:
            return gens
        gens.append([c.arch for c in fresh])
        for c in fresh:
            gen.tell(c.arch, score(c.arch))
    raise AssertionError("generator never finished")


@pytest.mark.parametrize("method", ["evolution", "random"])
def test_same_seed_same_search_and_counts(method):
    a = run(make_generator(method, SPACE, cost, Constraints(), SETTINGS, seed=3))
    b = run(make_generator(method, SPACE, cost, Constraints(), SETTINGS, seed=3))
    c = run(make_generator(method, SPACE, cost, Constraints(), SETTINGS, seed=4))
    assert a == b and a != c
    assert [len(g) for g in a] == [12, 10, 10, 10]  # population, then generations x children
    flat = [json.dumps(x) for g in a for x in g]
    assert len(flat) == len(set(flat)) == SETTINGS.budget  # dedup across the run


@pytest.mark.parametrize("method", ["evolution", "random"])
def test_a_network_is_scored_once_whatever_its_kernels_past_the_feature_map(method):
    """Archs that differ only in kernels larger than their feature map are one network: the
    search admits its cheapest name once, never a copy under another."""
    space = build_space(SpaceConfig(name="cream", max_depths=[2, 3, 3, 3, 2], width_mult=0.5, stem_stride=2))
    gen = make_generator(method, space, lambda a: (space.macs(a), space.params(a)), Constraints(), SETTINGS, seed=0)
    while (batch := gen.next_generation()) is not None:
        for c in batch:
            gen.tell(c.arch, float(space.macs(c.arch)))  # a fitness that would favour the wasted MACs
    archs = [c.arch for c in gen.evaluated()]
    assert len(archs) == SETTINGS.budget and all(space.canonical(a) == a for a in archs)


def test_a_state_saved_before_canonical_names_is_not_scored_again_under_them():
    """A search resumed from a state that holds networks under wasteful names (saved by an
    earlier version) never admits one of them again under its canonical name."""
    space = build_space(SpaceConfig(name="cream", max_depths=[1, 1, 1, 1, 1], width_mult=0.25, stem_stride=2))
    settings = EvolutionSettings(population=60, top_k=4, mutation_children=30, crossover_children=30,
                                 mutation_prob=0.3, generations=8, max_tries=50)

    def make():
        return make_generator("evolution", space, lambda a: (space.macs(a), space.params(a)), Constraints(),
                              settings, seed=1)

    old, rng, held = make(), np.random.default_rng(0), set()
    state = old.get_state()
    while len(held) < 200:  # the last stage's 7x7 kernel runs on 1 x 1: a name the search no longer makes
        arch = space.sample(rng)
        arch = arch[:4] + ((4 + arch[4][0] % 2,),)
        if (key := arch_key(space, space.canonical(arch))) not in held:
            held.add(key)
            state["candidates"].append({"arch": space.to_json(arch), "macs": space.macs(arch),
                                        "params": space.params(arch), "generation": 0, "score": 1.0})
    gen = make()
    gen.set_state(state)
    new = []
    while (batch := gen.next_generation()) is not None:
        for c in batch:
            gen.tell(c.arch, float(space.macs(c.arch)))
        new += [c.key for c in batch]
    assert len(new) >= 300 and not held & set(new)


def test_constraints_respected_and_shortfall_filled():
    lo, hi = SPACE.macs_range()
    mid = (lo + hi) / 2
    cons = Constraints(macs_min=mid - 0.1e6, macs_max=mid + 0.1e6, params_max=0.2e6)
    gen = make_generator("evolution", SPACE, cost, cons, SETTINGS, seed=0)
    archs = [a for g in run(gen) for a in g]
    assert len(archs) == SETTINGS.budget
    for a in archs:
        m, p = cost(a)
        assert cons.admits(m, p)


def test_children_come_from_top_k_parents():
    gen = make_generator("evolution", SPACE, cost, Constraints(), EvolutionSettings(
        population=20, top_k=3, mutation_children=8, crossover_children=0, mutation_prob=0.05,
        generations=1, max_tries=50), seed=1)
    first = gen.next_generation()
    for c in first:
        gen.tell(c.arch, score(c.arch))
    parents = [c.arch for c in gen.top(3)]
    children = gen.next_generation()
    assert len(children) == 8 and gen.shortfall == 0
    for child in children:  # with p=0.05 each mutant stays close to one of its parents
        assert min(sum(x != y for x, y in zip(child.arch, p)) for p in parents) <= 8


def test_impossible_constraints_end_the_search_with_bounded_work():
    cons = Constraints(params_max=1.0)  # no architecture has one parameter
    gen = make_generator("evolution", SPACE, cost, cons, SETTINGS, seed=0)
    assert gen.next_generation() is None and gen.finished()


def test_barrier_refuses_next_generation_while_pending():
    gen = make_generator("evolution", SPACE, cost, Constraints(), SETTINGS, seed=0)
    gen.next_generation()
    with pytest.raises(RuntimeError):
        gen.next_generation()


def test_failed_candidates_never_become_parents():
    gen = make_generator("evolution", SPACE, cost, Constraints(), SETTINGS, seed=0)
    fresh = gen.next_generation()
    for i, c in enumerate(fresh):
        gen.tell(c.key, None if i % 2 else score(c.arch))
    assert all(c.score != -math.inf for c in gen.top(100))
    assert len(gen.top(100)) == 6


def test_state_round_trip_mid_search_continues_identically():
    gen = make_generator("evolution", SPACE, cost, Constraints(), SETTINGS, seed=5)
    for _ in range(2):
        for c in gen.next_generation():
            gen.tell(c.arch, score(c.arch))
    state = json.loads(json.dumps(gen.get_state()))  # must be plain JSON
    clone = make_generator("evolution", SPACE, cost, Constraints(), SETTINGS, seed=999)
    clone.set_state(state)
    assert run(clone) == run(gen)
    assert clone.get_state() == gen.get_state()


def _report(config: dict, accuracy: float, index: int = 0) -> dict:
    """The ``index``-th candidate of a trial's batch reported alone (as a search started before
    batches were reported whole did)."""
    return {"accuracy": accuracy, **config["candidates"][index]}


def _batch_report(config: dict, accuracies: list[float]) -> dict:
    """What the evaluator reports for a trial: its batch, a result per candidate."""
    scored = [{"accuracy": acc, "eval_s": 1.0, **cand} for acc, cand in zip(accuracies, config["candidates"])]
    return {"accuracy": max(accuracies), "scored": scored}


def test_searcher_barrier_and_state_without_tune_running():
    from ray.tune.search import Searcher

    from elastic_nas.search.searcher import GenerationSearcher

    small = EvolutionSettings(population=3, top_k=2, mutation_children=1, crossover_children=1,
                              generations=1, max_tries=50)
    s = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), small, seed=0))
    cfgs = [s.suggest(f"t{i}") for i in range(3)]
    assert all(len(c["candidates"]) == 1 for c in cfgs) and s.suggest("t3") is None  # barrier
    s.on_trial_complete("t0", _report(cfgs[0], 50.0))
    s.on_trial_complete("t1", _report(cfgs[1], 40.0))
    state = json.loads(json.dumps(s.get_state()))
    s2 = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), small, seed=7))
    s2.set_state(state)
    finished = []
    s2.on_generation = lambda gen, number, candidates, seconds: finished.append((number, candidates))
    assert s2.suggest("t4") is None
    s2.on_trial_complete("t2", _report(cfgs[2], 30.0))
    assert finished == [(0, 1)]  # the restored generation's last running candidate ended it
    nxt = [s2.suggest("t5"), s2.suggest("t6")]
    assert all(c["candidates"][0]["generation"] == 1 for c in nxt) and s2.suggest("t7") is None
    s2.on_trial_complete("t5", _report(nxt[0], 1.0))
    s2.on_trial_complete("t6", None, error=True)
    assert finished == [(0, 1), (1, 2)]  # one progress call per generation
    assert s2.suggest("t8") == Searcher.FINISHED
    keys = [arch_key(SPACE, c["candidates"][0]["arch"]) for c in cfgs + nxt]
    assert len(set(keys)) == 5
    scores = {k: s2.generator.candidates[k].score for k in keys}
    assert sorted(scores.values()) == [-math.inf, 1.0, 30.0, 40.0, 50.0]  # the errored trial's candidate failed


def test_a_batch_scored_in_full_lifts_the_barrier_before_its_trial_ends():
    """The next generation is handed out as soon as the last batch's report arrives, while its
    trial still runs: Tune then has trials staged when that trial ends and gives them its
    evaluator, instead of stopping it and starting a fresh one (process, torch import) each
    generation."""
    from elastic_nas.search.searcher import GenerationSearcher

    settings = EvolutionSettings(population=4, top_k=2, mutation_children=2, crossover_children=2,
                                 generations=1, max_tries=50)
    s = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), settings, seed=0),
                           candidates_per_trial=2, slots=1)
    finished = []
    s.on_generation = lambda gen, number, candidates, seconds: finished.append(candidates)
    a, b = s.suggest("a"), s.suggest("b")  # the generation in two batches of 2
    s.on_trial_complete("a", _batch_report(a, [50.0, 51.0]))
    assert s.suggest("x") is None  # b's batch is not scored yet
    s.on_trial_result("b", {"accuracy": 60.0, "scored": _batch_report(b, [60.0, 61.0])["scored"][:1]})
    assert s.suggest("x") is None and finished == []  # half of b's batch reported: still the barrier
    s.on_trial_result("b", _batch_report(b, [60.0, 61.0]))
    assert finished == [4]  # generation 0 is done before its last trial ends
    nxt = s.suggest("c")
    assert nxt is not None and {c["generation"] for c in nxt["candidates"]} == {1}
    s.on_trial_complete("b", _batch_report(b, [60.0, 61.0]))  # the trial ends after: nothing changes
    assert finished == [4] and list(s.current.running) == ["c"]
    assert sorted(c.score for c in s.generator.candidates.values() if c.generation == 0) == [50.0, 51.0, 60.0, 61.0]


def test_evaluators_idle_at_the_barrier_get_hold_trials_that_end_when_it_lifts(monkeypatch):
    """With 3+ slots, a slot that frees up at the barrier gets a hold trial (no candidates) so Tune
    keeps its evaluator; never more holds than idle slots, none with 2 slots or without a signal,
    and the barrier's lift tells the signal how many lifts there were."""
    from elastic_nas.search import barrier
    from elastic_nas.search.searcher import GenerationSearcher

    settings = EvolutionSettings(population=4, top_k=2, mutation_children=2, crossover_children=2,
                                 generations=1, max_tries=50)

    def searcher(slots):
        return GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), settings, seed=0),
                                  candidates_per_trial=2, slots=slots, early_start=False)  # the holds alone

    lifts = []
    monkeypatch.setattr(barrier, "lift", lifts.append)
    s = searcher(4)
    batches = {t: s.suggest(t) for t in "abcd"}  # 4 candidates over 4 slots: one each
    s.on_trial_result("a", _batch_report(batches["a"], [50.0]))
    assert s.suggest("h") is None  # no signal actor in this driver: no holds
    monkeypatch.setitem(barrier._DRIVER, "name", "sig")
    hold = {"hold": 0, "signal": "sig", "candidates": []}
    s.on_trial_result("b", _batch_report(batches["b"], [51.0]))
    assert s.suggest("h1") == hold and s.suggest("h2") == hold
    assert s.suggest("h3") is None  # c's and d's batches plus two holds fill the 4 slots
    s.on_trial_complete("a", _batch_report(batches["a"], [50.0]))
    s.on_trial_result("c", _batch_report(batches["c"], [52.0]))
    assert s.suggest("h3") == hold and s.suggest("h4") is None and lifts == []  # c's slot holds too
    s.on_trial_result("d", _batch_report(batches["d"], [53.0]))
    assert lifts == [1]  # generation 0 scored: the holds may end
    nxt = s.suggest("e")
    assert {c["generation"] for c in nxt["candidates"]} == {1}
    s.on_trial_complete("h1", {"accuracy": math.nan, "loss": math.nan, "scored": []})
    s.on_trial_complete("h2", None, error=True)  # its evaluator died while holding: nothing to tell
    s.on_trial_complete("h3", {"accuracy": math.nan, "loss": math.nan, "scored": []})
    assert [c.score for c in s.generator.candidates.values() if c.generation == 0] == [50.0, 51.0, 52.0, 53.0]
    children = [nxt] + [s.suggest(t) for t in "fgk"]  # 4 children over the 4 slots: one each
    assert [len(c["candidates"]) for c in children] == [1, 1, 1, 1] and s.suggest("x") is None
    s.on_trial_result("e", _batch_report(nxt, [1.0]))
    assert s.suggest("h5") == {**hold, "hold": 1} and s.suggest("h6") is None  # waits for the second lift
    two = searcher(2)
    trials = {t: two.suggest(t) for t in "abc"}  # batches of 2, 1, 1
    for t in "ab":
        two.on_trial_result(t, _batch_report(trials[t], [1.0] * len(trials[t]["candidates"])))
    assert two.suggest("h") is None  # 2 slots: Tune keeps both evaluators without holds


@pytest.mark.parametrize("method", ["evolution", "random"])
def test_a_generation_started_early_is_the_one_the_barrier_gives(method):
    """Started while a generation's last candidate is pending, the next generation stands when
    that score leaves the parents as they were, is withdrawn when it does not, and either way the
    search proposes exactly the generations a plain barrier does. The state saved meanwhile is
    the barrier's (the early generation is not in it)."""
    settings = EvolutionSettings(population=8, top_k=3, mutation_children=3, crossover_children=3,
                                 generations=6, max_tries=50)
    plain = run(make_generator(method, SPACE, cost, Constraints(), settings, seed=3))
    gen = make_generator(method, SPACE, cost, Constraints(), settings, seed=3)
    gens, outcomes = [], []
    fresh = gen.next_generation()
    while fresh is not None:
        gens.append([c.arch for c in fresh])
        for c in fresh[:-1]:
            gen.tell(c.arch, score(c.arch))
        at_barrier = json.dumps(gen.get_state())
        early = gen.start_early()  # the last candidate still pending
        if early is None:
            assert gen.start_early() is None and gen.settle_early() is None
            gen.tell(fresh[-1].arch, score(fresh[-1].arch))
            fresh = gen.next_generation()
            continue
        assert json.dumps(gen.get_state()) == at_barrier and gen.start_early() is None
        with pytest.raises(RuntimeError):
            gen.settle_early()  # the last candidate is not told yet
        gen.tell(early[0].arch, 99.0)  # an early candidate's score never decides the parents
        gen.tell(fresh[-1].arch, score(fresh[-1].arch))
        stands = gen.settle_early()
        outcomes.append(stands)
        fresh = early if stands else gen.next_generation()
        if stands:
            gen.tell(early[0].arch, None)
            gen.tell(early[0].arch, score(early[0].arch))
    assert gens == plain
    assert len(outcomes) == settings.generations and (all(outcomes) if method == "random" else not all(outcomes))
    assert method == "random" or any(outcomes)  # the scenario covers both: standing and withdrawn


def test_idle_slots_at_the_barrier_start_the_next_generation_early():
    """A slot that frees up at the barrier gets one candidate of the next generation (no more than
    the idle slots); the generation stands and the rest is batched as usual, or, when a last score
    makes a new parent, is withdrawn: its late report is ignored, the generation proposed anew (the
    same one a plain barrier gives) and the withdrawn trial's config no longer counts."""
    from elastic_nas.search.runner import standing
    from elastic_nas.search.searcher import GenerationSearcher

    settings = EvolutionSettings(population=4, top_k=2, mutation_children=3, crossover_children=3,
                                 generations=2, max_tries=50)

    def searcher(early_start=True):
        return GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), settings, seed=0),
                                  candidates_per_trial=2, slots=2, early_start=early_start)

    s, ref = searcher(), searcher(early_start=False)  # ref: the plain barrier (the default)
    gen0 = [s.suggest(t) for t in "abc"]  # 4 candidates over 2 slots: batches of 2, 1, 1
    assert [ref.suggest(t) for t in "abc"] == gen0 and [len(c["candidates"]) for c in gen0] == [2, 1, 1]
    scores0 = {"a": [10.0, 11.0], "b": [1.0], "c": [2.0]}  # c's below the parents (10, 11)
    for t, cfg in zip("abc", gen0):
        ref.on_trial_complete(t, _batch_report(cfg, scores0[t]))
    for t, cfg in zip("ab", gen0):
        s.on_trial_complete(t, _batch_report(cfg, scores0[t]))
    e1 = s.suggest("e1")  # c still runs: one slot is idle
    assert [c["generation"] for c in e1["candidates"]] == [1] and s.suggest("x") is None  # c and e1: 2 slots
    saved = json.loads(json.dumps(s.get_state()))  # as at the barrier: a resume proposes generation 1 again
    assert list(saved["running"]) == ["c"] and {c["generation"] for c in saved["generator"]["candidates"]} == {0}
    s.on_trial_complete("e1", _batch_report(e1, [5.0]))
    e2 = s.suggest("e2")
    s.on_trial_complete("c", _batch_report(gen0[2], scores0["c"]))  # the parents stay: it stands
    rest = [s.suggest(t) for t in "def"]
    assert [len(c["candidates"]) for c in rest] == [2, 1, 1] and s.suggest("x") is None
    first = [ref.suggest(t) for t in "pqrs"]  # the plain barrier's generation 1: the same candidates
    assert sorted(c["arch"] for cfg in first for c in cfg["candidates"]) == sorted(
        c["arch"] for cfg in [e1, e2, *rest] for c in cfg["candidates"])
    for t, cfg in (("e2", e2), ("d", rest[0]), ("e", rest[1])):
        s.on_trial_complete(t, _batch_report(cfg, [3.0] * len(cfg["candidates"])))
    g1 = s.suggest("g1")  # generation 2 started early, f's candidate pending
    assert [c["generation"] for c in g1["candidates"]] == [2]
    last = rest[2]["candidates"][0]["arch"]
    s.on_trial_result("g1", _batch_report(g1, [7.0]))  # reported while the barrier stands
    s.on_trial_complete("f", _batch_report(rest[2], [50.0]))  # a new best: a parent, so g1 is withdrawn
    s.on_trial_complete("g1", _batch_report(g1, [7.0]))  # its end, after the withdrawal: ignored
    again = s.suggest("h")
    assert not any(c.evaluated for c in s.generator.candidates.values() if c.generation == 2)
    assert again["candidates"][0]["proposal"] > g1["candidates"][0]["proposal"]
    assert standing([*gen0, e1, e2, *rest, g1, again]) == [True] * 8 + [False, True]
    for t, cfg in zip("pqrs", first):
        ref.on_trial_complete(t, _batch_report(cfg, [50.0 if c["arch"] == last else 3.0 for c in cfg["candidates"]]))
    plain = ref.suggest("h")  # the plain barrier proposes the same generation 2 (it counts fewer proposals)
    assert [c["arch"] for c in plain["candidates"]] == [c["arch"] for c in again["candidates"]]


def test_a_hold_waits_for_the_next_lift_or_its_timeout():
    import asyncio

    from elastic_nas.search.barrier import BarrierSignal

    async def scenario():
        sig = BarrierSignal()
        early = await sig.wait(0, 0.05)  # nothing lifted yet: times out
        waiting = asyncio.ensure_future(sig.wait(0, 5.0))
        await asyncio.sleep(0.01)
        await sig.lift(1)
        return early, await waiting, await sig.wait(0, 0.05), await sig.wait(1, 0.05)

    assert asyncio.run(scenario()) == (False, True, True, False)


def test_searcher_batches_a_generation_over_the_slots_and_tells_each_candidate_as_reported():
    from elastic_nas.search.searcher import GenerationSearcher

    settings = EvolutionSettings(population=10, top_k=2, mutation_children=3, crossover_children=3,
                                 generations=1, max_tries=50)
    s = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), settings, seed=0),
                           candidates_per_trial=4, slots=2)
    batches = [s.suggest(t) for t in "abcd"]
    # 10 candidates, at most 4 a trial, shrinking as the generation drains: the last two
    # trials end close together instead of one slot idling through a full batch
    assert [len(b["candidates"]) for b in batches] == [4, 3, 2, 1]
    assert s.suggest("x") is None
    first = batches[0]
    s.on_trial_result("a", _report(first, 70.0, 0))
    key = arch_key(SPACE, first["candidates"][0]["arch"])
    assert s.generator.candidates[key].score == 70.0  # told before the trial ends
    s.on_trial_result("a", _report(first, 70.0, 0))  # a retried trial reports it again: harmless
    s.on_trial_complete("a", _report(first, 60.0, 1))  # died after its second candidate
    told = [s.generator.candidates[arch_key(SPACE, c["arch"])].score for c in first["candidates"]]
    assert told == [70.0, 60.0, -math.inf, -math.inf]  # never reported: failed
    for trial, batch in zip("bcd", batches[1:]):  # the whole batch in one report
        s.on_trial_complete(trial, _batch_report(batch, [50.0 + i for i in range(len(batch["candidates"]))]))
    assert [s.generator.candidates[arch_key(SPACE, c["arch"])].score for c in batches[1]["candidates"]] == [
        50.0, 51.0, 52.0]
    small_gen = s.suggest("e")
    assert len(small_gen["candidates"]) == 3  # 6 children over 2 slots: never one trial for all
    assert json.loads(json.dumps(s.get_state()))["running"] == {"e": [arch_key(SPACE, c["arch"])
                                                                      for c in small_gen["candidates"]]}


def test_auto_batches_are_sized_from_the_evaluators_first_reported_time_and_survive_a_restore():
    from elastic_nas.search.searcher import GenerationSearcher

    settings = EvolutionSettings(population=20, top_k=2, mutation_children=3, crossover_children=3,
                                 generations=1, max_tries=50)
    s = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), settings, seed=0),
                           candidates_per_trial=0, slots=2, trial_seconds=10.0)
    probes = [s.suggest("a"), s.suggest("b")]
    # unsized: one candidate per evaluator slot, and no more trials until a time is reported
    assert [len(p["candidates"]) for p in probes] == [1, 1] and s.suggest("c") is None
    s.on_trial_complete("a", None, error=True)  # a probe that died before reporting sizes nothing
    assert s.candidates_per_trial == 0 and len(s.suggest("a2")["candidates"]) == 1
    s.on_trial_result("b", {"accuracy": 50.0, "scored": [{**_report(probes[1], 50.0), "eval_s": 2.4}]})
    assert s.candidates_per_trial == 4  # 10 s of work at 2.4 s a candidate
    assert len(s.suggest("c")["candidates"]) == 4
    s2 = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), settings, seed=7),
                            candidates_per_trial=0, slots=2)
    s2.set_state(json.loads(json.dumps(s.get_state())))
    assert s2.candidates_per_trial == 4  # a resumed search does not size again
    assert len(s2.suggest("d")["candidates"]) == 4
    # No evaluator slot yet (an autoscaler will add them): every candidate is a pending
    # one-candidate trial, the demand it scales to, until a time is reported.
    s3 = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), settings, seed=0),
                            candidates_per_trial=0, slots=0)
    assert [len(s3.suggest(f"t{i}")["candidates"]) for i in range(20)] == [1] * 20 and s3.suggest("t20") is None


def test_a_driver_killed_between_tunes_two_saves_resumes_without_waiting_forever(tmp_path):
    """Tune writes its trial table, then the searcher: a kill in between must not leave a
    trial the table calls finished running in the searcher (the barrier would never lift)."""
    from elastic_nas.search.searcher import GenerationSearcher

    small = EvolutionSettings(population=2, top_k=1, mutation_children=1, crossover_children=1,
                              generations=1, max_tries=50)
    s = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), small, seed=0), slots=2)
    cfgs = [s.suggest("t0"), s.suggest("t1")]
    s.save_to_dir(str(tmp_path), "session")  # Tune's save after the suggestions
    saved = tmp_path / "searcher-state-session.pkl"
    s.on_trial_result("t0", _report(cfgs[0], 50.0))
    s.on_trial_complete("t0", _report(cfgs[0], 50.0))
    # Killed here: Tune's table lists t0 as finished; the searcher saved itself already.
    state = json.loads(saved.read_text())
    assert list(state["running"]) == ["t1"]
    # An older save, from before the trial ended but after its only candidate was told:
    # the all-scored batch is not waited for.
    state["running"]["t0"] = [arch_key(SPACE, cfgs[0]["candidates"][0]["arch"])]
    s2 = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), small, seed=7), slots=2)
    s2.set_state(state)
    assert list(s2.current.running) == ["t1"]
    s2.on_trial_complete("t1", _report(cfgs[1], 40.0))
    assert s2.suggest("t2")["candidates"][0]["generation"] == 1  # the barrier lifted


def test_a_trial_table_newer_than_the_searcher_state_is_caught_up_on_restore(tmp_path):
    """Tune copies its saved files up one at a time: a driver killed mid-copy can leave the
    trial table listing as finished a batch the searcher state still runs. Tune will not run it
    again, so the restore tells its last report: the scores count and the barrier lifts."""
    from elastic_nas.search.searcher import GenerationSearcher

    small = EvolutionSettings(population=2, top_k=1, mutation_children=1, crossover_children=1,
                              generations=1, max_tries=50)
    s = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), small, seed=0),
                           candidates_per_trial=1, slots=2)
    cfgs = [s.suggest("t0"), s.suggest("t1")]
    s.save_to_dir(str(tmp_path), "session")  # the searcher copied up before t0 ended...
    done = _batch_report(cfgs[0], [50.0])
    table = {"trial_data": [[json.dumps({"trial_id": "t0", "status": "TERMINATED"}), json.dumps({"last_result": done})],
                            [json.dumps({"trial_id": "t1", "status": "RUNNING"}), json.dumps({"last_result": {}})]]}
    (tmp_path / "experiment_state-session.json").write_text(json.dumps(table))  # ...the table after
    s2 = GenerationSearcher(make_generator("evolution", SPACE, cost, Constraints(), small, seed=7), slots=2)
    s2.restore(str(tmp_path / "searcher-state-session.pkl"))
    assert list(s2.current.running) == ["t1"]
    key = arch_key(SPACE, cfgs[0]["candidates"][0]["arch"])
    assert s2.generator.candidates[key].evaluated and s2.generator.candidates[key].score == 50.0
    s2.on_trial_complete("t1", _batch_report(cfgs[1], [40.0]))
    assert s2.suggest("t2")["candidates"][0]["generation"] == 1  # the barrier lifted


def _exact_stats(model, batches):
    feats = []
    hook = model[1].register_forward_pre_hook(lambda m, inp: feats.append(inp[0].detach()))
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    hook.remove()
    f = torch.cat(feats).double().transpose(0, 1).reshape(feats[0].shape[1], -1)
    return f.mean(1), f.var(1, unbiased=False)


def test_recalibrate_bn_gives_exact_mean_and_var_of_calibration_set():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    model[1].running_mean.fill_(5.0)
    # Batches with very different means and an uneven last batch: a plain cumulative
    # average of per-batch variances would miss the spread of the batch means.
    batches = [torch.randn(16, 3, 8, 8) * (1 + i) + 3 * i for i in range(4)] + [torch.randn(5, 3, 8, 8)]
    mean, var = _exact_stats(copy.deepcopy(model), batches)
    model.eval()
    seen = recalibrate_bn(model, model, batches)
    assert seen == 69 and not model.training and model[1].momentum == 0.1
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    # up to PyTorch's per-batch Bessel factor n/(n-1), n >= 5*8*8 pixels per channel
    torch.testing.assert_close(model[1].running_var.double(), var, rtol=4e-3, atol=1e-5)


def test_recalibrate_bn_on_supernet_path_is_deterministic_and_path_specific():
    space = build_space(SpaceConfig(width_mult=0.25, channel_search=True))
    torch.manual_seed(0)
    net = space.build_supernet()
    rng = np.random.default_rng(0)
    a, b = space.sample(rng), space.sample(rng)
    x = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    recalibrate_bn(net, lambda t: net(t, a), x)
    s1 = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    recalibrate_bn(net, lambda t: net(t, b), x)
    recalibrate_bn(net, lambda t: net(t, a), x)
    s2 = {k: v for k, v in net.state_dict().items() if "running" in k}
    for k in s1:  # the stats of arch a do not depend on what ran before
        torch.testing.assert_close(s1[k], s2[k])


def test_scoring_a_candidate_reads_back_only_its_two_results():
    """Each value read back from a GPU waits for it: recalibrating a sliced supernet path and
    scoring it read nothing back (no masked indexing, no BN batch counts) but top-1 and loss.
    Counted on the CPU, where the same ops run."""
    from torch.profiler import ProfilerActivity, profile

    from elastic_nas.search.evaluator import EvalData, evaluate_arch

    space = build_space(SpaceConfig(width_mult=0.25, channel_search=True, weight_sharing="entangled"))
    torch.manual_seed(0)
    net = space.build_supernet().eval()
    arch = space.smallest_arch()  # sliced widths and kernels: BN layers some channels never reach
    g = torch.Generator().manual_seed(0)
    data = EvalData(torch.randn(20, 3, 32, 32, generator=g).numpy(), torch.randn(12, 3, 32, 32, generator=g).numpy(),
                    torch.randint(0, 10, (12,), generator=g).numpy(), batch_size=8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = evaluate_arch(net, arch, data)
    reads = {e.key: e.count for e in prof.key_averages() if e.key in ("aten::_local_scalar_dense", "aten::nonzero")}
    assert reads == {"aten::_local_scalar_dense": 2} and 0 <= result["accuracy"] <= 100


def test_results_table_has_a_row_per_candidate_from_batch_and_older_per_candidate_reports(tmp_path):
    """A trial's one report lists its batch; a search started before that has a line per
    candidate; a candidate its trial never reported has no score."""
    from types import SimpleNamespace

    from elastic_nas.search.runner import results_table

    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(4)]
    cands = [{"arch": a, "macs": SPACE.macs(a), "params": SPACE.params(a), "generation": 0} for a in archs]
    batch = {"trial_id": "a", "accuracy": 61.0,
             "scored": [{**cands[0], "accuracy": 60.0, "loss": 1.2, "eval_s": 1.5},
                        {**cands[1], "accuracy": 61.0, "loss": 1.1, "eval_s": 1.4}]}
    older = {**cands[2], "trial_id": "b", "accuracy": 55.0, "loss": 1.4, "eval_s": 1.3}
    grid = []
    for trial, lines, batch_cands in (("a", [batch, batch], cands[:2]), ("b", [older], cands[2:3]),
                                      ("c", [], cands[3:])):
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
        grid.append(SimpleNamespace(config={"candidates": batch_cands}, path=str(tmp_path / trial),
                                    metrics={"trial_id": trial}))
    table = results_table(grid)
    assert len(table) == 4 and list(table["trial_id"]) == ["a", "a", "b", "c"]  # a retried report counts once
    assert list(table["accuracy"][:3]) == [60.0, 61.0, 55.0] and math.isnan(table["accuracy"][3])
    assert list(table["eval_s"][:3]) == [1.5, 1.4, 1.3]


def test_pareto_front_and_budgets():
    t = pd.DataFrame({"arch": ["[0]", "[1]", "[2]", "[3]", "[4]"], "macs": [1e6, 2e6, 2e6, 3e6, 4e6],
                      "params": [1, 2, 3, 4, 5], "accuracy": [10.0, 30.0, 20.0, 25.0, float("nan")],
                      "loss": [1.0] * 5, "generation": [0] * 5})
    assert list(pareto_front(t)["arch"]) == ["[0]", "[1]"]
    out = best_per_budget(t, [0.5, 1.5, 5.0])
    assert out[0]["arch"] is None and out[1]["arch"] == [0] and out[2]["arch"] == [1]
    assert out[2]["budget_macs"] == 5_000_000 and out[2]["accuracy"] == 30.0


def test_scored_by_loss_the_lowest_loss_ranks_first(tmp_path):
    """``evaluator.score: loss``: the Pareto front, the best per budget, the choice and
    ``retrain``'s pick by budget all take the lowest loss, not the highest top-1."""
    t = pd.DataFrame({"arch": ["[0]", "[1]", "[2]", "[3]"], "macs": [1e6, 2e6, 2e6, 3e6], "params": [1, 2, 3, 4],
                      "accuracy": [10.0, 30.0, 20.0, 25.0], "loss": [1.5, 1.2, 0.9, 0.8], "generation": [0] * 4})
    assert list(pareto_front(t, score="loss")["arch"]) == ["[0]", "[2]", "[3]"]
    assert choose(t, "loss")["arch"] == "[3]" and choose(t)["arch"] == "[1]"
    out = best_per_budget(t, [2.5], "loss")
    assert out[0]["arch"] == [2] and out[0]["loss"] == 0.9 and out[0]["score"] == "loss"
    write_outputs(t, tmp_path, {"name": "spos"}, [2.5, 3.0], {}, "t", score="loss")
    chosen = json.loads((tmp_path / "chosen_arch.json").read_text())
    assert chosen["arch"] == [3] and chosen["score"] == "loss"
    assert read_choice(str(tmp_path), 2.5)[1] == [2] and read_choice(str(tmp_path))[1] == [3]


def test_a_bad_search_choice_is_one_line(tmp_path):
    """``retrain``'s ``arch.search``: a file named instead of the folder, a cut-off or foreign
    ``chosen_arch.json``, a folder with none: one line each, no traceback."""
    from elastic_nas.errors import UserError

    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "chosen_arch.json").write_text('{"space": ')
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "chosen_arch.json").write_text("[1]")
    for folder, fragment in [("cut", "is not valid JSON"), ("list", "is not a search's choice"),
                             ("cut/chosen_arch.json", "give the search's folder"), ("none", "not found")]:
        with pytest.raises(UserError, match=fragment):
            read_choice(str(tmp_path / folder))


def supernet_checkpoint(path, space_cfg: SpaceConfig):
    from elastic_nas.config import to_dict
    from elastic_nas.elastic.checkpoint import write_checkpoint

    model = build_space(space_cfg).build_supernet()
    write_checkpoint(path, {"model": model.state_dict()},
                     {"step": 1, "fingerprint": {"kind": "supernet", "space": to_dict(space_cfg)}})
    return str(path)


def test_a_rejected_search_pins_nothing_and_a_resumed_one_keeps_its_snapshot(tmp_path, capsys):
    """A launch refused before any work leaves no pinned snapshot, so the corrected launch
    searches the snapshot it names; a search that did start resumes with its own weights and
    says so, in one line, when given another snapshot."""
    from elastic_nas.search.runner import run_search
    from elastic_nas.search.snapshot import PIN_DIR, pin, pinned_or_resolved

    spos = supernet_checkpoint(tmp_path / "spos", SpaceConfig(name="spos", width_mult=0.25))
    cream = supernet_checkpoint(tmp_path / "cream", SpaceConfig(name="cream", width_mult=0.25))
    cfg = load_config(SearchConfig, "search", [f"run.storage_path={tmp_path / 'runs'}", f"snapshot={spos}",
                                               "space.name=cream"])
    with pytest.raises(ConfigError, match="differs from the snapshot's space"):
        run_search(cfg)
    search_dir = tmp_path / "runs" / cfg.run.name
    assert not search_dir.exists()
    ckpt, pinned = pinned_or_resolved(search_dir, cream)
    assert not pinned and ckpt.meta["fingerprint"]["space"]["name"] == "cream"
    pin(search_dir, ckpt, cream)
    again, pinned = pinned_or_resolved(search_dir, cream)
    assert pinned and str(again.path) == str(search_dir / PIN_DIR)  # the search's copy, not the source
    capsys.readouterr()
    again, pinned = pinned_or_resolved(search_dir, spos)  # another snapshot named: the search's own weights
    assert pinned and again.meta["fingerprint"]["space"]["name"] == "cream"
    shown = capsys.readouterr().out.strip().splitlines()
    assert len(shown) == 1 and "started on" in shown[0] and str(tmp_path / "spos") in shown[0]


def test_searcher_on_a_min_metric_tells_the_generator_the_negated_loss():
    from elastic_nas.search.runner import make_searcher

    cfg = load_config(SearchConfig, "jobs/search.yaml", ["evaluator.score=loss", "evolution.macs_max=0"])
    s = make_searcher(cfg, SPACE)
    assert (s.metric, s.mode) == ("loss", "min")
    config = s.suggest("a")
    s.on_trial_complete("a", {"loss": 0.7, "scored": [{"loss": 0.7, "accuracy": 80.0, **config["candidates"][0]}]})
    key = arch_key(SPACE, config["candidates"][0]["arch"])
    assert s.generator.candidates[key].score == -0.7  # the lowest loss is the highest score


def test_search_config_checks_name_the_key():
    with pytest.raises(ConfigError, match="evolution.mutation_prob"):
        load_config(SearchConfig, "jobs/search.yaml", ["evolution.mutation_prob=0"])
    with pytest.raises(ConfigError, match="evolution.macs_min"):
        load_config(SearchConfig, "jobs/search.yaml", ["evolution.macs_min=5", "evolution.macs_max=2"])
    with pytest.raises(ConfigError, match="budgets"):
        load_config(SearchConfig, "jobs/search.yaml", ["budgets=[0]"])
    with pytest.raises(ConfigError, match="latency bounds need latency_table"):
        load_config(SearchConfig, "jobs/search.yaml", ["evolution.latency_max_ms=3"])
    with pytest.raises(ConfigError, match="evolution.latency_min_ms"):
        load_config(SearchConfig, "jobs/search.yaml", ["evolution.latency_min_ms=5", "evolution.latency_max_ms=2",
                                                       "latency_table=t.json"])
    cfg = load_config(SearchConfig, "jobs/search.yaml", [])
    assert cfg.space is None and cfg.evolution.population == 32 and cfg.evaluator.candidates_per_trial == 0
    assert cfg.evaluator.score == "loss"  # the laptop search orders by loss: it ranks the band better


def test_a_cut_off_tune_save_is_put_back_from_its_whole_copy_else_set_aside(tmp_path, capsys):
    """Tune copies its saves to the search's folder in place: a driver killed mid-copy leaves a
    file cut off. The whole copies kept as Tune saved are put back; a session with a cut-off file
    and no whole copy of it is set aside (Tune resumes from the older one); with nothing whole
    left, the folder is set aside and the search starts again."""
    import pickle

    from elastic_nas.search import saves
    from elastic_nas.search.runner import tune_can_restore

    tune, staging = tmp_path / "tune", tmp_path / "staging"
    tune.mkdir()
    staging.mkdir()
    (tune / "tuner.pkl").write_bytes(b"x")  # what Tuner.can_restore looks for
    old, new = "2026-01-01_10-00-00", "2026-01-01_10-05-00"
    for session in (old, new):
        table, searcher, generator = saves.session_files(session)
        (staging / table).write_text('{"trial_data": []}')
        (staging / searcher).write_text('{"version": 3}')
        (staging / generator).write_bytes(pickle.dumps({"counter": 4}))
        for name in (table, searcher, generator):
            (tune / name).write_bytes((staging / name).read_bytes())
    saves.keep_in(tune)
    saves.keep(str(staging), new)  # as Tune saved the newest session
    saves.keep_in(None)
    table = tune / saves.session_files(new)[0]
    table.write_text('{"trial_data": [[')  # the copy a kill cut off
    (tune / saves.session_files(new)[2]).write_bytes(pickle.dumps({"counter": 4})[:-3])
    assert saves.put_back(tune) and table.read_text() == '{"trial_data": []}'
    assert all(saves.whole(tune / name) for name in saves.session_files(new))
    assert "put back from its whole copy" in capsys.readouterr().out
    newest = "2026-01-01_10-10-00"  # a later launch killed in its first copy: a searcher state, no table
    (tune / saves.session_files(newest)[1]).write_bytes(pickle.dumps({"counter": 5})[:-3])
    assert saves.sessions(tune) == [newest, new, old]
    assert saves.put_back(tune) and saves.sessions(tune) == [new, old]  # Tune reads the newest searcher state
    assert (tune / (saves.session_files(newest)[1] + ".cut-off")).exists()
    capsys.readouterr()
    table.write_bytes(b"")  # cut off again, and its whole copy lost
    (tune / (table.name + saves.KEPT)).unlink()
    assert saves.put_back(tune) and tune_can_restore(tune)
    names = sorted(p.name for p in tune.iterdir())
    assert set(saves.session_files(old)) <= set(names)
    assert sorted(n for n in names if new in n) == sorted(
        f"{n}.cut-off" for n in [*saves.session_files(new), *(f + saves.KEPT for f in saves.session_files(new)[1:])])
    assert "its session is set aside" in capsys.readouterr().out
    assert saves.put_back(tune) and sorted(p.name for p in tune.iterdir()) == names  # whole: nothing to do
    (tune / saves.session_files(old)[1]).write_text('{"vers')
    assert not saves.put_back(tune) and not tune.exists() and list(tmp_path.glob("tune.cut-off-*"))
    assert "starting it again" in capsys.readouterr().out
