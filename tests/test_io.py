"""The atomic write every output goes through: a reader sees the old file or the whole new
one, files follow the umask as a plain open() would, and a failed write leaves nothing."""

import os
import time
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
    (published / io.PUBLISHED).write_text("{}")
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


def _staged(tmp_path: Path, name: str = "staging"):
    """A run folder on a file:// URI with its own staging (a machine of its own)."""
    from elastic_nas import io

    folder = io.RunFolder(f"file://{tmp_path / 'bucket'}", "run")
    folder.local = tmp_path / name / "run"
    return folder


def _write_snapshot(root: Path) -> None:
    (root / "snapshot").mkdir(parents=True)
    (root / "snapshot" / "state.pt").write_bytes(b"w" * 1000)
    time.sleep(0.01)  # written after the state it names, as the search pins it
    (root / "snapshot" / "meta.json").write_text('{"step": 1}')


def test_publish_copies_changes_in_written_order_then_the_marker(tmp_path: Path, monkeypatch):
    """A snapshot's meta.json never reaches storage before its state; the marker comes last; a
    later copy up sends only what changed (not the whole snapshot every generation)."""
    import pyarrow.fs as pafs

    from elastic_nas import io

    folder = _staged(tmp_path)
    _write_snapshot(folder.local)
    whole, sent = pafs.copy_files, []
    monkeypatch.setattr(pafs, "copy_files", lambda src, dst, *fs: (sent.append(Path(dst).name), whole(src, dst, *fs)))
    assert folder.publish()
    assert sent == ["state.pt.part", "meta.json.part", f"{io.PUBLISHED}.part"]
    remote = tmp_path / "bucket" / "run"
    assert (remote / "snapshot" / "state.pt").read_bytes() == b"w" * 1000 and (remote / io.PUBLISHED).is_file()
    assert not list(remote.rglob("*.part"))
    sent.clear()
    time.sleep(0.01)
    (folder.local / "results.csv").write_text("arch,score\n")
    io.atomic_write(folder.local / "snapshot" / "meta.json", '{"step": 2}')  # rewritten, same size
    assert folder.publish() and sent == ["results.csv.part", "meta.json.part"]
    assert (remote / "snapshot" / "meta.json").read_text() == '{"step": 2}'
    sent.clear()
    assert folder.publish() and sent == []


def test_a_later_copy_up_cut_short_leaves_no_part_file_in_a_fetch(tmp_path: Path):
    """A copy up killed between a file's copy and its rename leaves ``<name>.part`` beside the
    published file: a fetch brings the run down without it."""
    first = _staged(tmp_path, "first")
    _write_snapshot(first.local)
    assert first.publish()
    remote = tmp_path / "bucket" / "run"
    (remote / "snapshot" / "meta.json.part").write_text('{"step": 2')
    second = _staged(tmp_path, "second")
    assert second.fetch() and (second.local / "snapshot" / "meta.json").read_text() == '{"step": 1}'
    assert not list(second.local.rglob("*.part"))


def test_a_first_copy_up_cut_short_is_refused_not_resumed_from(tmp_path: Path, monkeypatch):
    """Killed during its first copy up, a run left storage without the marker: another machine
    refuses it in one line (it would else resume from a snapshot's meta.json without its state, or
    write over another run's folder), and resumes once the folder is marked whole."""
    import pyarrow.fs as pafs

    from elastic_nas import io

    first = _staged(tmp_path, "first")
    _write_snapshot(first.local)
    (first.local / "tune").mkdir()
    (first.local / "tune" / "old-session.json").write_text("{}")
    whole = pafs.copy_files

    def killed_after_two(src, dst, *fs):
        if len(list((tmp_path / "bucket").rglob("*.*"))) >= 2:
            raise OSError("connection reset")
        whole(src, dst, *fs)

    monkeypatch.setattr(pafs, "copy_files", killed_after_two)
    monkeypatch.setattr(io.time, "sleep", lambda s: None)
    assert not first.publish(retries=0)
    remote = tmp_path / "bucket" / "run"
    assert (remote / "snapshot" / "state.pt").is_file() and not (remote / io.PUBLISHED).exists()
    monkeypatch.setattr(pafs, "copy_files", whole)
    second = _staged(tmp_path, "second")
    with pytest.raises(io.UserError, match="never copied up whole .* remove it or choose another run.name"):
        second.fetch()
    assert not second.local.exists()
    (remote / io.PUBLISHED).write_text("")  # what the message says to do for a whole folder
    assert second.fetch() and (second.local / "snapshot" / "state.pt").is_file()
