"""``strategy: cream``: prioritized archs distil into the sampled arch (Peng et al., NeurIPS 2020).

Each step trains one sampled arch (the *student*), as SPOS does, with three additions:

1. **Arch sampling.** Per stage, a depth uniform in ``1..max_depth``; per block, an op drawn
   with Cream's per-op probabilities (``cream.op_probs``, default 0.05/0.2/0.05/0.5/0.05/0.15
   for k3e4/k3e6/k5e4/k5e6/k7e4/k7e6: half of all blocks are k5e6) or uniformly.
   ``sampling.flops_min``/``flops_max`` bound the arch's MACs: bounded rejection with the
   same probabilities, then the space's bounded uniform/repair fallback.
2. **The board of prioritized archs** (:mod:`~elastic_nas.train.strategies.cream_board`),
   filled after the warm-up from rank 0's batch, broadcast, so every rank holds the same
   board bit for bit.
3. **Distillation with a meta matching network**
   (:mod:`~elastic_nas.train.strategies.cream_meta`): the best-scoring board arch is the
   teacher -- run through the same supernet under ``no_grad`` -- and every
   ``meta_update_every`` steps the meta network takes one Adam step on a one-step look-ahead.

Board, meta network and its optimizer go into every checkpoint (plain tensors and lists)
and come back after a resize or restart. Forwards that only *look* at the network
(teacher, board matching, the stored softmax) run with BN running statistics frozen, so
only the student's forward moves them, as in SPOS. Every decision that touches a
collective depends only on all-reduced or broadcast values and the step, so all ranks
make the same calls in the same order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.io import RunFolder
from elastic_nas.spaces.base import Arch, SearchSpace
from elastic_nas.spaces.bn import frozen_bn_stats
from elastic_nas.train import distributed
from elastic_nas.train.strategies.base import ArchSampler, SupernetStrategy
from elastic_nas.train.strategies.cream_board import BoardEntry, PrioritizedBoard
from elastic_nas.train.strategies.cream_meta import MetaMatchingNetwork, cream_loss, lookahead_dl_dm

STATE_VERSION = 1


class CreamArchSampler(ArchSampler):
    """Cream's per-block op probabilities, optionally bounded in MACs.

    With a MACs range: ``max_tries`` weighted draws into one of ``num_bins`` bins or the
    whole range, ``max_tries`` more into the whole range, then the space's own bounded
    fallback (uniform rejection, then greedy repair), which raises ``ArchError`` when the
    range misses the space. No loop is unbounded.
    """

    def __init__(self, space: SearchSpace, cfg):
        super().__init__(space, cfg.sampling, cfg.run.seed)
        weights = np.ones(6) if cfg.cream.op_sampling == "uniform" else np.asarray(cfg.cream.op_probs, np.float64)
        self.op_probs = weights / weights.sum()
        self.max_depths = tuple(cfg.space.max_depths)

    def draw(self, rng: np.random.Generator) -> Arch:
        """One unconstrained arch: depth uniform per stage, each op from ``op_probs``."""
        out = []
        for d in self.max_depths:
            depth = int(rng.integers(1, d + 1))
            out.append(tuple(int(v) for v in rng.choice(6, size=depth, p=self.op_probs)))
        return tuple(out)

    def __call__(self, step: int, stream: int = 0) -> Arch:
        rng = self.rng(step, stream)
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


class CreamStrategy(SupernetStrategy):
    """Board, meta network and their hooks into the training step, one per worker."""

    name = "cream"

    def __init__(self, cfg, space: SearchSpace, model, splits):
        super().__init__(cfg, space, model, splits)
        cream = cfg.cream
        self.board = PrioritizedBoard(cream.board_size, cream.accuracy_gap)
        self.meta = MetaMatchingNetwork(cfg.space.num_classes, cream.slice_images)
        self.meta_optimizer = torch.optim.Adam(self.meta.parameters(), lr=cream.meta_lr)
        self.meta_val = meta_val_data(cfg, splits)
        self.warmup_samples = cream.warmup_epochs * len(splits.train)
        self.next_step = 0
        self.meta_updates = 0
        self._teacher: tuple[int, tuple[Arch, float] | None] | None = None  # (step, choice) cache
        self._device: torch.device | None = None

    @classmethod
    def make_arch_sampler(cls, cfg, space: SearchSpace) -> ArchSampler:
        return CreamArchSampler(space, cfg)

    def fingerprint(self) -> dict:
        # Board shapes: a run cannot resume with another board size or image slice.
        return {"cream": {"board_size": self.cfg.cream.board_size, "slice_images": self.cfg.cream.slice_images}}

    @classmethod
    def write_results(cls, cfg, checkpoint_path: str, folder: RunFolder) -> dict[str, str]:
        """The board's best arch per MACs budget, in the search's output format."""
        from elastic_nas.search.board import write_board_results

        outputs = write_board_results(cfg, checkpoint_path, folder.local / "board")
        return {k: folder.show(v) for k, v in outputs.items()}

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
        return step >= self.cfg.cream.warmup_steps and self.samples_seen >= self.warmup_samples

    # -- per step: teacher selection and the loss ---------------------------
    def _diffs(self, student: Arch, cands: list[BoardEntry]) -> torch.Tensor:
        """[entries, slice, classes]: the student's softmax on each entry's images minus the stored one."""
        with torch.no_grad(), frozen_bn_stats(self.model):
            return torch.stack([F.softmax(self.model(e.images, student), 1) - e.probs for e in cands])

    def select_teacher(self, student: Arch) -> tuple[Arch, float] | None:
        """(teacher arch, m) by the meta network, rank 0's choice on every rank; None without a candidate."""
        cands = self.board.candidates(student)
        if not cands:
            return None
        with torch.no_grad():
            scores = self.meta(self._diffs(student, cands))
        j = int(scores.argmax())
        choice = distributed.broadcast_(
            torch.tensor([float(j), float(scores[j])], dtype=torch.float64, device=self.device))
        return cands[int(choice[0])].arch, float(torch.sigmoid(choice[1]))

    def loss(self, forward, x: torch.Tensor, y: torch.Tensor, arch: Arch, step: int, index: int):
        """CE before the warm-up or without a teacher, Cream's loss after."""
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
    def after_step(self, step: int, archs: list[Arch], batch, stats) -> None:
        (arch,) = archs
        device, rank = self.device, distributed.rank()
        count0 = stats.count if rank == 0 else 0.0
        correct, count, count0 = distributed.allreduce_sum([stats.correct, stats.count, count0], device)
        active = self.active(step)
        self.next_step = step + 1
        changed = False
        if active and count0 > 0:
            accuracy, macs = 100.0 * correct / count, self.space.macs(arch)
            if self.board.would_enter(arch, accuracy, macs):
                self.board.add(self._entry(arch, accuracy, macs, step, batch, rank))
                changed = True
        if active and (step + 1) % self.cfg.cream.meta_update_every == 0 and self.board.candidates(arch):
            self.meta_update(arch)
        done = self.samples_seen + stats.global_count >= self.total_samples
        if changed or (step + 1) % self.cfg.elastic.checkpoint_every_steps == 0 or done:
            self._log("done" if done else "enter" if changed else "step")

    def _entry(self, arch: Arch, accuracy: float, macs: int, step: int, batch, rank: int) -> BoardEntry:
        """Rank 0's first ``slice`` real images of the batch, and this arch's softmax on them, on every rank."""
        n, device = self.cfg.cream.slice_images, self.device
        size, classes = self.cfg.space.input_size, self.cfg.space.num_classes
        images = torch.zeros(n, 3, size, size, device=device)
        labels = torch.zeros(n, dtype=torch.int64, device=device)
        probs = torch.zeros(n, classes, device=device)
        if rank == 0:
            rows = torch.nonzero(batch.weight > 0).flatten()
            rows = rows[torch.arange(n, device=rows.device) % len(rows)]  # repeats only if fewer than n are real
            images.copy_(batch.x[rows])
            labels.copy_(batch.y[rows])
            with torch.no_grad(), frozen_bn_stats(self.model):
                probs.copy_(F.softmax(self.model(images, arch), 1))
        for t in (images, labels, probs):
            distributed.broadcast_(t)
        return BoardEntry(arch, accuracy, macs, step, images, labels, probs)

    def meta_update(self, student: Arch) -> None:
        """One Adam step of the meta network on a one-step look-ahead (``optim.lr``), on rank 0,
        whose new meta weights are broadcast; the supernet's weights do not change."""
        if distributed.rank() == 0:
            cands = self.board.candidates(student)
            scores = self.meta(self._diffs(student, cands))
            j = int(scores.argmax().detach())
            m = torch.sigmoid(scores[j])
            x = torch.cat([e.images for e in self.board.entries])
            y = torch.cat([e.labels for e in self.board.entries])
            dl_dm = lookahead_dl_dm(self.model, student, cands[j].arch, x, y, self.meta_val, float(m.detach()),
                                    self.cfg.optim.lr, self.label_smoothing)
            self.meta_optimizer.zero_grad(set_to_none=True)
            (dl_dm * m).backward()  # through m = sigmoid(score)
            self.meta_optimizer.step()
        for p in self.meta.parameters():
            distributed.broadcast_(p.data)
        self.meta_updates += 1

    # -- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "board": self.board.state(),
                "meta": {k: v.detach().cpu() for k, v in self.meta.state_dict().items()},
                "meta_optimizer": self.meta_optimizer.state_dict(),
                "next_step": int(self.next_step), "meta_updates": int(self.meta_updates)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"cream state version {state.get('version')}, expected {STATE_VERSION}")
        device = self.device
        self.board.load_state(state["board"], self.space, device)
        self.meta.load_state_dict(state["meta"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.next_step = int(state["next_step"])
        self.meta_updates = int(state["meta_updates"])
        self._teacher = None
        self._log("load")

    def _log(self, event: str) -> None:
        """Audit: this rank's board digest (``cream.board_log_dir``), one JSON line per event."""
        log_dir = self.cfg.cream.board_log_dir
        if not log_dir:
            return
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        rank = distributed.rank()
        meta_bytes = b"".join(p.detach().cpu().numpy().tobytes() for p in self.meta.parameters())
        record = {"event": event, "step": self.next_step, "rank": rank, "world": distributed.world_size(),
                  "pid": os.getpid(), "time": time.time(), "size": len(self.board), "digest": self.board.digest(),
                  "meta_updates": self.meta_updates, "meta_digest": hashlib.sha256(meta_bytes).hexdigest()}
        with open(Path(log_dir) / f"rank{rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def meta_val_data(cfg, splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed, class-balanced held-out images of the look-ahead's validation loss."""
    from elastic_nas.data import class_balanced_subset

    cream = cfg.cream
    split = splits.search_val if cream.meta_val_split == "search_val" else splits.train
    sub = class_balanced_subset(split, min(cream.meta_val_images, len(split)), cfg.run.seed)
    x, y, _ = sub.get_batch(np.arange(len(sub)))
    return x, y


__all__ = ["CreamArchSampler", "CreamStrategy", "meta_val_data"]
