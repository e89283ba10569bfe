"""CIFAR-10 from the python pickles: torchvision downloads them when online.

Offline, the files must already be at ``<root>/cifar-10-batches-py/`` (the extracted
``cifar-10-python.tar.gz``); we look for them before touching the network, so an
offline machine gets a clear :class:`DatasetError` rather than a timeout.
Ids: train 0..49999, test 50000..59999 (file order).
"""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import numpy as np

from elastic_nas.config import DataConfig
from elastic_nas.data.base import CIFAR10_MEAN, CIFAR10_STD, ArrayStore, Split
from elastic_nas.errors import DatasetError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation; a dead network fails instead of hanging


def default_root() -> Path:
    return Path.home() / ".cache" / "elastic-nas" / "cifar10"


def root_of(cfg: DataConfig) -> Path:
    return Path(cfg.path).expanduser() if cfg.path else default_root()


def _missing(root: Path) -> list[str]:
    return [f for f in [*TRAIN_FILES, *TEST_FILES, "batches.meta"] if not (root / FOLDER / f).is_file()]


def ensure_files(root: Path, download: bool) -> None:
    missing = _missing(root)
    if not missing:
        return
    expected = [*TRAIN_FILES, *TEST_FILES, "batches.meta"]
    which = "none of them found" if len(missing) == len(expected) else f"missing: {', '.join(missing)}"
    where = (f"put the extracted cifar-10-python.tar.gz ({URL}) so that {root / FOLDER}/ holds "
             f"data_batch_1..5, test_batch and batches.meta ({which})")
    if not download:
        raise DatasetError(f"CIFAR-10 not found and data.download is off: {where}")
    from urllib.error import URLError

    from torchvision.datasets import CIFAR10

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        CIFAR10(str(root), train=True, download=True)
    except (URLError, OSError, RuntimeError) as e:
        raise DatasetError(f"CIFAR-10 download failed ({type(e).__name__}: {e}); offline, {where}") from None
    finally:
        socket.setdefaulttimeout(old)
    if _missing(root):
        raise DatasetError(f"CIFAR-10 download did not produce the files: {where}")


def _read(root: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        try:
            with open(root / FOLDER / name, "rb") as f:
                d = pickle.load(f, encoding="latin1")
            images.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(d["labels"], dtype=np.int64))
        except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise DatasetError(f"CIFAR-10 file {root / FOLDER / name} is unreadable ({e}): cut off by an interrupted "
                               f"download? delete {root / FOLDER} and run again to fetch it afresh") from None
    return np.ascontiguousarray(np.concatenate(images).transpose(0, 2, 3, 1)), np.concatenate(labels)


def load_cifar10(cfg: DataConfig, image_size: int) -> tuple[Split, Split, list[str]]:
    root = root_of(cfg)
    ensure_files(root, cfg.download)
    with open(root / FOLDER / "batches.meta", "rb") as f:
        class_names = list(pickle.load(f, encoding="latin1")["label_names"])
    tr_x, tr_y = _read(root, TRAIN_FILES)
    te_x, te_y = _read(root, TEST_FILES)
    train = Split(ArrayStore(tr_x), np.arange(len(tr_y)), np.arange(len(tr_y)), tr_y, image_size,
                  CIFAR10_MEAN, CIFAR10_STD, name="train")
    test_ids = len(tr_y) + np.arange(len(te_y))
    test = Split(ArrayStore(te_x), np.arange(len(te_y)), test_ids, te_y, image_size,
                 CIFAR10_MEAN, CIFAR10_STD, name="test")
    return train, test, class_names
