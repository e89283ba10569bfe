"""ImageNet-style folders: one subfolder per class, JPEG/PNG files inside.

Layout and splits (the same rule for ``source: imagefolder`` and ``data convert``):

* ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` (or ``ROOT/test/``): train is
  the train set, val is the test set (as for ImageNet, whose labelled val set is the
  usual test set). search_val is then carved from train.
* ``ROOT/<class>/*`` (no train/ folder): everything is train; the test split is empty.

Class names are the sorted subfolders of the train folder; label = index in that
list. Sample ids number the sorted file list, train first then test, so they are
stable across runs and machines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elastic_nas.config import DataConfig
from elastic_nas.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
TEST_FOLDERS = ("val", "test")


@dataclass(frozen=True)
class ImageFile:
    rel: str  # path relative to the root, '/'-separated
    path: Path
    label: int
    id: int


@dataclass
class FolderScan:
    class_names: list[str]
    splits: dict[str, list[ImageFile]]  # "train", "test" (possibly empty)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _files(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def scan(root: str | Path) -> FolderScan:
    """List an ImageNet-style root deterministically; raises DatasetError if malformed."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist or is not a directory")
    train_dir = root / "train"
    if train_dir.is_dir():
        test_dir = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    else:
        train_dir, test_dir = root, None
    class_dirs = _class_dirs(train_dir)
    if not class_dirs:
        raise DatasetError(f"{train_dir} has no class subfolders (expected {train_dir}/<class>/<image>.jpg)")
    class_names = [d.name for d in class_dirs]
    index = {name: i for i, name in enumerate(class_names)}
    splits: dict[str, list[ImageFile]] = {"train": [], "test": []}
    next_id = 0
    for split, folder in (("train", train_dir), ("test", test_dir)):
        if folder is None:
            continue
        for d in _class_dirs(folder):
            if d.name not in index:
                raise DatasetError(f"{d} is a class that {train_dir} does not have")
            for f in _files(d):
                splits[split].append(ImageFile(f.relative_to(root).as_posix(), f, index[d.name], next_id))
                next_id += 1
    if not splits["train"]:
        raise DatasetError(f"no {'/'.join(IMAGE_EXTENSIONS)} images under {train_dir}")
    return FolderScan(class_names, splits)


class _LazyFiles:
    """Reads a file's bytes only when its row is decoded."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> bytes:
        try:
            return self.paths[i].read_bytes()
        except OSError as e:
            raise DatasetError(f"cannot read {self.paths[i]}: {e}") from None


def _split(files: list[ImageFile], image_size: int, name: str, decode_workers: int = 0):
    from elastic_nas.data.base import IMAGENET_MEAN, IMAGENET_STD, EncodedStore, Split

    store = EncodedStore(_LazyFiles([f.path for f in files]), describe=[str(f.path) for f in files],
                         workers=decode_workers)
    return Split(store, np.arange(len(files)), np.array([f.id for f in files], dtype=np.int64),
                 np.array([f.label for f in files], dtype=np.int64), image_size,
                 IMAGENET_MEAN, IMAGENET_STD, name=name)


def load_imagefolder(cfg: DataConfig, image_size: int):
    """Reads files in place (no corrupt-image check: run ``data convert`` for that)."""
    found = scan(cfg.path)
    return (_split(found.splits["train"], image_size, "train", cfg.num_workers),
            _split(found.splits["test"], image_size, "test", cfg.num_workers), found.class_names)
