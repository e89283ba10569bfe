"""``elastic-nas`` command line: one subcommand per step, lazy imports so ``--help`` is instant.

User errors (:class:`elastic_nas.errors.UserError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable


def _add_config_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--config", default=default,
                   help=f"YAML job config: a file, or a shipped config's name (default: {default}; see `configs`)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key: --set section.key=value (repeatable; `elastic-nas configs NAME` shows the keys)",
    )


def _lazy(target: str) -> Callable[[argparse.Namespace], int]:
    """``"module:function"`` imported only when its command runs, so ``--help`` stays instant."""
    module, name = target.split(":")

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elastic-nas",
        description="One-shot NAS (SPOS, Cream) on elastic, preemptible Ray clusters.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # data
    data = sub.add_parser("data", help="prepare or convert datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data_sub.add_parser("prepare", help="generate/cache a dataset and print its splits")
    _add_config_args(p, "supernet")
    p.set_defaults(func=_lazy("elastic_nas.data.cli:prepare"))
    p = data_sub.add_parser("convert", help="convert an ImageNet-style folder into parquet shards")
    p.add_argument("src", help="folder with one subfolder per class (JPEG/PNG)")
    p.add_argument("dst", help="output directory for parquet shards")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument("--row-group-size", type=int, default=256,
                   help="images per parquet row group, the unit a streaming reader fetches (default 256)")
    p.add_argument("--seed", type=int, default=0, help="shuffles each split's files before sharding (default 0)")
    p.add_argument("--workers", type=int, default=0, help="parallel processes (default: all cores)")
    p.set_defaults(func=_lazy("elastic_nas.data.cli:convert"))

    # arch
    arch = sub.add_parser("arch", help="inspect architectures")
    arch_sub = arch.add_subparsers(dest="arch_command", metavar="ACTION", required=True)
    p = arch_sub.add_parser("info", help="print MACs, params and the normalised arch as JSON")
    p.add_argument("--space", choices=["spos", "cream"], default=None,
                   help="search space (implied by a published name)")
    p.add_argument("--arch", required=True,
                   help="a JSON list, or a published name (spos-323m, cream-14 ... cream-604)")
    p.add_argument("--input-size", type=int, default=None, help="input resolution (default: published or 224)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--latency-table", default="",
                   help="a table from `latency build`: cost the arch in its space and add its predicted latency")
    p.set_defaults(func=_lazy("elastic_nas.spaces.cli:arch_info"))

    _add_latency(sub)

    p = sub.add_parser("configs", help="list the shipped job configs, or print one (--config NAME finds them)")
    p.add_argument("name", nargs="?", help="print this config")
    p.set_defaults(func=_lazy("elastic_nas.cli:configs"))

    # steps
    p = sub.add_parser("supernet", help="train a weight-sharing supernet on Ray Train (elastic)")
    _add_config_args(p, "supernet")
    p.set_defaults(func=_lazy("elastic_nas.train.cli:supernet"))
    p = sub.add_parser("search", help="evolutionary architecture search over a trained supernet (Ray Tune)")
    _add_config_args(p, "search")
    p.set_defaults(func=_lazy("elastic_nas.search.cli:search"))
    p = sub.add_parser("retrain", help="train the chosen subnet from scratch (elastic), then test it")
    _add_config_args(p, "retrain")
    p.set_defaults(func=_lazy("elastic_nas.train.cli:retrain"))
    p = sub.add_parser("scale", help="EfficientNet compound scaling of a found arch: the family and its retrain configs")
    _add_config_args(p, "scale")
    p.add_argument("--grid", action="store_true", help="first search alpha, beta, gamma at phi = 1 (Ray Tune)")
    p.set_defaults(func=_lazy("elastic_nas.train.cli:scale"))
    p = sub.add_parser("test", help="evaluate a retrained subnet on the test split and export it")
    _add_config_args(p, "test")
    p.set_defaults(func=_lazy("elastic_nas.train.cli:test"))
    p = sub.add_parser("pipeline", help="supernet -> search -> retrain -> test, in order")
    _add_config_args(p, "pipeline")
    p.set_defaults(func=_lazy("elastic_nas.pipeline:pipeline_command"))

    _add_cluster(sub)
    return parser


def _add_latency(sub) -> None:
    # latency
    latency = sub.add_parser("latency", help="latency lookup tables for hardware-aware search")
    latency_sub = latency.add_subparsers(dest="latency_command", metavar="ACTION", required=True)
    p = latency_sub.add_parser("build", help="time every choice of every block of the config's space on this "
                                             "machine (or a Ray node) and write a latency table")
    _add_config_args(p, "supernet")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the device to time on (default cpu)")
    p.add_argument("--batch", type=int, default=1, help="images per forward (default 1: one request)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--channels-last", action="store_true", help="NHWC inputs and weights")
    p.add_argument("--warmup", type=int, default=10, help="untimed forwards per part (default 10)")
    p.add_argument("--repeats", type=int, default=30, help="timed repeats per part; the median is kept (default 30)")
    p.add_argument("--out", default="latency.json", help="the table's path (default latency.json)")
    p.add_argument("--ray-resources", default="",
                   help='measure in one Ray task that needs these resources, e.g. \'{"GPU": 1}\' or a node '
                        "type's custom resource: the table is that node's")
    p.set_defaults(func=_lazy("elastic_nas.search.cli:latency_build"))


def _add_cluster(sub) -> None:
    # cluster
    cluster = sub.add_parser("cluster", help="Ray clusters for elastic-nas")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    p = cluster_sub.add_parser("local", help="an autoscaling Ray cluster on 127.0.0.1 (Ray's fake node "
                                             "provider), in the foreground until Ctrl-C")
    p.add_argument("--max-workers", type=int, default=3, help="worker nodes the autoscaler may launch (default 3)")
    p.add_argument("--worker-cpus", type=int, default=1, help="CPUs (and slots) per worker node (default 1)")
    p.add_argument("--idle-timeout-s", type=float, default=20.0,
                   help="an idle worker node is released after this long (default 20)")
    p.add_argument("--boot-s", type=float, default=5.0,
                   help="each worker node boots this long, one at a time, as cloud instances do (default 5)")
    p.add_argument("--port", type=int, default=6379, help="the head's GCS port (default 6379)")
    p.add_argument("--dashboard-port", type=int, default=8265, help="dashboard and job server (default 8265)")
    p.add_argument("--temp-dir", default="", help="Ray's session directory (default: Ray's)")
    p.add_argument("--verbose", action="store_true", help="show Ray's own output")
    p.set_defaults(func=_lazy("elastic_nas.cluster.local:local_command"))


def configs(args: argparse.Namespace) -> int:
    """``elastic-nas configs [NAME]``: the shipped job configs, each with its first comment line."""
    from elastic_nas.config import find_config, shipped_configs

    if args.name:
        print(find_config(args.name).read_text(), end="")
        return 0
    for name, path in shipped_configs().items():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        print(f"{name:<16} {first}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from elastic_nas.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except UserError as e:
        print(f"elastic-nas: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("elastic-nas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
