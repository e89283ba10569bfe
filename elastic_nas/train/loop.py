"""The per-worker elastic training loop, run by Ray Train V2 on every worker.

It trains a supernet (one path per step) or a standalone subnet (the same "path" every
step) with synchronous data-parallel SGD. Ray restarts the worker group on every resize
or failure; the loop then resumes from the latest checkpoint at the new world size:

* data: the :class:`ElasticSampler` cursor continues mid-epoch, so no sample of the
  epoch is skipped or repeated (steps after the last checkpoint are redone as a whole);
* LR/batch: :class:`ElasticLRPolicy` rescales the global batch and ramps the LR;
* paths: the path of step t depends only on (seed, t), never on the world size.

Order, as in Ray's examples: 1. build, 2. resume, 3. loop, 4. report/checkpoint.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.elastic.checkpoint import (
    checkpoint_dir_name,
    list_checkpoints,
    load_latest_valid,
    partial_checkpoints,
    write_checkpoint,
)
from elastic_nas.elastic.policy import ElasticLRPolicy
from elastic_nas.elastic.sampler import ElasticSampler
from elastic_nas.train import distributed as D
from elastic_nas.train.resize_watch import JoinCheckpoint
from elastic_nas.train.warm_workers import publish_worker_env

# BN running stats stay per rank while training (the search recalibrates them), so DDP must
# not broadcast buffers at each forward; newer torch renamed the flag and warns on the old one.
_NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


@dataclass
class TrainTask:
    """What the loop trains; built on every worker by a picklable factory.

    ``path(step)`` gives the architecture of a step (a supernet samples one from
    (seed, step); a subnet returns None). ``grad_params(arch)`` are the parameters whose
    gradients are all-reduced: for a supernet, only those on the path.
    """

    model: torch.nn.Module
    forward: Callable[[torch.Tensor, Any], torch.Tensor]
    path: Callable[[int], Any]
    grad_params: Callable[[Any], list[torch.nn.Parameter]]
    train_split: Any  # elastic_nas.data.Split
    fingerprint: dict[str, Any]  # checkpoints from runs with another fingerprint are refused
    kind: str = "supernet"
    # Strategy hooks (Cream): a per-sample loss in place of cross-entropy, and a call on
    # every rank after each optimizer step (it may run collectives: all ranks call it).
    # criterion(forward, x, y, arch, step) -> (per-sample loss, logits); ``forward`` is the
    # gradient-synchronising forward (DDP-wrapped when distributed), use it for the student.
    criterion: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    after_step: Callable[[int, Any, dict], None] | None = None
    extra_state: Callable[[], dict] | None = None  # e.g. Cream's board, saved in checkpoints
    load_extra_state: Callable[[dict], None] | None = None


@dataclass
class LoopSettings:
    """The parts of a job config the loop needs, as plain values (picklable, testable)."""

    seed: int
    epochs: float
    lr: float
    reference_batch: int
    momentum: float
    nesterov: bool
    weight_decay: float
    label_smoothing: float
    schedule: str
    warmup_epochs: float
    grad_clip: float
    batch_policy: str
    per_worker_batch: int
    global_batch: int
    max_per_worker_batch: int
    lr_ramp_steps: int
    checkpoint_every_steps: int
    checkpoint_every_s: float
    preemption_poll_steps: int
    report_every_steps: int
    augment: bool = True
    sample_log_dir: str = ""  # audit: every rank appends the sample ids it trained on
    tensorboard_dir: str = ""
    preemption_margin_s: float = 5.0  # stop stepping this long before a spot deadline
    grad_sync: str = "ddp"  # ddp (find_unused_parameters) | bucketed (path params only)
    join_checkpoint: bool = False  # answer the node watcher's checkpoint requests before a scale-up
    train_log_level: str = "WARNING"  # Ray Train's console lines (elastic.train_log_level)

    @classmethod
    def from_config(cls, cfg: Any, tensorboard_dir: str = "") -> "LoopSettings":
        """From a job config with ``run``, ``optim``, ``elastic`` and ``data`` sections."""
        o, e = cfg.optim, cfg.elastic
        return cls(
            seed=cfg.run.seed, epochs=o.epochs, lr=o.lr, reference_batch=o.reference_batch,
            momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay,
            label_smoothing=o.label_smoothing, schedule=o.schedule, warmup_epochs=o.warmup_epochs,
            grad_clip=o.grad_clip, batch_policy=e.batch_policy, per_worker_batch=e.per_worker_batch,
            global_batch=e.global_batch, max_per_worker_batch=e.max_per_worker_batch,
            lr_ramp_steps=e.lr_ramp_steps, checkpoint_every_steps=e.checkpoint_every_steps,
            checkpoint_every_s=e.checkpoint_every_s, preemption_poll_steps=e.preemption_poll_steps,
            report_every_steps=e.report_every_steps, augment=cfg.data.augment,
            sample_log_dir=e.sample_log_dir, tensorboard_dir=tensorboard_dir, grad_sync=e.grad_sync,
            join_checkpoint=e.node_watch and e.join_checkpoint_timeout_s > 0,
            train_log_level=e.train_log_level,
        )


def make_optimizer(model: torch.nn.Module, s: LoopSettings) -> torch.optim.SGD:
    """SGD with weight decay on weights only, as SPOS: BN and biases (1-D) get none.

    Parameters without a gradient (unsampled choices; grads are set to None, not zero)
    are skipped by SGD entirely, so they see no momentum and no weight decay.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov and s.momentum > 0)


def _remove_partial_checkpoints(fs, listed: list[str], loaded_path: str) -> None:
    """Delete older checkpoint directories whose copy into storage a kill cut short."""
    try:
        for path in partial_checkpoints(fs, listed, loaded_path):
            fs.delete_dir(path)
            print(f"elastic-nas: removed {path}: its copy into storage never finished", flush=True)
    except Exception as e:  # storage trouble must not stop training; the directories stay
        print(f"elastic-nas: could not clean up partial checkpoints: {e}", file=sys.stderr, flush=True)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist()}


class _Reporter:
    """Accumulates per-step metrics between reports and writes TensorBoard on rank 0."""

    def __init__(self, rank: int, tb_dir: str):
        self.rank = rank
        self.loss_sum = 0.0
        self.correct = 0.0
        self.count = 0.0
        self.t0 = time.perf_counter()
        self.samples = 0
        self.writer = None
        if rank == 0 and tb_dir:
            try:
                # tensorboardX comes with ray[train]; torch's own writer would need `tensorboard`.
                from tensorboardX import SummaryWriter

                self.writer = SummaryWriter(tb_dir)
            except ImportError:  # keep training without TensorBoard logs
                print("elastic-nas: tensorboardX not installed; no TensorBoard logs", file=sys.stderr)

    def add(self, loss_sum: float, correct: float, count: float, global_samples: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.count += count
        self.samples += global_samples

    def flush(self, device: torch.device) -> tuple[float, float, float]:
        loss_sum, correct, count = D.allreduce_sum([self.loss_sum, self.correct, self.count], device)
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.samples / dt
        self.loss_sum = self.correct = self.count = 0.0
        self.samples = 0
        self.t0 = time.perf_counter()
        return loss_sum / max(count, 1.0), correct / max(count, 1.0), rate


def train_loop(task: TrainTask, s: LoopSettings, t_enter: float | None = None) -> None:
    """``t_enter``: when the worker function was entered (task building is timed from it)."""
    import psutil
    import ray.train

    t_loop = time.time()
    t_enter = t_enter or t_loop

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    _quiet_report_lines(s.train_log_level)

    # 1. Build: model, optimizer, sampler, LR policy.
    model = task.model.to(device)
    optimizer = make_optimizer(model, s)
    train_split = task.train_split
    sampler = ElasticSampler(len(train_split), seed=s.seed)
    total_samples = s.epochs * len(train_split)
    policy = ElasticLRPolicy(
        s.batch_policy, s.lr, s.reference_batch, s.per_worker_batch, s.global_batch,
        s.max_per_worker_batch, s.lr_ramp_steps, s.schedule, total_samples,
        s.warmup_epochs * len(train_split),
    )
    step, samples_seen = 0, 0
    history: list[dict] = []

    # 2. Resume from the latest good checkpoint (falling back past corrupt ones).
    storage = ctx.get_storage()
    fs, run_path = storage.storage_filesystem, storage.experiment_fs_path
    # Ray's latest registered checkpoint, plus any newer complete one whose registration
    # a hard kill cut short: every candidate is checksummed, so newest-first is safe.
    t_resume = time.time()
    latest = ray.train.get_checkpoint()
    candidates = [p for *_, p in list_checkpoints(fs, run_path)]
    if latest is not None and latest.path not in candidates:
        candidates.insert(0, latest.path)
    loaded = load_latest_valid(candidates, task.fingerprint, fs) if candidates else None
    if loaded is not None:
        st = loaded.state
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        sampler.load_state_dict(st["sampler"])
        policy.load_state_dict(st["policy"])
        step, samples_seen = int(st["step"]), int(st["samples_seen"])
        history = list(st["history"])
        torch.set_rng_state(st["rng"]["torch"])
        if task.load_extra_state and "extra" in st:
            task.load_extra_state(st["extra"])
    else:
        D.broadcast_params(model)  # same init everywhere, whatever each rank's seed did
    plan = policy.on_world_size(step, world)
    t_sync = time.time()
    attempt = D.broadcast_int(time.time_ns(), device)
    if rank == 0:
        print(
            f"elastic-nas: {'resumed at step %d' % step if loaded else 'started'} with {world} worker(s), "
            f"global batch {plan.global_batch}, lr {policy.lr(step, samples_seen):.4g} "
            f"(epoch {sampler.epoch}, {sampler.cursor}/{len(train_split)} samples into it; "
            f"worker process up {t_enter - psutil.Process().create_time():.1f}s before setup, "
            f"setup {time.time() - t_enter:.1f}s: task {t_loop - t_enter:.1f}, "
            f"model+optimizer {t_resume - t_loop:.1f}, checkpoint {t_sync - t_resume:.1f}, "
            f"first collective {time.time() - t_sync:.1f})",
            flush=True,
        )
        try:  # lets the driver's warm pool pre-start processes the next group can use
            publish_worker_env(ctx.get_experiment_name())
        except Exception:  # private KV API changed: restarts start cold
            pass
        if loaded is not None:  # in the background: storage round trips must not delay step 1
            threading.Thread(target=_remove_partial_checkpoints, args=(fs, candidates, loaded.path),
                             daemon=True).start()
    history.append({"event": "start", "step": step, "time": time.time(), "world_size": world,
                    "global_batch": plan.global_batch, "lr": policy.lr(step, samples_seen),
                    "samples_seen": samples_seen, "samples_per_s": 0.0})

    aug_rng = np.random.default_rng([s.seed, rank, attempt % (2**63)])
    reporter = _Reporter(rank, s.tensorboard_dir)
    sample_log = None
    if s.sample_log_dir:
        Path(s.sample_log_dir).mkdir(parents=True, exist_ok=True)
        sample_log = open(Path(s.sample_log_dir) / f"rank{rank}_{attempt}.jsonl", "a")
    last_ckpt_time = time.monotonic()
    preempt_deadline: float | None = None  # wall-clock seconds of a spot-reclaim deadline
    model.train()
    # Gradient sync: both leave off-path grads None, so SGD gives unsampled choices no
    # momentum or weight decay. DDP overlaps the all-reduce with backward; see
    # benchmarks/allreduce_vs_ddp.py for the measured choice between the two.
    use_ddp = s.grad_sync == "ddp" and D.is_distributed()
    forward = task.forward
    if use_ddp:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=True, **_NO_FORWARD_BUFFER_SYNC)
        forward = ddp
    # DDP averages gradients over ranks; the loss below is normalised for a SUM.
    loss_scale = float(world) if use_ddp else 1.0

    def checkpoint_now(metrics: dict, reason: str) -> None:
        nonlocal last_ckpt_time
        ckpt = None
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "sampler": sampler.state_dict(),
                    "policy": policy.state_dict(),
                    "step": step,
                    "samples_seen": samples_seen,
                    "history": history,
                    "rng": _rng_state(),
                }
                if task.extra_state:
                    state["extra"] = task.extra_state()
                meta = {"kind": task.kind, "step": step, "epoch": sampler.epoch, "reason": reason,
                        "fingerprint": task.fingerprint, "world_size": world, "time": time.time()}
                write_checkpoint(tmp, state, meta)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint_dir_name(step, attempt))
        last_ckpt_time = time.monotonic()

    # Checkpoint requests from the driver's node watcher, before a scale-up restart.
    join_ckpt = JoinCheckpoint(ctx.get_experiment_name()) if rank == 0 and s.join_checkpoint else None

    def join_checkpoint_token() -> str:
        """Rank 0's unanswered request token, known to every rank ("" = none)."""
        nonlocal join_ckpt
        token = ""
        if join_ckpt is not None:
            try:
                token = join_ckpt.pending()
            except Exception:  # no KV (a Ray change): joins redo steps since the last checkpoint
                join_ckpt = None
        if D.is_distributed():
            token = str(D.broadcast_int(int(token or 0), device))
            token = "" if token == "0" else token
        return token

    # 3. Loop, one optimizer step per iteration.
    while samples_seen < total_samples:
        arch = task.path(step)
        step_plan = sampler.plan(world, plan.global_batch)
        idx, valid = step_plan.indices(rank), step_plan.valid(rank)
        x, y, ids = train_split.get_batch(idx, augment=s.augment, rng=aug_rng)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        w = torch.as_tensor(valid, dtype=torch.float32, device=device)

        lr = policy.lr(step, samples_seen)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss_sum = correct = 0.0
        # Sum of per-sample losses / real samples in the global batch: with a SUM
        # all-reduce this is the exact global mean, padding included at weight 0.
        denom = float(step_plan.num_real) / loss_scale
        micro = list(zip(*(t.chunk(plan.accum_steps) for t in (x, y, w))))
        for i, (xm, ym, wm) in enumerate(micro):
            if task.criterion is not None:
                per_sample, logits = task.criterion(forward, xm, ym, arch, step)
            else:
                logits = forward(xm) if arch is None else forward(xm, arch)
                per_sample = F.cross_entropy(logits, ym, label_smoothing=s.label_smoothing, reduction="none")
            # With accumulation, DDP syncs only on the last micro-batch.
            sync = ddp.no_sync() if use_ddp and i < len(micro) - 1 else contextlib.nullcontext()
            with sync:
                (per_sample * wm).sum().div(denom).backward()
            with torch.no_grad():
                loss_sum += float((per_sample * wm).sum())
                correct += float(((logits.argmax(1) == ym).float() * wm).sum())
        if not use_ddp:
            D.allreduce_grads(task.grad_params(arch))
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], s.grad_clip)
        optimizer.step()
        if task.after_step is not None:
            task.after_step(step, arch, {"correct": correct, "count": float(valid.sum()),
                                         "x": x, "y": y, "valid": w})

        if sample_log is not None:
            sample_log.write(json.dumps({"epoch": sampler.epoch, "step": step, "world": world, "t": time.time(),
                                         "ids": ids[torch.as_tensor(valid)].tolist()}) + "\n")
            sample_log.flush()
        sampler.advance(step_plan)
        step += 1
        samples_seen += step_plan.num_real
        reporter.add(loss_sum, correct, float(valid.sum()), step_plan.num_real)
        done = samples_seen >= total_samples

        # Spot notice: checkpoint at once, then stop stepping shortly before the deadline
        # so that nothing trained after the last checkpoint is lost.
        if step % s.preemption_poll_steps == 0 or done:
            info = ray.train.get_preemption_info()
            if info is not None and preempt_deadline is None:
                preempt_deadline = (info.deadline_ms / 1000.0) if info.deadline_ms else time.time() + 30.0
                if rank == 0:
                    print(f"elastic-nas: preemption notice for ranks {info.preempted_ranks}; "
                          f"checkpointing at step {step}", flush=True)
                history.append({"event": "preemption_notice", "step": step, "time": time.time(),
                                "world_size": world, "global_batch": plan.global_batch, "lr": lr,
                                "samples_seen": samples_seen, "samples_per_s": 0.0})
                checkpoint_now(_metrics(reporter, device, step, world, plan, lr, sampler, samples_seen),
                               "preemption")
                continue
            # Off (the default): no KV reads or broadcast in the step.
            token = join_checkpoint_token() if s.join_checkpoint and not done else ""
            if token:
                checkpoint_now(_metrics(reporter, device, step, world, plan, lr, sampler, samples_seen), "join")
                if join_ckpt is not None:
                    with contextlib.suppress(Exception):  # the driver's wait is bounded anyway
                        join_ckpt.answer(token)
                continue
            if preempt_deadline is not None and not done:
                # Agree on one decision: a rank's clock must not split the collectives.
                remaining = D.allreduce_min(preempt_deadline - time.time(), device)
                if remaining < s.preemption_margin_s:
                    checkpoint_now(_metrics(reporter, device, step, world, plan, lr, sampler, samples_seen),
                                   "preemption")
                    _wait_for_reclaim(rank, remaining)
                    preempt_deadline = None  # the node survived: carry on training
                    continue

        report_due = step % s.report_every_steps == 0 or done
        ckpt_due = step % s.checkpoint_every_steps == 0 or done
        if not (report_due or ckpt_due):
            continue
        metrics = _metrics(reporter, device, step, world, plan, lr, sampler, samples_seen)
        history.append({"event": "report", "step": step, "time": time.time(), "world_size": world,
                        "global_batch": plan.global_batch, "lr": lr, "samples_seen": samples_seen,
                        "samples_per_s": metrics["samples_per_s"]})
        if rank == 0:
            _log_line(metrics, total_samples)
            if reporter.writer is not None:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        reporter.writer.add_scalar(f"train/{k}", v, samples_seen)
                reporter.writer.flush()
        # Time-based cadence is decided on rank 0 alone: only rank 0 attaches a checkpoint.
        time_due = time.monotonic() - last_ckpt_time >= s.checkpoint_every_s
        if ckpt_due or (rank == 0 and time_due):
            checkpoint_now(metrics, "done" if done else "periodic")
        else:
            ray.train.report(metrics)
    if sample_log is not None:
        sample_log.close()
    if reporter.writer is not None:
        reporter.writer.close()


def _quiet_report_lines(level: str) -> None:
    """Ray Train (2.60) logs every report at INFO through a logger named by its file path,
    which ``LoggingConfig(log_level)`` does not reach; give that logger the same level."""
    with contextlib.suppress(Exception):  # a Ray upgrade moved it: the lines just stay
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(level)


def _metrics(reporter, device, step, world, plan, lr, sampler, samples_seen) -> dict:
    loss, top1, rate = reporter.flush(device)
    return {
        "step": step,
        "loss": loss,
        "train_top1": 100.0 * top1,
        "world_size": world,
        "global_batch": plan.global_batch,
        "lr": lr,
        "samples_per_s": rate,
        "epoch": sampler.epoch + sampler.cursor / max(sampler.num_samples, 1),
        "samples_seen": samples_seen,
    }


def _log_line(m: dict, total: float) -> None:
    pct = 100.0 * m["samples_seen"] / max(total, 1)
    print(
        f"[{pct:5.1f}%] step {m['step']:>6} epoch {m['epoch']:.2f} loss {m['loss']:.3f} "
        f"top1 {m['train_top1']:.1f} lr {m['lr']:.4g} world {m['world_size']} "
        f"batch {m['global_batch']} {m['samples_per_s']:.0f} samples/s",
        flush=True,
    )


def _wait_for_reclaim(rank: int, remaining: float) -> None:
    """Idle until the reclaimed node takes the group down; bounded in case it never does."""
    if rank == 0:
        print(f"elastic-nas: checkpoint saved; waiting for the reclaim ({remaining:.0f}s to deadline)", flush=True)
    deadline = time.monotonic() + max(remaining, 0.0) + 60.0
    while time.monotonic() < deadline:
        time.sleep(0.5)


__all__ = ["LoopSettings", "TrainTask", "make_optimizer", "train_loop"]
