"""The per-worker elastic training function, run by Ray Train V2 on every worker.

It trains a supernet (the strategy's arch(s) per step) or a standalone subnet with
synchronous data-parallel SGD. Ray restarts the worker group on every resize or failure;
the function then resumes from the latest checkpoint at the new world size:

* data: the :class:`ElasticSampler` cursor continues mid-epoch, so no sample of the
  epoch is skipped or repeated (steps after the last checkpoint are redone as a whole);
* LR/batch: :class:`ElasticLRPolicy` rescales the global batch and ramps the LR;
* archs: the arch(s) of step t depend only on (seed, t), never on the world size.

Only the Ray context lives here (rank and world size, storage, reports, spot notices,
join checkpoints); the step is :class:`~elastic_nas.train.step.TrainStep`, the state and
the resume :class:`~elastic_nas.train.state.TrainState`. Order, as in Ray's examples:
1. build, 2. resume, 3. loop, 4. report and checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time

import numpy as np
import torch

from elastic_nas.cluster.kv import JoinCheckpoint
from elastic_nas.cluster.private import set_train_report_log_level
from elastic_nas.cluster.takeover import record_requester
from elastic_nas.cluster.warm_workers import publish_worker_env
from elastic_nas.elastic.checkpoint import checkpoint_dir_name, upload_checkpoint, write_checkpoint
from elastic_nas.elastic.sampler import StepPlan
from elastic_nas.io import storage_error
from elastic_nas.train import distributed
from elastic_nas.train.progress import Progress, SampleLog
from elastic_nas.train.state import TrainState, remove_partial_checkpoints
from elastic_nas.train.step import Batch, TrainStep
from elastic_nas.train.task import TrainTask


def train_loop(task: TrainTask, cfg, tensorboard_dir: str = "", t_enter: float | None = None) -> None:
    """Train ``task`` with the ``run``, ``optim``, ``elastic`` and ``data`` sections of ``cfg``.

    ``t_enter``: when the worker function was entered (task building is timed from it).
    """
    import ray.train

    times = {"enter": t_enter or time.time(), "build": time.time()}
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    set_train_report_log_level(cfg.elastic.train_log_level)

    # 1. Build: model, optimizer, data sampler, LR policy.
    state = TrainState(task, cfg.optim, cfg.elastic, cfg.run.seed, device)
    times["resume"] = time.time()
    # 2. Resume from the newest valid checkpoint, at this world size.
    storage, latest = ctx.get_storage(), ray.train.get_checkpoint()
    loaded = state.resume(storage.storage_filesystem, storage.experiment_fs_path, latest and latest.path)
    plan = state.policy.on_world_size(state.step, world)
    times["sync"] = time.time()
    attempt = distributed.broadcast_int(time.time_ns(), device)
    if rank == 0:
        _announce(state, loaded, plan, world, times, ctx.get_experiment_name(), storage.storage_filesystem)
    state.record("start", world, plan.global_batch, state.lr())
    train_step = TrainStep(state.model, task.strategy, cfg.optim.grad_clip, cfg.elastic.grad_sync,
                           precision=state.precision)
    progress = Progress(rank, tensorboard_dir, state.total_samples)
    sample_log = SampleLog(cfg.elastic.sample_log_dir, rank, attempt)
    signals = _Signals(ctx.get_experiment_name(), cfg.elastic, rank, device)
    report = _Reporter(state, rank, world, attempt, storage)

    # 3. Loop: one optimizer step per iteration.
    state.model.train()
    while not state.done:
        step_plan = state.sampler.plan(world, plan.global_batch)
        batch, ids = _load_batch(task.train_split, step_plan, rank, cfg.data.augment, cfg.run.seed, state.step, device)
        state.read_ahead(rank)  # streamed data: the next row groups load while this step computes
        lr = state.lr()
        stats = train_step(state.step, state.optimizer, lr, batch, step_plan.num_real, plan.accum_steps,
                           state.samples_seen)
        sample_log.write(state.sampler.epoch, state.step, world, ids, step_plan.valid(rank))
        state.advance(step_plan)
        progress.add(stats, step_plan.num_real)
        if state.rollback_due(stats.skipped):  # the same on every rank: the gradients were summed
            plan, attempt = _roll_back(state, storage, world, rank, device)
            sample_log.close()  # steps after the checkpoint are redone, as after a restart
            sample_log = SampleLog(cfg.elastic.sample_log_dir, rank, attempt)
            report = _Reporter(state, rank, world, attempt, storage)
            continue

        # 4. Report and checkpoint: at once on a spot notice or a join, else on the cadence.
        event = signals.poll(state.step, state.done)
        if event is not None:
            if event == "preemption notice":
                state.record("preemption_notice", world, plan.global_batch, lr)
            metrics = progress.metrics(state, world, plan.global_batch, lr, device)
            report(metrics, "join" if event == "join" else "preemption")
            signals.after_checkpoint(event)
            continue
        ckpt_due = state.step % cfg.elastic.checkpoint_every_steps == 0 or state.done
        if not (ckpt_due or state.step % cfg.elastic.report_every_steps == 0):
            continue
        metrics = progress.metrics(state, world, plan.global_batch, lr, device)
        state.record("report", world, plan.global_batch, lr, samples_per_s=metrics["samples_per_s"],
                     loss=metrics["loss"], train_top1=metrics["train_top1"])
        progress.log(metrics)
        # Time-based cadence is decided on rank 0 alone: only rank 0 attaches a checkpoint.
        time_due = rank == 0 and time.monotonic() - report.last_checkpoint >= cfg.elastic.checkpoint_every_s
        report(metrics, ("done" if state.done else "periodic") if ckpt_due or time_due else None)
    sample_log.close()
    progress.close()


# Fault injection for chaos tests, as Ray's RAY_testing_* variables: the steps whose batch
# gets one NaN pixel, once each per process (worker nodes pass their environment on).
_NAN_STEPS = {int(s) for s in os.environ.get("ELASTIC_NAS_TESTING_NAN_STEPS", "").split(",") if s.strip()}


def _load_batch(split, step_plan: StepPlan, rank: int, augment: bool, seed: int, step: int,
                device) -> tuple[Batch, torch.Tensor]:
    """This rank's share of the step (padding weighs 0) on ``device``, and its sample ids.
    Augmentation draws from (seed, step, rank): a run is reproducible, a redone step the same."""
    rng = np.random.default_rng([seed, step, rank])
    x, y, ids = split.get_batch(step_plan.indices(rank), augment=augment, rng=rng)
    if step in _NAN_STEPS and len(x):
        _NAN_STEPS.discard(step)
        x[0, 0, 0, 0] = float("nan")
    weight = torch.as_tensor(step_plan.valid(rank), dtype=torch.float32, device=device)
    return Batch(x.to(device, non_blocking=True), y.to(device, non_blocking=True), weight), ids


class _Reporter:
    """``report(metrics, reason)``: every rank reports (a barrier); with a ``reason``, rank 0
    writes a checkpoint of the state into storage and attaches it.

    Rank 0 copies the checkpoint itself rather than through Ray's upload, which would fail
    the worker group when storage is unreachable. Here a failed copy is said, training goes
    on, and later reports retry with backoff (2 s doubling to a minute) until one lands; the
    final checkpoint is retried in place for up to ``STORAGE_PATIENCE_S``.
    A copy cut short leaves a directory that fails its checks: resume skips it.
    """

    STORAGE_PATIENCE_S = 600.0

    def __init__(self, state: TrainState, rank: int, world: int, attempt: int, storage):
        self.state, self.rank, self.world, self.attempt, self.storage = state, rank, world, attempt, storage
        self.last_checkpoint = time.monotonic()
        self.failures, self.retry_at = 0, 0.0  # rank 0: checkpoints that storage refused in a row

    def __call__(self, metrics: dict, reason: str | None) -> None:
        import ray.train

        if reason is None and self.failures and time.monotonic() >= self.retry_at:
            reason = "periodic"  # the checkpoint storage refused last time, tried again
        if reason is None:
            ray.train.report(metrics)
            return
        name = checkpoint_dir_name(self.state.step, self.attempt)
        ckpt = self._persist(name, reason) if self.rank == 0 else None
        # Only rank 0's checkpoint_dir_name counts (Ray broadcasts it); the copy is done.
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name,
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD)
        self.last_checkpoint = time.monotonic()

    def _persist(self, name: str, reason: str):
        import ray.train

        fs, dest = self.storage.storage_filesystem, f"{self.storage.experiment_fs_path}/{name}"
        give_up = time.monotonic() + self.STORAGE_PATIENCE_S
        while True:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    write_checkpoint(tmp, self.state.state_dict(), self.state.meta(reason, self.world))
                    upload_checkpoint(tmp, fs, dest)
            except Exception as e:  # pyarrow raises OSError/ArrowInvalid subclasses per backend
                self.failures += 1
                wait = min(60, 2 ** self.failures)
                self.retry_at = time.monotonic() + wait
                step = self.state.step
                if reason != "done":
                    print(f"elastic-nas: storage refused the checkpoint of step {step} ({storage_error(e)}); "
                          f"training goes on, next try in {wait}s", flush=True)
                    return None
                if time.monotonic() + wait > give_up:
                    raise
                print(f"elastic-nas: storage refused the final checkpoint (step {step}; {storage_error(e)}); "
                      f"trying again in {wait}s", flush=True)
                time.sleep(wait)
                continue
            if self.failures:
                print(f"elastic-nas: storage is back: checkpoint of step {self.state.step} written after "
                      f"{self.failures} refused", flush=True)
            self.failures = 0
            return ray.train.Checkpoint(dest, fs)


class _Signals:
    """Spot notices and the driver's join-checkpoint requests, polled every
    ``elastic.preemption_poll_steps`` steps. Both are collectives: every rank gets the same
    answer, so every rank makes the same reports.

    ``poll`` returns ``"preemption notice"`` (checkpoint at once), ``"join"`` (checkpoint
    before Ray restarts the group for a joined node), ``"preemption"`` (the deadline is
    near: checkpoint, then stop stepping so nothing after it is lost) or None.
    """

    def __init__(self, run_name: str, elastic, rank: int, device):
        self.elastic, self.rank, self.device = elastic, rank, device
        self.deadline: float | None = None  # wall-clock seconds of a spot-reclaim deadline
        self.remaining = 0.0
        self.token = ""
        self.join = elastic.join_checkpoints
        self.requests = JoinCheckpoint(run_name) if rank == 0 and self.join else None

    def poll(self, step: int, done: bool) -> str | None:
        import ray.train

        if step % self.elastic.preemption_poll_steps and not done:
            return None
        info = ray.train.get_preemption_info()  # a barrier: every rank calls it as often
        if info is not None and self.deadline is None:
            self.deadline = (info.deadline_ms / 1000.0) if info.deadline_ms else time.time() + 30.0
            if self.rank == 0:
                print(f"elastic-nas: preemption notice for ranks {info.preempted_ranks}; "
                      f"checkpointing at step {step}", flush=True)
            return "preemption notice"
        if self.join and not done:  # off: no KV reads or broadcast in the step
            self.token = self._join_token()
            if self.token:
                return "join"
        if self.deadline is not None and not done:
            # Agree on one decision: a rank's clock must not split the collectives.
            self.remaining = distributed.allreduce_min(self.deadline - time.time(), self.device)
            if self.remaining < self.elastic.preemption_margin_s:
                return "preemption"
        return None

    def _join_token(self) -> str:
        """Rank 0's unanswered request token, known to every rank ("" = none)."""
        token = ""
        if self.requests is not None:
            try:
                token = self.requests.pending() or ""
            except Exception as e:  # the GCS KV store failed: train on without join checkpoints
                print(f"elastic-nas: join checkpoints off for this worker group ({type(e).__name__}: {e})",
                      flush=True)
                self.requests = None
        if distributed.is_distributed():
            token = str(distributed.broadcast_int(int(token or 0), self.device))
        return "" if token in ("", "0") else token

    def after_checkpoint(self, event: str) -> None:
        if event == "join" and self.requests is not None:
            with contextlib.suppress(Exception):  # the driver's wait is bounded anyway
                self.requests.answer(self.token)
        elif event == "preemption":
            _wait_for_reclaim(self.rank, self.remaining)
            self.deadline = None  # the node survived: carry on training


def _announce(state: TrainState, loaded, plan, world: int, times: dict, run_name: str, fs) -> None:
    """Rank 0 after a (re)start: one line on where training stands and where setup time went;
    the worker env for the driver's warm pool and the requester id for a restarted driver;
    the cleanup of cut-short checkpoint copies."""
    import psutil  # Ray ships it to its worker processes

    now = time.time()
    print(f"elastic-nas: {f'resumed at step {state.step}' if loaded else 'started'} with {world} worker(s), "
          f"global batch {plan.global_batch}, lr {state.lr():.4g} (epoch {state.sampler.epoch}, "
          f"{state.sampler.cursor}/{state.sampler.num_samples} samples into it; worker process up "
          f"{times['enter'] - psutil.Process().create_time():.1f}s before setup, setup {now - times['enter']:.1f}s: "
          f"task {times['build'] - times['enter']:.1f}, model+optimizer {times['resume'] - times['build']:.1f}, "
          f"checkpoint {times['sync'] - times['resume']:.1f}, first collective {now - times['sync']:.1f})",
          flush=True)
    with contextlib.suppress(Exception):  # a KV hiccup: the next restart just starts cold
        publish_worker_env(run_name)  # lets the driver's warm pool pre-start processes the next group can use
    with contextlib.suppress(Exception):  # a KV hiccup: a restarted driver waits for Ray's expiry
        record_requester(run_name)  # lets a restarted driver release what this one's controller holds
    if loaded is not None:  # in the background: storage round trips must not delay step 1
        threading.Thread(target=remove_partial_checkpoints, args=(fs, loaded), daemon=True).start()


def _roll_back(state: TrainState, storage, world: int, rank: int, device) -> tuple:
    """The divergence guard's rollback, on every rank; the new (plan, attempt)."""
    bad = state.bad_in_a_row
    loaded = state.roll_back(storage.storage_filesystem, storage.experiment_fs_path)
    plan = state.policy.on_world_size(state.step, world)
    state.record("rollback", world, plan.global_batch, state.lr(), lr_scale=state.lr_scale)
    if rank == 0:
        where = f"back to step {state.step} ({loaded.path})" if loaded else "no checkpoint yet: on from here"
        print(f"elastic-nas: {bad} steps in a row with non-finite gradients; {where}, "
              f"LR scaled by {state.lr_scale:g} (rollback {state.rollbacks})", flush=True)
    return plan, distributed.broadcast_int(time.time_ns(), device)


def _wait_for_reclaim(rank: int, remaining: float) -> None:
    """Idle until the reclaimed node takes the group down; bounded in case it never does."""
    if rank == 0:
        print(f"elastic-nas: checkpoint saved; waiting for the reclaim ({remaining:.0f}s to deadline)", flush=True)
    deadline = time.monotonic() + max(remaining, 0.0) + 60.0
    while time.monotonic() < deadline:
        time.sleep(0.5)


__all__ = ["train_loop"]
