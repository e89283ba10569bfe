"""Training checkpoints: atomic, checksummed, ``weights_only`` loading, validated against the run.

A checkpoint is a directory ``checkpoint_step<NNNNNNNNN>_<attempt>/`` holding

* ``state.pt`` -- ``torch.save`` of plain containers and tensors only, so it loads with
  ``torch.load(weights_only=True)`` (no unpickling of arbitrary objects);
* ``meta.json`` -- format version, kind, step, the run's fingerprint, and the sha256 and
  size of ``state.pt``. It is written last, so a directory without it is incomplete.

Directories are read through a ``pyarrow.fs.FileSystem``, so the same code reads local
paths and s3:// storage. A checkpoint that fails its checksum or cannot be parsed is
skipped with a message naming it, and the previous one is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from elastic_nas.config import SpaceConfig, from_dict
from elastic_nas.errors import CheckpointError, ConfigError
from elastic_nas.io import atomic_write, filesystem, first_line, is_uri, put_whole, read_from, redact

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
META_FILE = "meta.json"
_DIR_RE = re.compile(r"^checkpoint_step(\d+)(?:_(\d+))?$")


def checkpoint_dir_name(step: int, attempt: int = 0) -> str:
    """Unique per worker-group start: a run that falls back to an older checkpoint
    reaches the same step again, and Ray's checkpoint manager needs distinct names."""
    return f"checkpoint_step{step:09d}_{attempt}"


def write_checkpoint(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` and ``meta`` into ``directory`` atomically (state first, meta last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    full_meta = dict(meta, format=FORMAT_VERSION, sha256=hashlib.sha256(payload).hexdigest(),
                     state_bytes=len(payload))
    try:
        atomic_write(directory / STATE_FILE, payload)
        atomic_write(directory / META_FILE, json.dumps(full_meta, indent=1, sort_keys=True))
    except OSError as e:  # a full disk: no meta.json, so nothing reads this directory as a checkpoint
        raise CheckpointError(f"cannot write checkpoint {directory} ({len(payload) / 2**20:.1f} MiB): "
                              f"{e.strerror or e}; {_free(directory)} free there") from e
    return directory


def upload_checkpoint(local_dir: str | Path, fs: pafs.FileSystem, dest: str) -> None:
    """Copy a checkpoint written by :func:`write_checkpoint` into ``fs`` at ``dest``, state
    first and ``meta.json`` last, so storage too never shows ``meta.json`` beside a partial
    state (a directory copy moves files in parallel, and a kill mid-copy would leave one)."""
    fs.create_dir(dest)  # local storage needs it; object stores ignore it
    pafs.copy_files(f"{local_dir}/{STATE_FILE}", f"{dest}/{STATE_FILE}", pafs.LocalFileSystem(), fs)
    put_whole(f"{local_dir}/{META_FILE}", fs, f"{dest}/{META_FILE}")


def _free(directory: Path) -> str:
    try:
        return f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown space"


class IncompleteCheckpoint(CheckpointError):
    """A checkpoint directory whose writing or copy into storage never finished."""


@dataclass
class LoadedCheckpoint:
    path: str
    meta: dict[str, Any]
    state: dict[str, Any]
    # The run directory's checkpoints, newest first, when it was resolved from one.
    listed: list[str] = field(default_factory=list)


def read_checkpoint(path: str, fs: pafs.FileSystem | None = None) -> LoadedCheckpoint:
    """Read and verify one checkpoint directory; :class:`CheckpointError` says what is wrong."""
    if fs is None:
        fs, path = filesystem(path, CheckpointError)
    try:
        meta = json.loads(read_from(fs, f"{path}/{META_FILE}"))
    except FileNotFoundError:
        raise IncompleteCheckpoint(f"checkpoint {path} is incomplete: no {META_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable {META_FILE}: {e}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')}, expected {FORMAT_VERSION}")
    try:
        payload = read_from(fs, f"{path}/{STATE_FILE}")
    except FileNotFoundError:
        raise IncompleteCheckpoint(f"checkpoint {path} is incomplete: no {STATE_FILE}") from None
    if unfinished(meta, len(payload)):  # longer than recorded: corrupt, below
        raise IncompleteCheckpoint(f"checkpoint {path} is incomplete: {STATE_FILE} has {len(payload)} of "
                                   f"{meta['state_bytes']} bytes")
    if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: {STATE_FILE} fails its sha256 check")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for malformed pickles
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {type(e).__name__}: {e}") from None
    return LoadedCheckpoint(path=path, meta=meta, state=state)


def list_checkpoints(fs: pafs.FileSystem, run_path: str) -> list[tuple[int, int, str]]:
    """``(step, attempt, path)`` of every checkpoint directory under ``run_path``, newest first."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(run_path, allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        m = _DIR_RE.match(info.base_name)
        if m and info.type == pafs.FileType.Directory:
            found.append((int(m.group(1)), int(m.group(2) or 0), info.path))
    return sorted(found, reverse=True)


def unfinished(meta: dict[str, Any], state_size: int | None) -> bool:
    """Whether a checkpoint with this ``meta.json`` and a state of ``state_size`` bytes (None:
    no state file) is a copy that never finished: its state shorter than recorded. A longer
    one is damaged, not unfinished, and is left to its checksum."""
    return state_size is None or state_size < meta.get("state_bytes", 0)


def partial_checkpoints(fs: pafs.FileSystem, listed: list[str], loaded_path: str) -> list[str]:
    """Those of ``listed`` (newest first) older than ``loaded_path`` whose copy into storage
    never finished.

    Ray copies a reported checkpoint file by file; a rank 0 killed mid-copy leaves a
    directory Ray never registers, so its ``num_to_keep`` never deletes it, and a resume
    never reads it (it stops at the newest valid one). Partial = no ``meta.json``, no
    ``state.pt``, or a shorter ``state.pt`` than ``meta.json`` records. Cheap: one
    small read and one stat per directory, no checksums. Newer ones are left alone: the
    resume already named them.
    """
    if loaded_path not in listed:
        return []
    out = []
    for path in listed[listed.index(loaded_path) + 1:]:
        try:
            meta = json.loads(read_from(fs, f"{path}/{META_FILE}"))
        except FileNotFoundError:
            out.append(path)
            continue
        except (OSError, ValueError):
            continue  # unreadable for another reason: leave it to a person
        info = fs.get_file_info(f"{path}/{STATE_FILE}")
        if unfinished(meta, None if info.type == pafs.FileType.NotFound else info.size):
            out.append(path)
    return out


def check_compatible(meta: dict[str, Any], fingerprint: dict[str, Any], path: str) -> None:
    """Refuse a checkpoint from another space or an incompatible config, naming the key."""
    theirs = meta.get("fingerprint", {})
    for key, ours in fingerprint.items():
        if key == "space" and key in theirs:  # space keys added since take their defaults
            theirs = dict(theirs, space=_full_space(theirs["space"], path))
            ours = _full_space(ours, path)
        if key in theirs and theirs[key] != ours:
            raise CheckpointError(
                f"checkpoint {path} is incompatible with this config: {key} is {theirs[key]!r} "
                f"there and {ours!r} here"
            )
        if key not in theirs:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}: not a checkpoint of this kind of run")


def _full_space(space: dict[str, Any], path: str) -> dict[str, Any]:
    try:
        return asdict(from_dict(SpaceConfig, space))
    except ConfigError as e:  # a key removed since, or a value no longer valid
        raise CheckpointError(f"checkpoint {path} has a space this version cannot read ({e})") from None


def load_latest_valid(
    candidates: list[str],
    fingerprint: dict[str, Any],
    fs: pafs.FileSystem | None = None,
    log=None,
    incomplete_ok: bool = False,
) -> LoadedCheckpoint | None:
    """The newest readable checkpoint of ``candidates`` (newest first).

    Corrupt or incomplete ones are skipped with a message saying which, and which one
    is used instead; an incompatible one is an error (falling back would silently
    train a different run). With ``incomplete_ok``, candidates that are all incomplete
    (a run killed while its first checkpoint was being copied) give None: there is no
    checkpoint yet, as if none had been started.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    skipped: list[str] = []
    all_incomplete = True
    for path in candidates:
        try:
            ckpt = read_checkpoint(path, fs)
        except CheckpointError as e:
            skipped.append(str(e))
            all_incomplete = all_incomplete and isinstance(e, IncompleteCheckpoint)
            log(f"elastic-nas: {e}; trying the previous checkpoint")
            continue
        check_compatible(ckpt.meta, fingerprint, path)
        if skipped:
            log(f"elastic-nas: resuming from {path} (step {ckpt.meta.get('step')}) after skipping {len(skipped)}")
        return ckpt
    if skipped and all_incomplete and incomplete_ok:
        log(f"elastic-nas: no complete checkpoint yet ({len(skipped)} unfinished); starting from step 0")
        return None
    if skipped:
        raise CheckpointError("no usable checkpoint: " + "; ".join(skipped))
    return None


def resolve_checkpoint(path: str, fingerprint: dict[str, Any] | None = None, *, fs: pafs.FileSystem | None = None,
                       newer: str | None = None, missing_ok: bool = False,
                       what: str = "checkpoint") -> LoadedCheckpoint | None:
    """One checkpoint directory, or the newest valid checkpoint of a run directory.

    ``path`` is local or a URI (then ``fs`` is found from it), or a path inside ``fs``.
    ``newer``: a checkpoint that may be missing from the listing (Ray's latest registered
    one, whose directory name a hard kill left unlisted). With ``missing_ok`` a run that
    does not exist, holds no checkpoint, or only unfinished ones (and Ray registered none)
    gives None; otherwise :class:`CheckpointError`
    names ``what`` was expected.
    """
    scheme = str(path).split("://")[0] + "://" if fs is None and is_uri(path) else ""
    if fs is None:
        fs, path = filesystem(path, CheckpointError)
    shown = redact(scheme + path)
    try:
        info = fs.get_file_info(path)
        is_checkpoint = fs.get_file_info(f"{path}/{META_FILE}").type == pafs.FileType.File
    except Exception as e:  # offline s3, permissions, ...
        raise CheckpointError(f"cannot read {what} {shown}: {type(e).__name__}: {first_line(e)}") from None
    if info.type == pafs.FileType.File:
        raise CheckpointError(f"{what} {shown} is a file; expected a run or checkpoint directory")
    if is_checkpoint:
        ckpt = read_checkpoint(path, fs)
    else:
        listed = [p for *_, p in list_checkpoints(fs, path)]
        candidates = ([newer] if newer and newer not in listed else []) + listed
        if not candidates:
            if missing_ok:
                return None
            if info.type == pafs.FileType.NotFound:
                raise CheckpointError(f"{what} {shown} does not exist (expected a run or checkpoint directory)")
            raise CheckpointError(f"{what} {shown} holds no checkpoint_step* directory")
        # Ray registers a checkpoint once its copy is done: with one (``newer``), no start over
        ckpt = load_latest_valid(candidates, fingerprint or {}, fs, incomplete_ok=missing_ok and not newer)
        if ckpt is None:
            return None
        ckpt.listed = candidates
    if fingerprint is not None and is_checkpoint:
        check_compatible(ckpt.meta, fingerprint, path)
    if scheme:
        ckpt.path = scheme + ckpt.path
    return ckpt
