"""Streamed parquet data: the same splits and images as the in-memory path, row groups read
ahead within a bounded cache, from local disk and from a local S3 endpoint (moto), and an
old folder refused with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from elastic_nas.config import DataConfig, ElasticConfig, OptimConfig
from elastic_nas.data import build_dataset
from elastic_nas.data.convert import convert
from elastic_nas.data.layout import INDEX_FILE
from elastic_nas.errors import DatasetError

CLASSES = 5


def image_folder(root: Path, train_per_class: int = 24, val_per_class: int = 4, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(CLASSES):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size, size + i % 3, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def converted(tmp_path: Path, **kw) -> Path:
    dst = tmp_path / "parquet"
    convert(image_folder(tmp_path / "src"), dst, workers=1, log=lambda m: None, **{"shard_size": 40,
                                                                                    "row_group_size": 8, **kw})
    return dst


def splits(path: str, stream, **kw):
    return build_dataset(DataConfig(source="parquet", path=path, search_val_size=10, stream=stream, **kw), 16)


def test_streamed_splits_equal_the_in_memory_ones(tmp_path):
    dst = converted(tmp_path)
    mem, stream = splits(str(dst), False), splits(str(dst), True)
    assert type(stream.train.store).__name__ == "RowGroupStore"
    for name in ("train", "search_val", "test"):
        a, b = getattr(mem, name), getattr(stream, name)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels), name  # the same carve
        idx = np.random.default_rng(1).permutation(len(a))[:12]
        for augment in (False, True):
            xa, ya, _ = a.get_batch(idx, augment=augment, rng=np.random.default_rng(2))
            xb, yb, _ = b.get_batch(idx, augment=augment, rng=np.random.default_rng(2))
            assert torch.equal(xa, xb) and torch.equal(ya, yb), (name, augment)
    # Decode processes (data.num_workers) give the same batch: each image has its own seed.
    idx = np.arange(0, len(mem.train), 2)
    want = mem.train.get_batch(idx, augment=True, rng=np.random.default_rng(3))[0]
    for stream in (False, True):
        pooled = splits(str(dst), stream, num_workers=2).train
        assert torch.equal(pooled.get_batch(idx, augment=True, rng=np.random.default_rng(3))[0], want)
    # auto: a small folder stays in memory
    assert type(splits(str(dst), "auto").train.store).__name__ == "EncodedStore"


def test_a_training_state_streams_each_sample_once_reading_ahead(tmp_path):
    """TrainState picks the stream order for a streamed split; an epoch through the sampler
    and get_batch yields every train id once and reads each row group about once."""
    from elastic_nas.train.state import TrainState
    from elastic_nas.train.task import TrainTask

    dst = converted(tmp_path)
    data = splits(str(dst), True, stream_window=3, stream_cache_groups=6)
    train = data.train
    task = TrainTask(model=torch.nn.Linear(1, 1), strategy=None, train_split=train, fingerprint={})
    state = TrainState(task, OptimConfig(), ElasticConfig(), seed=0)
    assert type(state.sampler).__name__ == "StreamSampler"
    seen = []
    while state.sampler.epoch == 0:
        plan = state.sampler.plan(1, 16)
        x, y, ids = train.get_batch(plan.indices(0), augment=True, rng=np.random.default_rng(0))
        state.read_ahead(0)
        seen += ids[torch.from_numpy(plan.valid(0))].tolist()
        state.sampler.advance(plan)
    assert sorted(seen) == sorted(train.ids.tolist())
    store = train.store
    image_bytes = sum(store._read(g).nbytes for g in np.unique(store.groups[train.rows]))
    store.bytes_read -= image_bytes  # the line above read them once more
    assert store.bytes_read <= 1.25 * image_bytes  # with a window of 3 and 1 rank: about once
    assert len(store._cache) <= 6


def test_an_old_folder_is_refused_for_streaming_in_one_line(tmp_path):
    dst = converted(tmp_path)
    (dst / INDEX_FILE).unlink()
    with pytest.raises(DatasetError, match="data convert") as err:
        splits(str(dst), True)
    assert "\n" not in str(err.value)
    assert len(splits(str(dst), False).train) == 5 * 24 - 10  # in memory it still trains


def test_streaming_from_a_local_s3_endpoint_gives_the_same_batches(tmp_path):
    from tests.test_s3 import Endpoint

    dst = converted(tmp_path)
    endpoint = Endpoint()
    try:
        endpoint.upload(dst, "data")
        local, remote = splits(str(dst), True), splits(endpoint.uri("data"), True)
        idx = np.arange(0, len(local.train), 3)
        xa, ya, ia = local.train.get_batch(idx, augment=True, rng=np.random.default_rng(5))
        xb, yb, ib = remote.train.get_batch(idx, augment=True, rng=np.random.default_rng(5))
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
        assert remote.train.store.bytes_read > 0
    finally:
        endpoint.stop()


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_supernet_streams_from_s3_and_survives_a_node_loss(cluster, tmp_path):
    """Real Ray Train streaming a converted folder from the local S3 endpoint: a node removed
    mid-run, the run re-deals the unread rest of its windows to one worker, and every train
    sample of every epoch is trained exactly once; the URI's credentials stay off the console."""
    from tests.ray_utils import CliRun, add_worker_node, effective_samples
    from tests.test_elastic_ray import finish_after_losing_a_node, supernet_args
    from tests.test_s3 import KEY, SECRET, Endpoint

    src = image_folder(tmp_path / "src", train_per_class=60, val_per_class=4)
    dst = tmp_path / "parquet"
    convert(src, dst, shard_size=100, workers=1, log=lambda m: None, row_group_size=16)
    endpoint = Endpoint()
    try:
        endpoint.upload(dst, "data")
        add_worker_node(cluster)
        second = add_worker_node(cluster)
        epochs = 2
        args = supernet_args(tmp_path, tmp_path, "stream", epochs, **{
            "data.source": "parquet", "data.path": endpoint.uri("data"), "data.search_val_size": 20,
            "data.stream": "true", "data.stream_window": 4, "space.input_size": 16,
            "elastic.checkpoint_every_steps": 3})
        run = CliRun(args, env={"RAY_ADDRESS": cluster.address})
        finish_after_losing_a_node(cluster, second, run, tmp_path / "runs" / "stream")
        data = build_dataset(DataConfig(source="parquet", path=str(dst), search_val_size=20, stream=False), 16)
        train = np.sort(data.train.ids)
        per_epoch = effective_samples(tmp_path / "samples")
        assert sorted(per_epoch) == list(range(epochs))
        for epoch, seen in per_epoch.items():
            assert np.array_equal(np.sort(np.asarray(seen)), train), f"epoch {epoch}: not every sample exactly once"
        assert SECRET not in run.output() and KEY not in run.output()
    finally:
        endpoint.stop()
