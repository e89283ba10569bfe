"""The driver and rank 0 of a run talking through Ray's KV store: a checkpoint before a join.

A join gives the workers no notice: Ray restarts the group for the larger size, and the
steps since the last checkpoint would be redone. So the node watcher, before it lets Ray
see a new node, asks the running workers for a checkpoint and waits for it.

The driver puts a fresh token under ``<run>/join-ckpt-request`` and waits until rank 0
writes the same token under ``<run>/join-ckpt-done``, after its checkpoint is reported.
Rank 0 stamps ``<run>/join-ckpt-polled`` with the time of each look; without a recent stamp
no group is stepping (before the first start, between attempts) and the driver does not
wait: an autoscaler's nodes joining one by one before training starts cost no time.
Ray's KV store is a private API (:mod:`elastic_nas.cluster.private`): without it a join
just redoes the steps since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import time

from elastic_nas.cluster.private import private_api

_KV_NAMESPACE = "elastic-nas"


@private_api("Ray's internal KV store", "no checkpoint before a join, and restarts start cold")
def kv_get(key: str) -> str | None:
    """The value under ``key`` ("" when unset; None without the KV store)."""
    from ray.experimental.internal_kv import _internal_kv_get

    value = _internal_kv_get(key, namespace=_KV_NAMESPACE)
    return value.decode() if value else ""


@private_api("Ray's internal KV store", "no checkpoint before a join, and restarts start cold")
def kv_put(key: str, value: str) -> bool | None:
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(key, value, overwrite=True, namespace=_KV_NAMESPACE)
    return True


class JoinCheckpoint:
    """Checkpoint requests from the driver to rank 0 of run ``run_name``."""

    def __init__(self, run_name: str):
        self.request_key = f"{run_name}/join-ckpt-request"
        self.done_key = f"{run_name}/join-ckpt-done"
        self.polled_key = f"{run_name}/join-ckpt-polled"

    # driver
    def request(self, timeout_s: float, poll_s: float = 0.1) -> bool:
        """Ask for a checkpoint; True once rank 0 has reported it, False on timeout or at
        once when rank 0 has not looked for requests within ``timeout_s`` (it would not
        answer in time: no group is stepping, or its steps are longer than the wait)."""
        polled = kv_get(self.polled_key)
        if not polled or time.time() - float(polled) > timeout_s:
            return False
        token = str(time.time_ns())
        if not kv_put(self.request_key, token):
            return False
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if kv_get(self.done_key) == token:
                    return True
                time.sleep(poll_s)
        except BaseException:  # a failed read: still withdraw if the store lets us
            with contextlib.suppress(Exception):
                self.withdraw()
            raise
        self.withdraw()
        return False

    def withdraw(self) -> None:
        """Drop an unanswered request, so a later worker group does not answer it."""
        request = kv_get(self.request_key)
        if request is not None:
            kv_put(self.done_key, request)

    # rank 0
    def pending(self) -> str:
        """The token of an unanswered request, or ""."""
        kv_put(self.polled_key, str(time.time()))
        token = kv_get(self.request_key)
        return token if token and token != kv_get(self.done_key) else ""

    def answer(self, token: str) -> None:
        kv_put(self.done_key, token)


__all__ = ["JoinCheckpoint", "kv_get", "kv_put"]
