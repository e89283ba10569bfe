"""The search on a real local Ray cluster: completes, resumes after a killed driver, survives a killed evaluator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch

from elastic_nas.config import DataConfig, SpaceConfig
from elastic_nas.search.evaluator import candidate_results
from elastic_nas.search.runner import standing, trial_reports
from tests.ray_utils import CliRun

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

DATA = dict(num_train=2560, num_test=256, search_val_size=256)


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory, data_dir):
    """A supernet run dir with one checkpoint, written without Ray (untrained weights suffice)."""
    from elastic_nas.data import build_dataset
    from elastic_nas.elastic.checkpoint import checkpoint_dir_name, write_checkpoint
    from elastic_nas.spaces import build_space

    run = tmp_path_factory.mktemp("supernet") / "supernet"
    space = SpaceConfig(width_mult=0.25)
    splits = build_dataset(DataConfig(path=str(data_dir), **DATA), space.input_size)
    torch.manual_seed(0)
    net = build_space(space).build_supernet()
    fp = {"kind": "supernet", "space": asdict(space), "strategy": "spos",
          "data": {"source": "synthetic", "seed": 0, "num_train": len(splits.train)}}
    write_checkpoint(run / checkpoint_dir_name(0), {"model": net.state_dict()}, {"step": 0, "fingerprint": fp})
    return run


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    yield c
    c.shutdown()


def search_args(tmp_path: Path, data_dir: Path, snapshot: Path, **extra) -> list[str]:
    sets = {
        "run.name": "s", "run.storage_path": str(tmp_path / "out"), "snapshot": str(snapshot),
        "data.path": str(data_dir), **{f"data.{k}": v for k, v in DATA.items()},
        "evolution.population": 6, "evolution.top_k": 3, "evolution.generations": 2,
        "evolution.mutation_children": 2, "evolution.crossover_children": 2,
        "evaluator.calib_images": 200, "evaluator.val_images": 200, "evaluator.batch_size": 100,
        "budgets": "[2.2, 2.5, 3.0]", "evolution.macs_max": 0,
        "evaluator.score": "top1",  # jobs/search.yaml scores by the loss: pinned here; the loss test sets it back
        **extra,
    }
    args = ["search", "--config", "jobs/search.yaml"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


BUDGET = 6 + 2 * (2 + 2)


def reports(tune_dir: Path) -> Counter:
    """How often each candidate (arch JSON) was reported: a trial reports each of its batch
    (the trials of a withdrawn early generation left out, as the results table leaves them)."""
    counts: Counter = Counter()
    # Tune writes params.json as a trial starts, before any report. A trial dir without it is one a
    # killed driver created and never started (the resumed Tune does not know it, nor does the
    # results table): it reported nothing.
    dirs = [d for d in sorted(tune_dir.glob("trial_*")) if (d / "params.json").exists()]
    for d, keep in zip(dirs, standing([json.loads((d / "params.json").read_text()) for d in dirs])):
        for cand in trial_reports(str(d)) if keep else []:
            counts[json.dumps(cand["arch"])] += 1
    return counts


def tune_files(tune_dir: Path) -> list[tuple[str, int]]:
    """What a driver left in its Tune folder (path, size): a failed wait shows how far it got."""
    found = []
    for p in tune_dir.rglob("*"):
        with contextlib.suppress(OSError):  # a file replaced as it is listed
            if p.is_file():
                found.append((str(p.relative_to(tune_dir)), p.stat().st_size))
    return sorted(found)


def result_lines(tune_dir: Path) -> int:
    return sum(reports(tune_dir).values())


def saved_trials(tune_dir: Path) -> list[tuple[dict, dict]]:
    """(trial, runtime) of every trial in the newest saved experiment state."""
    states = sorted(tune_dir.glob("experiment_state-*.json"))
    try:
        return [(json.loads(t), json.loads(r)) for t, r in json.loads(states[-1].read_text())["trial_data"]]
    except (IndexError, ValueError, KeyError):  # none yet, or caught mid-write
        return []


def saved_as_finished(tune_dir: Path) -> set[str]:
    """Candidates of the trials the newest saved experiment state lists as finished: what a
    resume will not evaluate again."""
    return {json.dumps(c["arch"]) for t, _ in saved_trials(tune_dir) if t["status"] == "TERMINATED"
            for c in t["config"]["candidates"]}


def check_outputs(out: Path, budget: int, exactly_once: bool = True, score: str = "top1") -> pd.DataFrame:
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == budget and table["arch"].nunique() == budget  # no arch twice
    assert table["accuracy"].notna().all() and sorted(table["generation"].unique()) == [0, 1, 2]
    assert len(pd.read_csv(out / "results.csv")) == budget
    chosen = json.loads((out / "chosen_arch.json").read_text())
    assert chosen["space"]["width_mult"] == 0.25 and len(chosen["arch"]) == 20
    if score == "top1":
        assert chosen["accuracy"] == table["accuracy"].max()
    budgets = json.loads((out / "best_per_budget.json").read_text())
    assert [b["budget_macs"] for b in budgets] == [2_200_000, 2_500_000, 3_000_000]
    for b in budgets:
        assert b["arch"] is None or b["macs"] <= b["budget_macs"]
    assert (out / "search.png").stat().st_size > 0 and (out / "pareto_front.csv").exists()
    counts = reports(out / "tune")
    assert len(counts) == budget  # every candidate evaluated
    if exactly_once:
        assert set(counts.values()) == {1}, counts
    return table


def test_small_search_completes_under_a_latency_bound(cluster, tmp_path, data_dir, snapshot_run):
    """With a latency table of the snapshot's space: every candidate's predicted latency is
    recorded and within evolution.latency_max_ms, with a latency Pareto front beside the MACs one."""
    import numpy as np

    from elastic_nas.spaces import build_space
    from elastic_nas.spaces.latency import build_table

    space = build_space(SpaceConfig(width_mult=0.25))
    table = build_table(space, warmup=1, repeats=2, max_copies=2)
    table.save(tmp_path / "latency.json")
    rng = np.random.default_rng(0)
    bound = round(float(np.median([table.predict_ms(space, space.sample(rng)) for _ in range(200)])), 4)
    t0 = time.monotonic()
    run = CliRun(search_args(tmp_path, data_dir, snapshot_run, latency_table=tmp_path / "latency.json",
                             **{"evolution.latency_max_ms": bound}), env={"RAY_ADDRESS": cluster.address})
    assert run.finish(240) == 0, run.output()[-4000:]
    out = tmp_path / "out" / "s"
    results = check_outputs(out, BUDGET)
    assert "chosen arch" in run.output() and "pareto front (latency)" in run.output()
    # candidates_per_trial 0: one candidate per evaluator until one reported its time, then batches
    assert "sized from the first candidates' times" in run.output()
    assert max(len(t["config"]["candidates"]) for t, _ in saved_trials(out / "tune")) > 1
    for arch, latency in zip(results["arch"], results["latency_ms"]):
        assert 0 < latency <= bound and latency == round(table.predict_ms(space, json.loads(arch)), 4)
    front = pd.read_csv(out / "pareto_front_latency.csv")
    assert list(front["latency_ms"]) == sorted(front["latency_ms"]) and front["accuracy"].is_monotonic_increasing
    assert (out / "search_latency.png").stat().st_size > 0
    chosen = json.loads((out / "chosen_arch.json").read_text())
    row = results[results["arch"] == json.dumps(chosen["arch"], separators=(",", ":"))]
    assert chosen["accuracy"] == results["accuracy"].max() and chosen["latency_ms"] == row["latency_ms"].item()
    assert all("latency_ms" in b for b in json.loads((out / "best_per_budget.json").read_text()))
    print(f"small search: {time.monotonic() - t0:.1f}s")
    (tmp_path / "other.json").write_text((tmp_path / "latency.json").read_text().replace('"width_mult": 0.25',
                                                                                         '"width_mult": 0.5'))
    refused = CliRun(search_args(tmp_path / "r", data_dir, snapshot_run, latency_table=tmp_path / "other.json",
                                 **{"evolution.latency_max_ms": bound}), env={"RAY_ADDRESS": cluster.address})
    assert refused.finish(120) == 2 and "measured for another space (width_mult" in refused.output()


def test_search_scored_by_loss_ranks_by_the_lowest_loss(cluster, tmp_path, data_dir, snapshot_run):
    """``evaluator.score: loss`` on real Tune: the searcher's metric is the loss (Tune checks
    every report carries it), and the choice, each budget's best and the Pareto front go by the
    lowest loss; the console says so. On 4 evaluator slots (half a CPU each), so that at each
    generation barrier some evaluators wait out the others' last candidates in hold trials."""
    run = CliRun(search_args(tmp_path, data_dir, snapshot_run, **{"evaluator.score": "loss",
                                                                  "evaluator.cpus_per_trial": 0.5}),
                 env={"RAY_ADDRESS": cluster.address})
    assert run.finish(240) == 0, run.output()[-4000:]
    out = tmp_path / "out" / "s"
    table = check_outputs(out, BUDGET, score="loss")
    assert table["loss"].notna().all()
    chosen = json.loads((out / "chosen_arch.json").read_text())
    assert chosen["loss"] == table["loss"].min() and chosen["score"] == "loss"
    for b in json.loads((out / "best_per_budget.json").read_text()):
        under = table[table["macs"] <= b["budget_macs"]]
        assert b["arch"] is None if under.empty else b["loss"] == under["loss"].min()
    assert pd.read_csv(out / "pareto_front.csv")["loss"].is_monotonic_decreasing
    assert f"best loss {table['loss'].min():.4f}" in run.output() and "chosen loss " in run.output()
    # The four evaluators live through both generation barriers: Tune hands the next generation's
    # trials the actors it has (the last batch's, and those of the hold trials), rather than
    # stopping them and starting fresh processes (torch import and all) for each generation. So
    # every trial, batch or hold, ran in one of at most 4 processes.
    ran = trial_results(out / "tune")
    holds = [r for r in ran if "hold" in r["config"]]
    assert holds and len({r["pid"] for r in ran}) <= 4, sorted((r["date"], r["pid"], "hold" in r["config"])
                                                               for r in ran)
    import ray
    from ray._private.state import actors  # the GCS actor table, dead actors included

    ray.init(address=cluster.address)
    try:
        table = list(actors().values())
    finally:
        ray.shutdown()
    assert [a["State"] for a in table if "BarrierSignal" in a["ActorClassName"]] == ["DEAD"]  # gone with the search


def trial_results(tune_dir: Path) -> list[dict]:
    """Every result line of every trial. (Evaluator processes are counted from these, not from
    Ray's actor table: at the start Tune may drop an actor still booting when a started one frees
    up first, a churn the barriers have nothing to do with.)"""
    return [json.loads(line) for f in tune_dir.glob("trial_*/result.json")
            for line in f.read_text().splitlines() if line.strip()]


def test_early_start_keeps_the_search_and_its_evaluators(cluster, tmp_path, data_dir, snapshot_run):
    """``evolution.early_start`` on 4 slots (half a CPU each): evaluators that free up at a barrier
    start the next generation before its last candidates are scored; the outputs hold exactly the
    budget's candidates, each reported once, and every trial ran in one of at most 4 evaluator
    processes. Random search, whose early generations always stand: evolution may withdraw every
    one of them (its untrained snapshot's noisy scores send children into the top k), which leaves
    no early start to see (withdrawals: tests/test_search.py)."""
    run = CliRun(search_args(tmp_path, data_dir, snapshot_run, **{"evaluator.cpus_per_trial": 0.5,
                                                                  "evolution.early_start": "true",
                                                                  "evolution.method": "random"}),
                 env={"RAY_ADDRESS": cluster.address})
    assert run.finish(240) == 0, run.output()[-4000:]
    check_outputs(tmp_path / "out" / "s", BUDGET)
    ran = trial_results(tmp_path / "out" / "s" / "tune")
    assert len({r["pid"] for r in ran}) <= 4, sorted((r["date"], r["pid"]) for r in ran)
    scored = [c for r in ran for c in candidate_results(r)]
    last_end = {g: max(c["ended_at"] for c in scored if c["generation"] == g) for g in (0, 1)}
    assert any(c["ended_at"] - c["eval_s"] < last_end[c["generation"] - 1] for c in scored if c["generation"]), scored


def test_killed_driver_resumes_without_reevaluating(cluster, tmp_path, data_dir, snapshot_run):
    """Batches of 3 (2 evaluators): a resumed search evaluates no candidate of a finished trial
    again; only the batches that were running when the driver died are redone."""
    args = search_args(tmp_path, data_dir, snapshot_run, **{"evaluator.calib_images": 600,
                                                            "evaluator.candidates_per_trial": 3})
    # State saved on every step (not Tune's 10 s default), so the kill lands between two
    # trials' ends of this short search.
    first = CliRun(args, env={"RAY_ADDRESS": cluster.address, "TUNE_GLOBAL_CHECKPOINT_S": "0"})
    tune_dir = tmp_path / "out" / "s" / "tune"
    end = time.monotonic() + 180
    # Kill once a trial has finished and the saved experiment state knows it.
    while time.monotonic() < end and not saved_as_finished(tune_dir):
        time.sleep(0.05)
    finished = saved_as_finished(tune_dir)
    first.kill()  # os.killpg: the whole driver process group
    assert finished and len(finished) < BUDGET, (first.output()[-4000:], tune_files(tune_dir))
    second = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    assert second.finish(240) == 0, second.output()[-4000:]
    assert "resuming the search" in second.output()
    check_outputs(tmp_path / "out" / "s", BUDGET, exactly_once=False)
    counts = reports(tune_dir)
    assert all(counts[arch] == 1 for arch in finished), {a: counts[a] for a in finished}
    assert sum(counts.values()) - BUDGET <= 2 * 3  # at most the two running batches were redone


def test_driver_killed_while_evaluators_hold_resumes(cluster, tmp_path, data_dir, snapshot_run):
    """4 slots: the driver dies while a hold trial waits out a barrier. The restarted driver's Tune
    re-runs that hold, whose signal actor died with the old driver: it ends at once, and the search
    completes, redoing at most the batches that were running (4 slots, batches of at most 2). No early
    start (the default, set here all the same), so that every idle slot holds."""
    args = search_args(tmp_path, data_dir, snapshot_run, **{"evaluator.calib_images": 600,
                                                            "evaluator.cpus_per_trial": 0.5,
                                                            "evolution.early_start": "false"})
    first = CliRun(args, env={"RAY_ADDRESS": cluster.address, "TUNE_GLOBAL_CHECKPOINT_S": "0"})
    tune_dir = tmp_path / "out" / "s" / "tune"
    holding, end = None, time.monotonic() + 180
    while holding is None and time.monotonic() < end:
        for params in tune_dir.glob("trial_*/params.json"):
            with contextlib.suppress(OSError, ValueError):  # a file still being written
                if "hold" in json.loads(params.read_text()) and not (params.parent / "result.json").stat().st_size:
                    holding = params.parent.name  # started, not yet reported: waiting at the barrier
        time.sleep(0.02)
    first.kill()
    assert holding, (first.output()[-4000:], tune_files(tune_dir))
    second = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    assert second.finish(240) == 0, second.output()[-4000:]
    assert "resuming the search" in second.output()
    check_outputs(tmp_path / "out" / "s", BUDGET, exactly_once=False)
    counts = reports(tune_dir)
    assert len(counts) == BUDGET and sum(counts.values()) - BUDGET <= 4 * 2  # at most the running batches redone


def test_state_cut_off_mid_save_is_put_back_and_the_search_resumes(cluster, tmp_path, data_dir, snapshot_run):
    """Tune copies its saves to the search's folder in place, so a driver killed mid-copy leaves
    them cut off (seen in CI: the trial table at 0 bytes, and the search started again). The next
    launch puts the whole copy kept at Tune's save back, in one line, and resumes: no candidate is
    evaluated again. With the whole copy gone too, it sets the save aside and searches again."""
    args = search_args(tmp_path, data_dir, snapshot_run)
    first = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    assert first.finish(240) == 0, first.output()[-4000:]
    tune_dir = tmp_path / "out" / "s" / "tune"
    (newest := max(tune_dir.glob("experiment_state-*.json"))).write_text("")  # what a kill mid-copy leaves
    second = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    assert second.finish(240) == 0, second.output()[-4000:]
    assert f"{newest.name} was cut off" in second.output() and "put back from its whole copy" in second.output()
    assert "resuming the search" in second.output()
    check_outputs(tmp_path / "out" / "s", BUDGET)  # each candidate evaluated once, across both launches
    newest = max(tune_dir.glob("experiment_state-*.json"))
    newest.write_text("")
    newest.with_name(newest.name + ".whole").unlink()
    third = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    assert third.finish(240) == 0, third.output()[-4000:]
    assert "set aside" in third.output() and "resuming the search" in third.output()  # from the first launch's save
    check_outputs(tmp_path / "out" / "s", BUDGET)

def test_killed_evaluator_is_retried_and_search_completes(cluster, tmp_path, data_dir, snapshot_run):
    import ray
    from ray._private.state import actors  # the GCS actor table: no dashboard needed

    args = search_args(tmp_path, data_dir, snapshot_run, **{"evaluator.calib_images": 1000,
                                                            "evaluator.candidates_per_trial": 3})
    run = CliRun(args, env={"RAY_ADDRESS": cluster.address})
    ray.init(address=cluster.address)
    try:
        killed = None
        end = time.monotonic() + 120
        while killed is None and time.monotonic() < end:
            alive = [a for a in actors().values()
                     if a["State"] == "ALIVE" and "ImplicitFunc" in a["ActorClassName"] and a["Pid"]]
            if alive:
                killed = alive[0]
                os.kill(killed["Pid"], signal.SIGKILL)
            else:
                time.sleep(0.3)
        assert killed is not None, "no evaluator actor appeared"
    finally:
        ray.shutdown()
    assert run.finish(300) == 0, run.output()[-4000:]
    table = check_outputs(tmp_path / "out" / "s", BUDGET, exactly_once=False)
    assert len(table) == BUDGET and table["accuracy"].notna().all()  # the killed batch was redone, whole
    failures = [r["num_failures"] for _, r in saved_trials(tmp_path / "out" / "s" / "tune")]
    assert sum(failures) >= 1, failures  # the killed evaluator's trial failed once and was retried
    assert result_lines(tmp_path / "out" / "s" / "tune") - BUDGET <= 3  # at most its batch twice
