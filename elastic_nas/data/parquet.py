"""Read ``data convert`` shards from a local directory or a pyarrow filesystem URI.

``path`` may be ``/local/dir``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``
(``pyarrow.fs.FileSystem.from_uri``), so every worker of a cluster can read the same
shards. Shards are read whole into memory as encoded bytes and decoded per batch; a
dataset must fit in a worker's RAM in encoded form.
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
from elastic_nas.errors import DatasetError
from elastic_nas.io import filesystem

_SHARD = re.compile(r"^(train|test)-(\d{5})\.parquet$")
META_KEY = b"elastic_nas"


def list_shards(fs: pafs.FileSystem, base: str, where: str) -> dict[str, list[str]]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=False))
    except FileNotFoundError:
        raise DatasetError(f"parquet dataset {where} does not exist") from None
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"cannot list {where}: {str(e).splitlines()[0]}") from None
    shards: dict[str, list[str]] = {"train": [], "test": []}
    for info in sorted(infos, key=lambda i: i.base_name):
        m = _SHARD.match(info.base_name)
        if m and info.type == pafs.FileType.File:
            shards[m.group(1)].append(posixpath.join(base, info.base_name))
    if not shards["train"]:
        raise DatasetError(f"no train-NNNNN.parquet shards in {where} (make them with `elastic-nas data convert`)")
    return shards


def _read_split(fs: pafs.FileSystem, files: list[str], image_size: int, name: str,
                class_names: list[str] | None) -> tuple[Split, list[str] | None]:
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
    split = Split(EncodedStore(blobs, describe=paths), np.arange(len(ids_a)), ids_a, labels_a,
                  image_size, IMAGENET_MEAN, IMAGENET_STD, name=name)
    return split, class_names


def load_parquet(cfg: DataConfig, image_size: int) -> tuple[Split, Split, list[str]]:
    fs, base = filesystem(cfg.path, DatasetError)
    shards = list_shards(fs, base, cfg.path)
    train, class_names = _read_split(fs, shards["train"], image_size, "train", None)
    test, _ = _read_split(fs, shards["test"], image_size, "test", class_names)
    if len(train) and labels_out_of_range(train.labels, len(class_names)):
        raise DatasetError(f"labels in {cfg.path} exceed its {len(class_names)} class names")
    return train, test, class_names


def labels_out_of_range(labels: np.ndarray, num_classes: int) -> bool:
    return bool(labels.min() < 0 or labels.max() >= num_classes)
