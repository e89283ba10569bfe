"""Cream's board of prioritized archs (the paper's "prioritized paths"): the best archs so far, each with the images it entered on.

After the warm-up, an arch enters the board (size ``cream.board_size``) when it is not
full, or when its batch top-1 -- all-reduced over the workers -- beats the worst entry's
by more than ``accuracy_gap`` points, or beats it with fewer MACs; it then replaces the
worst entry. An entry keeps the arch, its accuracy and MACs, a slice of training images
(with labels) and the *entering arch's own* softmax on them. (Cream's released code
stores the teacher's softmax there by mistake.) The sandwich's prioritized teacher keeps only
the arch, its accuracy and MACs: no meta network matches its entries, so they hold no images.

Entries are plain tensors and lists (``state()``), so they go into checkpoints that load
with ``weights_only=True``; :func:`board_digest` lets every rank prove it holds the same
board, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from elastic_nas.spaces.base import Arch, SearchSpace, arch_to_json

TENSORS = ("images", "labels", "probs")  # what a Cream entry holds beside its arch (a sandwich entry: none)


@dataclass
class BoardEntry:
    arch: Arch
    accuracy: float  # batch top-1 (%) of the step it entered, all-reduced over the workers
    macs: int
    step: int  # the step it entered
    # Cream's meta network matches on these (None: an entry of the sandwich's board)
    images: torch.Tensor | None = None  # [slice, 3, H, W], normalised training images
    labels: torch.Tensor | None = None  # [slice]
    probs: torch.Tensor | None = None  # [slice, num_classes]: this arch's own softmax on ``images``

    def to_state(self) -> dict:
        tensors = {k: getattr(self, k).detach().cpu() for k in TENSORS if getattr(self, k) is not None}
        return {"arch": arch_to_json(self.arch), "accuracy": float(self.accuracy), "macs": int(self.macs),
                "step": int(self.step), **tensors}

    @classmethod
    def from_state(cls, d: dict, space: SearchSpace, device: torch.device | str = "cpu") -> BoardEntry:
        return cls(space.validate(d["arch"]), float(d["accuracy"]), int(d["macs"]), int(d["step"]),
                   **{k: d[k].to(device) for k in TENSORS if k in d})


class PrioritizedBoard:
    """The best archs so far, best first (accuracy down, then MACs up); at most ``size``."""

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
        """Cream's rule. An arch already on the board does not enter twice."""
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
        self.entries.sort(key=lambda e: (-e.accuracy, e.macs, json.dumps(arch_to_json(e.arch))))

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
    """sha256 over every entry's arch, accuracy, MACs, step and exact tensor bytes."""
    h = hashlib.sha256()
    for d in entries:
        h.update(json.dumps([d["arch"], repr(float(d["accuracy"])), int(d["macs"]), int(d["step"])]).encode())
        for key in TENSORS:
            if key in d:
                h.update(d[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = ["BoardEntry", "PrioritizedBoard", "board_digest"]
