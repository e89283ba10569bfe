"""File and storage helpers every step shares: atomic writes, URIs, where outputs went.

* :func:`atomic_write` -- a temp file beside the target, fsynced, then ``os.replace``: a
  reader sees the old file or the whole new one, never half, whatever kills the writer.
* :func:`filesystem` -- a local path or a pyarrow URI (``s3://bucket/prefix``) as a
  ``(pyarrow filesystem, path inside it)`` pair, so one code path reads both.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from elastic_nas.errors import UserError


def _umask() -> int:
    """The process umask, read without setting it where Linux lets us (setting it, even back,
    would race with threads creating files meanwhile)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes | str | Callable[[str], None], tmp_dir: str | Path | None = None) -> Path:
    """Write ``data`` (bytes, text, or a ``write(tmp_path)`` callback) to ``path`` atomically.

    The temporary file lies beside ``path`` unless ``tmp_dir`` (on the same filesystem) is given:
    for a folder that another process copies while we write."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would follow the umask
        if callable(data):
            data(tmp)
        else:
            Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any, indent: int = 1) -> Path:
    return atomic_write(path, json.dumps(data, indent=indent) + "\n")


def redact(path: str) -> str:
    """A URI without its query and user info, where pyarrow takes credentials."""
    if not is_uri(path):
        return str(path)
    scheme, _, rest = str(path).partition("://")
    rest = rest.split("?", 1)[0]
    host, sep, tail = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{sep}{tail}"


def is_uri(path: str) -> bool:
    """``s3://...``, ``gs://...``, ``file://...``: anything pyarrow opens by scheme."""
    return "://" in str(path)


def filesystem(path: str, error: type[UserError] = UserError) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a local path or a URI; ``error`` names what failed."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), str(Path(path).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(path)
    except Exception as e:  # pyarrow raises OSError/ArrowInvalid subclasses per backend
        raise error(f"cannot open {redact(path)}: {type(e).__name__}: {first_line(e)}") from None


def read_bytes(path: str, error: type[UserError] = UserError) -> bytes:
    """A whole file, local or through a URI."""
    fs, fs_path = filesystem(path, error)
    with fs.open_input_stream(fs_path) as f:
        return f.read()


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (pyarrow's run to many lines)."""
    return (str(e).splitlines() or [""])[0]


def print_outputs(title: str, outputs: dict[str, Any]) -> None:
    """Where a step's outputs went, one aligned line each."""
    print(f"\n{title}", flush=True)
    width = max(len(k) for k in outputs)
    for k, v in outputs.items():
        print(f"  {k:<{width}}  {v}")
    sys.stdout.flush()


__all__ = ["atomic_write", "filesystem", "first_line", "is_uri", "print_outputs", "read_bytes", "redact",
           "write_json"]
