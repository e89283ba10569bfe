"""How well does a latency lookup table predict a subnet's measured latency on this machine?

For each space, ``build_table`` times every choice of every block position (as ``elastic-nas
latency build`` does, default settings: batch 1, 1 thread, fp32, 10 warm-up forwards, median
of 30 repeats, each part cycling through copies of itself so its weights are as cold as in a
whole net), then ``--subnets`` random subnets (a fixed seed, none used to build the table) are
timed end to end, ``--rounds`` times interleaved, and each prediction is compared with the
median of its measurements: mean absolute percentage error, the share within +-10 % (issue 21's
target: >= 90 %) and the signed median error (a bias the sum of parts would carry); all of it
``--runs`` times over (a new table each time). Run it on a quiet machine: it is a timing
benchmark.

    python benchmarks/latency.py                        # three spaces, 30 subnets each
    python benchmarks/latency.py --max-copies 1 --name latency_warm_parts   # parts timed warm, alone

Writes ``benchmarks/results/latency.json`` (``--name``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from _common import SPOS_WORKLOAD, write_result
from elastic_nas.config import SpaceConfig
from elastic_nas.spaces import build_space
from elastic_nas.spaces.latency import build_table, measure_arch_ms

SPACES = {
    # jobs/supernet.yaml's space (the laptop default)
    "cream_laptop": SpaceConfig(name="cream", input_size=32, stem_stride=2, width_mult=0.5,
                                max_depths=[2, 3, 3, 3, 2]),
    # the SPOS supernet the elastic benchmarks measure
    "spos_laptop": SpaceConfig(name="spos", input_size=32, stem_stride=SPOS_WORKLOAD["space.stem_stride"],
                               width_mult=SPOS_WORKLOAD["space.width_mult"]),
    # SPOS at its published width (3.5M params at 32 px: its weights outgrow the caches)
    "spos_full_width": SpaceConfig(name="spos", input_size=32, stem_stride=1, width_mult=1.0),
}


def validate(name: str, cfg: SpaceConfig, subnets: int, rounds: int, max_copies: int) -> dict:
    space = build_space(cfg)
    t0 = time.perf_counter()
    table = build_table(space, max_copies=max_copies)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(2026)
    archs = [space.sample(rng) for _ in range(subnets)]
    measured = [[] for _ in archs]
    for _ in range(rounds):  # interleaved, so a slow spell of the machine hits every subnet alike
        for i, arch in enumerate(archs):
            measured[i].append(measure_arch_ms(space, arch))
    rows = []
    for arch, ms in zip(archs, measured):
        m, p = statistics.median(ms), table.predict_ms(space, arch)
        rows.append({"arch": space.to_json(arch), "macs": space.macs(arch), "measured_ms": round(m, 4),
                     "measured_spread_ms": round(max(ms) - min(ms), 4), "predicted_ms": round(p, 4),
                     "error": round(p / m - 1, 4)})
    err = np.array([r["error"] for r in rows])
    out = {"space": cfg.__dict__, "parts": sum(len(c) for c in table.choices_ms.values()) + len(table.fixed_ms),
           "build_seconds": round(build_s, 1), "device": table.describe(), "subnets": subnets, "rounds": rounds,
           "mape_percent": round(100 * float(np.abs(err).mean()), 2),
           "within_10_percent": round(float((np.abs(err) <= 0.10).mean()), 3),
           "median_error_percent": round(100 * float(np.median(err)), 2),
           "worst_error_percent": round(100 * float(err[np.abs(err).argmax()]), 2),
           "measured_ms_range": [min(r["measured_ms"] for r in rows), max(r["measured_ms"] for r in rows)],
           "rows": rows}
    print(f"latency: {name}: {out['parts']} parts timed in {build_s:.0f} s; {subnets} subnets "
          f"{out['measured_ms_range'][0]:.2f}-{out['measured_ms_range'][1]:.2f} ms: MAPE {out['mape_percent']}%, "
          f"{100 * out['within_10_percent']:.0f}% within +-10%, median error {out['median_error_percent']}%",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spaces", default=",".join(SPACES), help="comma-separated: " + ", ".join(SPACES))
    ap.add_argument("--subnets", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="whole repeats: a table built and its subnets timed again")
    ap.add_argument("--max-copies", type=int, default=64, help="copies a part cycles through (1: timed warm, alone)")
    ap.add_argument("--name", default="latency")
    a = ap.parse_args()
    names = a.spaces.split(",")
    runs = [{name: validate(name, SPACES[name], a.subnets, a.rounds, a.max_copies) for name in names}
            for _ in range(a.runs)]
    summary = {}
    for name in names:
        within = [run[name]["within_10_percent"] for run in runs]
        mape = [run[name]["mape_percent"] for run in runs]
        summary[name] = {"within_10_percent_runs": within, "within_10_percent_median": statistics.median(within),
                         "mape_percent_runs": mape, "mape_percent_median": statistics.median(mape)}
        print(f"latency: {name}: within +-10% over {a.runs} runs {within} (median {statistics.median(within)}), "
              f"MAPE {mape}", flush=True)
    write_result(a.name, {"target_within_10_percent": 0.9, "max_copies": a.max_copies, "summary": summary,
                          "runs": runs})


if __name__ == "__main__":
    main()
