"""A job's files: written so that a crash never leaves a torn one, read so that a torn one is never a dead end.

* ``checkpoint.pt`` — the full training state after every epoch, written atomically; the copy it replaces
  is kept as ``checkpoint.prev.pt``, so a corrupt newest copy costs one epoch, not the job;
* ``result.json`` — what a finished job reports, atomically too;
* ``student.pt`` / ``student_best.pt`` — the student's weights only (plus what it is), for students
  of a teacher job, ``diffbench eval`` and export.

Imports torch only (no Ray, no MLflow).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.jobs.files import previous_path
from methods.errors import first_line


def save_atomic(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """Write ``path`` so that a crash at any moment leaves a complete file (new or old), never a torn one.

    The bytes go to a temporary file that is synced to disk before it is renamed over ``path``. With
    ``keep_previous`` the file being replaced survives as ``<name>.prev<suffix>``: if the new one is
    later found corrupt (a disk that lied about the sync, a copy cut short), :func:`load_checkpoint`
    falls back to it and the job loses one epoch instead of all of them.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        if isinstance(obj, bytes | str):
            f.write(obj.encode() if isinstance(obj, str) else obj)
        else:
            torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)


def load_checkpoint(path: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest readable training state of a job: ``path``, else its previous copy, else ``None``.

    An unreadable file is never a dead end: it is renamed ``*.corrupt`` (kept for inspection), a warning
    naming it goes to the log, and the job continues from the previous epoch's copy or from scratch.
    """
    for candidate in (path, previous_path(path)):
        if not candidate.is_file():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "epoch" not in state or "student" not in state:
                raise ValueError("not a diffbench training checkpoint")
            if candidate != path:
                log(f"warning: resuming from {candidate.name} (epoch {state['epoch']}): {path.name} was unusable")
            return state
        except Exception as err:  # noqa: BLE001 - a torn or foreign file: fall back, never give up
            first = first_line(err, 200)
            corrupt = candidate.with_name(candidate.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(candidate, corrupt)
            log(f"warning: checkpoint {candidate} is unreadable ({type(err).__name__}: {first}); "
                f"moved to {corrupt.name}")
    if path.with_name(path.name + ".corrupt").exists():
        log(f"warning: no readable checkpoint left in {path.parent}; the job restarts from epoch 1")
    return None


def student_file_loads(path: Path) -> bool:
    """Whether ``path`` is a student file that loads (a teacher's ``student.pt`` is read by its students)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - any unreadable file counts as missing
        return False
    return isinstance(obj, dict) and "student" in obj
