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
