"""Tune's saves of a search, kept whole and put back whole before a restore.

Tune saves a search (its trial table ``experiment_state-<session>.json``, the searcher's state and
its own search-generator state) in a staging folder on the driver, and a background thread copies
the folder to the search's ``tune/`` folder file by file, in place. A driver killed mid-copy leaves
a file there cut off (seen in CI: the trial table at 0 bytes), and the restarted search had nothing
to resume from. So as Tune saves, the searcher also writes a whole copy of those three files into
the Tune folder (``<file>.whole``, atomically: :func:`keep`), and before a restore any of them cut
off or missing is put back from its copy (:func:`put_back`).

The copies cannot be cut off, but the three files can be a save apart. A trial table newer than
the searcher's state is caught up by the searcher's restore (:func:`finished_trials`); a searcher
newer than the table is what its own early saves already allow; Tune's generator state (kept as
of the save before: Tune writes it after the searcher) only numbers trial tags.

A filesystem that replaces every file Tune copies was measured and not taken: 4.7x the copy's time,
2.9 % of a core at 224 trials (``benchmarks/tune_storage_copy.py``).
"""

from __future__ import annotations

import json
import pickletools
import time
from pathlib import Path

from ray.tune.execution.tune_controller import TuneController
from ray.tune.search import Searcher, SearchGenerator

from elastic_nas.io import atomic_write

KEPT = ".whole"
# The Tune folder of this driver's search, set at each launch: Tune restores the searcher it
# pickled at the first launch, whose folder may have moved since.
_FOLDER: dict[str, Path | None] = {}
TABLE_PREFIX = TuneController.CKPT_FILE_TMPL.split("{}")[0]


def keep_in(tune_path: Path | None) -> None:
    """Where :func:`keep` writes (None: nowhere)."""
    _FOLDER["tune"] = tune_path


def session_files(session: str) -> list[str]:
    """What a restore reads of a session: the trial table first (see :func:`keep`)."""
    return [TuneController.CKPT_FILE_TMPL.format(session), Searcher.CKPT_FILE_TMPL.format(session),
            SearchGenerator.CKPT_FILE_TMPL.format(session)]


def keep(staging: str, session: str) -> None:
    """Whole copies of the session's files as Tune saves them to ``staging``, table first: a kill
    between two copies leaves the table newer, which the searcher's restore catches up."""
    folder = _FOLDER.get("tune")
    if folder is None or not folder.is_dir():
        return
    for name in session_files(session):
        src = Path(staging, name)
        if src.is_file():
            atomic_write(folder / (name + KEPT), src.read_bytes())


def whole(path: Path) -> bool:
    """Whether a saved file is there and whole: JSON that parses, or a pickle that reaches its
    STOP (read without running it)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        return bool(data) and list(pickletools.genops(data))[-1][0].name == "STOP"
    except Exception:  # noqa: BLE001 - any way a cut-off pickle fails to parse
        return False


def put_back(tune_path: Path) -> bool:
    """Whether the search in ``tune_path`` (a folder Tune can restore) resumes from a whole save.
    The newest session's files that are cut off or missing are put back from their whole copies;
    a session that cannot be made whole is set aside (``*.cut-off``: Tune's restore would
    otherwise "restart the experiment" with a searcher of another time, and the search ended
    short), so Tune resumes from an older one. Where none is left, the Tune folder is set aside
    (False: the search starts again)."""
    for session in sessions(tune_path):
        broken = [name for name in session_files(session) if not whole(tune_path / name)]
        if not broken:
            return True
        if all(whole(tune_path / (name + KEPT)) for name in broken):
            for name in broken:
                atomic_write(tune_path / name, (tune_path / (name + KEPT)).read_bytes())
            print(f"elastic-nas: the search's saved {', '.join(broken)} was cut off (a driver killed while "
                  "Tune copied it): put back from its whole copy", flush=True)
            return True
        for f in sorted(tune_path.glob(f"*{session}*"), key=lambda f: f.name.startswith(TABLE_PREFIX)):
            f.rename(f.with_name(f.name + ".cut-off"))  # the table last: it alone marks a session for Tune
        print(f"elastic-nas: the search's saved {', '.join(broken)} was cut off or missing (a driver killed "
              "while saving it): its session is set aside", flush=True)
    kept = tune_path.with_name(f"{tune_path.name}.cut-off-{time.strftime('%Y%m%d-%H%M%S')}")
    tune_path.rename(kept)  # nothing whole to resume from: start again, the old folder kept
    print(f"elastic-nas: no whole saved state of the search is left: starting it again ({kept.name} kept)",
          flush=True)
    return False


def sessions(tune_path: Path) -> list[str]:
    """The sessions any of whose files (or whole copies) are in ``tune_path``, newest first: a
    kill during Tune's copy can leave a session's searcher state without its trial table, and
    Tune's restore reads the newest searcher state whatever the tables say."""
    found = set()
    for template in session_files("{}"):
        head, tail = template.split("{}")
        for f in tune_path.glob(f"{head}*{tail}*"):
            rest = f.name[len(head):]
            if rest.endswith(tail) or rest.endswith(tail + KEPT):
                found.add(rest[:rest.rindex(tail)])
    return sorted(found, reverse=True)


def finished_trials(folder: str) -> dict[str, dict]:
    """``{trial id: last result}`` of the trials the newest trial table in ``folder`` lists as
    finished ({} where there is none)."""
    states = sorted(Path(folder).glob(TuneController.CKPT_FILE_TMPL.format("*")))
    if not states:
        return {}
    trials = [(json.loads(t), json.loads(r)) for t, r in json.loads(states[-1].read_text())["trial_data"]]
    return {t["trial_id"]: r.get("last_result") or {} for t, r in trials if t.get("status") == "TERMINATED"}


__all__ = ["finished_trials", "keep", "keep_in", "put_back", "session_files", "sessions", "whole"]
