"""What training workers need of a cluster, and whether its nodes can hold them."""

from __future__ import annotations

import math

from elastic_nas.config import ElasticConfig
from elastic_nas.errors import UserError


def slots_on(node_resources: dict[str, float], per_worker: dict[str, float], cap: int) -> int:
    """How many workers of ``per_worker`` resources fit on a node (at most ``cap``)."""
    fits = [math.floor(node_resources.get(r, 0.0) / need + 1e-9) for r, need in per_worker.items() if need > 0]
    return max(0, min([cap, *fits]))


def worker_resources(elastic: ElasticConfig) -> dict[str, float]:
    """What one training worker asks Ray for."""
    per_worker = dict(elastic.resources_per_worker)
    if elastic.use_gpu:
        per_worker.setdefault("GPU", 1.0)
    return per_worker


def workers_that_fit(nodes: list[dict], per_worker: dict[str, float], cap: int) -> int:
    """How many workers the alive ``nodes`` (``ray.nodes()`` entries) hold, at most ``cap``."""
    return min(cap, sum(slots_on(n.get("Resources", {}), per_worker, cap) for n in nodes if n.get("Alive")))


def describe_nodes(nodes: list[dict]) -> str:
    """The alive nodes' total resources, e.g. ``CPU 4, memory 12.0 GiB``."""
    total: dict[str, float] = {}
    for n in nodes:
        if n.get("Alive"):
            for key, value in n.get("Resources", {}).items():
                if not key.startswith("node:") and key != "object_store_memory":
                    total[key] = total.get(key, 0.0) + value
    return ", ".join(f"{k} {v / 2**30:.1f} GiB" if k == "memory" else f"{k} {v:g}" for k, v in sorted(total.items()))


def check_fits(per_worker: dict[str, float], min_workers: int) -> None:
    """One line and exit 2 when the cluster can never hold ``min_workers`` workers."""
    import ray

    nodes = ray.nodes()
    if workers_that_fit(nodes, per_worker, min_workers) < min_workers:
        raise UserError(f"this Ray instance can never start {min_workers} worker(s) of {per_worker} "
                        f"(elastic.resources_per_worker, elastic.use_gpu): it has {describe_nodes(nodes)}")


__all__ = ["check_fits", "describe_nodes", "slots_on", "worker_resources", "workers_that_fit"]
