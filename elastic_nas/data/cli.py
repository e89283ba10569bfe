"""``elastic-nas data prepare`` and ``elastic-nas data convert``."""

from __future__ import annotations

import argparse
import sys


def prepare(args: argparse.Namespace) -> int:
    """Build (generate / download / read) the dataset of a job config and print its splits."""
    import time

    from elastic_nas.config import SpaceConfig
    from elastic_nas.data import build_dataset

    cfg = job_config(args.config, args.overrides)
    space = cfg.supernet.space if hasattr(cfg, "supernet") else cfg.space or SpaceConfig()  # a search's: None
    t0 = time.time()
    data = build_dataset(cfg.data, space.input_size)  # the size only resizes as images load
    print(f"{cfg.data.source}: {data.summary()} ({time.time() - t0:.1f} s)")
    if cfg.data.source == "synthetic":
        from elastic_nas.data.synthetic import cache_dir

        print(f"cache: {cache_dir(cfg.data)}")
    return 0


def job_config(path: str, overrides: list[str]):
    """The job config at ``path`` as the step whose keys its file holds (supernet, retrain, search,
    scale, pipeline: the first that has them all), so that its errors name that step's keys."""
    import dataclasses

    from elastic_nas.config import (
        PipelineConfig,
        RetrainConfig,
        ScaleConfig,
        SearchConfig,
        SupernetConfig,
        load_config,
        read_yaml,
    )

    keys = set(read_yaml(path))
    steps = (SupernetConfig, RetrainConfig, SearchConfig, ScaleConfig, PipelineConfig)
    cls = next((c for c in steps if keys <= {f.name for f in dataclasses.fields(c)}), SupernetConfig)
    return load_config(cls, path, overrides)  # where none fits, the supernet's one line names the key


def convert(args: argparse.Namespace) -> int:
    from elastic_nas.data.convert import convert as run
    from elastic_nas.data.layout import CORRUPT_FILE

    report = run(args.src, args.dst, shard_size=args.shard_size, workers=args.workers,
                 row_group_size=args.row_group_size, seed=args.seed)
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    print(f"converted {report.images} images ({counts}) into {args.dst}: "
          f"{report.written} shards written, {report.skipped} skipped, {len(report.corrupt)} corrupt"
          + (f" (listed in {args.dst}/{CORRUPT_FILE})" if report.corrupt else ""))
    sys.stdout.flush()
    return 0
