"""Read ``data convert`` shards from a local directory or a pyarrow filesystem URI.

``path`` may be ``/local/dir``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``
(``pyarrow.fs.FileSystem.from_uri``), so every worker of a cluster can read the same
shards. Small datasets are read whole into memory as encoded bytes and decoded per
batch; large ones (``data.stream``) are streamed by row group (:mod:`.stream`), with
labels and ids from the folder's index, so nothing but the index is read up front.
"""

from __future__ import annotations

import json
import posixpath
import re

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from elastic_nas.config import DataConfig
from elastic_nas.data.base import IMAGENET_MEAN, IMAGENET_STD, EncodedStore, Split
from elastic_nas.data.layout import META_KEY, OLD_METADATA, SUMMARY_FILE
from elastic_nas.errors import DatasetError
from elastic_nas.io import filesystem, first_line, read_from

_SHARD = re.compile(r"^(train|test)-(\d{5})\.parquet$")


def list_shards(fs: pafs.FileSystem, base: str, where: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Shard paths and their total bytes, per split, from one listing."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=False))
    except FileNotFoundError:
        raise DatasetError(f"parquet dataset {where} does not exist") from None
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"cannot list {where}: {first_line(e)}") from None
    shards: dict[str, list[str]] = {"train": [], "test": []}
    sizes = {"train": 0, "test": 0}
    for info in sorted(infos, key=lambda i: i.base_name):
        m = _SHARD.match(info.base_name)
        if m and info.type == pafs.FileType.File:
            shards[m.group(1)].append(posixpath.join(base, info.base_name))
            sizes[m.group(1)] += info.size or 0
    if not shards["train"]:
        raise DatasetError(f"no train-NNNNN.parquet shards in {where} (make them with `elastic-nas data convert`)")
    # convert writes its summary last (and removes it first when it rewrites shards): without it
    # the shards are a convert cut short, some missing or out of step with each other
    names = {i.base_name for i in infos}
    if not {SUMMARY_FILE, OLD_METADATA[0]} & names:  # format 1's summary
        raise DatasetError(f"{where} has shards but no {SUMMARY_FILE}: its `elastic-nas data convert` did not "
                           "finish; run it again (finished shards are kept)")
    if SUMMARY_FILE in names:  # a copy or sync cut short has the summary but not every shard
        expected = _read_summary(fs, base, where).get("shards") or {}  # none before it was recorded
        off = [f"{len(shards.get(s, []))} {s} shards where it lists {n}" for s, n in expected.items()
               if len(shards.get(s, [])) != n]
        if off:
            raise DatasetError(f"{where} holds {', '.join(off)} ({SUMMARY_FILE}): a copy of it was cut short or "
                               "mixed with another conversion; copy the folder again")
    return shards, sizes


def _read_summary(fs: pafs.FileSystem, base: str, where: str) -> dict:
    try:
        summary = json.loads(read_from(fs, posixpath.join(base, SUMMARY_FILE)))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DatasetError(f"cannot read {where}/{SUMMARY_FILE}: {first_line(e)}") from None
    if not isinstance(summary, dict):
        raise DatasetError(f"{where}/{SUMMARY_FILE} is not the summary `elastic-nas data convert` writes")
    return summary


def _read_split(fs: pafs.FileSystem, files: list[str], image_size: int, name: str,
                class_names: list[str] | None, decode_workers: int = 0) -> tuple[Split, list[str] | None]:
    ids, labels, blobs, paths = [], [], [], []
    for f in files:
        try:
            table = pq.read_table(f, filesystem=fs)
            meta = json.loads((table.schema.metadata or {})[META_KEY])
        except (OSError, KeyError, ValueError, pa.ArrowException) as e:
            raise DatasetError(f"shard {f} is unreadable or not from `data convert`: {e}") from None
        if class_names is None:
            class_names = list(meta["class_names"])
        elif list(meta["class_names"]) != class_names:
            raise DatasetError(f"shard {f} has different class names from the other shards")
        ids.append(table.column("id").to_numpy())
        labels.append(table.column("label").to_numpy())
        blobs.extend(table.column("image").to_pylist())
        paths.extend(table.column("path").to_pylist() if "path" in table.column_names else [f] * len(table))
    ids_a = np.concatenate(ids).astype(np.int64) if ids else np.empty(0, np.int64)
    labels_a = np.concatenate(labels).astype(np.int64) if labels else np.empty(0, np.int64)
    if len(np.unique(ids_a)) != len(ids_a):
        raise DatasetError(f"duplicate sample ids in the {name} shards")
    split = Split(EncodedStore(blobs, describe=paths, workers=decode_workers), np.arange(len(ids_a)), ids_a, labels_a,
                  image_size, IMAGENET_MEAN, IMAGENET_STD, name=name)
    return split, class_names


STREAM_AUTO_BYTES = 2 << 30  # data.stream: auto streams a folder whose train shards are larger


def load_parquet(cfg: DataConfig, image_size: int) -> tuple[Split, Split, list[str]]:
    fs, base = filesystem(cfg.path, DatasetError)
    shards, sizes = list_shards(fs, base, cfg.path)
    if sizes["train"] > STREAM_AUTO_BYTES if cfg.stream == "auto" else cfg.stream:
        train, test, class_names = _stream_splits(cfg, fs, base, shards, image_size)
    else:
        train, class_names = _read_split(fs, shards["train"], image_size, "train", None, cfg.num_workers)
        test, _ = _read_split(fs, shards["test"], image_size, "test", class_names, cfg.num_workers)
    if len(train) and labels_out_of_range(train.labels, len(class_names)):
        raise DatasetError(f"labels in {cfg.path} exceed its {len(class_names)} class names")
    return train, test, class_names


def _stream_splits(cfg: DataConfig, fs: pafs.FileSystem, base: str, shards: dict[str, list[str]],
                   image_size: int) -> tuple[Split, Split, list[str]]:
    """Train and test as views onto a :class:`RowGroupStore`; labels and ids from the index."""
    from elastic_nas.data.stream import RowGroupStore, read_index

    index = read_index(fs, base, cfg.path)
    if index is None:
        raise DatasetError(f"{cfg.path} was converted before streaming existed (no _index.parquet): run "
                           "`elastic-nas data convert SRC DST` again, or set data.stream: false")
    meta = json.loads((pq.read_schema(fs.open_input_file(shards["train"][0])).metadata or {})[META_KEY])
    class_names = list(meta["class_names"])
    cols = {k: index.column(k).to_numpy(zero_copy_only=False) for k in ("id", "label", "row_group", "row")}
    # Names as dictionary codes: no Python string per sample (1.28M of them on ImageNet).
    files, splits_of = (index.column(k).combine_chunks().dictionary_encode() for k in ("file", "split"))
    split_of, split_names = splits_of.indices.to_numpy(zero_copy_only=False), splits_of.dictionary.to_pylist()
    store = RowGroupStore(fs, base, files.dictionary.to_pylist(), files.indices.to_numpy(zero_copy_only=False),
                          cols["row_group"], cols["row"], window=cfg.stream_window,
                          cache_groups=cfg.stream_cache_groups, threads=cfg.stream_threads,
                          decode_workers=cfg.num_workers)
    splits = []
    for name in ("train", "test"):
        code = split_names.index(name) if name in split_names else -1
        rows = np.flatnonzero(split_of == code)  # index order: shards by name, then row: the in-memory order
        splits.append(Split(store, rows, cols["id"][rows], cols["label"][rows], image_size, IMAGENET_MEAN,
                            IMAGENET_STD, name=name))
    if len(np.unique(cols["id"])) != len(cols["id"]):
        raise DatasetError(f"duplicate sample ids in the index of {cfg.path}")
    return splits[0], splits[1], class_names


def labels_out_of_range(labels: np.ndarray, num_classes: int) -> bool:
    return bool(labels.min() < 0 or labels.max() >= num_classes)
