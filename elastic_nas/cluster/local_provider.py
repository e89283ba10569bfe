"""The node provider of ``elastic-nas cluster local``, loaded by Ray's autoscaler process.

It is Ray's fake multi-node provider (each "instance" a Ray node started as processes on
this machine) with three changes, so that a local run sees what a cluster run sees:

* each node boots for ``boot_s`` (provider config) and nodes boot one at a time, as cloud
  instances arrive: training starts on the first node and grows as the rest come;
* each node keeps its own runtime-env directory: all nodes share one session directory
  here, and one node's runtime-env cleanup would otherwise delete the job's working_dir
  under another node's workers (they then die at start);
* a node whose raylet died (the test of a spot reclaim kills its processes) is reported
  terminated, as a cloud reports a reclaimed instance, so the autoscaler replaces it; the
  base provider would keep listing it, and the autoscaler would keep it for good;
* only the head runs a log monitor: every node's log files are in that one directory, so
  one monitor per node would print each worker line once per node.

The base class and ``Node``/``RayParams`` are private Ray APIs; only this module uses them.
"""

from __future__ import annotations

import json
import threading
import time

from ray._private.node import Node
from ray._private.parameter import RayParams
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

_one_at_a_time = threading.Lock()
_BUILT_IN = ("CPU", "GPU", "object_store_memory")


class BootingFakeProvider(FakeMultiNodeProvider):
    def create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        # One node per call, like the base provider: the autoscaler asks again for the rest.
        with _one_at_a_time:
            time.sleep(float(self.provider_config.get("boot_s", 0)))
            self._start_node(tags, dict(resources), dict(labels or {}))

    def non_terminated_nodes(self, tag_filters):
        with self.lock:
            for node_id, entry in list(self._nodes.items()):
                node = entry.get("node")  # the head has none here
                if node is not None and any(kind == "raylet" for kind, _ in node.dead_processes()):
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
                    del self._nodes[node_id]
        return super().non_terminated_nodes(tag_filters)

    def _start_node(self, tags: dict, resources: dict, labels: dict) -> None:
        with self.lock:
            node_id = self._next_hex_node_id()
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            params = RayParams(
                gcs_address=self.provider_config["gcs_address"],
                num_cpus=resources.get("CPU", 0), num_gpus=resources.get("GPU", 0),
                object_store_memory=resources.get("object_store_memory"),
                resources={k: v for k, v in resources.items() if k not in _BUILT_IN}, labels=labels,
                min_worker_port=0, max_worker_port=0, dashboard_port=None, dashboard_agent_listen_port=0,
                include_log_monitor=False,
                runtime_env_dir_name=f"runtime_resources_{node_id[-5:]}",
                env_vars={
                    # The provider knows a node by the id it gives it; the autoscaler matches
                    # Ray's reports to its nodes by these.
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id,
                    "RAY_CLOUD_INSTANCE_ID": node_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    "RAY_OVERRIDE_RESOURCES": json.dumps({k: v for k, v in resources.items() if k != "object_store_memory"}),
                    "RAY_OVERRIDE_LABELS": json.dumps(labels),
                },
            )
            node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = {
                "tags": {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: node_type,
                         TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE, **tags},
                "node": node,
            }
