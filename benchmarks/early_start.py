"""The product's search with and without early starts at the generation barrier (issue 19).

``elastic-nas search`` on one supernet snapshot, ``evolution.early_start`` true and false in
alternating order (reversed every other run), each a fresh search on a fresh local Ray. For each
run: wall seconds of the whole command, the trials, the trials of withdrawn early generations,
the evaluator processes, and the chosen arch, which must be the same with and without early
starts (they propose the same generations; the evaluation is deterministic).

    python benchmarks/early_start.py --snapshot runs/pipeline-supernet --shape pipeline --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result
from elastic_nas.search.runner import standing, trial_reports

# --shape: the pipeline's search settings (jobs/pipeline.yaml), or jobs/search.yaml as shipped
SHAPES = {
    "pipeline": {"evolution.population": 16, "evolution.top_k": 4, "evolution.mutation_children": 8,
                 "evolution.crossover_children": 8, "evolution.generations": 3,
                 "evaluator.calib_images": 1000, "evaluator.batch_size": 250},
    "search": {},
}


def one_search(snapshot: str, shape: str, early: bool, out: Path) -> dict:
    sets = {"snapshot": snapshot, "run.storage_path": str(out.parent), "run.name": out.name,
            **SHAPES[shape], "evolution.early_start": str(early).lower()}
    cmd = [sys.executable, "-m", "elastic_nas", "search", "--config", "search"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"search failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    dirs = sorted((out / "tune").glob("trial_*"))
    configs = [json.loads((d / "params.json").read_text()) for d in dirs]
    kept = standing(configs)
    reports = [c for d in dirs for c in trial_reports(str(d))]
    chosen = json.loads((out / "chosen_arch.json").read_text())
    return {"early_start": early, "wall_s": round(wall, 2), "trials": len(configs), "withdrawn_trials": kept.count(False),
            "evaluations": len(reports), "evaluator_processes": len({r["pid"] for r in reports}),
            "chosen_arch": chosen["arch"], "chosen_loss": chosen.get("loss")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snapshot", required=True, help="a supernet run dir or checkpoint dir (jobs/search.yaml's snapshot)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="pipeline")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--name", default="", help="results/<name>.json (default early_start_<shape>)")
    args = p.parse_args()
    if args.runs < 1 or not Path(args.snapshot).exists():
        p.error("--runs must be >= 1 and --snapshot must exist")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            order = (True, False) if i % 2 == 0 else (False, True)
            pair = {early: one_search(args.snapshot, args.shape, early, Path(tmp) / f"{i}{early}") for early in order}
            runs.append({"early_start": pair[True], "plain_barrier": pair[False],
                         "plain_over_early": round(pair[False]["wall_s"] / pair[True]["wall_s"], 3)})
            print(f"run {i + 1}/{args.runs}: early start {pair[True]['wall_s']:.1f} s "
                  f"({pair[True]['withdrawn_trials']} withdrawn trials), plain barrier {pair[False]['wall_s']:.1f} s",
                  flush=True)

    def spread(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    figures = {
        "shape": args.shape, "snapshot": args.snapshot, "runs": runs,
        "early_start_wall_s": spread([r["early_start"]["wall_s"] for r in runs]),
        "plain_barrier_wall_s": spread([r["plain_barrier"]["wall_s"] for r in runs]),
        "plain_over_early": spread([r["plain_over_early"] for r in runs]),
        "withdrawn_trials": [r["early_start"]["withdrawn_trials"] for r in runs],
        "same_choice": all(r["early_start"]["chosen_arch"] == r["plain_barrier"]["chosen_arch"] for r in runs),
    }
    write_result(args.name or f"early_start_{args.shape}", figures)
    return 0 if figures["same_choice"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
