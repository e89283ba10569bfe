"""``strategy: proxyless``: architecture parameters learnt by binary gates (Cai et al., ICLR 2019).

On the Cream/MBConv space, the strategy keeps architecture parameters alpha: per block
position, one logit per op (6), and per stage, one logit per depth (a stage's first d
blocks). Training alternates, through the same elastic loop as every strategy:

* **Weight steps** (the step's optimizer step): one path drawn from softmax(alpha) with the
  step's generator (every rank draws the same), trained on the train split with plain
  cross-entropy, as SPOS trains its uniform path. Before ``warmup_fraction`` of the training
  samples alpha does not move, so the paths are uniform: a warmed-up supernet, as the paper.
* **Alpha steps** (after every ``update_every``-th weight step, weights frozen): on a
  ``search_val`` batch, each position and each stage draws two candidates from
  softmax(alpha) and one of them as active (ProxylessNAS's two-path binarisation: memory
  of two paths, not six). The output is ``g_a o_a(x) + g_b o_b(x)`` with one-hot gates
  ``g``; autograd gives dL/dg, and the BinaryConnect estimate moves the pair's logits:
  ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` over the pair's renormalised
  probabilities. Adam steps, then the pair is shifted so that the other candidates keep
  their probabilities (the paper's rescaling). The loss carries the expected latency from
  a latency table: ``CE * a * (log LAT / log T)^b`` or ``CE + lambda (LAT - T) / T``, LAT
  differentiable in alpha through the softmax.

The alpha batch is split over the ranks and alpha's gradients are summed over them, so alpha
is the same on every rank, and so is every path drawn from it; alpha, its Adam state and the
sample count go into every checkpoint and come back after a resize. After training the
derived arch (the likeliest depth per stage, the likeliest op per block) is written in the
search's results format, so ``retrain`` takes ``arch.search: <run>/proxyless``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.io import RunFolder
from elastic_nas.spaces.base import Arch, SearchSpace
from elastic_nas.spaces.bn import frozen_bn_stats
from elastic_nas.spaces.cream import NUM_OPS
from elastic_nas.train import distributed
from elastic_nas.train.strategies.base import SupernetStrategy

STATE_VERSION = 1
ALPHA_STREAM = 1_000_003  # the alpha step's draws: a stream of the step's generator no path uses
ADAM = {"betas": (0.0, 0.999), "eps": 1e-8}  # ProxylessNAS's arch optimizer


@dataclass
class GatePlan:
    """One alpha step's draws, the same on every rank: per stage (active depth, other depth or
    None) and per position (active op, other op)."""

    depths: list[tuple[int, int | None]]
    ops: list[list[tuple[int, int]]]


class ArchParams:
    """alpha: op logits per position ``[positions, 6]`` and depth logits per stage ``[5, max depth]``
    (depths a stage cannot take masked out), with their probabilities, sampling and latency."""

    def __init__(self, max_depths: tuple[int, ...], seed: int):
        self.max_depths = max_depths
        self.offsets = np.cumsum([0, *max_depths])[:-1].tolist()  # first position of each stage
        gen = torch.Generator().manual_seed(seed)
        # ProxylessNAS's init: normal, std 1e-3 (near uniform, not exactly tied)
        self.ops = torch.randn(sum(max_depths), NUM_OPS, generator=gen).mul_(1e-3).requires_grad_()
        self.depths = torch.randn(len(max_depths), max(max_depths), generator=gen).mul_(1e-3).requires_grad_()
        self.valid = torch.arange(max(max_depths))[None, :] < torch.tensor(max_depths)[:, None]

    def tensors(self) -> list[torch.Tensor]:
        return [self.ops, self.depths]

    def to(self, device: torch.device) -> None:
        for name in ("ops", "depths"):
            setattr(self, name, getattr(self, name).detach().to(device).requires_grad_())
        self.valid = self.valid.to(device)

    def probs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(op probabilities per position, depth probabilities per stage), differentiable."""
        return F.softmax(self.ops, 1), F.softmax(self.depths.masked_fill(~self.valid, float("-inf")), 1)

    def numpy_probs(self) -> tuple[np.ndarray, np.ndarray]:
        ops, depths = (p.detach().double().cpu().numpy() for p in self.probs())
        return ops / ops.sum(1, keepdims=True), depths / depths.sum(1, keepdims=True)

    def sample(self, rng: np.random.Generator) -> Arch:
        """One path: a depth per stage, then an op per block, from softmax(alpha)."""
        ops, depths = self.numpy_probs()
        out = []
        for s, d_max in enumerate(self.max_depths):
            depth = 1 + int(rng.choice(d_max, p=depths[s, :d_max]))
            out.append(tuple(int(rng.choice(NUM_OPS, p=ops[self.offsets[s] + j])) for j in range(depth)))
        return tuple(out)

    def derived(self) -> Arch:
        """The likeliest depth per stage and the likeliest op per block."""
        from elastic_nas.search.proxyless import derived_arch  # lazily: the results side imports pandas

        return derived_arch(self.ops.detach(), self.depths.detach(), list(self.max_depths))

    def plan(self, rng: np.random.Generator) -> GatePlan:
        """Two candidates per stage (depths) and per position (ops), and which of each is active."""
        ops, depths = self.numpy_probs()
        plan_depths = [_pair(rng, depths[s, :d]) if d > 1 else (0, None) for s, d in enumerate(self.max_depths)]
        plan_ops = [[_pair(rng, ops[self.offsets[s] + j]) for j in range(d)] for s, d in enumerate(self.max_depths)]
        return GatePlan([(a + 1, None if b is None else b + 1) for a, b in plan_depths], plan_ops)

    def expected_latency(self, table_ms: torch.Tensor, fixed_ms: float) -> torch.Tensor:
        """E[latency] under softmax(alpha), ms: ``table_ms`` is ``[positions, 6]`` (0 where no block)."""
        ops, depths = self.probs()
        per_position = (ops * table_ms).sum(1)
        total = torch.as_tensor(fixed_ms, dtype=per_position.dtype, device=per_position.device)
        for s, d_max in enumerate(self.max_depths):
            # a stage of depth d runs its first d blocks: E = sum_d P(d) sum_{j<d} E[block j]
            prefix = torch.cumsum(per_position[self.offsets[s]:self.offsets[s] + d_max], 0)
            total = total + (depths[s, :d_max] * prefix).sum()
        return total

    def binary_connect_(self, plan: GatePlan, op_grads, depth_grads) -> None:
        """Add the BinaryConnect estimate of each pair's logits from its gates' gradients."""
        for s, stage_grads in enumerate(op_grads):
            for j, g in enumerate(stage_grads):
                if g is not None:
                    _pair_grad_(self.ops, self.offsets[s] + j, plan.ops[s][j], g)
        for s, g in enumerate(depth_grads):
            if g is not None:
                a, b = plan.depths[s]
                _pair_grad_(self.depths, s, (a - 1, b - 1), g)

    def pair_logsumexp(self, plan: GatePlan) -> list[tuple[torch.Tensor, int, list[int], torch.Tensor]]:
        """(tensor, row, the pair's columns, logsumexp of the pair): what the rescaling keeps."""
        out = []
        for s, d in enumerate(self.max_depths):
            for j in range(d):
                out.append((self.ops, self.offsets[s] + j, list(plan.ops[s][j])))
            a, b = plan.depths[s]
            if b is not None:
                out.append((self.depths, s, [a - 1, b - 1]))
        return [(t, row, cols, torch.logsumexp(t.detach()[row, cols], 0)) for t, row, cols in out]

    def digest(self) -> str:
        data = b"".join(t.detach().cpu().numpy().tobytes() for t in self.tensors())
        return hashlib.sha256(data).hexdigest()


def _pair(rng: np.random.Generator, probs: np.ndarray) -> tuple[int, int]:
    """Two distinct candidates drawn by ``probs``; the first is the active one (drawn by their
    renormalised probabilities)."""
    a, b = (int(v) for v in rng.choice(len(probs), size=2, replace=False, p=probs))
    return (a, b) if rng.random() < probs[a] / (probs[a] + probs[b]) else (b, a)


def _pair_grad_(alpha: torch.Tensor, row: int, pair: tuple[int, int], gate_grad: torch.Tensor) -> None:
    cols = list(pair)
    p = F.softmax(alpha.detach()[row, cols], 0)
    g = gate_grad.to(p.dtype)
    grad = p * (g * p).sum().neg() + g * p  # sum_j g_j p_j (delta_ij - p_i)
    if alpha.grad is None:
        alpha.grad = torch.zeros_like(alpha)
    alpha.grad[row, cols] += grad


def gated_forward(model, x: torch.Tensor, plan: GatePlan) -> tuple[torch.Tensor, list, list]:
    """The supernet's output under ``plan``'s binary gates: (logits, op gates per stage and
    position, depth gate per stage (None for a one-depth stage)). The inactive candidate's
    output enters only through its gate (zero), so no gradient runs through its weights."""
    x = model.block0(model.stem(x))
    op_gates, depth_gates = [], []
    for stage, (d_act, d_other), ops in zip(model.stages, plan.depths, plan.ops):
        gates, outs = [], {}
        for j in range(max(d_act, d_other or 0)):
            if j < d_act:
                gate = torch.tensor([1.0, 0.0], device=x.device, requires_grad=True)
                with torch.no_grad():
                    other = stage[j](x, ops[j][1])
                x = gate[0] * stage[j](x, ops[j][0]) + gate[1] * other
                gates.append(gate)
            else:  # deeper than the active depth: only the other depth's gate needs it
                with torch.no_grad():
                    x = stage[j](x, ops[j][0])
            outs[j + 1] = x
        depth_gate = None
        if d_other is not None:
            depth_gate = torch.tensor([1.0, 0.0], device=x.device, requires_grad=True)
            x = depth_gate[0] * outs[d_act] + depth_gate[1] * outs[d_other].detach()
        op_gates.append(gates)
        depth_gates.append(depth_gate)
    return model.head(model.conv_final(x)), op_gates, depth_gates


class ProxylessStrategy(SupernetStrategy):
    """alpha, its Adam and the alternating updates, one per worker."""

    name = "proxyless"

    def __init__(self, cfg, space: SearchSpace, model, splits):
        super().__init__(cfg, space, model, splits)
        self.p = cfg.proxyless
        self.alpha = ArchParams(tuple(cfg.space.max_depths), cfg.run.seed)
        self.optimizer = torch.optim.Adam(self.alpha.tensors(), lr=self.p.arch_lr, **ADAM)
        self.val = splits.search_val
        self.latency = latency_tensor(cfg, space) if self.p.latency_table else None
        self.arch_updates = 0
        self.last: dict = {}  # the last alpha step's figures (cross-entropy, expected latency)
        self._device: torch.device | None = None

    @classmethod
    def check(cls, cfg, space: SearchSpace) -> None:
        if cfg.proxyless.latency_table:
            latency_tensor(cfg, space)

    def fingerprint(self) -> dict:
        p = self.p
        return {"proxyless": {"latency_table": p.latency_table, "target_ms": p.target_ms,
                              "latency_loss": p.latency_loss}}

    @property
    def device(self) -> torch.device:
        device = next(self.model.parameters()).device
        if device != self._device:  # the loop moved the model: alpha and its Adam follow
            state = self.optimizer.state_dict()
            self.alpha.to(device)
            self.optimizer = torch.optim.Adam(self.alpha.tensors(), lr=self.p.arch_lr, **ADAM)
            self.optimizer.load_state_dict(state)
            if self.latency is not None:
                self.latency = (self.latency[0].to(device), self.latency[1])
            self._device = device
        return device

    # -- the weight step: a path drawn from softmax(alpha) -----------------------------
    def archs(self, step: int) -> list[Arch]:
        _ = self.device
        return [self.alpha.sample(self.arch_sampler.rng(step))]

    def after_step(self, step: int, archs: list[Arch], batch, stats) -> None:
        seen = self.samples_seen + stats.global_count  # the run's, after this step: the same on every rank
        if seen > self.p.warmup_fraction * self.total_samples and (step + 1) % self.p.update_every == 0:
            self.arch_step(step)

    # -- the alpha step ------------------------------------------------------------
    def arch_step(self, step: int) -> None:
        """One Adam step of alpha on a search_val batch, weights frozen; identical on every rank."""
        device, rank, world = self.device, distributed.rank(), distributed.world_size()
        rows, plan = self.draws(step)
        x, y, _ = self.val.get_batch(np.sort(rows[rank::world]))
        x, y = x.to(device), y.to(device)
        with frozen_bn_stats(self.model):
            logits, op_gates, depth_gates = gated_forward(self.model, x, plan)
        ce = F.cross_entropy(logits, y, reduction="sum") / len(rows)  # summed over ranks: the batch's mean
        loss, lat = ce, None
        if self.latency is not None:
            lat = self.alpha.expected_latency(*self.latency)
            loss = self.latency_loss(ce, lat, rank)
        self._set_alpha_grads(loss, plan, op_gates, depth_gates)
        lat_ms = 0.0 if lat is None else float(lat.detach())
        totals = self._sum_alpha_grads_over_ranks([float(ce.detach()), lat_ms])
        kept = self.alpha.pair_logsumexp(plan)
        self.optimizer.step()
        with torch.no_grad():  # the pair keeps its total probability: the others' do not move
            for t, row, cols, before in kept:
                t[row, cols] -= torch.logsumexp(t[row, cols], 0) - before
        self.arch_updates += 1
        self.last = {"alpha_ce": round(totals[0], 5), "expected_latency_ms": round(totals[1] / world, 4)}
        self._log("update", step)

    def _set_alpha_grads(self, loss: torch.Tensor, plan: GatePlan, op_gates: list, depth_gates: list) -> None:
        """alpha.grad on this rank: the latency term's own gradient plus the BinaryConnect
        estimate from the gates' gradients (weights get none: they are frozen here)."""
        gates = [g for stage in op_gates for g in stage] + [g for g in depth_gates if g is not None]
        grads = torch.autograd.grad(loss, gates + self.alpha.tensors(), allow_unused=True)
        for t, g in zip(self.alpha.tensors(), grads[len(gates):]):
            t.grad = torch.zeros_like(t) if g is None else g.clone()
        it = iter(grads[:len(gates)])
        op_grads = [[next(it) for _ in stage] for stage in op_gates]
        depth_grads = [None if g is None else next(it) for g in depth_gates]
        self.alpha.binary_connect_(plan, op_grads, depth_grads)

    def _sum_alpha_grads_over_ranks(self, extra: list[float]) -> list[float]:
        """alpha.grad summed over the ranks (one small collective, ``extra`` summed with it);
        returns the sums of ``extra``."""
        tensors = self.alpha.tensors()
        flat = torch.cat([t.grad.flatten() for t in tensors])
        totals = distributed.allreduce_sum([*flat.tolist(), *extra], self.device)
        flat = torch.tensor(totals[:flat.numel()], dtype=flat.dtype, device=flat.device)
        for t, g in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.grad = g.view_as(t)
        self.alpha.depths.grad.masked_fill_(~self.alpha.valid, 0.0)  # depths a stage cannot take
        return totals[flat.numel():]

    def draws(self, step: int) -> tuple[np.ndarray, GatePlan]:
        """The alpha step's search_val rows (the global batch) and gate plan: a function of
        (seed, step, alpha), so every rank draws the same."""
        rng = self.arch_sampler.rng(step, ALPHA_STREAM)
        rows = rng.choice(len(self.val), size=self.p.arch_batch, replace=False)
        return rows, self.alpha.plan(rng)

    def latency_loss(self, ce: torch.Tensor, lat: torch.Tensor, rank: int) -> torch.Tensor:
        p = self.p
        if p.latency_loss == "mul_log":
            return p.loss_alpha * ce * (torch.log(lat) / np.log(p.target_ms)) ** p.loss_beta
        # the latency term once over the ranks (their losses are summed)
        return ce + (p.loss_lambda * (lat - p.target_ms) / p.target_ms if rank == 0 else 0.0)

    # -- checkpoints and results ----------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "alpha_ops": self.alpha.ops.detach().cpu(),
                "alpha_depths": self.alpha.depths.detach().cpu(), "adam": self.optimizer.state_dict(),
                "arch_updates": int(self.arch_updates),
                "max_depths": list(self.alpha.max_depths)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"proxyless state version {state.get('version')}, expected {STATE_VERSION}")
        device = self.device
        with torch.no_grad():
            self.alpha.ops.copy_(state["alpha_ops"].to(device))
            self.alpha.depths.copy_(state["alpha_depths"].to(device))
        self.optimizer.load_state_dict(state["adam"])
        self.arch_updates = int(state["arch_updates"])
        self._log("load", -1)

    @classmethod
    def write_results(cls, cfg, checkpoint_path: str, folder: RunFolder) -> dict[str, str]:
        """The derived arch (and alpha's probabilities) in the search's results format."""
        from elastic_nas.search.proxyless import write_proxyless_results

        outputs = write_proxyless_results(cfg, checkpoint_path, folder.local / "proxyless")
        return {k: folder.show(v) for k, v in outputs.items()}

    def _log(self, event: str, step: int) -> None:
        """Audit: this rank's alpha digest (``proxyless.alpha_log_dir``), one JSON line per event."""
        if not self.p.alpha_log_dir:
            return
        Path(self.p.alpha_log_dir).mkdir(parents=True, exist_ok=True)
        rank = distributed.rank()
        record = {"event": event, "step": step, "rank": rank, "world": distributed.world_size(), "pid": os.getpid(),
                  "time": time.time(), "arch_updates": self.arch_updates, "digest": self.alpha.digest(),
                  "derived": self.space.to_json(self.alpha.derived()), **self.last}
        with open(Path(self.p.alpha_log_dir) / f"rank{rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def latency_tensor(cfg, space: SearchSpace) -> tuple[torch.Tensor, float]:
    """(``[positions, 6]`` ms of every op at every block position, the fixed parts' ms) from the
    configured table, checked against the space (ConfigError before any work)."""
    from elastic_nas.spaces.latency import LatencyTable

    table = LatencyTable.load(cfg.proxyless.latency_table, "proxyless.latency_table")
    table.check(cfg.space, "proxyless.latency_table")
    rows = []
    for s, d in enumerate(cfg.space.max_depths):
        for j in range(d):
            rows.append([table.choices_ms[f"s{s}.b{j}"][str(op)] for op in range(NUM_OPS)])
    return torch.tensor(rows, dtype=torch.float32), float(sum(table.fixed_ms.values()))


__all__ = ["ArchParams", "GatePlan", "ProxylessStrategy", "gated_forward", "latency_tensor"]
