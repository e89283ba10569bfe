"""``build_dataset``: a config's source loaded and carved into train / search_val / test.

The loaders (one module per source) only read; this module picks one and carves the
search split out of the official train set, so the loaders never import it back.
"""

from __future__ import annotations

import importlib

import numpy as np

from elastic_nas.config import DataConfig
from elastic_nas.data.base import DatasetSplits, Split, class_balanced_indices
from elastic_nas.errors import DatasetError

# source -> "module:loader"; a loader returns (full train split, test split, class names).
LOADERS = {
    "synthetic": "elastic_nas.data.synthetic:load_synthetic",
    "cifar10": "elastic_nas.data.cifar10:load_cifar10",
    "imagefolder": "elastic_nas.data.imagefolder:load_imagefolder",
    "parquet": "elastic_nas.data.parquet:load_parquet",
}


def carve_search_val(full_train: Split, size: int, seed: int) -> tuple[Split, Split]:
    """Split the official train set into (train, search_val), disjoint, class-balanced."""
    if size >= len(full_train):
        raise DatasetError(
            f"search_val_size ({size}) must be smaller than the train set ({len(full_train)})"
        )
    held = class_balanced_indices(full_train.labels, size, seed)
    keep = np.setdiff1d(np.arange(len(full_train)), held, assume_unique=True)
    return full_train.subset(keep, name="train"), full_train.subset(held, name="search_val")


def build_dataset(cfg: DataConfig, image_size: int) -> DatasetSplits:
    """Build the three splits of ``cfg.source``; raises :class:`DatasetError` early."""
    if image_size < 1:
        raise DatasetError(f"image_size must be >= 1, got {image_size}")
    if cfg.source not in LOADERS:
        raise DatasetError(f"unknown dataset source {cfg.source!r} (known: {', '.join(LOADERS)})")
    module, name = LOADERS[cfg.source].split(":")
    load = getattr(importlib.import_module(module), name)  # only the chosen source's imports load
    full_train, test, class_names = load(cfg, image_size)
    train, search_val = carve_search_val(full_train, cfg.search_val_size, cfg.seed)
    overlap = np.intersect1d(full_train.ids, test.ids)
    if len(overlap):
        raise DatasetError(f"{len(overlap)} sample ids appear in both train and test (e.g. {overlap[0]})")
    return DatasetSplits(train, search_val, test, len(class_names), list(class_names))


__all__ = ["LOADERS", "build_dataset", "carve_search_val"]
