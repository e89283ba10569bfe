"""The node watcher's timing logic without Ray: nodes that join together are shown to Ray
once, after they have all arrived; a lone join waits only the settling window."""

from __future__ import annotations

import time

from elastic_nas.cluster.node_watch import NodeWatcher


class Scripted(NodeWatcher):
    """A watcher whose cluster is a script of (seconds from start, alive node ids), and
    whose coordinator refreshes are recorded with the node set Ray would see."""

    def __init__(self, script: list[tuple[float, set[str]]], **kwargs):
        super().__init__(interval_s=0.02, **kwargs)
        self.script, self.t0 = script, time.monotonic()
        self.seen: list[tuple[float, frozenset[str]]] = []

    def _nodes(self) -> list[dict]:
        elapsed = time.monotonic() - self.t0
        ids = [ids for t, ids in self.script if t <= elapsed][-1]
        return [{"NodeID": i, "Alive": True} for i in sorted(ids)]

    def _refresh(self) -> bool:
        self.seen.append((round(time.monotonic() - self.t0, 2), frozenset(n["NodeID"] for n in self._nodes())))
        return True


def watch(script, seconds: float, **kwargs) -> list[tuple[float, frozenset[str]]]:
    w = Scripted(script, **kwargs)
    with w:
        time.sleep(seconds)
    return w.seen


def test_two_joins_close_together_reach_ray_once_with_both_nodes():
    seen = watch([(0, {"a"}), (0.3, {"a", "b"}), (0.6, {"a", "b", "c"})], 2.0, join_settle_s=0.5)
    assert [ids for _, ids in seen] == [frozenset("abc")]
    assert seen[0][0] >= 0.6 + 0.5  # after the last join had settled


def test_a_lone_join_waits_only_the_settling_window():
    seen = watch([(0, {"a"}), (0.3, {"a", "b"})], 1.5, join_settle_s=0.4)
    assert [ids for _, ids in seen] == [frozenset("ab")]
    assert 0.3 + 0.4 <= seen[0][0] < 2.5  # not the 5 s cap


def test_joins_that_keep_coming_are_shown_after_the_cap():
    script = [(0, {"a"})] + [(0.2 * k, {"a", *map(str, range(k))}) for k in range(1, 20)]
    seen = watch(script, 2.5, join_settle_s=0.5, join_settle_max_s=1.0)
    assert seen and seen[0][0] < 2.0  # not held back until the joins stop (3.8 s)


def test_without_a_window_each_join_reaches_ray_at_once():
    seen = watch([(0, {"a"}), (0.3, {"a", "b"}), (0.8, {"a", "b", "c"})], 1.5, join_settle_s=0.0)
    assert [ids for _, ids in seen] == [frozenset("ab"), frozenset("abc")]
