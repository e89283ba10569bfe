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
from elastic_nas.io import is_uri, redact
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


def pinned_or_resolved(search_dir: Path, source: str) -> tuple[LoadedCheckpoint, bool]:
    """(snapshot, whether it is pinned): a resumed search's pinned copy, else ``source``
    resolved, to be pinned by :func:`pin` once the search's checks pass (a rejected launch
    then leaves nothing that a corrected one would find)."""
    pinned = search_dir / PIN_DIR
    if not (pinned / META_FILE).is_file():
        return resolve_snapshot(source), False
    ckpt = read_checkpoint(str(pinned))
    asked = ckpt.meta.get("asked")
    if asked is not None and asked != _asked(source):  # not refused: the first may have moved or gone
        print(f"elastic-nas: this search was started on {asked} and resumes with those weights (pinned); "
              f"snapshot {_asked(source)} is not used: a new run.name searches it", flush=True)
    return ckpt, True


def pin(search_dir: Path, ckpt: LoadedCheckpoint, source: str) -> LoadedCheckpoint:
    """Copy the snapshot's weights into the search dir: every launch of it scores with these."""
    meta = {"step": ckpt.meta.get("step"), "fingerprint": ckpt.meta["fingerprint"], "source": str(ckpt.path),
            "asked": _asked(source)}
    write_checkpoint(search_dir / PIN_DIR, {"model": ckpt.state["model"]}, meta)
    return read_checkpoint(str(search_dir / PIN_DIR))


def _asked(source: str) -> str:
    """``snapshot`` as the user gave it, comparable between launches (and without credentials)."""
    return redact(source) if is_uri(source) else str(Path(source).expanduser().resolve())


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


__all__ = ["PIN_DIR", "pin", "pinned_or_resolved", "resolve_snapshot", "to_snapshot"]
