"""The laptop supernet's samples a second by per-worker batch, on Ray Train with 2 workers.

``elastic-nas supernet --config jobs/supernet.yaml`` (the shipped supernet) runs the same epochs at
each ``--batches`` value, the rounds alternating their order so that the machine's drift falls on
both. Each report interval's samples/s comes from the run's ``history.json`` (the first interval,
with the workers' start, left out); per batch: the median of every round's intervals, each round's
median, and the ratio to the first batch's. On a CPU a small per-worker batch leaves the cores
underused: what a larger batch buys in samples a second is what the supernet's ranking gets at
equal time (``ranking.py``'s ``entangled_sandwich_deep_b128``).

    python benchmarks/worker_batch.py --batches 32,64 --epochs 1.5 --rounds 2

Writes ``benchmarks/results/<--name>.json`` (command, machine, figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, write_result

CONFIG = ROOT / "elastic_nas" / "jobs" / "supernet.yaml"


def run(batch: int, epochs: float, samples_per_report: int, out: Path) -> list[float]:
    """One supernet run at ``batch`` a worker; its report intervals' samples/s after the first."""
    every = max(1, samples_per_report // (2 * batch))  # the same samples an interval at every batch
    cmd = [sys.executable, "-m", "elastic_nas", "supernet", "--config", str(CONFIG),
           "--set", f"run.storage_path={out}", "--set", f"optim.epochs={epochs}",
           "--set", f"elastic.per_worker_batch={batch}", "--set", f"elastic.report_every_steps={every}",
           "--set", "elastic.min_workers=2", "--set", "elastic.max_workers=2"]
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=out.parent)
    history = json.loads((out / "supernet" / "history.json").read_text())
    rates = [e["samples_per_s"] for e in history if e.get("event") == "report"]
    return rates[1:-1]  # the first holds the start; the last may be a short interval


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="32,64", help="per-worker batches, the first the baseline")
    ap.add_argument("--epochs", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples-per-report", type=int, default=3200)
    ap.add_argument("--name", default="worker_batch")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    rates: dict[int, list[list[float]]] = {b: [] for b in batches}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for b in batches if r % 2 == 0 else batches[::-1]:
                got = run(b, a.epochs, a.samples_per_report, Path(tmp) / f"r{r}_b{b}")
                rates[b].append(got)
                print(f"round {r + 1}, batch {b} a worker: {statistics.median(got):.0f} samples/s "
                      f"(median of {len(got)} intervals)", flush=True)
    base = statistics.median(x for runs in rates[batches[0]] for x in runs)
    figures = {}
    for b in batches:
        median = statistics.median(x for runs in rates[b] for x in runs)
        figures[str(b)] = {"samples_per_s": round(median, 1),
                           "per_round": [round(statistics.median(runs), 1) for runs in rates[b]],
                           "vs_first": round(median / base, 3), "intervals": rates[b]}
        print(f"batch {b} a worker (global {2 * b}): {median:.0f} samples/s, {median / base:.2f}x batch {batches[0]}")
    write_result(a.name, {"settings": vars(a), "figures": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
