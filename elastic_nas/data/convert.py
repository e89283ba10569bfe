"""``elastic-nas data convert SRC DST``: an ImageNet-style folder -> parquet shards.

Each shard ``DST/<split>-<k>.parquet`` holds the original encoded bytes (no
re-encoding), label, sample id and relative path, with the class names and a
fingerprint of its file list in the schema metadata, in row groups of
``row_group_size`` rows (the unit a streaming reader fetches). A split's files are
shuffled with ``seed`` before sharding (a sorted list would give class-sorted shards),
and shard ``k`` takes files ``[k*shard_size, (k+1)*shard_size)`` of that order, so a
rerun rebuilds the same assignment and skips every shard already written with the same
fingerprint (each shard is written to a temp file and renamed). Corrupt images are
skipped and listed, by path, on stderr and in ``DST/_corrupt.json``.

``DST/_index.parquet`` has one row per sample (id, label, split, file, row group, row),
small enough to hold in memory at ImageNet scale. Metadata files start with ``_`` so the
folder stays a plain parquet dataset (pandas, pyarrow and Ray Data skip them).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from elastic_nas.data.imagefolder import ImageFile, scan
from elastic_nas.data.layout import CORRUPT_FILE, INDEX_FILE, META_KEY, OLD_METADATA, SUMMARY_FILE
from elastic_nas.errors import DatasetError
from elastic_nas.io import atomic_write, write_json

FORMAT_VERSION = 2  # 2: shuffled shards in row groups, _index.parquet, "_" metadata names
ROW_GROUP_SIZE = 256
PROGRESS_EVERY_S = 2.0


@dataclass
class _Task:
    split: str
    shard: int
    files: list[ImageFile]
    out: Path
    class_names: list[str]
    fingerprint: str
    row_group_size: int = ROW_GROUP_SIZE


@dataclass
class ConvertReport:
    written: int = 0  # shards written by this run
    skipped: int = 0  # shards already complete, left untouched
    images: int = 0  # good images in all shards
    corrupt: list[dict] = field(default_factory=list)  # {"path", "error"} per skipped image
    counts: dict[str, int] = field(default_factory=dict)  # good images per split


def shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:05d}.parquet"


def _shard_counts(found, shard_size: int) -> dict[str, int]:
    return {split: -(-len(files) // shard_size) for split, files in found.splits.items()}


def _fingerprint(files: list[ImageFile], row_group_size: int) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION} rows {row_group_size}\n".encode())
    for f in files:
        h.update(f"{f.rel}\0{f.label}\0{f.id}\0{f.path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def read_shard_meta(path: Path) -> dict | None:
    """The shard's metadata, or None if it is missing or unreadable (then it is rebuilt)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def _check_image(blob: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        img.verify()  # structure and checksums
    with Image.open(io.BytesIO(blob)) as img:
        img.load()  # verify() misses truncated pixel data


def _convert_shard(task: _Task) -> tuple[str, int, list[dict]]:
    """Worker: check and pack one shard. Returns (split, good images, corrupt records)."""
    ids, labels, blobs, rels, corrupt = [], [], [], [], []
    for f in task.files:
        try:
            blob = f.path.read_bytes()
            _check_image(blob)
        except Exception as e:  # PIL raises many types for bad data; each is reported
            corrupt.append({"path": str(f.path), "error": f"{type(e).__name__}: {e}"})
            continue
        ids.append(f.id)
        labels.append(f.label)
        blobs.append(blob)
        rels.append(f.rel)
    meta = {"version": FORMAT_VERSION, "split": task.split, "shard": task.shard,
            "class_names": task.class_names, "fingerprint": task.fingerprint, "corrupt": corrupt}
    table = pa.table({"id": pa.array(ids, pa.int64()), "label": pa.array(labels, pa.int64()),
                      "image": pa.array(blobs, pa.binary()), "path": pa.array(rels, pa.string())})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    atomic_write(task.out, lambda tmp: pq.write_table(table, tmp, compression="none",  # JPEG/PNG do not compress
                                                      row_group_size=task.row_group_size))
    return task.split, len(ids), corrupt


def shuffled(files: list[ImageFile], seed: int) -> list[ImageFile]:
    """``files`` (sorted) in the order shards take them: fixed by ``seed``."""
    return [files[i] for i in np.random.default_rng([seed, len(files)]).permutation(len(files))]


def convert(src: str | Path, dst: str | Path, shard_size: int = 1000, workers: int = 0,
            log=None, row_group_size: int = ROW_GROUP_SIZE, seed: int = 0) -> ConvertReport:
    """Convert ``src`` into shards under ``dst``; resumable; see the module docstring."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if shard_size < 1:
        raise DatasetError(f"--shard-size must be >= 1, got {shard_size}")
    if row_group_size < 1:
        raise DatasetError(f"--row-group-size must be >= 1, got {row_group_size}")
    if workers < 0:
        raise DatasetError(f"--workers must be >= 0 (0: all cores), got {workers}")
    found = scan(src)
    dst = Path(dst).expanduser()
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create {dst}: {e}") from None

    report = ConvertReport(counts={s: 0 for s in found.splits})
    todo: list[_Task] = []
    for split, files in found.splits.items():
        order = shuffled(files, seed)
        for k, start in enumerate(range(0, len(order), shard_size)):
            chunk = order[start:start + shard_size]
            task = _Task(split, k, chunk, dst / shard_name(split, k), found.class_names,
                         _fingerprint(chunk, row_group_size), row_group_size)
            meta = read_shard_meta(task.out) if task.out.exists() else None
            if meta is not None and meta.get("fingerprint") == task.fingerprint:
                report.skipped += 1
                report.corrupt.extend(meta.get("corrupt", []))
                report.counts[split] += len(chunk) - len(meta.get("corrupt", []))
            else:
                todo.append(task)
    shards = [dst / shard_name(s, k) for s, n in _shard_counts(found, shard_size).items() for k in range(n)]
    expected = {p.name for p in shards}
    stale = [p for p in sorted(dst.glob("*-[0-9][0-9][0-9][0-9][0-9].parquet"))
             if p.name.split("-")[0] in found.splits and p.name not in expected]
    if todo or stale:  # first: the old index would pair its labels with the new shards' images
        for name in (INDEX_FILE, SUMMARY_FILE, *OLD_METADATA):
            (dst / name).unlink(missing_ok=True)
    for path in stale:
        log(f"convert: removing {path.name}, left from a run with another file list or shard size")
        path.unlink()
    total = report.skipped + len(todo)
    if report.skipped:
        log(f"convert: {report.skipped}/{total} shards already complete, skipped")
    for rec in report.corrupt:
        log(f"convert: corrupt image skipped: {rec['path']} ({rec['error']})")

    workers = workers or os.cpu_count() or 1
    t0 = last = time.monotonic()

    def done(result: tuple[str, int, list[dict]]) -> None:
        nonlocal last
        split, good, corrupt = result
        report.written += 1
        report.counts[split] += good
        report.corrupt.extend(corrupt)
        for rec in corrupt:
            log(f"convert: corrupt image skipped: {rec['path']} ({rec['error']})")
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or report.written == len(todo):
            last = now
            log(f"convert: {report.written + report.skipped}/{total} shards, "
                f"{sum(report.counts.values())} images, {len(report.corrupt)} corrupt, {now - t0:.1f} s")

    if workers == 1 or len(todo) <= 1:
        for task in todo:
            done(_convert_shard(task))
    else:
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            for fut in cf.as_completed([pool.submit(_convert_shard, t) for t in todo]):
                done(fut.result())

    report.images = sum(report.counts.values())
    report.corrupt.sort(key=lambda r: r["path"])
    _write_metadata(dst, report, {"version": FORMAT_VERSION, "source": str(Path(src).expanduser().resolve()),
                                  "class_names": found.class_names, "shard_size": shard_size,
                                  "row_group_size": row_group_size, "seed": seed,
                                  "shards": _shard_counts(found, shard_size)}, shards)
    return report


def _write_metadata(dst: Path, report: ConvertReport, summary: dict, shards: list[Path]) -> None:
    """The index, the corrupt list and the summary, once every shard is in place."""
    index = build_index(shards)
    atomic_write(dst / INDEX_FILE, lambda tmp: pq.write_table(index, tmp))
    write_json(dst / CORRUPT_FILE, report.corrupt, indent=2)
    write_json(dst / SUMMARY_FILE, {**summary, "images": report.counts, "corrupt": len(report.corrupt)}, indent=2)
    for old in OLD_METADATA:  # a version-1 folder converted again becomes a plain parquet dataset
        (dst / old).unlink(missing_ok=True)


def build_index(shards: list[Path]) -> pa.Table:
    """One row per sample of ``shards``: id, label, split, file, row_group, row (within the group).
    Reads the id and label columns and the footers only, never the images."""
    parts = []
    for path in shards:
        f = pq.ParquetFile(path)
        table = f.read(columns=["id", "label"])
        sizes = [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)]
        n = len(table)
        parts.append(pa.table({
            "id": table.column("id"), "label": table.column("label"),
            "split": pa.array([path.name.split("-")[0]] * n, pa.string()),
            "file": pa.array([path.name] * n, pa.string()),
            "row_group": pa.array(np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)),
            "row": pa.array(np.concatenate([np.arange(k, dtype=np.int32) for k in sizes] or [np.empty(0, np.int32)])),
        }))
    return pa.concat_tables(parts) if parts else pa.table(
        {"id": pa.array([], pa.int64()), "label": pa.array([], pa.int64()), "split": pa.array([], pa.string()),
         "file": pa.array([], pa.string()), "row_group": pa.array([], pa.int32()), "row": pa.array([], pa.int32())})
