"""Typed job configs: dataclasses loaded from YAML with ``--set key.sub=value`` overrides.

Every check here runs before any work starts; a failure raises :class:`ConfigError`
naming the key, which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from elastic_nas.errors import ConfigError
from elastic_nas.io import is_uri, join

T = TypeVar("T")


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


@dataclass
class RunConfig:
    name: str = "supernet"  # run name; launching again with the same name resumes
    storage_path: str = "runs"  # local directory or a pyarrow URI (s3://bucket/prefix)
    seed: int = 0  # seeds archs, data order and init; same seed -> same run

    def validate(self, prefix: str) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"{prefix}.name", f"must be a non-empty name without '/', got {self.name!r}")


@dataclass
class DataConfig:
    source: Literal["synthetic", "cifar10", "imagefolder", "parquet"] = "synthetic"
    path: str = ""  # cifar10 root, imagefolder/parquet dir or URI; synthetic: cache dir ("" = default)
    seed: int = 0  # synthetic generation and the train/search_val split
    num_train: int = 50000  # synthetic only: train images generated (search_val is carved from them)
    num_test: int = 10000  # synthetic only: test images generated
    # synthetic only: standard (shape families) or hard (fine-grained outlines, smaller, more
    # clutter: architectures stay apart when trained out; benchmarks/RESULTS.md)
    difficulty: Literal["standard", "hard"] = "standard"
    search_val_size: int = 5000  # images held out from train for search (SPOS holds out 50k on ImageNet)
    augment: bool = True  # random crop + flip on the train split
    num_workers: int = 0  # decode processes per training worker for JPEG/PNG sources (0 = in-process)
    download: bool = True  # cifar10: fetch when the files are absent (off: fail fast offline)
    # parquet: stream row groups instead of loading the encoded dataset into every worker;
    # auto = stream when the train shards exceed 2 GiB
    stream: bool | Literal["auto"] = "auto"
    stream_window: int = 16  # row groups dealt to the ranks at once (reads <= (1 + world/window) x data per epoch)
    stream_cache_groups: int = 24  # row groups held in memory per worker (in use and prefetched)
    stream_threads: int = 4  # parallel row-group reads per worker

    def validate(self, prefix: str) -> None:
        _positive(self.num_train, f"{prefix}.num_train")
        _positive(self.num_test, f"{prefix}.num_test")
        _non_negative(self.search_val_size, f"{prefix}.search_val_size")
        _non_negative(self.num_workers, f"{prefix}.num_workers")
        for key in ("stream_window", "stream_cache_groups", "stream_threads"):
            _positive(getattr(self, key), f"{prefix}.{key}")
        if self.source in ("imagefolder", "parquet") and not self.path:
            raise ConfigError(f"{prefix}.path", f"source {self.source!r} needs a path")
        if self.source == "synthetic" and self.search_val_size >= self.num_train:
            raise ConfigError(
                f"{prefix}.search_val_size",
                f"must be smaller than num_train ({self.num_train}), got {self.search_val_size}",
            )


@dataclass
class SpaceConfig:
    name: Literal["spos", "cream"] = "spos"
    input_size: int = 32  # square input resolution
    num_classes: int = 10
    stem_stride: int = 1  # 2 in the published spaces; 1 keeps 32x32 inputs from vanishing
    width_mult: float = 1.0  # scales every width (SPOS/Cream published = 1.0)
    channel_search: bool = False  # SPOS block+channel variant: mid width scale per block
    # Cream: max blocks per choice stage; the default fits every published model (cream-604),
    # Cream's own supernet used [4, 4, 5, 4, 4]
    max_depths: list[int] = field(default_factory=lambda: [5, 5, 5, 6, 6])
    stage_repeats: list[int] = field(default_factory=list)  # SPOS: blocks per stage ([] = published 4, 4, 8, 4)
    # How a supernet stores its choices: independent weights per op (SPOS, Cream as published),
    # or entangled (Once-for-All/BigNAS): smaller kernels are the centre of the largest, smaller
    # expansions its leading channels, so every arch trains the same tensors
    weight_sharing: Literal["independent", "entangled"] = "independent"
    kernel_transform: bool = False  # cream + entangled: OFA's learned 7->5->3 kernel-transform matrices
    # cream + entangled: k = 5 and 3 add their own per-channel offset (zero at start) to the centre
    # they share, so a small kernel need not be every tap of the largest one's centre
    kernel_offsets: bool = False
    # cream + entangled: choice stages (0-4) whose k = 5 and 3 depthwise kernels are tensors of their
    # own, not the largest one's centre (the rest of each block stays entangled); a test of whether
    # the shared centre makes supernets prefer large early kernels (no better ranking: benchmarks/RESULTS.md)
    own_kernel_stages: list[int] = field(default_factory=list)

    def validate(self, prefix: str) -> None:
        _positive(self.input_size, f"{prefix}.input_size")
        _positive(self.num_classes, f"{prefix}.num_classes")
        if self.stem_stride not in (1, 2):
            raise ConfigError(f"{prefix}.stem_stride", f"must be 1 or 2, got {self.stem_stride}")
        if self.width_mult <= 0:
            raise ConfigError(f"{prefix}.width_mult", f"must be > 0, got {self.width_mult}")
        if len(self.max_depths) != 5 or any(d < 1 for d in self.max_depths):
            raise ConfigError(f"{prefix}.max_depths", f"must be 5 depths >= 1, got {self.max_depths}")
        if self.stage_repeats and (self.name != "spos" or len(self.stage_repeats) != 4
                                   or any(r < 1 for r in self.stage_repeats)):
            raise ConfigError(f"{prefix}.stage_repeats", f"spos only: 4 block counts >= 1, got {self.stage_repeats}")
        for key in ("kernel_transform", "kernel_offsets", "own_kernel_stages"):
            if getattr(self, key) and (self.name != "cream" or self.weight_sharing != "entangled"):
                raise ConfigError(f"{prefix}.{key}", "needs space.name: cream and weight_sharing: entangled")
        if self.own_kernel_stages:
            if self.kernel_transform or self.kernel_offsets:
                raise ConfigError(f"{prefix}.own_kernel_stages", "replaces the shared centre that kernel_transform "
                                  "and kernel_offsets adjust: use one of them")
            stages = self.own_kernel_stages
            if len(set(stages)) != len(stages) or not all(0 <= s < len(self.max_depths) for s in stages):
                raise ConfigError(f"{prefix}.own_kernel_stages",
                                  f"must be distinct choice stages 0-4, got {self.own_kernel_stages}")


@dataclass
class SamplingConfig:
    # SPOS: uniform over MACs bins; fair: FairNAS's strict fairness (every block takes every op once
    # per window of draws; the spos and sandwich strategies, over the whole space)
    method: Literal["uniform", "flops_bins", "fair"] = "uniform"
    flops_min: float = 0.0  # MACs lower bound for sampled archs, in millions (0 = none)
    flops_max: float = 0.0  # MACs upper bound, in millions (0 = none)
    num_bins: int = 7  # flops_bins: SPOS splits [290, 360] MFLOPs into 7 bins
    max_tries: int = 500  # rejection tries per bin before falling back to plain uniform (SPOS: 500)

    def validate(self, prefix: str) -> None:
        _non_negative(self.flops_min, f"{prefix}.flops_min")
        _non_negative(self.flops_max, f"{prefix}.flops_max")
        if self.flops_max and self.flops_min > self.flops_max:
            raise ConfigError(
                f"{prefix}.flops_min", f"flops_min ({self.flops_min}) > flops_max ({self.flops_max})"
            )
        _positive(self.num_bins, f"{prefix}.num_bins")
        _positive(self.max_tries, f"{prefix}.max_tries")
        if self.method == "fair" and (self.flops_min or self.flops_max):
            raise ConfigError(f"{prefix}.method", "fair draws over the whole space: drop flops_min/flops_max")


@dataclass
class OptimConfig:
    lr: float = 0.1  # LR at reference_batch; scaled linearly with the global batch
    reference_batch: int = 256  # global batch at which `lr` applies
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5  # not applied to 1-D params (BN, bias), as SPOS
    label_smoothing: float = 0.1
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # decay, written in samples seen
    warmup_epochs: float = 0.0  # linear warm-up, in epochs of samples
    epochs: float = 2.0  # training length in epochs of the train split
    grad_clip: float = 0.0  # max grad norm (0 = off)
    # fp32, or autocast to bf16 / fp16 (weights, BN statistics and checkpoints stay fp32;
    # fp16 adds dynamic loss scaling). bf16 is the GPU choice on Ampere and newer.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # NHWC weights and inputs: faster convolutions on GPUs, and in fp32 about 2x for the laptop Cream
    # supernet on the CPU measured (benchmarks/memory_format.py): the laptop configs set it
    channels_last: bool = False
    # Divergence guard: a step whose gradients are not finite is skipped (never reaches the
    # weights); after this many in a row the run goes back to its newest checkpoint with the
    # LR scaled by rollback_lr_scale (0 = skip only), at most max_rollbacks times, then fails.
    rollback_after_bad_steps: int = 3
    rollback_lr_scale: float = 0.5
    max_rollbacks: int = 5

    def validate(self, prefix: str) -> None:
        _positive(self.lr, f"{prefix}.lr")
        _non_negative(self.rollback_after_bad_steps, f"{prefix}.rollback_after_bad_steps")
        _non_negative(self.max_rollbacks, f"{prefix}.max_rollbacks")
        if not 0 < self.rollback_lr_scale <= 1:
            raise ConfigError(f"{prefix}.rollback_lr_scale", f"must be in (0, 1], got {self.rollback_lr_scale}")
        _positive(self.reference_batch, f"{prefix}.reference_batch")
        _positive(self.epochs, f"{prefix}.epochs")
        _non_negative(self.warmup_epochs, f"{prefix}.warmup_epochs")
        _non_negative(self.weight_decay, f"{prefix}.weight_decay")
        _non_negative(self.grad_clip, f"{prefix}.grad_clip")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{prefix}.momentum", f"must be in [0, 1), got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{prefix}.label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")


@dataclass
class ElasticConfig:
    min_workers: int = 1
    max_workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    batch_policy: Literal["scale", "fixed", "naive"] = "scale"  # scale = Dynamic mini-batch SGD; naive = no LR rescale (baseline)
    per_worker_batch: int = 64  # scale: fixed per-worker batch
    global_batch: int = 128  # fixed: constant global batch, split over the workers
    max_per_worker_batch: int = 256  # fixed: above this, accumulate gradients
    lr_ramp_steps: int = 8  # scale: LR moves to its new value over T*r steps (Lin et al.)
    max_failures: int = 10  # Ray's default of 0 ends the run on the first node loss
    checkpoint_every_steps: int = 50
    checkpoint_every_s: float = 60.0
    keep_checkpoints: int = 3
    preemption_poll_steps: int = 5  # every rank polls the preemption barrier this often
    preemption_margin_s: float = 5.0  # after a spot notice, stop stepping this long before the deadline
    report_every_steps: int = 10
    resize_monitor_interval_s: float = 1.0  # Train V2 elastic_resize_monitor_interval_s
    # Ray Train's own console lines (ray.train LoggingConfig). WARNING hides the per-report
    # and per-monitor-tick INFO lines, which would drown the progress lines; Ray still
    # writes every level to the session's train log files.
    train_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    sample_log_dir: str = ""  # audit: each rank logs the sample ids of every step ("" = off)
    grad_sync: Literal["ddp", "bucketed"] = "ddp"  # DDP(find_unused_parameters) measured faster
    node_watch: bool = True  # the node watcher: Ray sees node losses/joins at once (cluster/node_watch.py)
    # node_watch: on a join, checkpoint before Ray restarts the group, waiting at most this (0 = off)
    join_checkpoint_timeout_s: float = 10.0
    # node_watch: nodes joining within this many seconds of each other cost one restart (0 = off)
    join_settle_s: float = 2.5
    # node_watch: keep an idle, torch-imported worker process per worker slot on each node,
    # so a restart skips process start and imports (see cluster/warm_workers.py)
    warm_workers: bool = True
    # a new driver of this run cancels the resource requests a killed driver of it left with
    # Ray (they would hold its workers' resources for 180 s); see cluster/takeover.py
    release_dead_driver: bool = True

    @property
    def join_checkpoints(self) -> bool:
        """Whether the driver asks for a checkpoint before a join restarts the group."""
        return self.node_watch and self.join_checkpoint_timeout_s > 0

    def validate(self, prefix: str) -> None:
        _positive(self.min_workers, f"{prefix}.min_workers")
        if self.min_workers > self.max_workers:
            raise ConfigError(
                f"{prefix}.min_workers",
                f"min_workers ({self.min_workers}) > max_workers ({self.max_workers})",
            )
        for key in ("per_worker_batch", "global_batch", "max_per_worker_batch", "lr_ramp_steps",
                    "checkpoint_every_steps", "keep_checkpoints", "preemption_poll_steps",
                    "report_every_steps"):
            _positive(getattr(self, key), f"{prefix}.{key}")
        _non_negative(self.max_failures, f"{prefix}.max_failures")
        _non_negative(self.preemption_margin_s, f"{prefix}.preemption_margin_s")
        _positive(self.checkpoint_every_s, f"{prefix}.checkpoint_every_s")
        _positive(self.resize_monitor_interval_s, f"{prefix}.resize_monitor_interval_s")
        _non_negative(self.join_checkpoint_timeout_s, f"{prefix}.join_checkpoint_timeout_s")
        _non_negative(self.join_settle_s, f"{prefix}.join_settle_s")


CREAM_OP_PROBS = [0.05, 0.2, 0.05, 0.5, 0.05, 0.15]  # Cream's PRE_PROB over ops k3e4 k3e6 k5e4 k5e6 k7e4 k7e6


@dataclass
class CreamConfig:
    """``strategy: cream``: prioritized archs distil into the sampled arch (Peng et al., 2020)."""

    op_sampling: Literal["probs", "uniform"] = "probs"  # per-block op choice: weighted by op_probs, or uniform
    op_probs: list[float] = field(default_factory=lambda: list(CREAM_OP_PROBS))  # relative weight of op ids 0..5 (k3e4 k3e6 k5e4 k5e6 k7e4 k7e6), normalised
    board_size: int = 10  # prioritized archs kept (Cream's POOL_SIZE)
    warmup_epochs: float = 0.2  # no board, no distillation before this many epochs (Cream: 20 of 120)
    warmup_steps: int = 0  # ... and before this many steps (both must have passed)
    accuracy_gap: float = 5.0  # a full board takes an arch whose batch top-1 beats the worst entry by > this (points)
    slice_images: int = 4  # training images (and the entering arch's softmax on them) kept per entry (Cream's SLICE)
    meta_update_every: int = 200  # steps between meta matching network updates (Cream's UPDATE_ITER)
    meta_lr: float = 1e-3  # Adam LR of the meta matching network
    meta_val_split: Literal["search_val", "train"] = "search_val"  # held-out images of the look-ahead validation loss
    meta_val_images: int = 128  # class-balanced images of meta_val_split, the same for every update
    eval_images: int = 500  # board results: rescore each board arch on this many search_val images after BN recalibration (0 = keep batch top-1)
    budgets: list[float] = field(default_factory=lambda: [14.0, 43.0, 114.0, 287.0, 481.0, 604.0])  # MACs, millions: best board arch under each
    board_log_dir: str = ""  # audit: each rank appends its board digest per change/checkpoint ("" = off)

    def validate(self, prefix: str) -> None:
        if len(self.op_probs) != 6 or any(p < 0 for p in self.op_probs) or sum(self.op_probs) <= 0:
            raise ConfigError(f"{prefix}.op_probs", f"must be 6 weights >= 0 with a positive sum, got {self.op_probs}")
        for key in ("board_size", "slice_images", "meta_update_every", "meta_lr", "meta_val_images"):
            _positive(getattr(self, key), f"{prefix}.{key}")
        for key in ("warmup_epochs", "warmup_steps", "accuracy_gap", "eval_images"):
            _non_negative(getattr(self, key), f"{prefix}.{key}")
        if any(b <= 0 for b in self.budgets):
            raise ConfigError(f"{prefix}.budgets", f"every budget must be > 0 (millions of MACs), got {self.budgets}")

    def validate_job(self, job: SupernetConfig) -> None:
        """Checks against the rest of the job, when ``strategy: cream``."""
        if job.space.name != "cream":
            raise ConfigError("strategy", "strategy 'cream' needs space.name: cream")
        val = job.data.search_val_size
        if self.meta_val_split == "search_val" and self.meta_val_images > val:
            raise ConfigError("cream.meta_val_images", f"{self.meta_val_images} > data.search_val_size "
                              f"({val}); lower it or set cream.meta_val_split: train")
        if self.eval_images > val:
            raise ConfigError("cream.eval_images", f"{self.eval_images} > data.search_val_size ({val})")


@dataclass
class SandwichConfig:
    """``strategy: sandwich``: largest + smallest + random archs per step (BigNAS, US-Nets)."""

    num_random: int = 2  # random archs per step beside the largest and the smallest
    distill: bool = True  # in-place distillation: all but the largest learn the largest's soft predictions
    # MACs range of the random archs, in millions (0 = sampling's range): e.g. the search's band,
    # so the archs the search compares get the random paths' updates
    random_macs_min: float = 0.0
    random_macs_max: float = 0.0
    # the lower path: "min_macs" (the sandwich rule's smallest arch), "deepest" (the cheapest op in
    # every block at full depth, so the later blocks' small ops train every step too) or "deepest_wide"
    # (every block at full depth, its smallest kernel at the widest expansion: cream's k3e6, so the
    # small kernels train on every channel, not only the leading ones) or "deepest_alternate" (the
    # two on alternate steps)
    smallest: Literal["min_macs", "deepest", "deepest_wide", "deepest_alternate"] = "min_macs"
    # the teacher: "max_macs" (the sandwich rule's largest arch) or "random_kernels" (every block at
    # full depth and the widest expansion, each block's kernel drawn per step: the later blocks then
    # do not learn to expect one kernel's features, which the largest arch's every-step update favours)
    # "prioritized" (Cream's prioritized paths as the teacher): the random archs whose batch top-1 on
    # the labels is best enter a board (Cream's rule); once it is full, each step's teacher is one of
    # its archs, drawn per step (random_kernels' teacher until then); "small_kernels": full depth, the
    # widest expansion and the smallest kernel in every block (cream's k3e6; under progressive
    # shrinking k7e6 until the kernel opens, as every arch)
    largest: Literal["max_macs", "random_kernels", "small_kernels", "prioritized"] = "max_macs"
    board_size: int = 10  # prioritized: the archs the board keeps (Cream's POOL_SIZE)
    board_gap: float = 5.0  # prioritized: a full board takes an arch that beats its worst by > this (top-1 points)
    # prioritized: the MACs range (millions; 0 = the sampling range) an arch must lie in to enter the
    # board, e.g. the search's band, so the teacher is an arch the search competes with
    board_macs_min: float = 0.0
    board_macs_max: float = 0.0
    # Once-for-All's progressive shrinking: the shares of the run's samples after which the kernel,
    # the depth and the expansion become elastic, in that order, e.g. [0.2, 0.35, 0.5]; before a
    # dimension opens, every arch of the step has it at its largest (before the first, the step
    # trains the teacher alone). [] = every dimension elastic from the start (the sandwich rule)
    progressive: list[float] = field(default_factory=list)

    def validate(self, prefix: str) -> None:
        _non_negative(self.num_random, f"{prefix}.num_random")
        p = self.progressive
        if p and (len(p) != 3 or any(not 0 <= v < 1 for v in p) or list(p) != sorted(p)):
            raise ConfigError(f"{prefix}.progressive", f"three non-decreasing shares in [0, 1) (kernel, depth, "
                                                       f"expansion), got {p}")
        _positive(self.board_size, f"{prefix}.board_size")
        _non_negative(self.board_gap, f"{prefix}.board_gap")
        for kind in ("random", "board"):
            lo, hi = getattr(self, f"{kind}_macs_min"), getattr(self, f"{kind}_macs_max")
            _non_negative(lo, f"{prefix}.{kind}_macs_min")
            _non_negative(hi, f"{prefix}.{kind}_macs_max")
            if hi and lo > hi:
                raise ConfigError(f"{prefix}.{kind}_macs_min", f"{kind}_macs_min ({lo}) > {kind}_macs_max ({hi})")


@dataclass
class ProxylessConfig:
    """``strategy: proxyless``: architecture parameters learnt by binary gates (Cai et al., ICLR 2019)."""

    warmup_fraction: float = 0.33  # share of the training samples before alpha learns (ProxylessNAS: 40 of 120 epochs)
    update_every: int = 5  # weight steps per alpha step (ProxylessNAS's grad_update_arch_param_every)
    arch_lr: float = 1e-3  # Adam on alpha, betas (0, 0.999), eps 1e-8, no weight decay (ProxylessNAS)
    arch_batch: int = 64  # search_val images per alpha step (the global batch, split over the ranks)
    latency_table: str = ""  # a table from `elastic-nas latency build` (path inside the job's working dir); "" = no latency term
    target_ms: float = 0.0  # the latency target T of the loss, ms
    latency_loss: Literal["mul_log", "add_linear"] = "mul_log"  # CE * a * (log LAT / log T)^b, or CE + lambda (LAT - T) / T
    loss_alpha: float = 0.2  # a of mul_log (ProxylessNAS's grad_reg_loss_alpha)
    loss_beta: float = 0.3  # b of mul_log (grad_reg_loss_beta)
    loss_lambda: float = 0.1  # lambda of add_linear (grad_reg_loss_lambda)
    eval_images: int = 500  # results: the derived arch rescored on this many search_val images after BN recalibration
    alpha_log_dir: str = ""  # audit: each rank appends its alpha digest per alpha step and checkpoint load ("" = off)

    def validate(self, prefix: str) -> None:
        for key in ("update_every", "arch_lr", "arch_batch", "eval_images"):
            _positive(getattr(self, key), f"{prefix}.{key}")
        for key in ("warmup_fraction", "target_ms", "loss_alpha", "loss_beta", "loss_lambda"):
            _non_negative(getattr(self, key), f"{prefix}.{key}")
        if bool(self.latency_table) != bool(self.target_ms):
            raise ConfigError(f"{prefix}.target_ms", "set both latency_table and target_ms (or neither)")
        if self.latency_loss == "mul_log" and self.latency_table and self.target_ms <= 1.0:
            raise ConfigError(f"{prefix}.target_ms", f"mul_log divides by log(target_ms): it needs a target above "
                                                     f"1 ms, got {self.target_ms}; use latency_loss: add_linear")

    def validate_job(self, job: SupernetConfig) -> None:
        if job.space.name != "cream":
            raise ConfigError("strategy", "strategy 'proxyless' needs space.name: cream")
        val = job.data.search_val_size
        for key in ("arch_batch", "eval_images"):
            if getattr(self, key) > val:
                raise ConfigError(f"proxyless.{key}", f"{getattr(self, key)} > data.search_val_size ({val})")
        if job.sampling.method != "uniform" or job.sampling.flops_min or job.sampling.flops_max:
            raise ConfigError("sampling", "strategy 'proxyless' draws its paths from alpha, not from sampling; "
                                          "bound latency with proxyless.target_ms")
        if self.arch_batch < job.elastic.max_workers:
            raise ConfigError("proxyless.arch_batch", f"{self.arch_batch} < elastic.max_workers "
                                                      f"({job.elastic.max_workers}): every rank needs an image")


@dataclass
class LandmarksConfig:
    """Landmark regularisation (Yu et al., CVPR 2021): the supernet learns to order a few archs of
    known stand-alone accuracy as that accuracy does."""

    # a JSON file of landmark archs and their stand-alone scores (path inside the job's working dir):
    # {"landmarks": [{"arch": ..., "score": top-1}, ...]}; "" = no landmark term
    path: str = ""
    weight: float = 1.0  # the hinge's weight against the step's other losses
    every: int = 1  # steps between landmark pairs (each pair is 2 more forward and backward passes)

    def validate(self, prefix: str) -> None:
        _positive(self.weight, f"{prefix}.weight")
        _positive(self.every, f"{prefix}.every")


@dataclass
class SupernetConfig:
    """``elastic-nas supernet``: weight-sharing supernet training."""

    run: RunConfig = field(default_factory=RunConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    strategy: Literal["spos", "cream", "sandwich", "proxyless"] = "spos"
    cream: CreamConfig = field(default_factory=CreamConfig)  # strategy: cream only
    sandwich: SandwichConfig = field(default_factory=SandwichConfig)  # strategy: sandwich only
    proxyless: ProxylessConfig = field(default_factory=ProxylessConfig)  # strategy: proxyless only
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)  # strategies spos and sandwich

    def validate(self, prefix: str = "") -> None:
        if self.landmarks.path and self.strategy not in ("spos", "sandwich"):
            raise ConfigError("landmarks.path", f"landmarks are for the spos and sandwich strategies, not {self.strategy}")
        if self.sampling.method == "fair" and self.strategy not in ("spos", "sandwich"):
            raise ConfigError("sampling.method", f"fair is for the spos and sandwich strategies, not {self.strategy}")
        # The strategy's own section, where it has one, checks itself against the rest of the job.
        validate_job = getattr(getattr(self, self.strategy, None), "validate_job", None)
        if validate_job is not None:
            validate_job(self)


@dataclass
class EvolutionConfig:
    method: Literal["evolution", "random"] = "evolution"  # random = the baseline, same budget and constraints
    population: int = 50  # generation 0: random legal candidates (SPOS: 50)
    top_k: int = 10  # parents: the best k evaluated so far (SPOS: 10)
    mutation_children: int = 25  # per generation (SPOS: 25)
    crossover_children: int = 25  # per generation, uniform gene-wise (SPOS: 25)
    mutation_prob: float = 0.1  # per-gene resample probability (SPOS: 0.1)
    generations: int = 20  # rounds after the population: budget = population + generations * children
    macs_min: float = 0.0  # MACs lower bound, in millions (0 = none)
    macs_max: float = 0.0  # MACs upper bound, in millions (0 = none; SPOS: 330)
    params_min: float = 0.0  # parameter lower bound, in millions (0 = none)
    params_max: float = 0.0  # parameter upper bound, in millions (0 = none)
    latency_min_ms: float = 0.0  # predicted latency bounds, ms (0 = none); they need search.latency_table
    latency_max_ms: float = 0.0
    max_tries: int = 500  # draws per child before falling back to a random legal candidate
    # idle evaluators at a generation barrier start the next generation, withdrawn if a last
    # candidate turns out a parent: the same search, without the wait (searcher.py). Off: on 2
    # evaluators it measured no faster (benchmarks/early_start.py; evolution withdrew 1-3 a search)
    early_start: bool = False

    def validate(self, prefix: str) -> None:
        for key in ("population", "top_k", "max_tries"):
            _positive(getattr(self, key), f"{prefix}.{key}")
        for key in ("mutation_children", "crossover_children", "generations",
                    "macs_min", "macs_max", "params_min", "params_max", "latency_min_ms", "latency_max_ms"):
            _non_negative(getattr(self, key), f"{prefix}.{key}")
        if not 0 < self.mutation_prob <= 1:
            raise ConfigError(f"{prefix}.mutation_prob", f"must be in (0, 1], got {self.mutation_prob}")
        for lo, hi in (("macs_min", "macs_max"), ("params_min", "params_max"), ("latency_min_ms", "latency_max_ms")):
            if getattr(self, hi) and getattr(self, lo) > getattr(self, hi):
                raise ConfigError(f"{prefix}.{lo}", f"{lo} ({getattr(self, lo)}) > {hi} ({getattr(self, hi)})")


@dataclass
class EvaluatorConfig:
    calib_images: int = 2000  # train images for exact BN recalibration, the same for every candidate (OFA: 2000)
    val_images: int = 2000  # class-balanced search_val images scored, the same for every candidate
    batch_size: int = 200  # images per forward pass (calibration and validation)
    cpus_per_trial: float = 1.0  # CPUs per evaluator slot
    gpus_per_trial: float = 0.0  # GPUs per evaluator slot; fractions share a GPU (0.5 = two per GPU)
    max_failures: int = 3  # retries of a trial whose evaluator died (Tune FailureConfig); it redoes its batch
    # candidates a Tune trial evaluates: Tune's per-trial bookkeeping is paid once per batch.
    # 0 = enough for a trial of about 10 s, from the first evaluation times the evaluators report
    # (one candidate per slot until then; on GPUs a generation's share per slot); 1 = one per trial
    candidates_per_trial: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast of recalibration and scoring (statistics stay fp32)
    channels_last: bool = False  # NHWC supernet and images
    # what orders the candidates: top-1 on the validation images, or their cross-entropy (lower
    # first), which ranks subnets closer to stand-alone training (benchmarks/ranking.py --score-images)
    score: Literal["top1", "loss"] = "top1"

    def validate(self, prefix: str) -> None:
        for key in ("calib_images", "val_images", "batch_size", "cpus_per_trial"):
            _positive(getattr(self, key), f"{prefix}.{key}")
        _non_negative(self.gpus_per_trial, f"{prefix}.gpus_per_trial")
        _non_negative(self.max_failures, f"{prefix}.max_failures")
        _non_negative(self.candidates_per_trial, f"{prefix}.candidates_per_trial")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ConfigError(f"{prefix}.gpus_per_trial", f"above 1 must be whole, got {self.gpus_per_trial}")


@dataclass
class SearchConfig:
    """``elastic-nas search``: evolutionary (or random) search over a trained supernet on Ray Tune."""

    run: RunConfig = field(default_factory=lambda: RunConfig(name="search"))
    snapshot: str = "runs/supernet"  # supernet run dir (newest valid checkpoint) or checkpoint dir; local or URI
    space: SpaceConfig | None = None  # optional; must equal the snapshot's space (which is always used)
    data: DataConfig = field(default_factory=DataConfig)  # must match the supernet's source and seed
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    budgets: list[float] = field(default_factory=lambda: [14.0, 43.0, 114.0, 287.0, 481.0, 604.0])  # MACs, millions: best arch under each
    # a table from `elastic-nas latency build` (local path): every candidate's predicted latency
    # is recorded, and evolution.latency_min_ms / latency_max_ms bound it
    latency_table: str = ""

    def validate(self, prefix: str = "") -> None:
        if not self.snapshot:
            raise ConfigError("snapshot", "must name a supernet run or checkpoint directory")
        if (self.evolution.latency_min_ms or self.evolution.latency_max_ms) and not self.latency_table:
            raise ConfigError("evolution.latency_max_ms", "latency bounds need latency_table (elastic-nas latency build)")
        if any(b <= 0 for b in self.budgets):
            raise ConfigError("budgets", f"every budget must be > 0 (millions of MACs), got {self.budgets}")
        if self.evaluator.val_images > self.data.search_val_size:
            raise ConfigError(f"{prefix}.evaluator.val_images".lstrip("."), f"{self.evaluator.val_images} > "
                              f"data.search_val_size ({self.data.search_val_size}), the images it scores on")


@dataclass
class ArchSelectConfig:
    """Where retraining takes its architecture from: exactly one of ``search`` / ``value``."""

    search: str = ""  # a search output dir (chosen_arch.json, best_per_budget.json)
    budget: float = 0.0  # MACs budget in millions to pick from the search (Cream's MODEL_SELECTION); 0 = chosen
    value: str | list[Any] = ""  # explicit arch (SPOS list, Cream INPUT_ARCH), or a published name (spos-323m, cream-14 ...)

    def validate(self, prefix: str) -> None:
        if bool(self.search) == bool(self.value):
            raise ConfigError(prefix, "set exactly one of arch.search (a search output) or arch.value "
                                      "(an arch JSON or a published name)")
        _non_negative(self.budget, f"{prefix}.budget")


@dataclass
class RetrainConfig:
    """``elastic-nas retrain``: train the chosen subnet from scratch on the elastic trainer."""

    run: RunConfig = field(default_factory=lambda: RunConfig(name="retrain"))
    arch: ArchSelectConfig = field(default_factory=ArchSelectConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)  # for arch.value; a search result carries its own
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    eval_batch: int = 256  # batch for the final test-split evaluation

    def validate(self, prefix: str = "") -> None:
        _positive(self.eval_batch, f"{prefix}.eval_batch".lstrip("."))


@dataclass
class ScaleGridConfig:
    """``elastic-nas scale --grid``: EfficientNet's step 1, a grid over (alpha, beta) at phi = 1
    with gamma fitted so each step of phi multiplies the base's MACs by ``flops_factor`` (the
    cost model's MACs; EfficientNet's ``alpha * beta^2 * gamma^2`` approximates them); each point
    a short stand-alone training of the scaled base net, scored on search_val, as parallel Tune
    trials."""

    alphas: list[float] = field(default_factory=lambda: [1.1, 1.2, 1.3])
    betas: list[float] = field(default_factory=lambda: [1.0, 1.1, 1.2])
    flops_factor: float = 2.0
    steps: int = 400  # SGD steps per point (batch below, cosine LR)
    batch: int = 64
    lr: float = 0.1
    val_images: int = 1000  # class-balanced search_val images scoring each point
    cpus_per_trial: float = 1.0

    def validate(self, prefix: str) -> None:
        if not self.alphas or not self.betas or min(self.alphas + self.betas) < 1:
            raise ConfigError(f"{prefix}.alphas", "alphas and betas must be non-empty lists of numbers >= 1")
        for key in ("flops_factor", "steps", "batch", "lr", "val_images", "cpus_per_trial"):
            _positive(getattr(self, key), f"{prefix}.{key}")
        if self.flops_factor <= 1:
            raise ConfigError(f"{prefix}.flops_factor", f"must be > 1 (the MACs growth per phi), got {self.flops_factor}")


@dataclass
class ScaleConfig:
    """``elastic-nas scale``: EfficientNet's compound scaling of a found architecture."""

    run: RunConfig = field(default_factory=lambda: RunConfig(name="scale"))  # outputs: <storage_path>/<name>/
    arch: ArchSelectConfig = field(default_factory=ArchSelectConfig)  # the base arch, as retrain selects it
    space: SpaceConfig = field(default_factory=SpaceConfig)  # for arch.value; a search result carries its own
    phi_max: int = 3  # the family: phi = 0..phi_max
    alpha: float = 1.2  # depth per step of phi (EfficientNet's)
    beta: float = 1.1  # width
    gamma: float = 1.15  # resolution
    fit_gamma: bool = False  # true: gamma from the cost model so each phi doubles the MACs (grid.flops_factor)
    retrain: str = "retrain"  # the job config each member's retrain config starts from
    data: DataConfig = field(default_factory=DataConfig)  # --grid: the points' training data
    grid: ScaleGridConfig = field(default_factory=ScaleGridConfig)

    def validate(self, prefix: str = "") -> None:
        _non_negative(self.phi_max, "phi_max")
        for key in ("alpha", "beta", "gamma"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"must be >= 1, got {getattr(self, key)}")


@dataclass
class TestConfig:
    """``elastic-nas test``: evaluate a retrained checkpoint on the test split and export it."""

    __test__ = False  # a config, not a test class, to pytest's collector
    checkpoint: str = "runs/retrain"  # a retrain run dir (newest valid checkpoint) or one checkpoint dir
    batch_size: int = 256
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # of the test evaluation; the export is fp32
    channels_last: bool = False
    export: Literal["torch.export", "torchscript", "none"] = "torch.export"
    output: str = ""  # export dir ("" = <checkpoint's run dir>/export)

    def validate(self, prefix: str = "") -> None:
        _positive(self.batch_size, f"{prefix}.batch_size".lstrip("."))
        if self.output and not is_uri(self.output) and Path(self.output).expanduser().is_file():
            raise ConfigError(f"{prefix}.output".lstrip("."), f"{self.output} is a file; the export needs a folder")


@dataclass
class PipelineConfig:
    """``elastic-nas pipeline``: supernet -> search -> retrain -> test, outputs wired together.

    ``storage_path``, ``name`` and ``data`` are shared: step runs are ``<name>-supernet``,
    ``<name>-search`` and ``<name>-retrain`` under ``storage_path``; the steps' own
    ``run.name``/``storage_path``, ``data``, ``snapshot``, ``arch.search`` and ``checkpoint``
    are set from them.
    """

    storage_path: str = "runs"
    name: str = "pipeline"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def __post_init__(self) -> None:
        self.wire()  # before validation: the steps' links are not the user's to set

    def wire(self) -> PipelineConfig:
        for step in ("supernet", "search", "retrain"):
            section = getattr(self, step)
            section.run = RunConfig(name=f"{self.name}-{step}", storage_path=self.storage_path, seed=self.seed)
            section.data = self.data
        self.search.snapshot = join(self.storage_path, f"{self.name}-supernet")
        self.retrain.arch = ArchSelectConfig(search=join(self.storage_path, f"{self.name}-search"),
                                             budget=self.retrain.arch.budget)
        self.test.checkpoint = join(self.storage_path, f"{self.name}-retrain")
        return self

    def validate(self, prefix: str = "") -> None:
        RunConfig(name=self.name, storage_path=self.storage_path).validate("name")


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "jobs"  # the job configs that come with the package


def shipped_configs() -> dict[str, Path]:
    """Name -> path of every job config shipped with the package."""
    return {p.stem: p for p in sorted(SHIPPED_CONFIGS.glob("*.yaml"))}


def find_config(name_or_path: str | Path) -> Path:
    """A YAML file at ``name_or_path``, else the shipped config of that name: ``supernet``,
    ``supernet.yaml`` or ``jobs/supernet.yaml`` all find the shipped one from any directory."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    if str(p.parent) in (".", "jobs") and p.stem in shipped and p.suffix in ("", ".yaml"):
        return shipped[p.stem]
    if p.is_dir():
        raise ConfigError("--config", f"{p} is a folder; give a YAML file or a shipped config's name")
    raise ConfigError("--config", f"no such file: {p} (shipped configs, by name: {', '.join(shipped)})")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a YAML file (or a shipped config's name) plus ``key.sub=value``
    overrides, fully validated."""
    raw = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        _apply_override(raw, item)
    cfg = from_dict(cls, raw)
    validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A job config's YAML as a mapping (a file, or a shipped config's name), one line if it is not."""
    p = find_config(path)
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{p} is not a text file (not UTF-8)") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError("--config", f"{p} must hold a mapping at top level")
    return loaded or {}


def from_dict(cls: type[T], raw: dict[str, Any], prefix: str = "") -> T:
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(full, f"unknown key (valid: {', '.join(fields)}){hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def validate(cfg: Any, prefix: str = "") -> None:
    """Run each section's ``validate`` (children first), naming keys by their dotted path."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")
    if hasattr(cfg, "validate"):
        cfg.validate(prefix.rstrip("."))


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError("--set", f"expected key.sub=value, got {item!r}")
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"{part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, f"{key}.")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(key, f"expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(key, f"expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config field {key} has unsupported type {tp}")  # programming error


def _positive(value: float, key: str) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be > 0, got {value}")


def _non_negative(value: float, key: str) -> None:
    if value < 0:
        raise ConfigError(key, f"must be >= 0, got {value}")


__all__ = [
    "CreamConfig",
    "DataConfig",
    "ElasticConfig",
    "EvaluatorConfig",
    "EvolutionConfig",
    "OptimConfig",
    "RunConfig",
    "SamplingConfig",
    "LandmarksConfig",
    "SandwichConfig",
    "SearchConfig",
    "SpaceConfig",
    "SupernetConfig",
    "ArchSelectConfig",
    "RetrainConfig",
    "ScaleConfig",
    "ScaleGridConfig",
    "TestConfig",
    "PipelineConfig",
    "find_config",
    "from_dict",
    "load_config",
    "shipped_configs",
    "to_dict",
    "validate",
]
