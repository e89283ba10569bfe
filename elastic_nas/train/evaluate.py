"""Evaluation on a split, and export of a standalone subnet (``elastic-nas test``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from elastic_nas.config import DataConfig, SpaceConfig, TestConfig, from_dict
from elastic_nas.errors import CheckpointError, UserError
from elastic_nas.io import RunFolder, print_outputs, redact, write_json
from elastic_nas.spaces.precision import Precision


@torch.no_grad()
def evaluate(model: torch.nn.Module, split, batch_size: int = 256, device: str = "cpu",
             precision: Precision | None = None) -> dict[str, float]:
    """Top-1 / top-5 (%) and mean cross-entropy of ``model`` (eval mode) on a split, in
    ``precision``'s autocast and memory format (default fp32)."""
    prec = precision or Precision(device=device)
    prec.model(model.eval().to(device))
    correct1 = correct5 = loss = 0.0
    n = len(split)
    for start in range(0, n, batch_size):
        x, y, _ = split.get_batch(np.arange(start, min(start + batch_size, n)))
        x, y = prec.input(x.to(device)), y.to(device)
        with prec.autocast():
            logits = model(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += float((top[:, 0] == y).sum())
        correct5 += float((top == y[:, None]).any(1).sum())
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss / n, "images": n}


def subnet_fingerprint(space_cfg: SpaceConfig, arch_json: Any, data: DataConfig) -> dict:
    return {"kind": "subnet", "space": asdict(space_cfg), "arch": arch_json,
            "data": {k: getattr(data, k) for k in ("source", "path", "seed", "num_train", "num_test",
                                                      "search_val_size")}}


def load_subnet(path: str, fs=None):
    """(model, space, arch, data cfg, checkpoint) of a retrained subnet: a run dir or a checkpoint dir
    (a path inside ``fs`` where given)."""
    from elastic_nas.elastic.checkpoint import resolve_checkpoint
    from elastic_nas.spaces import build_space

    ckpt = resolve_checkpoint(path, fs=fs)
    fp = ckpt.meta.get("fingerprint", {})
    if fp.get("kind") != "subnet":
        raise CheckpointError(f"{ckpt.path} is a {fp.get('kind')!r} checkpoint; `test` takes a retrained subnet "
                              "(elastic-nas retrain)")
    space_cfg = from_dict(SpaceConfig, fp["space"])
    space = build_space(space_cfg)
    arch = space.validate(fp["arch"])
    model = space.build_subnet(arch)
    model.load_state_dict(ckpt.state["model"])
    data = from_dict(DataConfig, fp["data"])
    return model.eval(), space, arch, data, ckpt


def export_model(model: torch.nn.Module, example: torch.Tensor, out_dir: Path, fmt: str) -> Path:
    """Write ``model`` as a torch.export program (.pt2) or TorchScript (.ts); return the path.
    The export is fp32 in the plain layout, whatever the run trained in: it runs anywhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    if fmt == "torch.export":
        # Batch size stays dynamic: the exported program serves any batch.
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        path = out_dir / "model.pt2"
        torch.export.save(program, path)
    elif fmt == "torchscript":
        path = out_dir / "model.ts"
        torch.jit.save(torch.jit.trace(model, example), path)
    else:
        raise UserError(f"unknown export format {fmt!r}")
    return path


def load_exported(path: Path) -> torch.nn.Module:
    if path.suffix == ".pt2":
        return torch.export.load(path).module()
    return torch.jit.load(path)


def export_folder(given: str, loaded: str) -> RunFolder:
    """The run folder that holds the checkpoint (``given`` is it or one of its checkpoints):
    the export goes to ``<run>/export``, published there on s3:// with the URI's credentials
    and options as given."""
    base, sep, query = given.partition("?")
    base = base.rstrip("/")
    if base.rsplit("/", 1)[-1] == loaded.rstrip("/").rsplit("/", 1)[-1]:  # a checkpoint dir
        base = base.rsplit("/", 1)[0]
    storage, _, name = base.rpartition("/")
    return RunFolder((storage or ".") + sep + query, name)


def run_test(cfg: TestConfig) -> dict:
    from elastic_nas.data import build_dataset

    model, space, arch, data, ckpt = load_subnet(cfg.checkpoint)
    splits = build_dataset(data, space.cfg.input_size)
    metrics = evaluate(model, splits.test, cfg.batch_size, precision=Precision.of(cfg))
    folder = export_folder(cfg.checkpoint, ckpt.path)
    out_dir = Path(cfg.output) if cfg.output else folder.local / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"space": asdict(space.cfg), "arch": space.to_json(arch), "macs": space.macs(arch),
            "params": space.params(arch), "test_top1": round(metrics["top1"], 2),
            "test_top5": round(metrics["top5"], 2), "test_images": metrics["images"],
            "checkpoint": redact(ckpt.path), "step": ckpt.meta.get("step")}
    outputs = {"test top-1": f"{metrics['top1']:.2f}%", "test top-5": f"{metrics['top5']:.2f}%"}
    if cfg.export != "none":
        example = splits.test.get_batch(np.arange(min(8, len(splits.test))))[0]
        path = export_model(model, example, out_dir, cfg.export)
        with torch.no_grad():
            diff = float((load_exported(path)(example) - model(example)).abs().max())
        info.update(export=folder.show(path), export_format=cfg.export, export_max_abs_diff=diff)
        outputs["exported model"] = folder.show(path)
    outputs["model card"] = folder.show(write_json(out_dir / "model.json", info))
    if not cfg.output:
        folder.publish()
    print_outputs("test outputs:", outputs)
    return info


__all__ = ["evaluate", "export_folder", "export_model", "load_exported", "load_subnet", "run_test", "subnet_fingerprint"]
