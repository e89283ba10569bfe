"""File and storage helpers every step shares: atomic writes, URIs, where outputs went.

* :func:`atomic_write` -- a temp file beside the target, fsynced, then ``os.replace``: a
  reader sees the old file or the whole new one, never half, whatever kills the writer.
* :func:`filesystem` -- a local path or a pyarrow URI (``s3://bucket/prefix``) as a
  ``(pyarrow filesystem, path inside it)`` pair, so one code path reads both.
* :class:`RunFolder` -- where a step writes what people read (plots, summaries, search
  results): the run's directory, or for a URI a local staging copy published to it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
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


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI, keeping the URI's query (pyarrow options) last."""
    base, sep, query = str(base).partition("?")
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/") not in ("", "."))]) + sep + query


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
    return read_from(*filesystem(path, error))


def read_from(fs: pafs.FileSystem, path: str) -> bytes:
    """A whole file of ``fs`` (a path inside it, as :func:`filesystem` returns)."""
    with fs.open_input_stream(path) as f:
        return f.read()


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (pyarrow's run to many lines)."""
    return (str(e).splitlines() or [""])[0]


def storage_error(e: BaseException) -> str:
    """A storage backend's error in one line, without request ids."""
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", f"{type(e).__name__}: {first_line(e)}")


CACHE = Path(os.environ.get("ELASTIC_NAS_CACHE", "~/.cache/elastic-nas")).expanduser()


PUBLISHED = "_published"  # written last by a run folder's first whole copy up


OBJECT_STORES = {"s3", "gcs"}  # pyarrow filesystems whose upload appears whole or not at all


def put_whole(src: str, fs: pafs.FileSystem, dst: str) -> None:
    """Copy the local file ``src`` to ``dst`` on ``fs`` so that ``dst`` is never seen in part:
    an object store's put is atomic; elsewhere (local, NFS, HDFS) a file is readable while it is
    written, so there it goes under ``dst.part`` first and is renamed."""
    if fs.type_name in OBJECT_STORES:
        pafs.copy_files(src, dst, pafs.LocalFileSystem(), fs)
        return
    fs.create_dir(dst.rsplit("/", 1)[0])
    pafs.copy_files(src, dst + ".part", pafs.LocalFileSystem(), fs)
    fs.move(dst + ".part", dst)


class RunFolder:
    """A run's folder of outputs people read: ``<storage>/<name>``.

    Local storage: that directory itself. A URI: a local staging copy under
    ``<cache>/staging/<scheme>/<bucket>/<prefix>/<name>`` that :meth:`publish` copies up and
    :meth:`fetch` copies down, so every step writes and reads plain files wherever the run
    lives (matplotlib, pandas and Tune all want local paths).
    """

    def __init__(self, storage: str, name: str):
        if is_uri(storage):
            self.uri: str | None = join(storage, name)
            scheme, _, rest = redact(self.uri).partition("://")
            self.local = CACHE / "staging" / scheme / rest
        else:
            self.uri, self.local = None, Path(storage).expanduser().resolve() / name
        self._sent: dict[str, tuple[int, int, int]] = {}  # what this process copied up: (inode, size, mtime) by file
        self._marked = False

    def show(self, path: Any) -> Any:
        """Where a file of the folder lives for the user: its URI once published (anything
        else is returned as it is, so a step's whole outputs dict can be mapped)."""
        path = str(path) if isinstance(path, Path) else path
        if self.uri is None or not str(path).startswith(str(self.local)):
            return path
        return redact(join(self.uri, Path(path).relative_to(self.local).as_posix()))

    def publish(self, retries: int = 3) -> bool:
        """Copy the staging folder up to the URI (no-op for local storage), retrying with backoff.
        Storage trouble is reported, not raised: the outputs stay on local disk, nothing is lost."""
        if self.uri is None or not self.local.is_dir():
            return True
        for attempt in range(retries + 1):
            try:
                self._copy_up()
                return True
            except Exception as e:  # pyarrow raises OSError/ArrowInvalid subclasses per backend
                error = storage_error(e)
                if attempt < retries:
                    time.sleep(2 ** attempt)
        print(f"elastic-nas: could not copy {self.local} to {redact(self.uri)} ({error}); "
              "the outputs stay on local disk", file=sys.stderr, flush=True)
        return False

    def _copy_up(self) -> None:
        """The files changed since the last copy, in the order they were written (a step writes
        data before the record that names it, e.g. a snapshot's state before its meta.json), then
        the ``_published`` marker that :meth:`fetch` requires. Each file appears whole: an object
        store's put is atomic, and a local or NFS target gets a temp name and a rename."""
        fs, root = filesystem(self.uri)
        if isinstance(fs, pafs.LocalFileSystem) and Path(root).resolve() == self.local.resolve():
            return  # a file:// URI stages in the folder itself: nothing to copy
        files = []
        for f in self.local.rglob("*"):
            try:
                if f.is_file() and f.name != PUBLISHED:
                    files.append((f.stat(), f))
            except FileNotFoundError:  # a writer's temp file, renamed meanwhile
                pass
        for st, f in sorted(files, key=lambda t: t[0].st_mtime_ns):
            rel = f.relative_to(self.local).as_posix()
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)  # an atomic rewrite is a new inode
            if self._sent.get(rel) != seen:
                put_whole(str(f), fs, f"{root}/{rel}")
                self._sent[rel] = seen
        if not self._marked:
            with tempfile.NamedTemporaryFile("w", suffix=".json") as marker:
                marker.write(json.dumps({"at": time.time()}))
                marker.flush()
                put_whole(marker.name, fs, f"{root}/{PUBLISHED}")
            self._marked = True

    def fetch(self) -> bool:
        """Copy the published folder down when staging has none (a step resumed on another
        machine); True if there was one. A folder there without the marker is refused."""
        if self.uri is None or self.local.is_dir():
            return False
        fs, fs_path = filesystem(self.uri)
        if fs.get_file_info(fs_path).type != pafs.FileType.Directory:
            return False
        if fs.get_file_info(f"{fs_path}/{PUBLISHED}").type != pafs.FileType.File:
            # Neither resumed from nor written over: it may be a cut-off first copy, another run's
            # folder under a mistyped name, or a whole folder from before the marker.
            raise UserError(f"{redact(self.uri)} exists but was never copied up whole (no {PUBLISHED}): remove it "
                            f"or choose another run.name; if it is a whole run of an earlier version, add an empty "
                            f"{PUBLISHED} file there to resume from it")
        # Beside it, then renamed: a copy cut short would else pass for a whole staging folder.
        self.local.parent.mkdir(parents=True, exist_ok=True)
        for left in self.local.parent.glob(f".{self.local.name}.fetch-*"):  # a killed fetch's
            shutil.rmtree(left, ignore_errors=True)
        part = tempfile.mkdtemp(dir=self.local.parent, prefix=f".{self.local.name}.fetch-")
        try:
            pafs.copy_files(fs_path, part, fs, pafs.LocalFileSystem())
            for left in Path(part).rglob("*.part"):  # a later copy up cut short (put_whole): not the run's
                left.unlink()
            os.replace(part, self.local)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
        return True


def print_outputs(title: str, outputs: dict[str, Any]) -> None:
    """Where a step's outputs went, one aligned line each."""
    print(f"\n{title}", flush=True)
    width = max(len(k) for k in outputs)
    for k, v in outputs.items():
        print(f"  {k:<{width}}  {v}")
    sys.stdout.flush()


__all__ = ["CACHE", "RunFolder", "atomic_write", "filesystem", "first_line", "is_uri", "join", "print_outputs", "put_whole",
           "read_bytes", "read_from", "redact", "storage_error", "write_json"]
