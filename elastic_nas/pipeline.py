"""``elastic-nas pipeline``: the four steps in order, each one's outputs feeding the next."""

from __future__ import annotations

import argparse
import json
import time

from elastic_nas.config import PipelineConfig, load_config
from elastic_nas.errors import ConfigError
from elastic_nas.io import print_outputs


def pipeline_command(args: argparse.Namespace) -> int:
    """``elastic-nas pipeline``."""
    run_pipeline(load_config(PipelineConfig, args.config, args.overrides))
    return 0


def check_later_steps(cfg: PipelineConfig) -> None:
    """What the search can be told before the supernet trains, so that a typo there fails now and
    not after the supernet's minutes: storage, the search's space and data against the supernet's,
    its constraints and latency table (the sections' own checks ran as the config loaded)."""
    from elastic_nas.cluster.launcher import resolve_storage
    from elastic_nas.config import to_dict
    from elastic_nas.search.runner import check_snapshot_matches, make_searcher
    from elastic_nas.spaces import build_space

    resolve_storage(cfg.supernet.run)
    trained = {"space": to_dict(cfg.supernet.space), "data": {"source": cfg.data.source, "seed": cfg.data.seed}}
    try:
        make_searcher(cfg.search, build_space(check_snapshot_matches(cfg.search, trained)))
    except ConfigError as e:  # the search names its own keys; here they are the search section's
        raise ConfigError(f"search.{e.key}", e.message) from None


def run_pipeline(cfg: PipelineConfig) -> dict:
    from elastic_nas.search.runner import run_search
    from elastic_nas.train.evaluate import run_test
    from elastic_nas.train.retrain import retrain
    from elastic_nas.train.supernet import train_supernet

    check_later_steps(cfg)
    times: dict[str, float] = {}
    t0 = time.time()

    def timed(step: str, fn, section):
        t = time.time()
        out = fn(section)
        times[step] = time.time() - t
        return out

    supernet = timed("supernet", train_supernet, cfg.supernet)
    search = timed("search", run_search, cfg.search)
    result = timed("retrain", retrain, cfg.retrain)
    card = timed("test", run_test, cfg.test)

    report = {
        "chosen arch": json.dumps(result["arch"]),
        "MACs / params": f"{result['macs'] / 1e6:.2f}M / {result['params'] / 1e6:.3f}M",
        "test top-1 / top-5": f"{card['test_top1']:.2f}% / {card['test_top5']:.2f}%",
        "search score": search["search score"],
        "supernet": supernet.get("checkpoint"),
        "search": search.get("search", cfg.retrain.arch.search),
        "Pareto plot": search.get("plot"),
        "exported model": card.get("export"),
        "wall time": ", ".join(f"{k} {v:.0f}s" for k, v in times.items()) + f" (total {time.time() - t0:.0f}s)",
    }
    print_outputs("pipeline report:", report)
    return report
