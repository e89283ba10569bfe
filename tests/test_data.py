"""Datasets: synthetic determinism and splits, batches, cifar10 offline error, parquet URIs."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch

from elastic_nas.config import DataConfig, SupernetConfig, load_config
from elastic_nas.data import DatasetSplits, Split, build_dataset, class_balanced_subset
from elastic_nas.data.synthetic import CLASS_NAMES, HARD_CLASS_NAMES, cache_dir, generate, params_hash
from elastic_nas.errors import ConfigError, DatasetError


def _small(tmp_path, **kw) -> DataConfig:
    args = dict(num_train=600, num_test=200, search_val_size=100, path=str(tmp_path / "cache"))
    args.update(kw)
    return DataConfig(**args)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> DatasetSplits:
    return build_dataset(_small(tmp_path_factory.mktemp("syn")), image_size=32)


def test_synthetic_deterministic_bytes(tmp_path):
    a, la = generate(100, seed=5, split="train")
    b, lb = generate(100, seed=5, split="train")
    c, _ = generate(100, seed=6, split="train")
    assert hashlib.sha256(a.tobytes()).digest() == hashlib.sha256(b.tobytes()).digest()
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    # Cached parquet gives back the same bytes as a fresh generation elsewhere.
    cfg = dict(seed=5, num_train=200, num_test=50, search_val_size=20)
    d1 = build_dataset(_small(tmp_path / "x", **cfg), 32)
    d2 = build_dataset(_small(tmp_path / "y", **cfg), 32)
    np.testing.assert_array_equal(d1.train.store.images, d2.train.store.images)
    d3 = build_dataset(_small(tmp_path / "x", **cfg), 32)  # read back from the cache
    np.testing.assert_array_equal(d1.test.store.images, d3.test.store.images)
    assert list((tmp_path / "x" / "cache").glob("*.tmp")) == []


def test_synthetic_splits(small):
    tr, sv, te = small.train, small.search_val, small.test
    assert (len(tr), len(sv), len(te)) == (500, 100, 200)
    assert small.num_classes == 10 and len(small.class_names) == 10
    all_ids = np.concatenate([tr.ids, sv.ids, te.ids])
    assert len(np.unique(all_ids)) == len(all_ids), "ids must be unique across splits"
    assert not np.intersect1d(tr.ids, sv.ids).size
    counts = np.bincount(sv.labels, minlength=10)
    assert counts.min() == counts.max() == 10, "search_val must be class-balanced"


def test_search_val_depends_on_seed_only(tmp_path):
    a = build_dataset(_small(tmp_path / "a"), 32)
    b = build_dataset(_small(tmp_path / "b"), 32)
    np.testing.assert_array_equal(a.search_val.ids, b.search_val.ids)


def test_hard_synthetic_is_its_own_set(tmp_path):
    """data.difficulty=hard: other classes and images, its own cache; the standard set's
    cache key (and so every standard cache on disk) is unchanged by the option."""
    cfg = _small(tmp_path, difficulty="hard", path="")
    assert cache_dir(cfg) != cache_dir(_small(tmp_path, path=""))
    assert cache_dir(_small(tmp_path, path="")).name == f"synthetic-{params_hash(0, 600, 200)}"
    hard = build_dataset(_small(tmp_path / "h", difficulty="hard"), 32)
    std = build_dataset(_small(tmp_path / "s"), 32)
    assert hard.class_names == HARD_CLASS_NAMES and std.class_names == CLASS_NAMES
    assert np.bincount(hard.search_val.labels, minlength=10).tolist() == [10] * 10
    assert not np.array_equal(hard.train.store.images, std.train.store.images)
    again = build_dataset(_small(tmp_path / "h", difficulty="hard"), 32)  # read back from its cache
    np.testing.assert_array_equal(hard.test.store.images, again.test.store.images)
    a, _ = generate(64, seed=5, split="test", difficulty="hard")
    np.testing.assert_array_equal(a, generate(64, seed=5, split="test", difficulty="hard")[0])
    with pytest.raises(ConfigError, match="data.difficulty"):
        load_config(SupernetConfig, None, ["data.difficulty=medium"])


def test_get_batch_shapes_and_augment(small):
    idx = np.array([3, 1, 4, 1, 5])
    x, y, ids = small.train.get_batch(idx)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.dtype == torch.int64 and ids.dtype == torch.int64
    np.testing.assert_array_equal(ids.numpy(), small.train.ids[idx])
    assert abs(float(x.mean())) < 1.0
    xa, _, _ = small.train.get_batch(idx, augment=True, rng=np.random.default_rng(0))
    xb, _, _ = small.train.get_batch(idx, augment=True, rng=np.random.default_rng(0))
    torch.testing.assert_close(xa, xb)
    assert not torch.equal(xa, x)
    with pytest.raises(ValueError):
        small.train.get_batch(idx, augment=True)
    img, label, sid = small.test[7]
    assert img.shape == (3, 32, 32) and label == small.test.labels[7] and sid == small.test.ids[7]


def test_resize_and_subset(tmp_path, small):
    d = build_dataset(_small(tmp_path), image_size=40)
    x, _, _ = d.train.get_batch(np.arange(4))
    assert x.shape == (4, 3, 40, 40)
    sub = class_balanced_subset(small.train, 50, seed=1)
    assert isinstance(sub, Split) and len(sub) == 50
    assert np.bincount(sub.labels, minlength=10).tolist() == [5] * 10
    np.testing.assert_array_equal(sub.ids, class_balanced_subset(small.train, 50, seed=1).ids)
    x, _, ids = sub.get_batch(np.arange(3))
    assert set(ids.tolist()) <= set(small.train.ids.tolist())


def test_get_batch_is_vectorised(small):
    """A guard against per-image Python work in the array store (~15 ms a batch on one idle
    core; 100x that would stall training), not a speed figure."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(small.train), 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small.train.get_batch(idx, augment=True, rng=rng)
        t0 = time.perf_counter()
        for _ in range(10):
            small.train.get_batch(idx, augment=True, rng=rng)
        per_batch = (time.perf_counter() - t0) / 10
    finally:
        torch.set_num_threads(threads)
    assert per_batch < 1.5, f"a 256-image batch took {per_batch * 1e3:.0f} ms"


def test_config_rejects_search_val_too_large():
    with pytest.raises(ConfigError, match="search_val_size"):
        load_config(SupernetConfig, None, ["data.num_train=100", "data.search_val_size=100"])


def test_cifar10_offline_names_directory(tmp_path):
    root = tmp_path / "cifar"
    with pytest.raises(DatasetError) as e:
        build_dataset(DataConfig(source="cifar10", path=str(root), download=False), 32)
    assert str(root / "cifar-10-batches-py") in str(e.value)


def test_cifar10_failed_download_is_dataset_error(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets.cifar as tv_cifar

    def no_network(*a, **k):
        raise URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    root = tmp_path / "cifar"
    t0 = time.time()
    with pytest.raises(DatasetError, match="download failed") as e:
        build_dataset(DataConfig(source="cifar10", path=str(root)), 32)
    assert str(root / "cifar-10-batches-py") in str(e.value)
    assert time.time() - t0 < 60  # no retry loop: a guard, not a speed figure


def test_cifar10_reads_pickles(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 20) for i in range(1, 6)], ("test_batch", 10)]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": (np.arange(n) % 10).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    d = build_dataset(DataConfig(source="cifar10", path=str(tmp_path), search_val_size=10), 32)
    assert (len(d.train), len(d.search_val), len(d.test)) == (90, 10, 10)
    assert d.test.ids.min() == 100 and d.class_names[3] == "c3"


def test_parquet_missing_and_bad_uri(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset(DataConfig(source="parquet", path=str(tmp_path / "nope")), 32)
    with pytest.raises(DatasetError):
        build_dataset(DataConfig(source="parquet", path="nosuchscheme://bucket/x"), 32)


def test_parquet_s3_offline_fails_with_one_error():
    t0 = time.time()
    with pytest.raises(DatasetError):
        build_dataset(DataConfig(source="parquet", path="s3://elastic-nas-no-such-bucket-0/shards"), 32)
    assert time.time() - t0 < 120  # no endless retry: a guard, not a speed figure


def test_synthetic_default_size(tmp_path):
    d = build_dataset(DataConfig(path=str(tmp_path)), 32)
    assert len(d.train) + len(d.search_val) == 50000 and len(d.test) == 10000
    assert len(np.unique(np.concatenate([d.train.ids, d.search_val.ids, d.test.ids]))) == 60000


def test_split_works_with_dataloader(small):
    loader = torch.utils.data.DataLoader(small.test, batch_size=8)
    x, y, ids = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    np.testing.assert_array_equal(ids.numpy(), small.test.ids[:8])
