"""``elastic-nas data prepare`` and ``elastic-nas data convert``."""

from __future__ import annotations

import argparse
import sys


def prepare(args: argparse.Namespace) -> int:
    """Build (generate / download / read) the dataset of a job config and print its splits."""
    import time

    from elastic_nas.data import build_dataset

    cfg = job_config(args.config, args.overrides)
    space = cfg.supernet.space if hasattr(cfg, "supernet") else cfg.space  # a pipeline's: its supernet's
    t0 = time.time()
    data = build_dataset(cfg.data, space.input_size)
    print(f"{cfg.data.source}: {data.summary()} ({time.time() - t0:.1f} s)")
    if cfg.data.source == "synthetic":
        from elastic_nas.data.synthetic import cache_dir

        print(f"cache: {cache_dir(cfg.data)}")
    return 0


def job_config(path: str, overrides: list[str]):
    """The job config at ``path`` read as the first step whose config it is and that has a dataset
    of its own (supernet, retrain, scale, pipeline: a search's data follows its snapshot), so
    that an override's error names that step's keys."""
    from elastic_nas.config import PipelineConfig, RetrainConfig, ScaleConfig, SearchConfig, SupernetConfig, load_config
    from elastic_nas.errors import ConfigError

    for cls in (SupernetConfig, RetrainConfig, ScaleConfig, PipelineConfig, SearchConfig):
        try:
            load_config(cls, path)
        except ConfigError:
            continue
        if cls is SearchConfig:
            raise ConfigError("--config", "a search's data takes its supernet's input size: prepare with the "
                                          "supernet's job config")
        return load_config(cls, path, overrides)
    return load_config(SupernetConfig, path, overrides)  # its error, one line


def convert(args: argparse.Namespace) -> int:
    from elastic_nas.data.convert import CORRUPT_FILE
    from elastic_nas.data.convert import convert as run

    report = run(args.src, args.dst, shard_size=args.shard_size, workers=args.workers,
                 row_group_size=args.row_group_size, seed=args.seed)
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    print(f"converted {report.images} images ({counts}) into {args.dst}: "
          f"{report.written} shards written, {report.skipped} skipped, {len(report.corrupt)} corrupt"
          + (f" (listed in {args.dst}/{CORRUPT_FILE})" if report.corrupt else ""))
    sys.stdout.flush()
    return 0
