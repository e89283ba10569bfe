"""Do landmark-regularised supernets order their own landmarks? A read of what the term reached.

Against the held-out truth a landmark-regularised supernet ranks as its control does (RESULTS.md);
this reads whether the term fitted the landmarks it trained on at all. Each ``--run`` (a
``ranking.py`` results JSON, one of its variants, and the work dir that keeps that variant's
weights) has each supernet seed score the landmarks of ``--landmarks`` as the search scores (BN
recalibrated on the run's calibration images, the search_val loss), and reports Kendall tau
of that score against the landmarks' stand-alone top-1, over all landmarks and over those inside
the search's MACs band; MACs on the same landmarks is the baseline.

    cd benchmarks && python ranking_landmarks.py \\
        --landmarks ~/.cache/elastic-nas/ranking-v2-t2000-nr1-cl/landmarks_12x1_2000.json \\
        --run results/ranking_t2000_s11_nr1_cl_deep_rteacher_landmarks_b128_steps1200.json:entangled_sandwich_deep_rteacher_landmarks_b128:~/.cache/elastic-nas/ranking-v2-t2000-nr1-cl \\
        --run ... --name ranking_landmarks

Each (run, seed) is one job, cached in its work dir (``lmscore_*.json``); ``--procs`` at a time.
Writes ``results/<--name>.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from ranking import claimed, supernet_cfg, trained_supernet, weights_path
from ranking_table import Refused, exits_on_refusal, load

from _common import run_jobs, write_result
from elastic_nas.search.evaluator import eval_data, evaluate_arch
from elastic_nas.search.ranking import kendall_tau


def landmark_losses(settings: dict, variant: str, seed: int, steps: int, archs: list) -> dict:
    """The search_val loss of every landmark on one supernet seed."""
    from elastic_nas.data import build_dataset

    a = SimpleNamespace(**settings)
    cfg = supernet_cfg(a, variant, seed)
    data = eval_data(build_dataset(cfg.data, cfg.space.input_size), a.calib_images, a.val_images, 0,
                     channels_last=a.channels_last)
    space, model = trained_supernet(a, variant, seed, steps)
    return {"val_losses": [round(evaluate_arch(model, space.validate(arch), data)["loss"], 5) for arch in archs]}


def parse_run(value: str) -> tuple[Path, str, Path]:
    parts = value.split(":")
    if len(parts) != 3:
        raise Refused(f"--run takes JSON:VARIANT:WORK, got {value!r}")
    return Path(parts[0]), parts[1], Path(parts[2]).expanduser()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--landmarks", required=True, help="the landmarks file ranking.py wrote in its work dir")
    ap.add_argument("--run", action="append", required=True, metavar="JSON:VARIANT:WORK")
    ap.add_argument("--seeds", type=int, default=4, help="supernet seeds 0..N-1")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--name", default="ranking_landmarks")
    a = ap.parse_args()
    with exits_on_refusal(ap, "ranking_landmarks"):
        landmarks = load(Path(a.landmarks).expanduser())["landmarks"]
        runs = []
        for source, variant, work in map(parse_run, a.run):
            result = load(source)
            if variant not in result.get("variants", {}):
                raise Refused(f"{source} has no variant {variant!r}")
            steps = result["variants"][variant]["steps"]
            settings = {**result["settings"], "work": str(work), "data": ""}  # the shared data cache
            missing = [s for s in range(a.seeds) if not weights_path(str(work), variant, s, steps).exists()]
            if missing:
                raise Refused(f"{work} has no weights of {variant} seeds {missing} at {steps} steps")
            runs.append((source, variant, work, steps, settings, result["budget_macs"]))
    archs = [lm["arch"] for lm in landmarks]
    top1 = np.array([lm["score"] for lm in landmarks])
    budget = runs[0][5]
    band = [i for i, lm in enumerate(landmarks) if 0.85 * budget <= lm["macs"] <= 1.15 * budget]
    jobs = [(work, f"lmscore_{Path(a.landmarks).stem}_{variant}_s{s}_{steps}", landmark_losses, settings, variant, s,
             steps, archs) for _, variant, work, steps, settings, _ in runs for s in range(a.seeds)]
    losses = run_jobs(claimed, jobs, a.procs)

    def taus(score) -> dict:
        score = np.asarray(score, dtype=float)
        return {"all": round(kendall_tau(score, top1), 4), "band": round(kendall_tau(score[band], top1[band]), 4)}

    out = {"landmarks": a.landmarks, "landmark_scores": top1.tolist(), "band_landmarks": band,
           "macs": taus([lm["macs"] for lm in landmarks]), "runs": []}
    for n, (source, variant, work, steps, _, _) in enumerate(runs):
        per_seed = [taus(-np.asarray(r["val_losses"])) for r in losses[n * a.seeds:(n + 1) * a.seeds]]
        out["runs"].append({"source": str(source), "variant": variant, "steps": steps, "seeds": per_seed,
                            "mean": {k: round(float(np.mean([p[k] for p in per_seed])), 4) for k in ("all", "band")}})
        print(f"{variant} ({source.name}): tau on the landmarks by the loss, all / band: "
              + ", ".join(f"{p['all']:+.2f} / {p['band']:+.2f}" for p in per_seed), flush=True)
    print(f"MACs: {out['macs']['all']:+.2f} / {out['macs']['band']:+.2f} ({len(top1)} landmarks, {len(band)} in the band)")
    write_result(a.name, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
