"""CLI glue for the training steps."""

from __future__ import annotations

import argparse

from elastic_nas.config import SupernetConfig, load_config


def supernet(args: argparse.Namespace) -> int:
    from elastic_nas.train.supernet import train_supernet

    cfg = load_config(SupernetConfig, args.config, args.overrides)
    train_supernet(cfg)
    return 0


def retrain(args: argparse.Namespace) -> int:
    from elastic_nas.config import RetrainConfig
    from elastic_nas.train.retrain import retrain as run

    run(load_config(RetrainConfig, args.config, args.overrides))
    return 0


def test(args: argparse.Namespace) -> int:
    from elastic_nas.config import TestConfig
    from elastic_nas.train.evaluate import run_test

    run_test(load_config(TestConfig, args.config, args.overrides))
    return 0


def scale(args: argparse.Namespace) -> int:
    from elastic_nas.config import ScaleConfig
    from elastic_nas.train.scale import run_scale

    run_scale(load_config(ScaleConfig, args.config, args.overrides), grid=args.grid)
    return 0
