"""Datasets: one interface (:func:`build_dataset`) over synthetic, cifar10, imagefolder, parquet.

Names resolve lazily so ``data convert`` (and its worker processes) never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elastic_nas.data.base import DatasetSplits, Split, class_balanced_subset
    from elastic_nas.data.build import build_dataset

_HOME = {"DatasetSplits": "base", "Split": "base", "class_balanced_subset": "base", "build_dataset": "build"}
__all__ = ["DatasetSplits", "Split", "build_dataset", "class_balanced_subset"]


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"elastic_nas.data.{_HOME[name]}"), name)
    raise AttributeError(f"module 'elastic_nas.data' has no attribute {name!r}")
