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


def student_record(spec: Any, weights: dict[str, torch.Tensor], num_classes: int) -> dict[str, Any]:
    """What a student file (``student.pt``, ``student_best.pt``) holds: the weights, and what they are."""
    return {
        "student": weights,
        "arch": spec.student,
        "task": spec.task,
        "dataset": spec.dataset,
        "num_classes": num_classes,
        "job": spec.to_dict(),
    }


def export_from_checkpoint(checkpoint: Path, spec: Any, dest: Path, num_classes: int) -> int:
    """Write ``dest`` (a job's ``student.pt``) from the student weights of its training checkpoint; the epoch.

    The last epoch's checkpoint holds exactly the weights the loop exported when the job finished, so a deleted or
    damaged ``student.pt`` of a finished job is made again from it as the loop makes it (:func:`student_record`).
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    save_atomic(student_record(spec, state["student"], num_classes), dest)
    return int(state["epoch"])
