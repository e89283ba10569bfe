"""Last of the preload modules: marks this pre-started worker process as booted.

``RAY_preload_python_modules`` imports modules after the process has registered with its
raylet, so a registered idle worker may still be importing torch. Importing this module
(after the others) records ``<node id>/<pid>`` in Ray's KV; the node watcher holds a
scale-up until a joined node's warm workers carry the mark (``WarmPool.ready``), and the
old worker group trains on meanwhile instead of waiting inside the restart.
"""

from __future__ import annotations


def ready_prefix(node_id: str) -> str:
    return f"warm-ready/{node_id}/"


def _mark() -> None:
    import os
    import time

    import ray

    if not ray.is_initialized():  # imported by hand, not preloaded by a Ray worker
        return
    from elastic_nas.train.resize_watch import kv_put

    kv_put(ready_prefix(ray.get_runtime_context().get_node_id()) + str(os.getpid()), f"{time.time():.3f}")


try:
    _mark()
except Exception:  # private KV API changed: scale-ups are simply not held
    pass
