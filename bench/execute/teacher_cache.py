"""Finished teachers shared across output folders: ``$DIFFBENCH_CACHE/teachers/<teacher job hash>/``.

A teacher job's result depends only on its identity, which its hash names (recipe, data, architecture, seed,
starting weights). A second grid on the same machine whose teacher job has the same hash, in another output
folder, copies that teacher's files instead of training it again: ``student.pt`` (what its students read),
``student_best.pt``, ``result.json``, ``config.json`` and ``train.log``. The copy is used only when its
``config.json`` is the job of the same hash and its ``student.pt`` loads; anything else is ignored (and the teacher
trains as usual). The driver then logs the teacher's MLflow run from those files without training, with the
tag :data:`CACHE_TAG` naming the folder it came from.

A finished teacher is stored once, written to a temporary folder and renamed, so a crash never leaves half a
teacher behind. A cache that cannot be written (disk full, read-only) costs a warning, never the grid.
``--no-teacher-cache`` (or ``DIFFBENCH_TEACHER_CACHE=0``) turns both directions off.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bench.execute.integrity import damage_of
from bench.jobs.files import CONFIG, LOG, RESULT, STUDENT, STUDENT_BEST
from bench.jobs.spec import JobSpec
from bench.tracking.schema import TEACHER_CACHE

#: The files of a finished teacher that its students and reports need.
FILES = (STUDENT, STUDENT_BEST, RESULT, CONFIG, LOG)
#: MLflow tag on a teacher run logged from the cache: the cache folder its files came from.
CACHE_TAG = TEACHER_CACHE


def cache_root() -> Path:
    """``$DIFFBENCH_CACHE/teachers`` (:func:`tasks.cache.cache_dir`)."""
    from tasks.cache import cache_dir

    return cache_dir() / "teachers"


def _hash_of(folder: Path) -> str | None:
    """The hash of the job whose ``config.json`` lies in ``folder`` (``None``: missing or unreadable)."""
    try:
        return JobSpec.from_dict(json.loads((folder / CONFIG).read_text())).job_hash
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def restore(job_hash: str, workdir: Path) -> Path | None:
    """Copy the cached teacher ``job_hash`` into ``workdir``; return the cache folder it came from, else ``None``.

    Only a whole entry of this very job is copied: ``config.json`` of the hash, and ``result.json`` and
    ``student.pt`` whole and of this job (:func:`bench.execute.integrity.damage_of`).
    """
    src = cache_root() / job_hash
    if not (src / STUDENT).is_file() or _hash_of(src) != job_hash or damage_of(src, job_hash):
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    for name in FILES:  # result.json last: it is what says "finished"
        if name != RESULT and (src / name).is_file():
            shutil.copy2(src / name, workdir / name)
    shutil.copy2(src / RESULT, workdir / RESULT)
    return src


def store(job_hash: str, workdir: Path) -> Path | None:
    """Keep the finished teacher in ``workdir`` in the cache (unless it is there already); the folder, else None.

    Raises ``OSError`` when the cache cannot be written; the caller warns.
    """
    root = cache_root()
    dest = root / job_hash
    if (dest / RESULT).is_file() and _hash_of(dest) == job_hash:
        return dest
    if _hash_of(workdir) != job_hash or damage_of(workdir, job_hash):
        return None
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{job_hash}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name in FILES:
            if (workdir / name).is_file():
                shutil.copy2(workdir / name, tmp / name)
        shutil.rmtree(dest, ignore_errors=True)  # an earlier, unusable copy
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
