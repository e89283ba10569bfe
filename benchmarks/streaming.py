"""Streaming a converted folder against loading it into memory: memory, speed, bytes, restart.

On JPEG datasets converted with ``data convert`` (made once and cached in ``--work``):

* **memory**: peak RSS of a process that streams ``--steps`` batches, above its RSS before
  the dataset was opened, for a ``--small`` and a ``--large`` dataset (target: the two
  differ by < 50 MB), and the same for the in-memory path;
* **speed**: samples/s of training batches (random-resized crop + flip, ``--batch``),
  in-memory encoded vs streamed from local disk vs streamed from a local S3 endpoint
  (moto on 127.0.0.1), each in a fresh process, ``--rounds`` rounds interleaved, with the
  same decode workers (targets: local >= 0.9x, S3 >= 0.8x in-memory);
* **bytes**: image bytes read in one epoch by ``--world`` ranks (one store each) over the
  dataset's image bytes, without and with a resize mid-epoch (bound: 1 + world/window,
  plus one window per resize);
* **restart**: seconds from a fresh worker opening the dataset (index, carve) and resuming
  the stream mid-epoch to its first batch, local and S3 (target < 5 s; imports apart).

    python benchmarks/streaming.py --small 10000 --large 100000

Writes ``benchmarks/results/streaming.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import run_jobs, write_result
from elastic_nas.config import DataConfig

CLASSES = 10
KEY, SECRET, BUCKET = "bench", "bench-secret", "stream"


# -- datasets ----------------------------------------------------------------------------
def _write_images(root: str, start: int, stop: int, size: int) -> None:
    from PIL import Image

    for i in range(start, stop):
        rng = np.random.default_rng(i)
        # Smooth colour fields plus noise: JPEGs of a photo-like size for their resolution.
        base = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
        img = np.kron(base, np.ones((size // 4, size // 4, 1))) + rng.normal(0, 20, (size, size, 3))
        d = Path(root) / f"class{i % CLASSES}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"{i:07d}.jpg", quality=90)


def dataset(work: Path, n: int, size: int, procs: int) -> Path:
    """A converted folder of ``n`` JPEGs (cached)."""
    from elastic_nas.data.convert import convert
    from elastic_nas.data.layout import SUMMARY_FILE

    dst = work / f"parquet-{n}-{size}"
    if (dst / SUMMARY_FILE).exists():
        return dst
    src = work / f"jpeg-{n}-{size}"
    step = -(-n // (4 * procs))
    run_jobs(_write_images, [(str(src), a, min(n, a + step), size) for a in range(0, n, step)], procs)
    print(f"streaming: wrote {n} JPEGs, converting", flush=True)
    convert(src, dst, shard_size=2000, workers=procs, log=lambda m: None)
    return dst


def image_bytes(path: Path) -> int:
    """Bytes of the train shards' image column on disk."""
    import pyarrow.parquet as pq

    total = 0
    for shard in path.glob("train-*.parquet"):
        meta = pq.ParquetFile(shard).metadata
        col = meta.schema.names.index("image")
        total += sum(meta.row_group(g).column(col).total_compressed_size for g in range(meta.num_row_groups))
    return total


# -- one measurement per fresh process ---------------------------------------------------
def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(path: str, stream: bool, steps: int, batch: int, size: int, search_val: int) -> dict:
    """In a fresh process: open the dataset, then draw ``steps`` training batches in stream
    order (world 1). RSS, open time and samples/s."""
    import torch

    from elastic_nas.config import ElasticConfig, OptimConfig
    from elastic_nas.data import build_dataset
    from elastic_nas.train.state import TrainState
    from elastic_nas.train.task import TrainTask

    torch.set_num_threads(1)
    before = _rss_mib()
    t0 = time.perf_counter()
    data = build_dataset(DataConfig(source="parquet", path=path, stream=stream, search_val_size=search_val), size)
    train = data.train
    # The training state picks the data order and reads ahead, as in a worker (no model to train).
    state = TrainState(TrainTask(torch.nn.Linear(1, 1), None, train, {}), OptimConfig(), ElasticConfig(), 0)
    sampler = state.sampler
    opened = time.perf_counter() - t0
    t1 = time.perf_counter()
    first = None
    for step in range(steps):
        plan = sampler.plan(1, batch)
        train.get_batch(plan.indices(0), augment=True, rng=np.random.default_rng(step))
        state.read_ahead(0)
        sampler.advance(plan)
        if first is None:
            first = time.perf_counter() - t0
    seconds = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stream": stream, "open_s": round(opened, 3), "first_batch_s": round(first, 3),
            "samples_per_s": round(steps * batch / seconds, 1), "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak, 1), "rss_growth_mib": round(peak - before, 1)}


def epoch_bytes(path: str, world: int, window: int, batch: int, resize_to: int | None) -> dict:
    """Image bytes ``world`` ranks (one store each) read in one epoch, over the dataset's."""
    from elastic_nas.data import build_dataset
    from elastic_nas.elastic.stream import StreamSampler

    cfg = DataConfig(source="parquet", path=path, stream=True, stream_window=window, search_val_size=0)
    ranks = [build_dataset(cfg, 8).train for _ in range(max(world, resize_to or 0))]
    sampler = StreamSampler(ranks[0].store.groups[ranks[0].rows], 0, window)
    step, w = 0, world
    while sampler.epoch == 0:
        if resize_to is not None and step == 5:
            w = resize_to
        plan = sampler.plan(w, batch * w)
        for r in range(w):
            real = plan.indices(r)[plan.valid(r)]
            for row in ranks[r].rows[real]:  # the blob reads only: decoding does not change bytes
                store = ranks[r].store
                store._get(int(store.groups[row]))
            ranks[r].store.prefetch(ranks[r].rows[sampler.upcoming(r, 2 * ranks[r].store.group_rows)])
        sampler.advance(plan)
        step += 1
    read = sum(t.store.bytes_read for t in ranks)
    groups = np.unique(ranks[0].store.groups[ranks[0].rows])
    total = sum(ranks[0].store._read(int(g)).nbytes for g in groups)
    # Every row group once; per window, the world - 1 row groups cut between two ranks once more;
    # per resize, the (at most two) windows begun once more.
    windows = -(-len(groups) // window)
    bound = 1 + windows * (max(world, resize_to or 0) - 1) / len(groups) + (2 * window / len(groups) if resize_to else 0)
    return {"world": world, "resize_to": resize_to, "window": window, "row_groups": len(groups),
            "read_over_dataset": round(read / total, 3), "bound": round(bound, 3),
            "issue_bound": round(1 + world / window + (window / len(groups) if resize_to else 0), 3)}


class Moto:
    """moto's S3 server on 127.0.0.1, with the folder uploaded by boto3."""

    def __init__(self, folder: Path):
        import boto3

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.port}", region_name="us-east-1",
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        s3.create_bucket(Bucket=BUCKET)
        for f in folder.iterdir():
            s3.upload_file(str(f), BUCKET, f"data/{f.name}")
        self.uri = (f"s3://{KEY}:{SECRET}@{BUCKET}/data?endpoint_override=127.0.0.1:{self.port}"
                    "&scheme=http&region=us-east-1")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _spawn(fn, args):
    """``fn(*args)`` in a new spawned process (its own RSS, caches and imports)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=10000)
    ap.add_argument("--large", type=int, default=100000)
    ap.add_argument("--size", type=int, default=64, help="JPEG side in pixels")
    ap.add_argument("--input", type=int, default=64, help="training input size")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--procs", type=int, default=2, help="processes that make the datasets")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "elastic-nas" / "bench-stream"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    small, large = dataset(work, a.small, a.size, a.procs), dataset(work, a.large, a.size, a.procs)
    out = {"settings": {k: v for k, v in vars(a).items() if k != "work"}}

    # Memory: streamed small vs large (and in-memory for scale).
    memory = {}
    for name, path in (("small", small), ("large", large)):
        for stream in (True, False):
            r = _spawn(measure, (str(path), stream, a.steps, a.batch, a.input, 500))
            memory[f"{name}_{'stream' if stream else 'in_memory'}"] = r
            print(f"streaming: memory {name} stream={stream}: +{r['rss_growth_mib']:.0f} MiB", flush=True)
    memory["stream_growth_difference_mib"] = round(memory["large_stream"]["rss_growth_mib"]
                                                   - memory["small_stream"]["rss_growth_mib"], 1)
    out["memory"] = memory

    # Speed: in memory vs local stream vs S3 stream, interleaved rounds on the small dataset.
    moto = Moto(small)
    try:
        rounds = []
        for _ in range(a.rounds):
            row = {"in_memory": _spawn(measure, (str(small), False, a.steps, a.batch, a.input, 500)),
                   "local_stream": _spawn(measure, (str(small), True, a.steps, a.batch, a.input, 500)),
                   "s3_stream": _spawn(measure, (moto.uri, True, a.steps, a.batch, a.input, 500))}
            rounds.append(row)
            print("streaming: samples/s " + ", ".join(f"{k} {v['samples_per_s']}" for k, v in row.items()), flush=True)
        ratios = {k: [r[k]["samples_per_s"] / r["in_memory"]["samples_per_s"] for r in rounds]
                  for k in ("local_stream", "s3_stream")}
        out["speed"] = {"rounds": rounds, "ratio_to_in_memory": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
                        "ratio_median": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
                        "targets": {"local_stream": 0.9, "s3_stream": 0.8}}
        # Restart: a fresh worker on the large dataset, local, and on the small one through S3.
        out["restart"] = {"local_large_first_batch_s": _spawn(measure, (str(large), True, 1, a.batch, a.input, 500))[
            "first_batch_s"], "s3_small_first_batch_s": _spawn(measure, (moto.uri, True, 1, a.batch, a.input, 500))[
            "first_batch_s"], "target_s": 5.0}
    finally:
        moto.stop()

    out["bytes"] = [_spawn(epoch_bytes, (str(small), a.world, a.window, a.batch, None)),
                    _spawn(epoch_bytes, (str(small), a.world, a.window, a.batch, a.world - 1))]
    out["dataset"] = {"small_images": a.small, "large_images": a.large, "jpeg_side": a.size,
                      "small_image_mib": round(image_bytes(small) / 2 ** 20, 1),
                      "large_image_mib": round(image_bytes(large) / 2 ** 20, 1)}
    write_result("streaming", out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
