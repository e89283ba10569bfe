"""CLI glue for ``elastic-nas search``."""

from __future__ import annotations

import argparse

from elastic_nas.config import SearchConfig, load_config


def search(args: argparse.Namespace) -> int:
    from elastic_nas.search.runner import run_search

    cfg = load_config(SearchConfig, args.config, args.overrides)
    run_search(cfg)
    return 0
