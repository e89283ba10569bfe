"""``data convert``: ImageFolder -> parquet shards, corrupt images, resume, read-back, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from elastic_nas.config import DataConfig
from elastic_nas.data import build_dataset
from elastic_nas.data.convert import convert
from elastic_nas.errors import DatasetError

CLASSES = ["ant", "bee", "cat"]


def _make_folder(root: Path, per_class: int = 4) -> dict[str, int]:
    """root/train/<cls>/*.png|jpg and root/val/<cls>/*; returns {relpath: label} of good images."""
    rng = np.random.default_rng(0)
    good = {}
    for split, n in (("train", per_class), ("val", 2)):
        for label, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(arr).save(d / f"{i}.{ext}")
                good[f"{split}/{cls}/{i}.{ext}"] = label
    (root / "train" / "bee" / "broken.jpg").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return good


def _quiet(msg: str) -> None:
    _quiet.lines.append(msg)


_quiet.lines = []


def test_convert_roundtrip_corrupt_and_resume(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    good = _make_folder(src)
    report = convert(src, dst, shard_size=5, workers=2, log=_quiet, row_group_size=2)
    assert report.images == len(good) == 18
    assert report.counts == {"train": 12, "test": 6}
    assert report.written == 5 and report.skipped == 0  # 13 train files -> 3 shards, 6 test -> 2

    shards = sorted(p.name for p in dst.glob("*-[0-9]*.parquet"))
    assert shards == ["test-00000.parquet", "test-00001.parquet",
                      "train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
    rows = {}
    for p in dst.glob("*-[0-9]*.parquet"):
        t = pq.read_table(p)
        meta = json.loads(t.schema.metadata[b"elastic_nas"])
        assert meta["class_names"] == CLASSES
        for rel, label, sid in zip(t.column("path").to_pylist(), t.column("label").to_pylist(),
                                   t.column("id").to_pylist()):
            rows[rel] = (label, sid)
    assert {k: v[0] for k, v in rows.items()} == good
    assert len({v[1] for v in rows.values()}) == len(rows)

    broken = str(src / "train" / "bee" / "broken.jpg")
    corrupt = json.loads((dst / "_corrupt.json").read_text())
    assert [c["path"] for c in corrupt] == [broken]
    assert any(broken in line for line in _quiet.lines)

    # Resume: nothing rewritten, finished shards skipped, corrupt still reported.
    mtimes = {p: p.stat().st_mtime_ns for p in dst.glob("*-[0-9]*.parquet")}
    _quiet.lines.clear()
    again = convert(src, dst, shard_size=5, workers=2, log=_quiet, row_group_size=2)
    assert again.written == 0 and again.skipped == 5
    assert again.images == 18 and [c["path"] for c in again.corrupt] == [broken]
    assert {p: p.stat().st_mtime_ns for p in dst.glob("*-[0-9]*.parquet")} == mtimes
    assert any("skipped" in line for line in _quiet.lines)

    # A deleted shard is rebuilt alone.
    (dst / "train-00001.parquet").unlink()
    third = convert(src, dst, shard_size=5, workers=1, log=_quiet, row_group_size=2)
    assert third.written == 1 and third.skipped == 4

    # Read back through the dataset interface.
    data = build_dataset(DataConfig(source="parquet", path=str(dst), search_val_size=3), image_size=16)
    assert data.class_names == CLASSES and data.num_classes == 3
    assert (len(data.train), len(data.search_val), len(data.test)) == (9, 3, 6)
    assert np.bincount(data.search_val.labels, minlength=3).tolist() == [1, 1, 1]
    x, y, ids = data.train.get_batch(np.arange(4), augment=True, rng=np.random.default_rng(0))
    assert x.shape == (4, 3, 16, 16)
    x, y, ids = data.test.get_batch(np.arange(6))
    assert x.shape == (6, 3, 16, 16) and sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]

    # Converted again in another order and killed with the shards written, before their index:
    # the old index (and summary) must be gone, not left to pair its labels with the new images.
    def killed(line):
        if "shards," in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(src, dst, shard_size=5, workers=1, log=killed, row_group_size=2, seed=1)
    assert not (dst / "_index.parquet").exists() and not (dst / "_dataset.json").exists()
    # and such a folder is not read as a dataset (it would train on whatever shards are there)
    with pytest.raises(DatasetError, match="did not finish; run it again"):
        build_dataset(DataConfig(source="parquet", path=str(dst), search_val_size=3), image_size=16)


def test_a_copy_missing_a_shard_is_refused_not_trained_on(tmp_path):
    """A copy or sync of a converted folder cut short can hold the summary but not every shard:
    it is refused with one line, where it would have trained on part of the data."""
    import shutil

    src, dst, copy = tmp_path / "src", tmp_path / "dst", tmp_path / "copy"
    _make_folder(src, per_class=8)
    convert(src, dst, shard_size=10, workers=1, log=_quiet)
    assert json.loads((dst / "_dataset.json").read_text())["shards"] == {"train": 3, "test": 1}
    shutil.copytree(dst, copy, ignore=lambda d, names: ["train-00001.parquet"])
    with pytest.raises(DatasetError, match=r"holds 2 train shards where it lists 3 \(_dataset.json\): a copy of it "
                                           r"was cut short"):
        build_dataset(DataConfig(source="parquet", path=str(copy)), image_size=16)
    shutil.copy(dst / "train-00001.parquet", copy)
    assert len(build_dataset(DataConfig(source="parquet", path=str(copy), search_val_size=3), image_size=16).train) == 21


def test_converted_folder_is_a_plain_parquet_dataset_with_an_index(tmp_path):
    """Shards shuffled (not class-sorted) in row groups; _index.parquet locates every sample;
    pandas, pyarrow and Ray Data read the folder as it is (metadata files start with _)."""
    import pandas as pd
    import pyarrow.dataset as ds

    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_folder(src, per_class=8)
    convert(src, dst, shard_size=10, workers=1, log=_quiet, row_group_size=3)
    frame = pd.read_parquet(dst)
    assert len(frame) == 24 + 6 and set(frame.columns) >= {"id", "label", "image", "path"}
    assert ds.dataset(dst).count_rows() == 30
    first = pq.read_table(dst / "train-00000.parquet")
    assert len(set(first.column("label").to_pylist())) > 1  # shuffled: not one class per shard
    assert pq.ParquetFile(dst / "train-00000.parquet").metadata.num_row_groups == 4  # 10 rows in 3s

    index = pq.read_table(dst / "_index.parquet").to_pandas()
    assert len(index) == 30 and index["id"].is_unique
    for _, r in index.sample(8, random_state=0).iterrows():  # every sample where the index says
        group = pq.ParquetFile(dst / r["file"]).read_row_group(int(r["row_group"]), columns=["id", "label"])
        assert group.column("id")[int(r["row"])].as_py() == r["id"]
        assert group.column("label")[int(r["row"])].as_py() == r["label"]
    assert json.loads((dst / "_dataset.json").read_text())["row_group_size"] == 3
    again = convert(src, dst, shard_size=10, workers=1, log=_quiet, row_group_size=3)
    assert again.written == 0  # the same seed: the same shards


def test_ray_data_reads_a_converted_folder(tmp_path):
    import ray

    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_folder(src)
    convert(src, dst, shard_size=10, workers=1, log=_quiet)
    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        assert ray.data.read_parquet(str(dst)).count() == 18
    finally:
        ray.shutdown()


def test_imagefolder_source_reads_in_place(tmp_path):
    src = tmp_path / "src"
    _make_folder(src)
    (src / "train" / "bee" / "broken.jpg").unlink()
    data = build_dataset(DataConfig(source="imagefolder", path=str(src), search_val_size=3), image_size=8)
    assert (len(data.train), len(data.search_val), len(data.test)) == (9, 3, 6)
    x, _, _ = data.test.get_batch(np.arange(2))
    assert x.shape == (2, 3, 8, 8)


def test_flat_folder_is_train_only(tmp_path):
    src = tmp_path / "flat"
    for cls in CLASSES:
        (src / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10, 10), (i * 50, 0, 0)).save(src / cls / f"{i}.png")
    report = convert(src, tmp_path / "dst", shard_size=100, workers=1, log=_quiet)
    assert report.counts == {"train": 6, "test": 0}


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "elastic_nas", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=cwd)


def test_cli_convert(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_folder(src)
    r = _cli("data", "convert", str(src), str(dst), "--shard-size", "4", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "18 images" in r.stdout and "1 corrupt" in r.stdout
    assert "broken.jpg" in r.stderr and "shards" in r.stderr

    r = _cli("data", "convert", str(tmp_path / "missing"), str(dst))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing" in lines[0] and lines[0].startswith("elastic-nas:")


def test_cli_prepare_small(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"data:\n  num_train: 200\n  num_test: 50\n  search_val_size: 20\n  path: {tmp_path / 'c'}\n")
    r = _cli("data", "prepare", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "train 180, search_val 20, test 50" in r.stdout


@pytest.mark.parametrize("bad", ["--shard-size=0", "--workers=-1"])
def test_cli_convert_bad_args(tmp_path, bad):
    src = tmp_path / "src"
    _make_folder(src)
    r = _cli("data", "convert", str(src), str(tmp_path / "dst"), bad)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dst").exists()  # refused before the source is scanned or dst made
