"""Splits and image stores: three splits of (image, label, stable sample id).

A :class:`Split` is a view (``rows``) onto an image store, so ``subset`` and the
train/search_val carve are free. Two stores exist: decoded uint8 NHWC arrays in
memory (synthetic, cifar10; vectorised batches) and encoded JPEG/PNG bytes
(imagefolder, parquet; decoded with PIL per image).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import io
import math
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.errors import DatasetError

# Per-channel normalisation (RGB, on [0, 1] pixels). CIFAR-10 uses its
# train statistics, encoded sources (ImageNet-style photos) ImageNet's; synthetic its own.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CROP_PAD = 4  # array stores: random crop from a 4-px zero-padded image (CIFAR recipe)
EVAL_CROP = 0.875  # encoded stores: resize the short side to size/0.875, center crop
RRC_SCALE = (0.35, 1.0)  # encoded stores: random-resized-crop area range (SPOS uses 0.08)


class ArrayStore:
    """Decoded images in one uint8 NHWC array."""

    def __init__(self, images: np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DatasetError(f"expected uint8 NHWC RGB images, got {images.dtype} {images.shape}")
        self.images = images

    def load(self, rows: np.ndarray, size: int, augment: bool, rng: np.random.Generator) -> np.ndarray:
        batch = self.images[rows]
        if augment:
            batch = _pad_crop_flip(batch, rng)
        return batch  # resized to `size` after normalisation, on the float tensor


class EncodedStore:
    """Encoded JPEG/PNG bytes, one per row, decoded with PIL on demand (in ``workers`` decode
    processes when > 0)."""

    def __init__(self, blobs: Sequence[bytes], describe: Sequence[str] | None = None, workers: int = 0):
        self.blobs = blobs  # list of bytes or a pyarrow BinaryArray
        self.describe = describe  # optional per-row origin (path) for error messages
        self.workers = workers

    def load(self, rows: np.ndarray, size: int, augment: bool, rng: np.random.Generator) -> np.ndarray:
        blobs = [self.blobs[int(r)] for r in rows]
        blobs = [b.as_py() if hasattr(b, "as_py") else b for b in blobs]
        wheres = [self.describe[int(r)] if self.describe is not None else f"row {r}" for r in rows]
        return decode_batch(blobs, wheres, size, augment, rng, self.workers)


_POOLS: dict[int, cf.ProcessPoolExecutor] = {}  # decode processes of this process, by size


def decode_batch(blobs: list[bytes], wheres: list[str], size: int, augment: bool, rng: np.random.Generator,
                 workers: int = 0) -> np.ndarray:
    """Decode (and augment) a batch of encoded images into ``[N, size, size, 3]`` uint8. Each
    image draws from its own seed taken from ``rng``, so the batch is the same whether it is
    decoded here or in ``workers`` processes (``data.num_workers``)."""
    seeds = rng.integers(0, 2 ** 63 - 1, size=len(blobs)).tolist() if augment else [0] * len(blobs)
    jobs = [(b, size, augment, s, w) for b, s, w in zip(blobs, seeds, wheres)]
    out = np.empty((len(jobs), size, size, 3), dtype=np.uint8)
    if workers > 0 and len(jobs) > 1:
        pool = _POOLS.get(workers)
        if pool is None:  # spawned: a training worker is multi-threaded, so no fork
            if not _POOLS:
                atexit.register(_close_pools)  # before interpreter teardown, which would warn
            pool = _POOLS[workers] = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
        images = pool.map(_decode_seeded, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
    else:
        images = map(_decode_seeded, jobs)
    for i, img in enumerate(images):
        out[i] = img
    return out


def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


def _decode_seeded(job: tuple) -> np.ndarray:
    blob, size, augment, seed, where = job
    return decode_image(blob, size, augment, np.random.default_rng(seed), where)


def decode_image(blob: bytes, size: int, augment: bool, rng: np.random.Generator, where: str) -> np.ndarray:
    """One encoded image as ``size`` x ``size`` uint8 RGB: a random-resized crop and flip
    (``augment``), else the short side resized to ``size / EVAL_CROP`` and a centre crop."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(blob)).convert("RGB")
    except Exception as e:  # PIL raises many types for bad data
        raise DatasetError(f"cannot decode image {where}: {e}") from None
    w, h = img.size
    if augment:
        x0, y0, cw, ch = _random_resized_box(w, h, rng)
        img = img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
    else:
        short = max(size, round(size / EVAL_CROP))
        scale = short / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


class Split(torch.utils.data.Dataset):
    """One split: ``ids`` and ``labels`` per index, images from a shared store.

    ``__getitem__`` never augments (it has no RNG); training code draws batches with
    ``get_batch(indices, augment=True, rng=...)`` from one explicit Generator.
    """

    def __init__(self, store: ArrayStore | EncodedStore, rows: np.ndarray, ids: np.ndarray,
                 labels: np.ndarray, image_size: int, mean: Sequence[float], std: Sequence[float],
                 name: str = "split"):
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        if not len(self.rows) == len(self.ids) == len(self.labels):
            raise ValueError("rows, ids and labels must have the same length")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.name = name

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Split({self.name!r}, n={len(self)}, image_size={self.image_size})"

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self!r}")
        x, _, _ = self.get_batch(np.array([i]))
        return x[0], int(self.labels[i]), int(self.ids[i])

    def get_batch(self, indices: np.ndarray, augment: bool = False,
                  rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``[N, 3, H, W]`` float32 normalised, labels int64, sample ids int64."""
        indices = np.asarray(indices, dtype=np.int64)
        if augment and rng is None:
            raise ValueError("augment=True needs an explicit rng")
        rng = rng if rng is not None else np.random.default_rng(0)  # unused without augment
        raw = self.store.load(self.rows[indices], self.image_size, augment, rng)
        # (p/255 - mean)/std as one multiply-add on NHWC, then a single NCHW copy.
        std = torch.tensor(self.std)
        x = torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float32)
        x = x.mul_(1.0 / (255.0 * std)).sub_(torch.tensor(self.mean) / std)
        x = x.permute(0, 3, 1, 2).contiguous()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return x, torch.from_numpy(self.labels[indices].copy()), torch.from_numpy(self.ids[indices].copy())

    def subset(self, indices: np.ndarray | Sequence[int], name: str | None = None) -> Split:
        indices = np.asarray(indices, dtype=np.int64)
        return Split(self.store, self.rows[indices], self.ids[indices], self.labels[indices],
                     self.image_size, self.mean, self.std, name or f"{self.name}[subset]")


@dataclass
class DatasetSplits:
    train: Split  # for weight training; disjoint from search_val
    search_val: Split  # held out from the official train set; search scores on it
    test: Split  # the official test set; search never reads it
    num_classes: int
    class_names: list[str]

    def summary(self) -> str:
        return (f"{self.num_classes} classes; train {len(self.train)}, "
                f"search_val {len(self.search_val)}, test {len(self.test)}")


def class_balanced_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples, per class in proportion to class frequency.

    Largest-remainder rounding, so equal classes give equal counts (+-1). Deterministic
    in ``seed``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0 <= n <= len(labels):
        raise DatasetError(f"cannot take {n} samples from a split of {len(labels)}")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    short = n - int(quota.sum())
    # Ties broken by class order, so the result does not depend on float noise.
    order = np.lexsort((classes, -(exact - quota)))
    quota[order[:short]] += 1
    rng = np.random.default_rng([seed, 0x5EA])
    picked = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        picked.append(rng.permutation(members)[:q])
    return np.sort(np.concatenate(picked))


def class_balanced_subset(split: Split, n: int, seed: int) -> Split:
    """A deterministic class-balanced subset of ``n`` samples (calibration, validation)."""
    return split.subset(class_balanced_indices(split.labels, n, seed), name=f"{split.name}[{n}]")


def _pad_crop_flip(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop from a zero-padded image, then horizontal flip; vectorised."""
    n, h, w, _ = batch.shape
    p = CROP_PAD
    padded = np.pad(batch, ((0, 0), (p, p), (p, p), (0, 0)))
    oy = rng.integers(0, 2 * p + 1, size=n)
    ox = rng.integers(0, 2 * p + 1, size=n)
    flip = rng.random(n) < 0.5
    cols = ox[:, None] + np.arange(w)[None, :]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)  # flip folded into the gather
    rows = oy[:, None] + np.arange(h)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _random_resized_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    area = w * h
    for _ in range(10):  # bounded tries, then fall back to the whole image (torchvision's rule)
        target = area * rng.uniform(*RRC_SCALE)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = round(math.sqrt(target * ratio))
        ch = round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    return 0, 0, w, h


__all__ = [
    "ArrayStore",
    "DatasetSplits",
    "EncodedStore",
    "Split",
    "class_balanced_indices",
    "class_balanced_subset",
]
