"""Checkpoints: atomic, weights_only, checksummed, validated, with fallback past corrupt ones."""

import json
from pathlib import Path

import pytest
import torch

from elastic_nas.elastic.checkpoint import (
    checkpoint_dir_name,
    list_checkpoints,
    load_latest_valid,
    read_checkpoint,
    resolve_checkpoint,
    write_checkpoint,
)
from elastic_nas.errors import CheckpointError

FP = {"kind": "supernet", "space": {"name": "spos", "input_size": 32}}


def _write(root, step, fp=FP):
    return write_checkpoint(root / checkpoint_dir_name(step),
                            {"model": {"w": torch.full((3,), float(step))}, "step": step},
                            {"step": step, "fingerprint": fp})


def test_roundtrip_and_listing(tmp_path):
    for s in (10, 20, 30):
        _write(tmp_path, s)
    listed = list_checkpoints(__import__("pyarrow.fs").fs.LocalFileSystem(), str(tmp_path))
    assert [s for s, *_ in listed] == [30, 20, 10]
    ck = read_checkpoint(str(tmp_path / checkpoint_dir_name(20)))
    assert ck.state["step"] == 20 and torch.equal(ck.state["model"]["w"], torch.full((3,), 20.0))


def test_truncated_latest_falls_back_to_previous_and_says_which(tmp_path):
    for s in (10, 20):
        _write(tmp_path, s)
    state = tmp_path / checkpoint_dir_name(20) / "state.pt"
    state.write_bytes(state.read_bytes()[:50])
    messages = []
    cands = [str(tmp_path / checkpoint_dir_name(s)) for s in (20, 10)]
    ck = load_latest_valid(cands, FP, log=messages.append)
    assert ck.state["step"] == 10
    assert any("step000000020_" in m and "incomplete: state.pt has 50 of" in m for m in messages)
    assert any("resuming from" in m and "step000000010_" in m for m in messages)


def test_missing_meta_is_incomplete(tmp_path):
    d = _write(tmp_path, 5)
    (d / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        read_checkpoint(str(d))


def damage_in_place(d):
    """One byte of a checkpoint's state flipped: the right size, failing its checksum."""
    state = d / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))


def test_all_corrupt_is_a_clear_error(tmp_path):
    d = _write(tmp_path, 5)
    damage_in_place(d)  # right size, wrong bytes: damaged, not unfinished
    for incomplete_ok in (False, True):
        with pytest.raises(CheckpointError, match="no usable checkpoint.*corrupt.*sha256"):
            load_latest_valid([str(d)], FP, log=lambda m: None, incomplete_ok=incomplete_ok)


def test_a_run_whose_only_checkpoints_are_unfinished_starts_over(tmp_path):
    """A node lost while the first checkpoint was being copied: the auto-resume finds only
    unfinished directories and starts from step 0 (saying so); a path a person named is refused."""
    first, second = _write(tmp_path, 3), _write(tmp_path, 6)
    (first / "meta.json").unlink()
    state = second / "state.pt"
    whole = state.read_bytes()
    state.write_bytes(whole[:100])
    messages = []
    assert resolve_checkpoint(str(tmp_path), FP, missing_ok=True) is None
    assert load_latest_valid([str(second), str(first)], FP, log=messages.append, incomplete_ok=True) is None
    assert "no complete checkpoint yet (2 unfinished); starting from step 0" in messages[-1]
    with pytest.raises(CheckpointError, match="no usable checkpoint.*incomplete"):
        resolve_checkpoint(str(tmp_path), FP)
    # Ray registered one (its copy had finished), so storage lost it: refused, not a fresh start
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        resolve_checkpoint(str(tmp_path), FP, missing_ok=True, newer=str(second))
    state.write_bytes(whole + b"\0")  # longer than recorded: damaged, not unfinished
    with pytest.raises(CheckpointError, match="corrupt"):
        resolve_checkpoint(str(tmp_path), FP, missing_ok=True)


def test_upload_writes_meta_last(tmp_path, monkeypatch):
    """Storage never shows meta.json beside a partial state: the copy is state first, meta last."""
    import pyarrow.fs as pafs

    from elastic_nas.elastic import checkpoint

    src = _write(tmp_path / "local", 4)
    order = []
    real_copy = pafs.copy_files
    monkeypatch.setattr(checkpoint.pafs, "copy_files", lambda a, b, *r: (order.append(Path(a).name), real_copy(a, b, *r)))
    checkpoint.upload_checkpoint(src, pafs.LocalFileSystem(), str(tmp_path / "store" / src.name))
    assert order == ["state.pt", "meta.json"]
    assert sorted(p.name for p in (tmp_path / "store" / src.name).iterdir()) == ["meta.json", "state.pt"]
    assert read_checkpoint(str(tmp_path / "store" / src.name)).state["step"] == 4


def test_other_space_is_refused(tmp_path):
    d = _write(tmp_path, 5, fp={"kind": "supernet", "space": {"name": "cream", "input_size": 32}})
    with pytest.raises(CheckpointError, match="incompatible.*space"):
        load_latest_valid([str(d)], FP, log=lambda m: None)


def test_pickled_objects_are_refused_even_with_valid_checksum(tmp_path):
    import hashlib
    import io

    d = tmp_path / checkpoint_dir_name(1)
    d.mkdir()
    buf = io.BytesIO()
    torch.save({"x": _Evil()}, buf)
    (d / "state.pt").write_bytes(buf.getvalue())
    (d / "meta.json").write_text(json.dumps({"format": 1, "step": 1, "fingerprint": FP,
                                             "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        read_checkpoint(str(d))


def test_write_leaves_no_temp_files(tmp_path):
    d = _write(tmp_path, 3)
    assert sorted(p.name for p in d.iterdir()) == ["meta.json", "state.pt"]


class _Evil:  # any non-allow-listed class: weights_only loading must refuse it
    pass


def test_partial_copies_older_than_the_loaded_checkpoint_are_found(tmp_path):
    """A kill during Ray's file-by-file copy leaves a directory nothing else deletes."""
    import pyarrow.fs as pafs

    from elastic_nas.elastic.checkpoint import partial_checkpoints

    dirs = {s: _write(tmp_path, s) for s in (5, 10, 20, 30, 40)}
    (dirs[10] / "state.pt").write_bytes((dirs[10] / "state.pt").read_bytes()[:50])  # cut short
    (dirs[20] / "meta.json").unlink()  # copy died before meta.json
    (dirs[40] / "state.pt").unlink()  # newer than the one in use: the resume reported it; kept
    fs = pafs.LocalFileSystem()
    listed = [p for *_, p in list_checkpoints(fs, str(tmp_path))]
    found = partial_checkpoints(fs, listed, str(dirs[30]))
    assert sorted(found) == sorted([str(dirs[10]), str(dirs[20])])
    # The complete older one (5) and every file of the one in use stay readable.
    assert read_checkpoint(str(dirs[5])).state["step"] == 5
    assert read_checkpoint(str(dirs[30])).state["step"] == 30
    assert partial_checkpoints(fs, listed, str(tmp_path / "elsewhere")) == []


def _fill_and_fail(root) -> str:
    """Checkpoint 10 fits; checkpoint 20 (4 MiB) does not. The error's text."""
    _write(root, 10)
    with pytest.raises(CheckpointError) as e:
        write_checkpoint(root / checkpoint_dir_name(20), {"model": {"w": torch.zeros(2**20)}, "step": 20},
                         {"step": 20, "fingerprint": FP})
    return str(e.value)


def _assert_previous_checkpoint_survives(root, message: str) -> None:
    assert str(root / checkpoint_dir_name(20)) in message and "MiB free there" in message, message
    ck = resolve_checkpoint(str(root), FP)
    assert ck.state["step"] == 10  # the cut-short one has no meta.json: never read
    assert not [p for p in root.rglob("*.tmp")]  # no temporary file left behind


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs: a real full disk (needs the right to mount, as root in a container)."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the file-size-limit test covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_how_much_space_is_left(small_tmpfs):
    message = _fill_and_fail(small_tmpfs)
    assert "No space left on device" in message
    _assert_previous_checkpoint_survives(small_tmpfs, message)


def test_a_write_cut_short_by_a_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    """The same failure without mounting anything: the OS refuses the write past 1 MiB."""
    import subprocess
    import sys

    child = f"""
import resource, signal, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
from tests.test_checkpoint import _fill_and_fail
print(_fill_and_fail(Path({str(tmp_path)!r})))
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "File too large" in out.stdout
    _assert_previous_checkpoint_survives(tmp_path, out.stdout)


@pytest.mark.parametrize("cut", [b"", b'{"checkpoint_results": [{"training_re', b"\xff\xfe"])
def test_ray_checkpoint_record_a_kill_cut_short_is_removed_before_a_resume(tmp_path, capsys, cut):
    """Ray Train writes its record in place: a driver killed mid-write leaves it empty or half
    written, and Ray's controller would refuse to start. The launch removes it and says so;
    a whole record, and a run without one, are left alone."""
    from elastic_nas.cluster.launcher import RAY_CHECKPOINT_RECORD, drop_cut_checkpoint_record

    assert not drop_cut_checkpoint_record(str(tmp_path), "run")  # a new run: nothing there
    record = tmp_path / "run" / RAY_CHECKPOINT_RECORD
    record.parent.mkdir()
    record.write_text('{"checkpoint_results": []}')
    assert not drop_cut_checkpoint_record(str(tmp_path), "run") and record.exists()
    record.write_bytes(cut)
    assert drop_cut_checkpoint_record(str(tmp_path), "run")
    assert not record.exists()
    assert f"removed Ray Train's checkpoint record {record}: a kill cut its write short" in capsys.readouterr().out


def test_ray_checkpoint_record_cut_short_that_storage_will_not_delete_is_one_line(tmp_path, monkeypatch):
    """Storage that refuses the delete (permissions, a read-only mount): one clear line before
    any work, the record left as it was."""
    from elastic_nas.cluster import launcher
    from elastic_nas.errors import UserError

    class RefusesDeletes:
        def __init__(self, fs):
            self.fs = fs

        def open_input_stream(self, path):
            return self.fs.open_input_stream(path)

        def delete_file(self, path):
            raise PermissionError(13, "Permission denied", path)

    real = launcher.filesystem
    monkeypatch.setattr(launcher, "filesystem", lambda path: (RefusesDeletes(real(path)[0]), real(path)[1]))
    record = tmp_path / "run" / launcher.RAY_CHECKPOINT_RECORD
    record.parent.mkdir()
    record.write_bytes(b'{"checkpoint_res')
    with pytest.raises(UserError, match=r"record .* was cut short by a kill and cannot be removed \(PermissionError"):
        launcher.drop_cut_checkpoint_record(str(tmp_path), "run")
    assert record.read_bytes() == b'{"checkpoint_res'
