"""Datasets: one interface (:func:`build_dataset`) over synthetic, cifar10, imagefolder, parquet.

Names resolve lazily so ``data convert`` (and its worker processes) never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elastic_nas.data.base import DatasetSplits, Split, build_dataset, class_balanced_subset

__all__ = ["DatasetSplits", "Split", "build_dataset", "class_balanced_subset"]


def __getattr__(name: str):
    if name in __all__:
        from elastic_nas.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'elastic_nas.data' has no attribute {name!r}")
