"""Zero-cost proxies against the stand-alone truth: cheap rankers a supernet must also beat.

Zero-cost proxies score an architecture at initialisation, from one batch, without training:
NASWOT (Mellor et al. 2021: how differently a batch's images switch the activations),
SynFlow (Tanaka et al. 2020, as Abdelfattah et al. 2021 use it for NAS: the synaptic flow through
the absolute weights, data-free) and SNIP (Lee et al. 2019: the loss's sensitivity to each
weight, summed). On NAS-Bench-201 the NAS literature reports SynFlow and jacob_cov at Spearman
~0.73, and on synthetic CIFAR-10 their collapse (``reference/ranking.md``). This measures them on
the ranking benchmark's own 36 subnets of the laptop Cream space, against the ``--truth`` JSON's stand-alone seeds, with the same figures
``ranking_table.py`` gives every supernet: tau over all / stratified / band subnets per init seed,
the stratified CI's lower bound, the lead over the MACs proxy with its paired CI, and the
held-out tau. It also adds each proxy to the shipped supernet's scores (each side z-scored and
summed, no weight tuned on the truth), as ``ranking_table.py`` adds the MACs prior: whether a
proxy carries order the supernet lacks.

``--picks JSON[,JSON...]`` (``ranking.py`` runs with ``--search-seeds``) adds the order near the top
of the band, where the supernet orders least: every distinct arch those runs retrained, their
searches' picks and the largest arch under the budget (3 seeds each; an arch retrained in several
runs keeps its first run's retrains), each
proxy's Kendall tau against their retrained top-1, held out per retrain seed as ``ranking.py
--score-picks`` judges the supernet there, beside MACs, params and one retrain's own held-out tau.

NASWOT's activations here are SiLUs: an image's code is which of their inputs are positive.
SynFlow runs in float64 with BN in eval mode (its statistics at initialisation: an identity).
Every BN scale starts at PyTorch's default 1: the space zero-initialises each residual branch's
last BN, which would hide those blocks from SynFlow and SNIP (no gradient reaches them).

    python benchmarks/ranking_zero_cost.py --truth benchmarks/results/ranking_t2000_s11_nr1_cl_steps1970.json

Writes ``benchmarks/results/<--name>.json`` and prints the tables as Markdown. About a minute on 2
CPU cores, three with ``--picks``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import search_picks
import torch
import torch.nn as nn
import torch.nn.functional as F
from ranking_ceiling import subset_indices
from ranking_table import (
    Refused,
    exits_on_refusal,
    judged,
    lead_markdown,
    load,
    load_truth,
    markdown,
    read_rows,
    zscore,
)

from _common import write_result
from elastic_nas.config import DataConfig, SpaceConfig, from_dict
from elastic_nas.data import build_dataset
from elastic_nas.search.ranking import bootstrap_ci, held_out_tau, kendall_tau
from elastic_nas.spaces import build_space

PROXIES = ("naswot", "synflow", "snip")
# ranking_table's row of the shipped supernet (jobs/pipeline.yaml's rule), by the loss, 8 seeds
SHIPPED = "the same at about Once-for-All's own shares, 8 seeds, by the loss"


def naswot(net: nn.Module, x: torch.Tensor) -> float:
    """log |det K|, K[i, j] = the activation units on which images i and j agree (on or off)."""
    codes = []

    def hook(_module, inputs, _output):
        codes.append((inputs[0].detach().flatten(1) > 0).double())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.SiLU, nn.ReLU))]
    try:
        with torch.no_grad():
            net.train()(x)
    finally:
        for h in handles:
            h.remove()
    c = torch.cat(codes, 1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(k)[1])


def synflow(net: nn.Module, shape: tuple[int, ...]) -> float:
    """log of sum |w * dR/dw| with every weight made positive and an all-ones input, R the output's sum."""
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad()
    net(torch.ones((1, *shape[1:]), dtype=torch.float64)).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in net.parameters() if p.grad is not None)
    return math.log(total) if total > 0 else -math.inf


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """sum |w * dL/dw| for the cross-entropy of one labelled batch."""
    net.train().zero_grad()
    F.cross_entropy(net(x), y).backward()
    return sum(float((p.detach() * p.grad).abs().sum()) for p in net.parameters() if p.grad is not None)


def scores(space, arch, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
    """Every proxy of ``arch`` at the initialisation of ``seed`` (each on a fresh copy of it)."""
    out = {}
    for name in PROXIES:
        torch.manual_seed(seed)
        net = space.build_subnet(arch)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
        out[name] = naswot(net, x) if name == "naswot" else synflow(net, x.shape) if name == "synflow" \
            else snip(net, x, y)
    return out


def retrained_picks(paths: list[str], truth: dict) -> dict:
    """Every distinct arch the runs of ``paths`` retrained (their searches' picks and the largest arch
    under the budget): ``archs``, ``retrains`` ``[arch, seed]`` (an arch retrained in several runs keeps
    its first run's) and ``scored``: per run, each of its picks' index among ``archs`` with the score
    that run's supernet gave it, higher ranking higher (a loss negated). Refused unless each run used
    the truth's space, data and stand-alone steps."""
    out, index = {"archs": [], "retrains": [], "scored": {}}, {}
    for path in paths:
        run = load(Path(path))
        for key in ("space", "data", "truth_steps"):
            if run.get(key) != truth.get(key):
                raise Refused(f"{path} has {key} {run.get(key)!r}, the truth {truth.get(key)!r}")
        if "search_quality" not in run:
            raise Refused(f"{path} ran no search")
        scored = out["scored"].setdefault(Path(path).name, {})
        sign = -1.0 if run["search_quality"].get("search_score") == "loss" else 1.0  # top-1: higher is better
        for pick in search_picks.retrained_picks(run):
            key = json.dumps(pick["arch"])
            if key not in index:
                index[key] = len(out["archs"])
                out["archs"].append(pick["arch"])
                out["retrains"].append(pick["retrained_top1_seeds"])
            if pick.get("supernet_score") is not None:
                scored[index[key]] = sign * pick["supernet_score"]
    if len(out["archs"]) < 3 or len({len(r) for r in out["retrains"]}) != 1:
        raise Refused(f"the --picks runs hold {len(out['archs'])} retrained picks, or picks with unequal retrain seeds")
    out["retrains"] = np.array(out["retrains"], dtype=float)
    return out


def proxy_scores(space, archs: list, splits, init_seeds: int, batch: int, what: str) -> np.ndarray:
    """Every proxy of every arch at each init seed (each seed its own batch of train images):
    ``[proxy, init seed, arch]``."""
    t0, raw = time.monotonic(), np.zeros((len(PROXIES), init_seeds, len(archs)))
    for seed in range(init_seeds):
        idx = np.random.default_rng(seed).choice(len(splits.train), batch, replace=False)
        x, y, _ = splits.train.get_batch(idx)
        for j, arch in enumerate(archs):
            raw[:, seed, j] = list(scores(space, space.validate(arch), x, y, seed).values())
        print(f"ranking_zero_cost: {what}, init seed {seed + 1}/{init_seeds} scored, {time.monotonic() - t0:.0f} s",
              flush=True)
    return raw


def picks_order(space, raw: np.ndarray, picks: dict) -> dict:
    """Over retrained picks: each ranker's Kendall tau against their retrained mean (with a bootstrap
    95 % CI), and held out (each retrain seed against the others' mean), beside one retrain's own
    held-out tau. ``per_run``: within each run's picks, scored by its one supernet (5 or more), that
    supernet's score, NASWOT, and the two z-scored and summed (a second opinion on the search's score)."""
    archs, runs = picks["archs"], picks["retrains"]
    rankers = {"MACs": [space.macs(space.validate(a)) for a in archs],
               "params": [space.params(space.validate(a)) for a in archs]}
    rankers |= {f"{name} (mean of init seeds)": raw[i].mean(0) for i, name in enumerate(PROXIES)}

    def judge(pred, idx) -> dict:
        tau = search_picks.order(np.asarray(pred, dtype=float), runs[idx])
        return {k: round(v, 4) for k, v in tau.items()} | {
            "ci95": [round(v, 4) for v in bootstrap_ci(kendall_tau, pred, runs[idx].mean(1))]}

    every = np.arange(len(archs))
    out = {label: judge(pred, every) for label, pred in rankers.items()}
    out["one retrain"] = {"held_out": round(held_out_tau(runs), 4)}
    naswot = raw[PROXIES.index("naswot")].mean(0)
    out["per_run"] = {}
    for source, scored in picks["scored"].items():
        idx = np.array(list(scored), dtype=int)
        if len(idx) >= 5:
            score = np.array(list(scored.values()))
            out["per_run"][source] = {"picks": len(idx), "supernet score": judge(score, idx),
                                      "naswot": judge(naswot[idx], idx),
                                      "supernet score + naswot": judge(zscore(score) + zscore(naswot[idx]), idx),
                                      "one retrain": {"held_out": round(held_out_tau(runs[idx]), 4)}}
    return out


def picks_text(order: dict) -> str:
    def cell(v: dict) -> str:
        return (f"{v['tau']:+.2f} [{v['ci95'][0]:+.2f}, {v['ci95'][1]:+.2f}] / " if "tau" in v else "") + f"{v['held_out']:+.2f}"

    lines = [f"- {k}: {cell(v)}" for k, v in order.items() if k != "per_run"]
    for source, r in order["per_run"].items():
        lines.append(f"- {source} ({r['picks']} picks, its own supernet): " +
                     "; ".join(f"{k} {cell(v)}" for k, v in r.items() if k != "picks"))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="a ranking.py results JSON: its subnets' stand-alone seeds")
    ap.add_argument("--picks", default="", metavar="JSON[,JSON...]",
                    help="ranking.py runs with --search-seeds: also order their retrained picks")
    ap.add_argument("--init-seeds", type=int, default=5, help="initialisations (and batches) per subnet")
    ap.add_argument("--batch", type=int, default=64, help="train images per proxy batch")
    ap.add_argument("--data", default="", help="synthetic cache dir (default: the shared one)")
    ap.add_argument("--name", default="ranking_zero_cost")
    a = ap.parse_args()
    with exits_on_refusal(ap, "ranking_zero_cost"):
        if a.init_seeds < 1 or a.batch < 2:
            raise Refused("--init-seeds must be >= 1 and --batch >= 2")
        truth, runs = load_truth(a.truth)
        shipped = read_rows(truth)[SHIPPED]
        picks = retrained_picks([p for p in a.picks.split(",") if p], truth) if a.picks else None
    torch.set_num_threads(1)
    t0 = time.monotonic()
    space = build_space(from_dict(SpaceConfig, truth["space"]))
    splits = build_dataset(DataConfig(path=a.data, **truth["data"]), space.cfg.input_size)
    subnets, subsets = truth["subnets"], subset_indices(truth)
    macs = np.array([s["macs"] for s in subnets], dtype=float)
    raw = proxy_scores(space, [s["arch"] for s in subnets], splits, a.init_seeds, a.batch, f"{len(subnets)} subnets")
    rows = {"MACs alone": judged([macs], runs, subsets, None),
            "params alone": judged([[s["params"] for s in subnets]], runs, subsets, macs),
            "the shipped supernet, by the loss": judged(shipped["scores"], runs, subsets, macs)}
    for i, name in enumerate(PROXIES):
        rows[f"{name} (one per init seed)"] = judged(list(raw[i]), runs, subsets, macs)
    for i, name in enumerate(PROXIES):
        mean = raw[i].mean(0)  # the proxy averaged over its init seeds, added to each supernet seed's scores
        rows[f"the shipped supernet + {name} (z-scores summed)"] = judged(
            [zscore(s) + zscore(mean) for s in shipped["scores"]], runs, subsets, macs)
    held_out = {name: round(held_out_tau(runs[idx]), 4) for name, idx in subsets.items()}
    table, leads = markdown(rows, held_out, runs.shape[1]), lead_markdown(rows)
    agree = {name: round(float(np.mean([np.corrcoef(raw[i, s], np.log(macs))[0, 1] for s in range(a.init_seeds)])), 4)
             for i, name in enumerate(PROXIES)}
    print(table + "\n\n" + leads + "\n\nPearson r with log MACs (mean over init seeds): " +
          ", ".join(f"{k} {v:+.2f}" for k, v in agree.items()))
    extra = {}
    if picks is not None:
        picked = proxy_scores(space, picks["archs"], splits, a.init_seeds, a.batch, "picks")
        order = picks_order(space, picked, picks)
        print(f"\nOver {len(picks['archs'])} retrained picks (Kendall tau [95 % CI] / held out):\n" + picks_text(order))
        extra = {"picks": {"runs": a.picks.split(","), **picks, "retrains": picks["retrains"].tolist(),
                           "proxies": {name: picked[i].round(6).tolist() for i, name in enumerate(PROXIES)},
                           "order": order}}
    write_result(a.name, {"truth": a.truth, "truth_seeds": runs.shape[1], "init_seeds": a.init_seeds,
                          "batch": a.batch, "shipped_row": SHIPPED, "subsets": subsets,
                          "proxies": {name: raw[i].round(6).tolist() for i, name in enumerate(PROXIES)},
                          "pearson_with_log_macs": agree, "rows": rows, "table": table,
                          "lead_over_macs_table": leads, **extra, "seconds": round(time.monotonic() - t0, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
