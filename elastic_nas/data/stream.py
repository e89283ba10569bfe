"""Streamed parquet splits: images read by row group, on demand and ahead, never all at once.

A converted folder (``data convert``) has an index with the file, row group and row of
every sample. :class:`RowGroupStore` is a store like the in-memory ones (a
:class:`~elastic_nas.data.base.Split` is a view onto it, so the search_val carve and
subsets work unchanged), but it holds only the row groups in use: a bounded cache of
their image columns, filled by background threads that read the row groups the rank
will need next (``prefetch``, fed by the stream's order). Memory per worker is set by the
window, the world size and the prefetch depth, not by the dataset size. Files are read
through pyarrow's filesystem layer: a local path or any URI it knows (s3://, gs://).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from elastic_nas.data.base import decode_batch
from elastic_nas.data.layout import INDEX_FILE
from elastic_nas.errors import DatasetError


class RowGroupStore:
    """Encoded images of a converted folder's row groups; ``rows`` index the folder's index.

    ``window``: row groups the stream deals at once (the sampler reads it from here);
    ``cache_groups``: row groups whose image column is kept in memory; ``threads``: parallel
    reads; ``decode_workers``: decode processes (``data.num_workers``).
    """

    def __init__(self, fs: pafs.FileSystem, base: str, file_names: list[str], file_codes: np.ndarray,
                 row_groups: np.ndarray, rows_in_group: np.ndarray, window: int = 16, cache_groups: int = 24,
                 threads: int = 4, decode_workers: int = 0):
        self.fs, self.base = fs, base
        self.file_names = list(file_names)
        self.file_codes = np.asarray(file_codes, np.int64)  # shard of each row: file_names[code]
        self.row_groups = np.asarray(row_groups, np.int64)
        self.rows_in_group = np.asarray(rows_in_group, np.int64)
        self.groups = (self.file_codes << 32) | self.row_groups  # one id per (file, row group)
        self.group_rows = int(self.rows_in_group.max()) + 1 if len(self.rows_in_group) else 1
        self.window, self.cache_groups, self.threads = window, max(2, cache_groups), threads
        self.decode_workers = decode_workers
        self.bytes_read = 0  # image-column bytes fetched (benchmarks read it)
        self._cache: collections.OrderedDict[int, pa.BinaryArray] = collections.OrderedDict()
        self._pending: dict[int, cf.Future] = {}
        self._lock = threading.Lock()
        self._pool: cf.ThreadPoolExecutor | None = None
        self._local = threading.local()  # open files per reading thread: a reader is not shared

    def __getstate__(self):  # workers rebuild the pool and the open files
        state = dict(self.__dict__)
        state.update(_cache=collections.OrderedDict(), _pending={}, _lock=None, _pool=None, _local=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock, self._local = threading.Lock(), threading.local()

    # -- reading -----------------------------------------------------------------------
    def _read(self, group: int) -> pa.BinaryArray:
        name = self.file_names[group >> 32]
        handles = self._local.__dict__.setdefault("handles", {})
        handle = handles.get(name)
        try:
            if handle is None:
                handle = handles[name] = pq.ParquetFile(self.fs.open_input_file(f"{self.base}/{name}"))
            column = handle.read_row_group(group & 0xFFFFFFFF, columns=["image"]).column("image").combine_chunks()
        except (OSError, pa.ArrowException) as e:
            raise DatasetError(f"cannot read row group {group & 0xFFFFFFFF} of {name}: {str(e).splitlines()[0]}") from None
        with self._lock:
            self.bytes_read += column.nbytes
        return column

    def _submit(self, group: int) -> None:
        """Start reading ``group`` unless it is cached or on its way (call with the lock held)."""
        if group in self._cache or group in self._pending:
            return
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.threads, thread_name_prefix="elastic-nas-rowgroups")
        self._pending[group] = self._pool.submit(self._read, group)

    def _get(self, group: int) -> pa.BinaryArray:
        with self._lock:
            column = self._cache.get(group)
            if column is not None:
                self._cache.move_to_end(group)
                return column
            self._submit(group)
            future = self._pending[group]
        column = future.result()  # a read error surfaces here, in the training step
        with self._lock:
            self._pending.pop(group, None)
            self._cache[group] = column
            while len(self._cache) > self.cache_groups:
                self._cache.popitem(last=False)
        return column

    def prefetch(self, rows: np.ndarray) -> None:
        """Read the row groups of ``rows`` (the next samples, in order) in the background, as
        many as the cache holds beside the groups in use."""
        groups = list(dict.fromkeys(self.groups[np.asarray(rows, np.int64)].tolist()))
        with self._lock:
            room = max(0, self.cache_groups - len(self._pending) - 1)
            for group in groups[:room]:
                self._submit(group)

    def load(self, rows: np.ndarray, size: int, augment: bool, rng: np.random.Generator) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        self.prefetch(rows)  # every group of the batch in flight at once
        blobs = [self._get(int(self.groups[r]))[int(self.rows_in_group[r])].as_py() for r in rows]
        wheres = [f"{self.file_names[self.file_codes[r]]} row group {self.row_groups[r]} row {self.rows_in_group[r]}"
                  for r in rows]
        return decode_batch(blobs, wheres, size, augment, rng, self.decode_workers)


def read_index(fs: pafs.FileSystem, base: str, where: str):
    """The folder's ``_index.parquet`` as a table, or None for a folder converted before it."""
    path = f"{base}/{INDEX_FILE}"
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        return pq.read_table(fs.open_input_file(path))
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"cannot read {where}/{INDEX_FILE}: {str(e).splitlines()[0]}") from None


__all__ = ["RowGroupStore", "read_index"]
