"""``elastic-nas data prepare`` and ``elastic-nas data convert``."""

from __future__ import annotations

import argparse
import sys


def prepare(args: argparse.Namespace) -> int:
    """Build (generate / download / read) the configured dataset and print its splits."""
    import time

    from elastic_nas.config import SupernetConfig, load_config
    from elastic_nas.data import build_dataset

    cfg = load_config(SupernetConfig, args.config, args.overrides)
    t0 = time.time()
    data = build_dataset(cfg.data, cfg.space.input_size)
    print(f"{cfg.data.source}: {data.summary()} ({time.time() - t0:.1f} s)")
    if cfg.data.source == "synthetic":
        from elastic_nas.data.synthetic import cache_dir

        print(f"cache: {cache_dir(cfg.data)}")
    return 0


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
