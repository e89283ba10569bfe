"""Warm worker processes: slot arithmetic without Ray, and the pool on a real cluster."""

from __future__ import annotations

import os
import time

import pytest

from elastic_nas.cluster.warm_workers import WarmPool, publish_worker_env
from tests.ray_utils import add_worker_node, slot_cluster


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_restarted_worker_actor_gets_the_warm_process():
    """What a restart relies on: after the pool tops up a node, a new worker actor with
    the run's runtime env starts in the pre-started process, and the pool does not keep
    starting more."""
    import ray

    cluster = slot_cluster()
    try:
        add_worker_node(cluster)
        ray.init(address=cluster.address)
        env = {"env_vars": {"ELASTIC_NAS_TEST": "1"}}  # Train gives its workers env vars too

        @ray.remote(num_cpus=1, resources={"slot": 1}, runtime_env=env)
        class Worker:
            def __init__(self):
                self.ready = time.time()

            def publish(self, run: str) -> None:
                publish_worker_env(run)

            def process(self) -> tuple[int, float]:
                import psutil

                return os.getpid(), self.ready - psutil.Process().create_time()

        first = Worker.remote()
        ray.get(first.publish.remote("warm-test"))
        pid_first, _ = ray.get(first.process.remote())

        pool = WarmPool("warm-test", {"CPU": 1, "slot": 1}, max_workers=2, refill_delay_s=2.0)
        slot_node = next(n for n in ray.nodes() if n["Alive"] and n["Resources"].get("slot"))
        job = ray.get_runtime_context().get_job_id()
        # Short of one warm worker: refilled only after refill_delay_s, so a restart that
        # just took the warm processes trains without new ones booting beside it.
        assert pool.top_up(ray.nodes()) == 0
        time.sleep(2.1)
        assert pool.top_up(ray.nodes()) == 1  # one slot on the node, nothing idle
        deadline = time.monotonic() + 60
        while not (warm := pool.idle_workers(slot_node, job)):
            assert time.monotonic() < deadline, "the pre-started worker never registered"
            time.sleep(0.5)
        assert len(warm) == 1 and pid_first not in warm
        assert pool.top_up(ray.nodes()) == 0  # already warm: no pile-up (it is registered: it takes work)

        ray.kill(first)
        t_create = time.time()
        second = Worker.remote()
        pid_second, boot_before_actor = ray.get(second.process.remote())
        assert pid_second == warm[0]  # the new actor runs in the warm process
        # which was up before the actor was asked for
        assert time.time() - t_create < boot_before_actor, (boot_before_actor, time.time() - t_create)
        assert pool.idle_workers(slot_node, job) == []
        assert pool.started == 1 and not pool.disabled
    finally:
        ray.shutdown()
        cluster.shutdown()
