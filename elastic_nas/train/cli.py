"""CLI glue for the training steps."""

from __future__ import annotations

import argparse

from elastic_nas.config import SupernetConfig, load_config


def supernet(args: argparse.Namespace) -> int:
    from elastic_nas.train.supernet import train_supernet

    cfg = load_config(SupernetConfig, args.config, args.overrides)
    train_supernet(cfg)
    return 0
