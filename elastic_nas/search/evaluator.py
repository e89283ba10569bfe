"""Scoring one candidate on a supernet snapshot, and the Tune trainable that does it.

The supernet snapshot (a state_dict of NumPy arrays) and the fixed calibration and
validation images enter the object store once, through ``tune.with_parameters``;
NumPy arrays come back as zero-copy read-only views in every evaluator process. Each
process builds the supernet once per snapshot id and keeps it in a module-level cache,
which survives across trials in a reused actor (``reuse_actors=True``) and across
actors that land in a reused worker process.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.allocator import keep_freed_memory
from elastic_nas.spaces.bn import recalibrate_bn
from elastic_nas.spaces.precision import Precision


@dataclass
class EvalData:
    """The fixed images every candidate sees: calibration (train split) and validation (search_val)."""

    calib_x: np.ndarray  # [N, 3, H, W] float32, normalised
    val_x: np.ndarray  # [M, 3, H, W] float32, normalised
    val_y: np.ndarray  # [M] int64
    batch_size: int
    precision: str = "fp32"  # autocast of recalibration and scoring (BN statistics stay fp32)
    channels_last: bool = False


@dataclass
class Snapshot:
    """A supernet's weights as NumPy arrays, with what is needed to rebuild it."""

    snapshot_id: str  # identifies the weights (checkpoint path + sha256): the cache key
    space: dict  # SpaceConfig as a dict
    state: dict[str, np.ndarray]


SCORED = "scored"  # an evaluator's report: its batch's results, one per candidate
# snapshot id -> (space, supernet); ``BUILDS`` counts constructions in this process (the benchmark reads it).
_SUPERNETS: dict[str, tuple[Any, torch.nn.Module]] = {}
BUILDS: list[str] = []


def eval_data(splits, calib_images: int, val_images: int, seed: int, batch_size: int = 200,
              precision: str = "fp32", channels_last: bool = False) -> EvalData:
    """The fixed images of a search: ``calib_images`` train images for BN recalibration and
    ``val_images`` class-balanced search_val images, the same for every candidate."""
    from elastic_nas.data import class_balanced_subset

    calib = class_balanced_subset(splits.train, calib_images, seed)
    val = class_balanced_subset(splits.search_val, val_images, seed)
    calib_x, _, _ = calib.get_batch(np.arange(len(calib)))
    val_x, val_y, _ = val.get_batch(np.arange(len(val)))
    return EvalData(calib_x.numpy(), val_x.numpy(), val_y.numpy(), batch_size, precision, channels_last)


def get_supernet(snapshot: Snapshot, device: torch.device | str = "cpu",
                 channels_last: bool = False) -> tuple[Any, torch.nn.Module]:
    """``(space, supernet)`` for ``snapshot``, built at most once per process, device and layout."""
    key = f"{snapshot.snapshot_id}@{device}/{channels_last}"
    cached = _SUPERNETS.get(key)
    if cached is None:
        from elastic_nas.config import SpaceConfig, from_dict
        from elastic_nas.spaces import build_space

        space = build_space(from_dict(SpaceConfig, snapshot.space))
        model = space.build_supernet()
        with warnings.catch_warnings():
            # Views on the read-only object-store buffer; load_state_dict copies them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            model.load_state_dict({k: torch.from_numpy(v) for k, v in snapshot.state.items()})
        Precision(channels_last=channels_last).model(model.to(device)).eval()
        _SUPERNETS.clear()  # one snapshot per process: a new one replaces the old
        cached = _SUPERNETS[key] = (space, model)
        BUILDS.append(snapshot.snapshot_id)
    return cached


def _batches(x: np.ndarray, batch_size: int, device, prec: Precision) -> Iterator[torch.Tensor]:
    """``x`` in batches on ``device`` in the model's layout, one at a time: views on the object
    store's read-only buffer, not copies (the model only reads its input)."""
    for i in range(0, len(x), batch_size):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            batch = torch.from_numpy(x[i:i + batch_size])
        yield prec.input(batch.to(device))


@torch.no_grad()
def evaluate_arch(model: torch.nn.Module, arch: Any, data: EvalData, device="cpu") -> dict[str, float]:
    """Exact BN recalibration on the calibration images, then top-1 (%) and loss on validation,
    in ``data``'s precision (the model is in its memory format already: ``get_supernet``)."""
    prec = Precision(data.precision, data.channels_last, device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with prec.autocast():
            return model(x, arch).float()

    recalibrate_bn(model, forward, _batches(data.calib_x, data.batch_size, device, prec))
    model.eval()
    correct, loss_sum = 0, 0.0
    for x, y in zip(_batches(data.val_x, data.batch_size, device, prec),
                    _batches(data.val_y, data.batch_size, device, prec)):  # labels: 1-D, no layout
        logits = forward(x)
        # summed on the device, read once: each read waits for the GPU
        loss_sum = loss_sum + F.cross_entropy(logits, y, reduction="sum").double()
        correct = correct + (logits.argmax(1) == y).sum()
    n = len(data.val_x)
    return {"accuracy": 100.0 * int(correct) / n, "loss": float(loss_sum) / n}


def score_batch(candidates: list[dict], snapshot: Snapshot, data: EvalData, device: str = "cpu"):
    """The Ray-free core of one evaluator trial: yields each candidate's result as it is scored
    (the supernet of ``snapshot`` built at most once per process, then BN recalibrated and
    scored per arch). A GPU check times it without Ray (``benchmarks/gpu_check.py``)."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, int(os.environ.get("ELASTIC_NAS_EVAL_THREADS", "1"))))
    keep_freed_memory()  # activations reused, not faulted in again for every candidate
    space, model = get_supernet(snapshot, device, data.channels_last)
    setup_s = time.perf_counter() - t0
    for index, cand in enumerate(candidates):
        t1 = time.perf_counter()
        metrics = evaluate_arch(model, space.validate(cand["arch"]), data, device)
        yield dict(
            metrics, arch=cand["arch"], macs=int(cand["macs"]), params=int(cand["params"]),
            latency_ms=float(cand.get("latency_ms", 0.0)), generation=int(cand["generation"]), index=index,
            eval_s=time.perf_counter() - t1, ended_at=time.time(),  # wall clock: a timeline across evaluators
            setup_s=setup_s if index == 0 else 0.0, pid=os.getpid(), builds_in_process=len(BUILDS))


def evaluate_candidate(config: dict, snapshot: Snapshot, data: EvalData) -> None:
    """Tune function trainable: score each candidate of ``config["candidates"]`` (a batch),
    then report the batch once (``SCORED``: one result per candidate, in order). A hold trial
    (:mod:`~elastic_nas.search.barrier`) only waits out the generation barrier and reports no candidate."""
    import ray.tune

    from elastic_nas.search import barrier

    if barrier.HOLD in config:
        barrier.wait_out(config)
        # no candidate in it, but Tune checks every trial's last result for the searcher's metric
        ray.tune.report({"accuracy": math.nan, "loss": math.nan, SCORED: []})
        return
    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    scored = []
    try:
        scored.extend(score_batch(config["candidates"], snapshot, data, device))
    finally:
        # one report per batch: each tune.report waits for the driver's next call, a round trip
        # that per candidate cost ~1 % of a search's slot time (benchmarks/search_speed.py). After a
        # failure it keeps the scores before it: the trial is retried, and may fail again.
        if scored:
            # (the batch's best of both scores: Tune checks that the searcher's metric is reported)
            ray.tune.report({"accuracy": max(c["accuracy"] for c in scored), "loss": min(c["loss"] for c in scored),
                             SCORED: scored})


def candidate_results(result: dict | None) -> list[dict]:
    """The per-candidate results in one of an evaluator's Tune results (a search started
    before batches were reported whole has one candidate per result)."""
    result = result or {}
    return result.get(SCORED) or ([result] if "arch" in result else [])


__all__ = ["BUILDS", "SCORED", "EvalData", "Snapshot", "candidate_results", "eval_data", "evaluate_arch",
           "evaluate_candidate", "get_supernet", "score_batch"]
