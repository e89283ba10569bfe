"""What keeping Tune's saves whole costs the search at each save, against a whole-file filesystem.

Tune saves a search's state in a staging folder, and a background thread on the driver copies
the whole folder to the storage path (every trial's params and results too) at each save, at
least 10 s apart, each file in place: a driver killed mid-copy can leave a file cut off. A
pyarrow ``PyFileSystem`` whose output streams replace their file whole on close would prevent
that for every file. This times its copy against pyarrow's native local one, and against a
``PyFileSystem`` that only delegates (the cost of a filesystem in Python at all), on a staging
folder shaped like a search of ``--trials`` trials (per trial: params.json, params.pkl,
result.json; the trial table, the searcher's and Tune's states), the kinds alternating
``--repeats`` times so drift hits them alike. What the search does instead is timed on the same
folder: ``elastic_nas.search.saves.keep``, the atomic whole copies of the three files a restore
reads, written as Tune saves.

    python benchmarks/tune_storage_copy.py --trials 224 --repeats 30

Writes ``benchmarks/results/tune_storage_copy.json``: each copy's median and spread (ms), the
ratios to the native copy, and the extra time per save (the replacing copy's, and the kept
copies') as a share of one core over Tune's shortest save period (10 s).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from _common import write_result
from elastic_nas.search import saves


class _ReplaceOnClose(io.FileIO):
    """Written beside its target, renamed onto it on close."""

    def __init__(self, path: str):
        self.target, self.tmp = path, f"{path}.{os.getpid()}.tmp"
        super().__init__(self.tmp, "w")

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.replace(self.tmp, self.target)


class Delegating(pafs.FileSystemHandler):
    """pyarrow's local filesystem behind a Python handler."""

    def __init__(self):
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other):
        return type(other) is type(self)

    def get_type_name(self):
        return "python-local"

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not here")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.local.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path)


class Replacing(Delegating):
    """Every file written replaces its target whole."""

    def open_output_stream(self, path, metadata):
        return pa.PythonFile(_ReplaceOnClose(path), mode="w")


SAVE_PERIOD_S = 10.0  # Tune's "auto" experiment-state period never saves more often


def staging_folder(root: Path, trials: int) -> Path:
    """A staging folder of ``trials`` trials, file sizes as a search's (a 3-candidate batch)."""
    staging = root / "staging"
    for i in range(trials):
        trial = staging / f"trial_{i:08x}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text("x" * 396)
        (trial / "params.pkl").write_bytes(b"p" * 162)
        (trial / "result.json").write_text("r" * 930 + "\n")
    table = {"trial_data": [["t" * 2500, "r" * 1500] for _ in range(trials)]}
    (staging / "experiment_state-s.json").write_text(json.dumps(table))
    (staging / "searcher-state-s.pkl").write_text("s" * (200 * trials))
    (staging / "search_gen_state-s.json").write_bytes(b"g" * 1608)
    return staging


def copy_ms(staging: Path, dest: Path, fs: pafs.FileSystem | None) -> float:
    """One save's copy to ``dest``; ``fs`` None: the search's kept whole copies instead."""
    t0 = time.perf_counter()
    if fs is None:
        saves.keep_in(dest)
        saves.keep(str(staging), "s")
    else:
        pafs.copy_files(str(staging), str(dest), destination_filesystem=fs)
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=224, help="trials in the staging folder")
    ap.add_argument("--repeats", type=int, default=30, help="copies of each kind, alternating")
    ap.add_argument("--name", default="tune_storage_copy")
    args = ap.parse_args()
    kinds = {"native": pafs.LocalFileSystem(), "python": pafs.PyFileSystem(Delegating()),
             "replacing": pafs.PyFileSystem(Replacing()), "kept": None}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        staging = staging_folder(root, args.trials)
        (root / "kept").mkdir()
        files = sum(1 for p in staging.rglob("*") if p.is_file())
        for name, fs in kinds.items():  # a first, untimed copy of each: Tune's later saves overwrite
            copy_ms(staging, root / name, fs)
        for r in range(args.repeats):
            for name in (list(kinds) if r % 2 == 0 else list(kinds)[::-1]):
                times[name].append(copy_ms(staging, root / name, kinds[name]))
        assert not [p for p in (root / "replacing").rglob("*.tmp")], "a temporary file was left"
    med = {k: statistics.median(v) for k, v in times.items()}
    extra_ms = med["replacing"] - med["native"]
    figures = {
        "settings": {"trials": args.trials, "files": files, "repeats": args.repeats},
        "copy_ms": {k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in times.items()},
        "vs_native": {k: med[k] / med["native"] for k in ("python", "replacing")},
        "extra_ms_per_save": {"replacing": extra_ms, "kept": med["kept"]},
        "extra_core_share_at_10s_saves": {"replacing": extra_ms / 1e3 / SAVE_PERIOD_S,
                                          "kept": med["kept"] / 1e3 / SAVE_PERIOD_S},
    }
    share = figures["extra_core_share_at_10s_saves"]
    print(f"{args.trials} trials ({files} files): native copy {med['native']:.1f} ms, through Python "
          f"{med['python']:.1f} ms, replacing {med['replacing']:.1f} ms ({figures['vs_native']['replacing']:.2f}x, "
          f"{extra_ms:.1f} ms more per save, {100 * share['replacing']:.2f} % of a core at a save every 10 s); "
          f"the search's kept whole copies {med['kept']:.2f} ms ({100 * share['kept']:.3f} %)", flush=True)
    write_result(args.name, figures)


if __name__ == "__main__":
    main()
