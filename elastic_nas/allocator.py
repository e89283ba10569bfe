"""The C allocator's settings for processes that run CPU forward passes. No Ray in here.

A forward pass allocates and frees the same activation buffers (a few MB each) over and over.
glibc's malloc hands a freed block back to the kernel when it lies above its mmap or trim
threshold, and moves those thresholds as the process runs, so whether the buffers stay depends
on the process's history: in a Tune evaluator every candidate faulted ~50,000 pages back in,
each zeroed by the kernel, 10-15 % of the evaluation's CPU (a plain process: 130-170;
``benchmarks/search_speed.py``). Fixed thresholds keep the buffers in the process for reuse.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2): blocks above it are mmap'd anyway
TRIM_THRESHOLD = 1 << 30  # free memory kept at the heap's top before it is handed back
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


@functools.cache
def keep_freed_memory() -> bool:
    """Fix glibc's trim and mmap thresholds in this process, once; whether they were set.

    Left alone where the process is not on glibc (macOS, musl) and where the user chose the
    allocator's settings or another allocator (``MALLOC_*_``, ``GLIBC_TUNABLES``, ``LD_PRELOAD``,
    e.g. jemalloc or tcmalloc). The cost: up to ``TRIM_THRESHOLD`` of freed memory stays mapped.
    """
    if not sys.platform.startswith("linux") or any(os.environ.get(k) for k in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc
        return False
    # setting either threshold also stops glibc from moving both as the process runs
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
