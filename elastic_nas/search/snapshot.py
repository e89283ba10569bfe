"""Finding and pinning the supernet snapshot a search scores candidates with.

``snapshot`` may name a checkpoint directory or a supernet run directory (then its
newest valid checkpoint is used, so a search can run against a training run that is
still going), locally or through a pyarrow URI (``s3://...``). The first launch of a
search copies the weights into ``<search dir>/snapshot/``; a resumed search reads that
copy, so it scores every candidate with the same weights even if training has since
written newer checkpoints or rotated the old one away.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from elastic_nas.elastic.checkpoint import (
    META_FILE,
    LoadedCheckpoint,
    read_checkpoint,
    resolve_checkpoint,
    write_checkpoint,
)
from elastic_nas.errors import CheckpointError
from elastic_nas.search.evaluator import Snapshot

PIN_DIR = "snapshot"


def resolve_snapshot(path: str) -> LoadedCheckpoint:
    """Read ``path`` as a checkpoint dir, or as a run dir's newest valid supernet checkpoint."""
    ckpt = resolve_checkpoint(path, {"kind": "supernet"}, what="snapshot")
    fp = ckpt.meta.get("fingerprint", {})
    if fp.get("kind") != "supernet" or "space" not in fp:
        raise CheckpointError(f"checkpoint {ckpt.path} is not a supernet checkpoint (fingerprint kind "
                              f"{fp.get('kind')!r})")
    if "model" not in ckpt.state:
        raise CheckpointError(f"checkpoint {ckpt.path} holds no model weights")
    return ckpt


def pin_snapshot(search_dir: Path, source: str) -> LoadedCheckpoint:
    """The pinned copy in ``search_dir`` if there is one, else resolve ``source`` and pin it."""
    pinned = search_dir / PIN_DIR
    if (pinned / META_FILE).is_file():
        return read_checkpoint(str(pinned))
    ckpt = resolve_snapshot(source)
    meta = {"step": ckpt.meta.get("step"), "fingerprint": ckpt.meta["fingerprint"], "source": str(ckpt.path)}
    write_checkpoint(pinned, {"model": ckpt.state["model"]}, meta)
    return read_checkpoint(str(pinned))


def to_snapshot(ckpt: LoadedCheckpoint) -> Snapshot:
    """NumPy weights (zero-copy through the object store) and an id naming exactly these weights."""
    state = {k: v.detach().cpu().numpy() for k, v in ckpt.state["model"].items()}
    snapshot_id = f"{ckpt.meta.get('source', ckpt.path)}#{ckpt.meta.get('sha256', '')[:16]}"
    if not ckpt.meta.get("sha256"):
        h = hashlib.sha256()
        for k in sorted(state):
            h.update(k.encode())
            h.update(np.ascontiguousarray(state[k]).tobytes())
        snapshot_id += h.hexdigest()[:16]
    return Snapshot(snapshot_id=snapshot_id, space=dict(ckpt.meta["fingerprint"]["space"]), state=state)


__all__ = ["PIN_DIR", "pin_snapshot", "resolve_snapshot", "to_snapshot"]
