"""The evaluator's allocator settings: freed activation buffers stay in the process, so
repeated forward passes stop faulting pages back in; a user's own allocator settings are kept.
Each case runs in a fresh interpreter, since the settings are process-wide."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, resource, torch
from elastic_nas.allocator import keep_freed_memory

def faults():  # 10 blocks of 16 MB (4,096 pages each), allocated, written and freed in turn
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(4 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

ctypes.CDLL(None).mallopt(-3, 128 << 10)  # a drifted state: blocks above 128 KB are mmap'd
drifted = faults()
kept = keep_freed_memory()
faults()  # the first pass grows the heap
print(json.dumps({"drifted": drifted, "kept": kept, "after": faults()}))
"""

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                 reason="mallopt is glibc's")


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.splitlines()[-1])


@linux_glibc
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    r = probe()
    assert r["kept"] is True
    assert r["drifted"] > 10 * 4096 * 0.9  # every block faulted in anew: what the evaluator paid
    assert r["after"] < 4096  # the same blocks now come back from the heap, not from the kernel


@linux_glibc
def test_a_users_own_allocator_settings_are_left_alone():
    r = probe(MALLOC_TRIM_THRESHOLD_="1000000")
    assert r["kept"] is False
    assert r["after"] > 10 * 4096 * 0.9  # the drifted thresholds stayed: nothing was overridden
