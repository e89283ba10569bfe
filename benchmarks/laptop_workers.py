"""The laptop supernet's training speed: two 1-CPU workers against one worker with 2 threads.

``jobs/supernet.yaml`` (the pipeline's supernet) trains on two workers of 1 CPU each, so a
laptop run shows the elastic machinery at work. Each setting below runs the real
``elastic-nas supernet`` (a private local Ray cluster, the shipped config but one uniform arch
a step in the plain layout, pinned: what RESULTS.md measured) for ``--epochs``
at a fixed world size and reads the samples/s of its progress lines (the first report, which
holds the workers' start, left out):

* ``2x1``: 2 workers x 1 CPU (the shipped setting, batch 32 per worker, DDP over gloo);
* ``1x2``: 1 worker x 2 CPUs (torch's intra-op threads instead of a second worker, batch 64);
* ``1x1``: 1 worker x 1 CPU (the baseline: what one core does).

Settings alternate order every round (``--rounds``); ratios are taken within a round against
``1x1``. Same global batch (64) and LR everywhere, so steps are the same work.

    python benchmarks/laptop_workers.py --rounds 2

Writes ``benchmarks/results/laptop_workers.json``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time

from _common import ROOT, write_result

SETTINGS = {"2x1": (2, 1), "1x2": (1, 2), "1x1": (1, 1)}
LINE = re.compile(r"step\s+(\d+) .* world (\d+) batch \d+ (\d+) samples/s")


def run_setting(name: str, epochs: float, tmp: str) -> dict:
    workers, cpus = SETTINGS[name]
    sets = [f"run.storage_path={tmp}/{name}", f"run.name=w{name}", f"optim.epochs={epochs}", "strategy=spos",
            "optim.channels_last=false",
            f"elastic.min_workers={workers}", f"elastic.max_workers={workers}",
            f"elastic.resources_per_worker={{CPU: {cpus}}}", f"elastic.per_worker_batch={64 // workers}"]
    cmd = [sys.executable, "-m", "elastic_nas", "supernet", "--config", "supernet"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: elastic-nas supernet failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    reports = [(int(m[1]), int(m[2]), float(m[3])) for m in LINE.finditer(proc.stdout)]  # step, world, samples/s
    rates = [r[2] for r in reports[1:] if r[1] == workers]
    if not rates:
        raise SystemExit(f"{name}: no progress lines at world {workers} in its output")
    return {"workers": workers, "cpus_per_worker": cpus, "steps": reports[-1][0], "wall_s": round(wall, 1),
            "samples_per_s_reports": rates, "samples_per_s": round(statistics.median(rates), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=float, default=1.5, help="of the 18,000 synthetic train images (421 steps)")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            res = {}
            for name in order:
                res[name] = run_setting(name, a.epochs, f"{tmp}/r{r}")
                print(f"round {r + 1}: {name} {res[name]['samples_per_s']:.0f} samples/s "
                      f"({res[name]['steps']} steps, {res[name]['wall_s']:.0f} s)", flush=True)
            base = res["1x1"]["samples_per_s"]
            rounds.append({"order": order, "settings": res,
                           "ratio_to_1x1": {n: round(v["samples_per_s"] / base, 3) for n, v in res.items()}})
    summary = {n: {"median": statistics.median(r["ratio_to_1x1"][n] for r in rounds),
                   "min": min(r["ratio_to_1x1"][n] for r in rounds), "max": max(r["ratio_to_1x1"][n] for r in rounds)}
               for n in SETTINGS}
    write_result("laptop_workers", {"epochs": a.epochs, "rounds": rounds, "ratio_to_1x1": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
