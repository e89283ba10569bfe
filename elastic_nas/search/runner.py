"""``elastic-nas search``: evolutionary (or random) architecture search on Ray Tune.

1. pin the supernet snapshot (run dir -> newest valid checkpoint) into the search dir;
2. build the fixed calibration and validation images;
3. run Tune: one trial per batch of candidates, the :class:`GenerationSearcher` proposing
   them, the snapshot and images shared through the object store;
4. write the results table, Pareto front, best arch per budget, plot and chosen arch.

Launching the same command again resumes the search (``Tuner.restore``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from ray.tune import Callback

from elastic_nas.cluster.launcher import init_ray, resolve_storage
from elastic_nas.config import SearchConfig, SpaceConfig, from_dict, to_dict
from elastic_nas.errors import ConfigError, UserError
from elastic_nas.io import RunFolder, print_outputs, redact
from elastic_nas.search import barrier, saves
from elastic_nas.search.evaluator import EvalData, Snapshot, candidate_results, eval_data, evaluate_candidate
from elastic_nas.search.evolution import Constraints, EvolutionSettings, make_generator
from elastic_nas.search.outputs import SCORES, write_outputs
from elastic_nas.search.searcher import GenerationSearcher
from elastic_nas.search.snapshot import pin, pinned_or_resolved, to_snapshot
from elastic_nas.spaces import build_space
from elastic_nas.spaces.latency import LatencyTable

TUNE_DIR = "tune"  # Tune's experiment dir inside the search dir


def search_folder(cfg: SearchConfig) -> RunFolder:
    """The search's folder; on s3:// a local staging copy, fetched when this machine has none
    (a search resumed elsewhere) and published after every generation."""
    folder = RunFolder(resolve_storage(cfg.run), cfg.run.name)
    if folder.fetch():
        print(f"elastic-nas: fetched the search so far from {redact(folder.uri)}", flush=True)
    return folder


def check_snapshot_matches(cfg: SearchConfig, fingerprint: dict) -> SpaceConfig:
    """The snapshot's space; refuse an explicit ``space`` or a ``data`` that disagrees with it."""
    space = from_dict(SpaceConfig, fingerprint["space"])
    if cfg.space is not None and asdict(cfg.space) != asdict(space):
        diff = {k: (v, fingerprint["space"].get(k)) for k, v in asdict(cfg.space).items()
                if fingerprint["space"].get(k) != v}
        raise ConfigError("space", f"differs from the snapshot's space (here vs snapshot): {diff}; "
                          "leave space out to use the snapshot's")
    data_fp = fingerprint.get("data", {})
    for key in ("source", "seed"):
        if key in data_fp and data_fp[key] != getattr(cfg.data, key):
            raise ConfigError(f"data.{key}", f"is {getattr(cfg.data, key)!r} but the supernet was trained with "
                              f"{data_fp[key]!r}: search_val would not be the images it never saw")
    return space


def build_eval_data(cfg: SearchConfig, space_cfg: SpaceConfig, num_train_expected: int | None) -> EvalData:
    """The same calibration (train) and class-balanced validation (search_val) images for every candidate."""
    from elastic_nas.data import build_dataset

    splits = build_dataset(cfg.data, space_cfg.input_size)
    if num_train_expected is not None and len(splits.train) != num_train_expected:
        raise ConfigError("data", f"gives {len(splits.train)} train images but the supernet was trained on "
                          f"{num_train_expected}: use the supernet's data settings")
    ev = cfg.evaluator
    for key, split in (("calib_images", splits.train), ("val_images", splits.search_val)):
        if getattr(ev, key) > len(split):
            raise ConfigError(f"evaluator.{key}", f"{getattr(ev, key)} > the {len(split)} images of {split.name}")
    return eval_data(splits, ev.calib_images, ev.val_images, cfg.run.seed, ev.batch_size, ev.precision,
                     ev.channels_last)


class SpaceCost:
    """``arch -> (macs, params, latency ms)`` of a space (latency 0 without a table); a class,
    not a lambda, so Tune can pickle the searcher."""

    def __init__(self, space, table: LatencyTable | None = None):
        self.space, self.table = space, table

    def __call__(self, arch) -> tuple[int, int, float]:
        latency = self.table.predict_ms(self.space, arch) if self.table is not None else 0.0
        return self.space.macs(arch), self.space.params(arch), round(latency, 4)


def make_searcher(cfg: SearchConfig, space) -> GenerationSearcher:
    evo = cfg.evolution
    lo, hi = space.macs_range()
    if (evo.macs_max and evo.macs_max * 1e6 < lo) or (evo.macs_min and evo.macs_min * 1e6 > hi):
        raise ConfigError("evolution.macs_max" if evo.macs_max and evo.macs_max * 1e6 < lo else "evolution.macs_min",
                          f"no architecture of this space fits [{evo.macs_min}, {evo.macs_max}]M MACs; "
                          f"it spans [{lo / 1e6:.3f}, {hi / 1e6:.3f}]M")
    settings = EvolutionSettings(
        population=evo.population, top_k=evo.top_k, mutation_children=evo.mutation_children,
        crossover_children=evo.crossover_children, mutation_prob=evo.mutation_prob,
        generations=evo.generations, max_tries=evo.max_tries)
    table = None
    if cfg.latency_table:
        table = LatencyTable.load(cfg.latency_table)
        table.check(space.cfg)
    constraints = Constraints(evo.macs_min * 1e6, evo.macs_max * 1e6, evo.params_min * 1e6, evo.params_max * 1e6,
                              evo.latency_min_ms, evo.latency_max_ms)
    generator = make_generator(evo.method, space, SpaceCost(space, table), constraints, settings, cfg.run.seed)
    column, lower = SCORES[cfg.evaluator.score]
    return GenerationSearcher(generator, metric=column, mode="min" if lower else "max", early_start=evo.early_start)


def shown(score: str, value: float, named: bool = True) -> str:
    """A candidate's score as the console shows it: "top-1 67.95%" or "loss 0.8123" (not named:
    "67.95%" or "0.8123")."""
    text = f"{value:.2f}%" if score == "top1" else f"{value:.4f}"
    return f"{'top-1' if score == 'top1' else 'loss'} {text}" if named else text


def trial_dirname(trial) -> str:
    """Short trial dirs (Tune's default spells out the whole config)."""
    return f"trial_{trial.trial_id}"


def results_table(grid) -> pd.DataFrame:
    """One row per candidate from the trials' reports (a trial reports its batch; a retried
    trial's repeat counts once); candidates never reported have NaN accuracy. Trials of a
    withdrawn early generation are left out (:func:`standing`)."""
    rows: dict[str, dict] = {}
    grid = [r for r, keep in zip(grid, standing([r.config or {} for r in grid])) if keep]
    for result in grid:
        for cand in (result.config or {}).get("candidates") or []:
            rows.setdefault(_key(cand["arch"]), _row(cand, {}, result.metrics or {}))
        # The trial table's last result too: a resumed search's table can list a trial as finished
        # whose result.json the killed driver never copied up (search/saves.py).
        for report in [*reports(result.metrics), *trial_reports(result.path)]:
            rows[_key(report["arch"])] = _row(report, report, report)
    columns = ["arch", "macs", "params", "latency_ms", "accuracy", "loss", "generation", "trial_id", "eval_s"]
    return pd.DataFrame(list(rows.values()), columns=columns)


def standing(configs: list[dict]) -> list[bool]:
    """For each trial config: False for a trial of a withdrawn early generation, whose proposal
    (the searcher's count of proposed generations) is below a later proposal of its generation."""
    last: dict[int, int] = {}
    for cand in (c for config in configs for c in config.get("candidates") or []):
        last[cand["generation"]] = max(last.get(cand["generation"], 0), cand.get("proposal", 0))
    return [all(c.get("proposal", 0) >= last[c["generation"]] for c in config.get("candidates") or [])
            for config in configs]


def _key(arch) -> str:
    return json.dumps(arch, separators=(",", ":"))


def trial_reports(trial_dir: str) -> list[dict]:
    """Every candidate's result a trial reported (Tune's result.json, one JSON line per report;
    a last line cut off by a killed driver's copy is left out)."""
    path = Path(trial_dir) / "result.json"
    lines = [line for line in (path.read_text().splitlines() if path.is_file() else []) if line.strip()]
    results = []
    for i, line in enumerate(lines):
        try:
            results.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise
    return [c for r in results for c in reports(r)]


def reports(result: dict | None) -> list[dict]:
    """The candidates' results in one of a trial's results, each with the trial's id."""
    return [{"trial_id": (result or {}).get("trial_id", ""), **c} for c in candidate_results(result)]


def _row(cand: dict, scores: dict, meta: dict) -> dict:
    return {"arch": _key(cand["arch"]), "macs": int(cand["macs"]), "params": int(cand["params"]),
            "latency_ms": float(cand.get("latency_ms", 0.0)), "accuracy": float(scores.get("accuracy", math.nan)),
            "loss": float(scores.get("loss", math.nan)),
            "generation": int(cand["generation"]), "trial_id": meta.get("trial_id", ""),
            "eval_s": float(scores.get("eval_s", math.nan))}


# Live search folders by local path. Tune pickles the searcher and this hook into its
# experiment files, so they name the folder and never hold its URI's credentials.
_FOLDERS: dict[str, RunFolder] = {}


class GenerationProgress:
    """One console line per finished generation: candidates done of the budget, the best
    score so far and the time left at the last generation's pace (Tune's own per-trial
    tables stay in its log files and TensorBoard). On s3:// the search so far is then
    published, so another machine can resume it."""

    def __init__(self, budget: int, folder: RunFolder, score: str = "top1"):
        self.budget, self.folder, self.score = budget, str(folder.local), score
        _FOLDERS[self.folder] = folder

    def __call__(self, generator, generation: int, candidates: int, seconds: float) -> None:
        # (not the next generation's candidates, which may have started early)
        done = sum(1 for c in generator.evaluated() if c.generation <= generation)
        best = generator.top(1, generation)
        line = f"elastic-nas: generation {generation}: {done}/{self.budget} candidates"
        lower = SCORES[self.score][1]  # the generator maximises: a loss comes back negated
        line += f", best {shown(self.score, -best[0].score if lower else best[0].score)}" if best else ", no score yet"
        rate = candidates / max(seconds, 1e-9)
        if done < self.budget:
            line += f" ({rate:.2f} candidates/s, about {(self.budget - done) / rate:.0f}s left)"
        print(line, flush=True)
        if self.folder in _FOLDERS:
            _FOLDERS[self.folder].publish()  # a no-op on local storage


def run_search(cfg: SearchConfig) -> dict:
    """Run (or resume) the search of ``cfg``; returns the output paths."""
    import ray

    folder = search_folder(cfg)
    out_dir = folder.local
    # Fail before any work starts, leaving nothing behind: snapshot, space/data agreement,
    # constraints, images.
    ckpt, pinned = pinned_or_resolved(out_dir, cfg.snapshot)
    fingerprint = ckpt.meta["fingerprint"]
    space_cfg = check_snapshot_matches(cfg, fingerprint)
    space = build_space(space_cfg)
    searcher = make_searcher(cfg, space)  # fails here if the constraints miss the space
    data = build_eval_data(cfg, space_cfg, fingerprint.get("data", {}).get("num_train"))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt if pinned else pin(out_dir, ckpt, cfg.snapshot)
    snapshot = to_snapshot(ckpt)
    init_ray()
    # A resumed search keeps the batching its searcher was saved with.
    restoring = tune_can_restore(out_dir / TUNE_DIR) and saves.put_back(out_dir / TUNE_DIR)
    if not restoring:
        searcher.candidates_per_trial, searcher.slots = trial_batching(cfg)
    budget = searcher.generator.settings.budget
    per_trial = (f"up to {searcher.candidates_per_trial} candidates" if searcher.candidates_per_trial else
                 f"batches of about {searcher.trial_seconds:.0f}s (sized from the first candidates' times)")
    slots = f"{searcher.slots} evaluator(s)" if searcher.slots else "the evaluators an autoscaler adds"
    batching = "batches as saved" if restoring else f"{per_trial} per trial on {slots}"
    print(f"elastic-nas: {cfg.evolution.method} search over {space_cfg.name} with snapshot "
          f"{ckpt.meta.get('source')} (step {ckpt.meta.get('step')}); up to {budget} candidates, "
          f"{len(data.calib_x)} calibration / {len(data.val_x)} validation images, {batching}; "
          f"outputs in {folder.show(out_dir)}", flush=True)
    searcher.on_generation = GenerationProgress(budget, folder, cfg.evaluator.score)
    grid = run_tune(cfg, searcher, snapshot, data, out_dir / TUNE_DIR)
    table = results_table(grid)
    if not len(table):
        raise UserError(f"the search in {out_dir} evaluated no candidate")
    extra = {"method": cfg.evolution.method, "snapshot": ckpt.meta.get("source"),
             "snapshot_step": ckpt.meta.get("step"), "search": folder.show(out_dir)}
    title = f"{cfg.evolution.method} search: {len(table)} candidates ({space_cfg.name})"
    score = cfg.evaluator.score
    outputs = {k: folder.show(v) for k, v in write_outputs(table, out_dir, to_dict(space_cfg), cfg.budgets,
                                                           extra, title, score).items()}
    folder.publish()
    outputs["tensorboard"] = f"tensorboard --logdir {out_dir / TUNE_DIR}"
    outputs["search"] = folder.show(out_dir)
    column, lower = SCORES[score]
    failed = int(table[column].isna().sum())
    best = table[column].min() if lower else table[column].max()
    outputs["summary"] = (f"{len(table)} candidates evaluated ({failed} failed) of a budget of {budget}; "
                          f"best {shown(score, best)}")
    # Generation 0 is random legal archs: did the search find better than chance under the same bounds?
    random = table.loc[table["generation"] == 0, column].dropna()
    outputs["search score"] = (f"chosen {shown(score, best, named=score != 'top1')} vs "
                               f"{shown(score, random.median(), named=False)} for the median of "
                               f"{len(random)} random archs under the same bounds")
    print_outputs("search outputs:", outputs)
    if ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        ray.shutdown()  # a private local cluster: the next step starts its own
    return outputs


class CandidateBoard(Callback):
    """A Tune callback: every scored candidate's top-1, loss and MACs in one TensorBoard run
    (x: candidates scored so far), in place of a TensorBoard file per trial."""

    def __init__(self, log_dir: str):
        self.log_dir, self.writer, self.count = log_dir, None, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for cand in candidate_results(result):
            if self.writer is None:
                from tensorboardX import SummaryWriter  # comes with ray[tune]

                self.writer = SummaryWriter(self.log_dir)
            self.count += 1
            for key in ("accuracy", "loss", "macs", "generation", "latency_ms"):
                if key != "latency_ms" or cand.get(key):
                    self.writer.add_scalar(f"candidate/{key}", cand[key], self.count)

    def on_experiment_end(self, trials, **info):
        if self.writer is not None:
            self.writer.close()

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment
        return {"log_dir": self.log_dir, "writer": None, "count": self.count}


def trial_batching(cfg: SearchConfig) -> tuple[int, int]:
    """(candidates per trial, evaluator slots): the configured batch, or on CPUs 0, which the
    searcher sizes from the first evaluation times the evaluators report (where the
    candidates run, not on this driver's machine)."""
    import ray

    ev = cfg.evaluator
    kind, need = ("GPU", ev.gpus_per_trial) if ev.gpus_per_trial else ("CPU", ev.cpus_per_trial)
    slots = int(ray.cluster_resources().get(kind, 0) // need)  # 0: an autoscaler adds them
    if ev.candidates_per_trial:
        return ev.candidates_per_trial, slots
    if ev.gpus_per_trial:  # a GPU scores a candidate in milliseconds: one batch per evaluator per generation
        return max(1, math.ceil(cfg.evolution.population / max(1, slots))), slots
    return 0, slots


def tune_can_restore(tune_path: Path) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(str(tune_path))


def run_tune(cfg: SearchConfig, searcher: GenerationSearcher, snapshot: Snapshot, data: EvalData, tune_path: Path):
    """Tune trials of candidate batches, the searcher proposing them; resumes a started search."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    budget = searcher.generator.settings.budget
    # Tune lets a custom searcher keep only one trial pending by default, which serialises
    # the evaluators; a generation's candidates are independent, so let them all queue.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, budget)))
    # The experiment (and searcher) state is saved at Tune's "auto" period (>= 10 s, at most
    # ~5 % of the time), not on every step: a save lists every trial with its batch, so saving
    # per step took 12 % of a 2-core machine at 224 candidates (benchmarks/search_speed.py). A
    # killed driver redoes the running batches and those finished since the last save.
    # The console gets GenerationProgress lines: Tune's new output engine draws its boxes even
    # at verbose=0, the classic reporter prints nothing there; its INFO lines go to its logs.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    # Per-trial loggers: Tune's JSON one (the results table reads it) and one TensorBoard
    # writer for the whole search in place of a CSV and a TensorBoard file per trial.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    init_ray()  # a no-op when the caller has connected already
    if trial_batching(cfg)[1] >= barrier.HOLD_FROM_SLOTS:  # the cluster's slots (a restored searcher has its own)
        barrier.start_signal()  # evaluators idle at a generation barrier hold on to their actors
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_candidate, snapshot=snapshot, data=data),
        {"cpu": cfg.evaluator.cpus_per_trial, "gpu": cfg.evaluator.gpus_per_trial},
    )
    saves.keep_in(tune_path)
    if tune_can_restore(tune_path):
        print(f"elastic-nas: resuming the search in {tune_path}", flush=True)
        tuner = tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True,
                                        trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=tune_path.name, storage_path=str(tune_path.parent), verbose=0,
                failure_config=tune.FailureConfig(max_failures=cfg.evaluator.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[JsonLoggerCallback(), CandidateBoard(str(tune_path / "tensorboard"))],
            ),
        )
    try:
        return tuner.fit()
    finally:
        barrier.stop_signal()


__all__ = ["CandidateBoard", "GenerationProgress", "build_eval_data", "check_snapshot_matches", "make_searcher",
           "results_table", "run_search", "standing", "run_tune", "trial_batching", "trial_reports"]
