"""The Ray-free training step: masked loss, accumulation, off-arch gradients, and the gradient
sync of two real ranks (torch.distributed over gloo) against one process doing the same work."""

from __future__ import annotations

import copy
import json
import os
import socket
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from elastic_nas.config import LandmarksConfig, OptimConfig, SpaceConfig
from elastic_nas.spaces import build_space
from elastic_nas.spaces.precision import Precision
from elastic_nas.train.step import Batch, TrainStep, make_optimizer
from elastic_nas.train.strategies import Strategy
from elastic_nas.train.strategies.landmarks import LandmarkTerm

SPACE = SpaceConfig(name="cream", input_size=8, width_mult=0.25, max_depths=[1, 2, 1, 1, 1])
OPTIM = OptimConfig(lr=0.1, momentum=0.9, weight_decay=1e-4)
WEIGHTS = {name for name, _ in build_space(SPACE).build_supernet().named_parameters()}
ENTANGLED = replace(SPACE, weight_sharing="entangled")


class TwoArchs(Strategy):
    """A supernet strategy with two archs per step (as sandwich rules do), the second distilled
    from the first's detached predictions; with ``landmarks``, their ranking term too."""

    leaves_parameters_unused = True

    def __init__(self, model, archs, landmarks: LandmarkTerm | None = None):
        super().__init__(model, label_smoothing=0.0)
        self.fixed = archs
        self.teacher = None
        self.landmarks = landmarks

    def ranking_archs(self, step):
        return self.landmarks.archs(step) if self.landmarks else []

    def ranking_loss(self, forward, x, y, weight, archs):
        return self.landmarks.loss(forward, x, y, weight, archs)

    def archs(self, step):
        return list(self.fixed)

    def loss(self, forward, x, y, arch, step, index):
        logits = forward(x, arch)
        if index == 0:
            self.teacher = logits.detach()
            return F.cross_entropy(logits, y, reduction="none"), logits
        soft = F.softmax(self.teacher, 1)
        return -(soft * F.log_softmax(logits, 1)).sum(1), logits


def supernet_and_archs(space_cfg: SpaceConfig = SPACE):
    space = build_space(space_cfg)
    torch.manual_seed(0)
    model = space.build_supernet()
    archs = [((5,), (5, 5), (5,), (5,), (5,)), ((0,), (2,), (1,), (0,), (3,))]
    return model, [space.validate(a) for a in archs]


def data(n: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_padding_weighs_nothing_and_off_arch_choices_get_no_gradient():
    model, archs = supernet_and_archs()
    strategy = Strategy(model)
    strategy.archs = lambda step: [archs[1]]
    x, y = data()
    weight = torch.tensor([1.0] * 6 + [0.0] * 2)
    with torch.no_grad():  # the same forward (BN on all 8 images), padding masked out
        per_sample = F.cross_entropy(copy.deepcopy(model).train()(x, archs[1]), y, reduction="none")
    stats = TrainStep(model, strategy)(0, make_optimizer(model, OPTIM), 0.1, Batch(x, y, weight), num_real=6)
    assert stats.count == 6
    assert stats.loss_sum == pytest.approx(float((per_sample * weight).sum()), rel=1e-5)
    on_arch = {id(p) for p in model.arch_parameters(archs[1])}
    for p in model.parameters():
        assert (p.grad is not None) == (id(p) in on_arch)


def test_accumulation_matches_one_batch_for_a_network_without_batch_norm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    x, y = data(8)
    weight = torch.tensor([1.0] * 7 + [0.0])
    grads = []
    for accum in (1, 2, 4):
        net = torch.nn.Sequential(*[m for m in model])  # same modules, fresh grads
        for p in net.parameters():
            p.grad = None
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
        TrainStep(net, Strategy(net))(0, optimizer, 0.0, Batch(x, y, weight), num_real=7, accum_steps=accum)
        grads.append([p.grad.clone() for p in net.parameters()])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def landmarks_against_the_start(folder) -> str:
    """A landmarks file of the two test archs whose scores order them against the untrained
    supernet's losses (the higher loss scores higher), so the hinge acts from the first step."""
    model, archs = supernet_and_archs()
    x, y = data(8)
    with torch.no_grad():
        losses = [float(F.cross_entropy(model.train()(x, a), y)) for a in archs]
    rows = [{"arch": build_space(SPACE).to_json(a), "score": s} for a, s in zip(archs, losses)]
    path = folder / "landmarks.json"
    path.write_text(json.dumps({"landmarks": rows}))
    return str(path)


def landmark_term(path: str, every: int = 1) -> LandmarkTerm:
    return LandmarkTerm(LandmarksConfig(path=path, weight=2.0, every=every), build_space(SPACE), seed=0)


def test_the_landmark_term_adds_its_hinge_to_the_steps_gradient(tmp_path):
    """With landmarks the step's gradient is the archs' plus weight x (grad loss(better) - grad
    loss(worse)) while the supernet orders them wrongly; the pair is [better, worse] by score."""
    model, archs = supernet_and_archs()
    x, y = data(8)
    weight = torch.ones(8)
    term = landmark_term(landmarks_against_the_start(tmp_path))
    better, worse = term.archs(0)
    grads = {}
    for name, landmarks in (("plain", None), ("landmarks", term)):
        net = copy.deepcopy(model)
        TrainStep(net, TwoArchs(net, archs, landmarks), guard=False)(0, make_optimizer(net, OPTIM), 0.0,
                                                                     Batch(x, y, weight), num_real=8)
        grads[name] = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    net = copy.deepcopy(model).train()  # BN on the batch's statistics, as in the step
    losses = [F.cross_entropy(net(x, a), y) for a in (better, worse)]
    assert float(losses[0].detach()) > float(losses[1].detach())  # the wrong order: the hinge acts
    hinge = 2.0 * (losses[0] - losses[1])
    hinge.backward()
    for n, p in net.named_parameters():
        expected = grads["plain"].get(n, 0) + (p.grad if p.grad is not None else 0)
        if n in grads["landmarks"]:
            torch.testing.assert_close(grads["landmarks"][n], expected, rtol=1e-4, atol=1e-6, msg=n)
    assert set(grads["landmarks"]) >= set(grads["plain"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, port: int, grad_sync: str, out: dict, channels_last: bool = False,
                 landmarks: str = "") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        prec = Precision("fp32", channels_last)
        model, archs = supernet_and_archs(ENTANGLED if channels_last else SPACE)
        prec.model(model)
        if channels_last:  # the small arch first: its sliced kernels' gradients are the ones laid out otherwise
            archs = archs[::-1]
        x, y = data(8)
        shard = slice(4 * rank, 4 * rank + 4)
        weight = torch.tensor([1.0, 1.0, 1.0, 1.0 if rank == 0 else 0.0])  # 7 real samples, one pad
        optimizer = make_optimizer(model, OPTIM)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            strategy = TwoArchs(model, archs, landmark_term(landmarks, every=2) if landmarks else None)
            step = TrainStep(model, strategy, grad_sync=grad_sync, precision=prec)
            for t in range(3):
                step(t, optimizer, 0.1, Batch(x[shard], y[shard], weight), num_real=7)
        if rank == 0:
            out[grad_sync] = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
            out["warnings"] = [str(w.message) for w in seen]
    finally:
        dist.destroy_process_group()


def one_process(landmarks: str = "") -> dict:
    """The weights after three steps of one process with the two ranks' shards as micro-batches
    (with landmarks, a pair on steps 0 and 2: DDP's own sync on step 1 between them)."""
    model, archs = supernet_and_archs()
    x, y = data(8)
    weight = torch.tensor([1.0] * 7 + [0.0])
    optimizer = make_optimizer(model, OPTIM)
    step = TrainStep(model, TwoArchs(model, archs, landmark_term(landmarks, every=2) if landmarks else None))
    for t in range(3):
        step(t, optimizer, 0.1, Batch(x, y, weight), num_real=7, accum_steps=2)
    return model.state_dict()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("grad_sync,landmarks", [("ddp", False), ("bucketed", False), ("ddp", True)])
def test_two_ranks_train_exactly_as_one_process_with_their_shards_as_micro_batches(grad_sync, landmarks, tmp_path):
    """Each rank's BN sees its own shard; one process with the two shards as micro-batches
    (the same normalisation) must end with the same weights, for two archs per step, and with
    a landmark term (two forwards into one backward, which DDP's reducer does not sync)."""
    path = landmarks_against_the_start(tmp_path) if landmarks else ""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_worker, args=(_free_port(), grad_sync, out, False, path), nprocs=2, join=True)
        distributed = {k: v for k, v in dict(out)[grad_sync].items() if k in WEIGHTS}
    state = one_process(path)
    initial = supernet_and_archs()[0].state_dict()
    # The landmark hinge's two extra paths through BN over 4 samples of 1 x 1 maps (stage 4 at 8 px)
    # magnify rounding: weights differ from one process by up to 1.5e-4 (1.6e-4 with the depthwise
    # weight gradient by taps), where they move by up to 0.45 in the 3 steps.
    tol = {"rtol": 1e-4, "atol": 3e-4} if landmarks else {"rtol": 1e-4, "atol": 1e-5}
    changed = 0
    for key, value in state.items():
        if key in WEIGHTS:  # BN running statistics are per rank by design
            torch.testing.assert_close(distributed[key], value, **tol, msg=key)
            changed += int(not torch.equal(value, initial[key]))
    assert changed > 10  # both archs' weights moved
    if landmarks:  # the term changed the training
        plain = one_process()
        assert any(not torch.allclose(plain[k], state[k]) for k in WEIGHTS)


def test_optimizer_decays_weights_only():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = make_optimizer(model, OPTIM)
    decays = {p.ndim: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays == {4: OPTIM.weight_decay, 1: 0.0}
    assert np.isclose(optimizer.param_groups[0]["lr"], OPTIM.lr)


@pytest.mark.timeout(300)
def test_two_channels_last_ranks_train_as_one_process_and_print_no_layout_warning():
    """The laptop configs train in channels_last (2x faster on CPUs: benchmarks/memory_format.py):
    two DDP ranks in that layout, entangled kernels sliced, end where one process in that layout
    does, and PyTorch's bucket-stride warning (a size-1 dim's stride, the same memory) stays off
    the console."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_worker, args=(_free_port(), "ddp", out, True), nprocs=2, join=True)
        distributed, seen = dict(out)["ddp"], list(out["warnings"])
    model, archs = supernet_and_archs(ENTANGLED)
    prec = Precision("fp32", channels_last=True)
    prec.model(model)
    x, y = data(8)
    step = TrainStep(model, TwoArchs(model, archs[::-1]), precision=prec)
    optimizer = make_optimizer(model, OPTIM)
    for t in range(3):  # as many steps as each rank takes
        step(t, optimizer, 0.1, Batch(x, y, torch.tensor([1.0] * 7 + [0.0])), num_real=7, accum_steps=2)
    weights = {name for name, _ in model.named_parameters()}
    for key, value in model.state_dict().items():
        if key in weights:
            torch.testing.assert_close(distributed[key], value.contiguous(), rtol=1e-4, atol=1e-5, msg=key)
    assert not [w for w in seen if "bucket view strides" in w]
