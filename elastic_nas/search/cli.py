"""CLI glue for ``elastic-nas search``."""

from __future__ import annotations

import argparse
from pathlib import Path

from elastic_nas.config import SearchConfig, load_config


def search(args: argparse.Namespace) -> int:
    from elastic_nas.search.runner import run_search

    cfg = load_config(SearchConfig, args.config, args.overrides)
    run_search(cfg)
    return 0


def latency_build(args: argparse.Namespace) -> int:
    """``elastic-nas latency build``: time every choice of the config's space on this machine
    (or, with ``--ray-resources``, in one Ray task on a node that has them) and write the table."""
    import json
    import time

    from elastic_nas.config import SupernetConfig
    from elastic_nas.errors import ConfigError
    from elastic_nas.spaces import build_space
    from elastic_nas.spaces.latency import build_table

    cfg = load_config(SupernetConfig, args.config, args.overrides)
    if args.batch < 1 or args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        raise ConfigError("latency build", "--batch, --threads and --repeats must be >= 1, --warmup >= 0")
    out = Path(args.out)
    if out.is_dir() or any(p.exists() and not p.is_dir() for p in out.parents):
        raise ConfigError("--out", f"{out} must name a file in a folder (the table is written there after timing)")
    resources = {}
    if args.ray_resources:
        try:
            resources = json.loads(args.ray_resources)
            assert isinstance(resources, dict) and all(float(v) > 0 for v in resources.values())
        except (ValueError, TypeError, AssertionError):
            raise ConfigError("--ray-resources", f"must be a JSON object of positive amounts, got "
                                                 f"{args.ray_resources!r}") from None
    if args.device == "cuda" and not resources:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device", "cuda: no CUDA device on this machine (use --ray-resources '{\"GPU\": 1}' "
                                          "to build on a GPU node of the cluster)")
    space = build_space(cfg.space)  # a bad space fails here, before any timing
    options = dict(device=args.device, batch=args.batch, threads=args.threads, precision=args.precision,
                   channels_last=args.channels_last, warmup=args.warmup, repeats=args.repeats)
    t0 = time.perf_counter()
    print(f"elastic-nas: latency table of the {cfg.space.name} space ({len(space.latency_parts().choices)} block "
          f"positions) on {args.device}, batch {args.batch}, {args.threads} threads"
          + (f", as a Ray task with {resources}" if resources else ""), flush=True)
    if resources:
        table = _build_on_ray(cfg.space, options, resources)
    else:
        table = build_table(space, progress=lambda line: print(f"elastic-nas: latency {line}", flush=True), **options)
    path = table.save(args.out)
    print(f"elastic-nas: latency table of {table.describe()} written to {path} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


def _build_on_ray(space_cfg, options: dict, resources: dict):
    """The table, measured by one Ray task scheduled where ``resources`` are (a node type's
    custom resource, ``GPU``, ...): the device it times is that node's."""
    import ray

    from elastic_nas.cluster.launcher import init_ray
    from elastic_nas.spaces.latency import LatencyTable

    def measure(space_cfg, options: dict) -> dict:
        from elastic_nas.spaces import build_space
        from elastic_nas.spaces.latency import build_table

        table = build_table(build_space(space_cfg), **options)
        table.settings["ray_node_id"] = ray.get_runtime_context().get_node_id()
        return table.to_json()

    init_ray()
    resources = dict(resources)
    num_cpus, num_gpus = resources.pop("CPU", options["threads"]), resources.pop("GPU", 0)
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or None)(measure)
    data = ray.get(task.remote(space_cfg, options))
    return LatencyTable(data["tags"], data["fixed_ms"], data["choices_ms"], data["settings"])
