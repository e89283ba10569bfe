"""The atomic write every output goes through: a reader sees the old file or the whole new
one, files follow the umask as a plain open() would, and a failed write leaves nothing."""

import os
from pathlib import Path

import pytest

from elastic_nas.io import atomic_write, redact


def test_atomic_write_replaces_whole_file_with_umask_mode(tmp_path: Path):
    target = tmp_path / "result.json"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_failed_callback_keeps_old_file_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "plot.png"
    atomic_write(target, "old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_redact_drops_credentials_from_uris():
    assert redact("s3://key:secret@bucket/runs?access_key=k&secret_key=s") == "s3://bucket/runs"
    assert redact("/local/runs") == "/local/runs"


def test_a_fetch_cut_short_leaves_no_staging_folder_to_resume_from(tmp_path: Path, monkeypatch):
    """A step resumed on another machine copies its published folder down; a copy that fails
    (or is killed) half-way must not leave a staging folder that the next launch takes as whole."""
    import pyarrow.fs as pafs

    from elastic_nas import io

    published = tmp_path / "bucket" / "run"
    (published / "snapshot").mkdir(parents=True)
    (published / "snapshot" / "state.pt").write_bytes(b"w" * 1000)
    (published / "chosen_arch.json").write_text("{}")
    folder = io.RunFolder(f"file://{tmp_path / 'bucket'}", "run")
    folder.local = tmp_path / "staging" / "run"  # a file:// URI's staging would be the folder itself
    whole = pafs.copy_files

    def cut_short(src, dst, *fs):
        whole(src, dst, *fs)
        (Path(dst) / "snapshot" / "state.pt").write_bytes(b"w" * 10)
        raise OSError("connection reset")

    monkeypatch.setattr(pafs, "copy_files", cut_short)
    with pytest.raises(OSError, match="connection reset"):
        folder.fetch()
    assert not folder.local.exists() and os.listdir(folder.local.parent) == []
    monkeypatch.setattr(pafs, "copy_files", whole)
    assert folder.fetch() and (folder.local / "snapshot" / "state.pt").read_bytes() == b"w" * 1000
    assert not folder.fetch()  # staging is there now: nothing copied over it
