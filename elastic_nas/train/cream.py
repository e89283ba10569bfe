"""Cream supernet training: prioritized paths distil into the sampled path (Peng et al., NeurIPS 2020).

Each step trains one sampled path (the *student*), as SPOS does, with three additions:

1. **Path sampling.** Per stage, a depth uniform in ``1..max_depth``; per block, an op drawn
   with Cream's per-op probabilities (``cream.op_probs``, default 0.05/0.2/0.05/0.5/0.05/0.15
   for k3e4/k3e6/k5e4/k5e6/k7e4/k7e6: half of all blocks are k5e6) or uniformly.
   ``sampling.flops_min``/``flops_max`` bound the path's MACs: bounded rejection with the
   same probabilities, then the space's bounded uniform/repair fallback. The path of step
   t is a function of (seed, t) only.
2. **The prioritized path board.** After the warm-up, a path enters the board (size 10)
   when it is not full, or when its batch top-1 -- all-reduced over the workers -- beats the
   worst entry's by more than ``accuracy_gap`` points, or beats it with fewer MACs; it then
   replaces the worst entry. An entry keeps the path, its accuracy and MACs, a slice of
   training images (with labels) and the *entering path's own* softmax on them. (Cream's
   released code stores the teacher's softmax there by mistake.) The slice comes from
   rank 0's batch and is broadcast, so every rank holds the same board, bit for bit.
3. **Distillation with a meta matching network.** For each board path other than the
   student, ``Linear(num_classes * slice -> 1)`` scores ``softmax(student(images)) -
   stored softmax`` on that entry's images; the highest score names the teacher, and
   ``m = sigmoid(score)``. The per-sample loss is ``(m * KD + (2 - m) * CE) / 2``, KD being
   KL(teacher || student) with the teacher -- the board path run through the same supernet
   -- under ``no_grad``. Every ``meta_update_every`` steps the meta network takes one
   Adam step on a one-step look-ahead (see :meth:`CreamStrategy.meta_update`).

Board, meta network and its optimizer go into every checkpoint (plain tensors and lists)
and come back after a resize or restart. Forwards that only *look* at the network
(teacher, board matching, the stored softmax) run in train mode with BN running
statistics frozen, so only the student's forward moves them, as in SPOS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elastic_nas.config import SupernetConfig, to_dict
from elastic_nas.spaces.base import Arch, SearchSpace
from elastic_nas.train import distributed as D

STATE_VERSION = 1


# ---------------------------------------------------------------------------
# Path sampling
# ---------------------------------------------------------------------------


class CreamPathSampler:
    """``path(step)``: Cream's per-block op probabilities, optionally bounded in MACs.

    Seeded from (seed, step) only, so every rank and every world size agree. With a MACs
    range: ``max_tries`` weighted draws into one of ``num_bins`` bins (``flops_bins``) or
    the whole range, ``max_tries`` more into the whole range, then the space's own bounded
    fallback (uniform rejection, then greedy repair), which raises ``ArchError`` when the
    range misses the space. No loop is unbounded.
    """

    def __init__(self, space: SearchSpace, cfg: SupernetConfig):
        c, s = cfg.cream, cfg.sampling
        self.space, self.seed = space, cfg.run.seed
        weights = np.ones(6) if c.op_sampling == "uniform" else np.asarray(c.op_probs, dtype=np.float64)
        self.op_probs = weights / weights.sum()
        self.max_depths = tuple(cfg.space.max_depths)
        self.constrained = s.method == "flops_bins" or s.flops_min > 0 or s.flops_max > 0
        lo, hi = space.macs_range()
        self.lo = s.flops_min * 1e6 if s.flops_min else float(lo)
        self.hi = s.flops_max * 1e6 if s.flops_max else float(hi)
        self.num_bins = s.num_bins if s.method == "flops_bins" else 1
        self.max_tries = s.max_tries

    def draw(self, rng: np.random.Generator) -> Arch:
        """One unconstrained path: depth uniform per stage, each op from ``op_probs``."""
        out = []
        for d in self.max_depths:
            depth = int(rng.integers(1, d + 1))
            out.append(tuple(int(v) for v in rng.choice(6, size=depth, p=self.op_probs)))
        return tuple(out)

    def __call__(self, step: int) -> Arch:
        rng = np.random.default_rng([self.seed, step])
        if not self.constrained:
            return self.draw(rng)
        width = (self.hi - self.lo) / self.num_bins
        b = int(rng.integers(self.num_bins))
        for lo, hi in ((self.lo + b * width, self.lo + (b + 1) * width), (self.lo, self.hi)):
            for _ in range(self.max_tries):
                arch = self.draw(rng)
                if lo <= self.space.macs(arch) <= hi:
                    return arch
        return self.space.sample_constrained(rng, self.lo, self.hi, 1, self.max_tries)


# ---------------------------------------------------------------------------
# The prioritized path board
# ---------------------------------------------------------------------------


@dataclass
class BoardEntry:
    arch: Arch
    accuracy: float  # batch top-1 (%) of the step it entered, all-reduced over the workers
    macs: int
    step: int  # the step it entered
    images: torch.Tensor  # [slice, 3, H, W], normalised training images
    labels: torch.Tensor  # [slice]
    probs: torch.Tensor  # [slice, num_classes]: this path's own softmax on ``images``

    def to_state(self) -> dict:
        return {"arch": _to_lists(self.arch), "accuracy": float(self.accuracy), "macs": int(self.macs),
                "step": int(self.step), "images": self.images.detach().cpu(),
                "labels": self.labels.detach().cpu(), "probs": self.probs.detach().cpu()}

    @classmethod
    def from_state(cls, d: dict, space: SearchSpace, device: torch.device | str = "cpu") -> "BoardEntry":
        return cls(space.validate(d["arch"]), float(d["accuracy"]), int(d["macs"]), int(d["step"]),
                   d["images"].to(device), d["labels"].to(device), d["probs"].to(device))


class PrioritizedBoard:
    """The best paths so far, best first (accuracy down, then MACs up); at most ``size``."""

    def __init__(self, size: int, accuracy_gap: float):
        self.size = size
        self.accuracy_gap = accuracy_gap
        self.entries: list[BoardEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def full(self) -> bool:
        return len(self.entries) >= self.size

    def worst(self) -> BoardEntry | None:
        return self.entries[-1] if self.entries else None

    def holds(self, arch: Arch) -> bool:
        return any(e.arch == arch for e in self.entries)

    def would_enter(self, arch: Arch, accuracy: float, macs: int) -> bool:
        """Cream's rule. A path already on the board does not enter twice."""
        if self.holds(arch):
            return False
        if not self.full():
            return True
        worst = self.entries[-1]
        return accuracy > worst.accuracy + self.accuracy_gap or (accuracy > worst.accuracy and macs < worst.macs)

    def add(self, entry: BoardEntry) -> None:
        """Insert ``entry`` (call :meth:`would_enter` first); a full board drops its worst."""
        if self.full():
            self.entries.pop()
        self.entries.append(entry)
        self.entries.sort(key=lambda e: (-e.accuracy, e.macs, json.dumps(_to_lists(e.arch))))

    def candidates(self, student: Arch) -> list[BoardEntry]:
        """Possible teachers of ``student``: every entry but the student itself."""
        return [e for e in self.entries if e.arch != student]

    def state(self) -> list[dict]:
        return [e.to_state() for e in self.entries]

    def load_state(self, entries: list[dict], space: SearchSpace, device: torch.device | str = "cpu") -> None:
        self.entries = [BoardEntry.from_state(d, space, device) for d in entries]

    def digest(self) -> str:
        return board_digest(self.state())


def board_digest(entries: list[dict]) -> str:
    """sha256 over every entry's path, accuracy, MACs, step and exact tensor bytes."""
    h = hashlib.sha256()
    for d in entries:
        h.update(json.dumps([d["arch"], repr(float(d["accuracy"])), int(d["macs"]), int(d["step"])]).encode())
        for key in ("images", "labels", "probs"):
            h.update(d[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Meta matching network and loss
# ---------------------------------------------------------------------------


class MetaMatchingNetwork(nn.Module):
    """``Linear(num_classes * slice -> 1)`` on softmax differences, one score per board entry.

    Zero-initialised: every score starts at 0 (m = 0.5), and the first candidate -- the
    board's most accurate path -- is the teacher until the network learns otherwise.
    """

    def __init__(self, num_classes: int, slice_images: int):
        super().__init__()
        self.fc = nn.Linear(num_classes * slice_images, 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, diffs: torch.Tensor) -> torch.Tensor:
        """``diffs`` [entries, slice, classes] -> scores [entries]."""
        return self.fc(diffs.flatten(1)).squeeze(1)


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per sample, at temperature 1."""
    log_t = F.log_softmax(teacher_logits, 1)
    return (log_t.exp() * (log_t - F.log_softmax(student_logits, 1))).sum(1)


def cream_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor,
               m: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample ``(m * KD + (2 - m) * CE) / 2``; plain CE without a teacher."""
    ce = F.cross_entropy(student_logits, y, label_smoothing=label_smoothing, reduction="none")
    if teacher_logits is None:
        return ce
    return (m * kd_per_sample(student_logits, teacher_logits) + (2.0 - m) * ce) / 2.0


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Batch statistics as usual, but leave BN running statistics untouched (momentum 0)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0
        yield
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum


# ---------------------------------------------------------------------------
# The strategy: the loop's hooks
# ---------------------------------------------------------------------------


class CreamStrategy:
    """Board, meta network and their hooks into the training loop, one per worker.

    Every decision that touches a collective depends only on all-reduced or broadcast
    values and the step, so all ranks make the same calls in the same order.
    """

    def __init__(self, model: nn.Module, space: SearchSpace, cfg: SupernetConfig, num_train: int,
                 meta_val: tuple[torch.Tensor, torch.Tensor]):
        c = cfg.cream
        self.model, self.space, self.cfg = model, space, cfg
        self.board = PrioritizedBoard(c.board_size, c.accuracy_gap)
        self.meta = MetaMatchingNetwork(cfg.space.num_classes, c.slice_images)
        self.meta_optimizer = torch.optim.Adam(self.meta.parameters(), lr=c.meta_lr)
        self.meta_val = meta_val
        self.warmup_samples = c.warmup_epochs * num_train
        self.total_samples = cfg.optim.epochs * num_train
        self.label_smoothing = cfg.optim.label_smoothing
        self.samples_seen = 0  # all-reduced: the same on every rank
        self.next_step = 0
        self.meta_updates = 0
        self._teacher: tuple[int, tuple[Arch, float] | None] | None = None  # (step, choice) cache
        self._device: torch.device | None = None

    # -- plumbing --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        device = next(self.model.parameters()).device
        if device != self._device:  # the loop moved the model: follow it
            self.meta.to(device)
            self.meta_val = tuple(t.to(device) for t in self.meta_val)
            for e in self.board.entries:
                e.images, e.labels, e.probs = e.images.to(device), e.labels.to(device), e.probs.to(device)
            self._device = device
        return device

    def active(self, step: int) -> bool:
        """Board and distillation start once both warm-ups have passed."""
        c = self.cfg.cream
        return step >= c.warmup_steps and self.samples_seen >= self.warmup_samples

    # -- per step: teacher selection and the loss ---------------------------
    def _diffs(self, student: Arch, cands: list[BoardEntry]) -> torch.Tensor:
        """[entries, slice, classes]: the student's softmax on each entry's images minus the stored one."""
        with torch.no_grad(), frozen_bn_stats(self.model):
            return torch.stack([F.softmax(self.model(e.images, student), 1) - e.probs for e in cands])

    def select_teacher(self, student: Arch) -> tuple[Arch, float] | None:
        """(teacher path, m) by the meta network, rank 0's choice on every rank; None without a candidate."""
        cands = self.board.candidates(student)
        if not cands:
            return None
        with torch.no_grad():
            scores = self.meta(self._diffs(student, cands))
        j = int(scores.argmax())
        choice = _broadcast(torch.tensor([float(j), float(scores[j])], dtype=torch.float64, device=self.device))
        return cands[int(choice[0])].arch, float(torch.sigmoid(choice[1]))

    def criterion(self, forward, x: torch.Tensor, y: torch.Tensor, arch: Arch, step: int):
        """The loop's loss hook: CE before the warm-up or without a teacher, Cream's loss after."""
        _ = self.device
        if self._teacher is None or self._teacher[0] != step:  # once per step, not per micro-batch
            self._teacher = (step, self.select_teacher(arch) if self.active(step) else None)
        choice = self._teacher[1]
        if choice is None:
            logits = forward(x, arch)
            return cream_loss(logits, None, y, 0.0, self.label_smoothing), logits
        teacher, m = choice
        with torch.no_grad(), frozen_bn_stats(self.model):
            teacher_logits = self.model(x, teacher)
        logits = forward(x, arch)
        return cream_loss(logits, teacher_logits, y, m, self.label_smoothing), logits

    # -- after each optimizer step: board and meta network ---------------------
    def after_step(self, step: int, arch: Arch, info: dict) -> None:
        device = self.device
        rank = _rank()
        count0 = info["count"] if rank == 0 else 0.0
        correct, count, count0 = D.allreduce_sum([info["correct"], info["count"], count0], device)
        active = self.active(step)
        self.samples_seen += int(round(count))
        self.next_step = step + 1
        changed = False
        if active and count0 > 0:
            accuracy, macs = 100.0 * correct / count, self.space.macs(arch)
            if self.board.would_enter(arch, accuracy, macs):
                self.board.add(self._entry(arch, accuracy, macs, step, info, rank))
                changed = True
        c = self.cfg.cream
        if active and (step + 1) % c.meta_update_every == 0 and self.board.candidates(arch):
            self.meta_update(arch)
        done = self.samples_seen >= self.total_samples
        if changed or (step + 1) % self.cfg.elastic.checkpoint_every_steps == 0 or done:
            self._log("done" if done else "enter" if changed else "step")

    def _entry(self, arch: Arch, accuracy: float, macs: int, step: int, info: dict, rank: int) -> BoardEntry:
        """Rank 0's first ``slice`` real images of the batch, and this path's softmax on them, on every rank."""
        n, device = self.cfg.cream.slice_images, self.device
        size, classes = self.cfg.space.input_size, self.cfg.space.num_classes
        images = torch.zeros(n, 3, size, size, device=device)
        labels = torch.zeros(n, dtype=torch.int64, device=device)
        probs = torch.zeros(n, classes, device=device)
        if rank == 0:
            rows = torch.nonzero(info["valid"] > 0).flatten()
            rows = rows[torch.arange(n, device=rows.device) % len(rows)]  # repeats only if fewer than n are real
            images.copy_(info["x"][rows])
            labels.copy_(info["y"][rows])
            with torch.no_grad(), frozen_bn_stats(self.model):
                probs.copy_(F.softmax(self.model(images, arch), 1))
        for t in (images, labels, probs):
            _broadcast(t)
        return BoardEntry(arch, accuracy, macs, step, images, labels, probs)

    def meta_update(self, student: Arch) -> None:
        """One Adam step of the meta network on a one-step look-ahead, computed on rank 0.

        The student's loss on the board's images (distillation data, the same on every
        rank) depends on the meta network only through ``m``. With ``g_kd`` and ``g_ce``
        the gradients of KD and CE over the student path's weights, the look-ahead weights
        are ``w' = w - lr * (g_ce + m/2 * (g_kd - g_ce))`` (lr = ``optim.lr``), and the
        validation loss ``L`` (CE on ``meta_val_images`` held-out images) changes with m as
        ``dL/dm = -lr/2 * <grad L(w'), g_kd - g_ce>`` -- exact for the one step, without
        second-order graphs. ``dL/dm`` is back-propagated through ``m = sigmoid(score)``.
        Rank 0's new meta weights are broadcast; the supernet's weights do not change.
        """
        if _rank() == 0:
            self._meta_step(student)
        for p in self.meta.parameters():
            _broadcast(p.data)
        self.meta_updates += 1

    def _meta_step(self, student: Arch) -> None:
        model, lr = self.model, self.cfg.optim.lr
        cands = self.board.candidates(student)
        scores = self.meta(self._diffs(student, cands))
        j = int(scores.argmax().detach())
        m = torch.sigmoid(scores[j])
        teacher = cands[j].arch
        x = torch.cat([e.images for e in self.board.entries])
        y = torch.cat([e.labels for e in self.board.entries])
        names = {id(p): n for n, p in model.named_parameters()}
        params = [p for p in model.path_parameters(student) if p.requires_grad]
        with frozen_bn_stats(model):
            with torch.no_grad():
                teacher_logits = model(x, teacher)
            logits = model(x, student)
            kd = kd_per_sample(logits, teacher_logits).mean()
            ce = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            g_kd = _grads(kd, params, retain_graph=True)
            g_ce = _grads(ce, params)
            mv = float(m.detach())
            ahead = {names[id(p)]: (p.detach() - lr * (gc + mv / 2 * (gk - gc))).requires_grad_()
                     for p, gk, gc in zip(params, g_kd, g_ce)}
            x_val, y_val = self.meta_val
            val_logits = torch.func.functional_call(model, ahead, (x_val, student))
            g_val = _grads(F.cross_entropy(val_logits, y_val), list(ahead.values()))
        dl_dm = -lr / 2 * sum(float((gv * (gk - gc)).sum()) for gv, gk, gc in zip(g_val, g_kd, g_ce))
        self.meta_optimizer.zero_grad(set_to_none=True)
        (dl_dm * m).backward()
        self.meta_optimizer.step()

    # -- checkpoints ---------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"version": STATE_VERSION, "board": self.board.state(), "meta": _cpu(self.meta.state_dict()),
                "meta_optimizer": self.meta_optimizer.state_dict(), "samples_seen": int(self.samples_seen),
                "next_step": int(self.next_step), "meta_updates": int(self.meta_updates)}

    def load_extra_state(self, d: dict) -> None:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"cream state version {d.get('version')}, expected {STATE_VERSION}")
        device = self.device
        self.board.load_state(d["board"], self.space, device)
        self.meta.load_state_dict(d["meta"])
        self.meta_optimizer.load_state_dict(d["meta_optimizer"])
        self.samples_seen, self.next_step = int(d["samples_seen"]), int(d["next_step"])
        self.meta_updates = int(d["meta_updates"])
        self._teacher = None
        self._log("load")

    def _log(self, event: str) -> None:
        """Audit: this rank's board digest (``cream.board_log_dir``), one JSON line per event."""
        log_dir = self.cfg.cream.board_log_dir
        if not log_dir:
            return
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        world = torch.distributed.get_world_size() if D.is_distributed() else 1
        record = {"event": event, "step": self.next_step, "rank": _rank(), "world": world, "pid": os.getpid(),
                  "time": time.time(), "size": len(self.board), "digest": self.board.digest(),
                  "meta_updates": self.meta_updates,
                  "meta_digest": hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes()
                                                         for p in self.meta.parameters())).hexdigest()}
        with open(Path(log_dir) / f"rank{_rank()}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------
# Building the task; board results after training
# ---------------------------------------------------------------------------


def meta_val_data(cfg: SupernetConfig, splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed, class-balanced held-out images of the look-ahead's validation loss."""
    from elastic_nas.data import class_balanced_subset

    c = cfg.cream
    split = splits.search_val if c.meta_val_split == "search_val" else splits.train
    sub = class_balanced_subset(split, min(c.meta_val_images, len(split)), cfg.run.seed)
    x, y, _ = sub.get_batch(np.arange(len(sub)))
    return x, y


def build_cream_task(cfg: SupernetConfig):
    """The loop's :class:`TrainTask` for ``strategy: cream``."""
    from elastic_nas.data import build_dataset
    from elastic_nas.spaces import build_space
    from elastic_nas.train.loop import TrainTask
    from elastic_nas.train.supernet import supernet_fingerprint

    splits = build_dataset(cfg.data, cfg.space.input_size)
    space = build_space(cfg.space)
    torch.manual_seed(cfg.run.seed)
    model = space.build_supernet()
    strategy = CreamStrategy(model, space, cfg, len(splits.train), meta_val_data(cfg, splits))
    fingerprint = supernet_fingerprint(cfg, len(splits.train))
    # Board shapes: a run cannot resume with another board size or image slice.
    fingerprint["cream"] = {"board_size": cfg.cream.board_size, "slice_images": cfg.cream.slice_images}
    return TrainTask(
        model=model, forward=model, path=CreamPathSampler(space, cfg), grad_params=model.path_parameters,
        train_split=splits.train, fingerprint=fingerprint, criterion=strategy.criterion,
        after_step=strategy.after_step, extra_state=strategy.extra_state,
        load_extra_state=strategy.load_extra_state,
    )


def board_table(cfg: SupernetConfig, state: dict, splits=None):
    """The board as a search results table (arch, macs, params, accuracy, loss, generation, ...).

    With ``cream.eval_images`` > 0 each board path is rescored like a search candidate:
    exact BN recalibration on that many train images, then top-1 on as many class-balanced
    search_val images; ``board_accuracy`` keeps the batch top-1 it entered with.
    ``generation`` is the step it entered.
    """
    import pandas as pd

    from elastic_nas.spaces import build_space

    space = build_space(cfg.space)
    entries = state["extra"]["board"]
    n = cfg.cream.eval_images
    scores: list[dict] = [{"accuracy": float(e["accuracy"]), "loss": math.nan} for e in entries]
    if n > 0 and entries:
        from elastic_nas.data import build_dataset, class_balanced_subset
        from elastic_nas.search.evaluator import EvalData, evaluate_arch

        splits = splits or build_dataset(cfg.data, cfg.space.input_size)
        calib = class_balanced_subset(splits.train, min(n, len(splits.train)), cfg.run.seed)
        val = class_balanced_subset(splits.search_val, min(n, len(splits.search_val)), cfg.run.seed)
        calib_x, _, _ = calib.get_batch(np.arange(len(calib)))
        val_x, val_y, _ = val.get_batch(np.arange(len(val)))
        data = EvalData(calib_x.numpy(), val_x.numpy(), val_y.numpy(), batch_size=200)
        model = space.build_supernet()
        model.load_state_dict(state["model"])
        scores = [evaluate_arch(model, space.validate(e["arch"]), data) for e in entries]
    rows = []
    for e, s in zip(entries, scores):
        arch = space.validate(e["arch"])
        rows.append({"arch": json.dumps(space.to_json(arch), separators=(",", ":")), "macs": space.macs(arch),
                     "params": space.params(arch), "accuracy": float(s["accuracy"]), "loss": float(s["loss"]),
                     "generation": int(e["step"]), "board_accuracy": float(e["accuracy"])})
    return pd.DataFrame(rows, columns=["arch", "macs", "params", "accuracy", "loss", "generation",
                                       "board_accuracy"])


def write_board_results(cfg: SupernetConfig, checkpoint_path: str, out_dir: Path) -> dict[str, str]:
    """The final board in the search's results format (``chosen_arch.json``,
    ``best_per_budget.json``, tables, plot), so ``retrain`` takes ``arch.search: <out_dir>``."""
    from elastic_nas.elastic.checkpoint import read_checkpoint
    from elastic_nas.search.outputs import write_outputs

    state = read_checkpoint(checkpoint_path).state
    table = board_table(cfg, state)
    if not len(table):
        return {"board": "empty (training ended before the warm-up: no board results)"}
    source = (f"top-1 on {cfg.cream.eval_images} search_val images after BN recalibration"
              if cfg.cream.eval_images else "batch top-1 when the path entered the board")
    extra = {"strategy": "cream", "snapshot": checkpoint_path, "accuracy_source": source}
    title = f"Cream board: {len(table)} paths ({cfg.space.name})"
    return write_outputs(table, out_dir, to_dict(cfg.space), cfg.cream.budgets, extra, title)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _rank() -> int:
    return torch.distributed.get_rank() if D.is_distributed() else 0


def _broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    if D.is_distributed():
        torch.distributed.broadcast(t, src=src)
    return t


def _grads(loss: torch.Tensor, params: list[torch.Tensor], retain_graph: bool = False) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _to_lists(arch: Any) -> Any:
    return [_to_lists(a) for a in arch] if isinstance(arch, (tuple, list)) else int(arch)


__all__ = ["BoardEntry", "CreamPathSampler", "CreamStrategy", "MetaMatchingNetwork", "PrioritizedBoard",
           "board_digest", "board_table", "build_cream_task", "cream_loss", "frozen_bn_stats",
           "kd_per_sample", "write_board_results"]
