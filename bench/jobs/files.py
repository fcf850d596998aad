"""What a job leaves on disk, read without torch: its folder, the names of its files, its ``result.json``; and how
a failed write is told apart from a bug.

A job works in ``OUTPUT/jobs/<job hash>/``: ``checkpoint.pt`` (and ``checkpoint.prev.pt``, the copy it replaced),
``student.pt`` / ``student_best.pt`` (the student's weights), ``result.json`` (what a finished job reports),
``config.json`` (the resolved job), ``train.log`` and, while a driver trains it, ``claim.json``. The engine
writes them (:mod:`bench.engine.checkpoint`); drivers, reports and commands read them through this module.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from methods.errors import first_line

#: File names inside a job folder.
CHECKPOINT = "checkpoint.pt"
STUDENT = "student.pt"
STUDENT_BEST = "student_best.pt"
RESULT = "result.json"
CONFIG = "config.json"
LOG = "train.log"


def job_dir(output: Path | str, job_hash: str) -> Path:
    """The folder a job writes its checkpoint, results and log into."""
    return Path(output) / "jobs" / job_hash


def previous_path(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``: the copy :func:`save_atomic` keeps."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def read_result(workdir: Path) -> dict[str, Any] | None:
    """A finished job's ``result.json``, or ``None`` when it is missing or unreadable (then it is re-made)."""
    path = Path(workdir) / RESULT
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict) or "history" not in data:
        return None
    return data


#: The longest file name and path most file systems take (Linux's NAME_MAX and PATH_MAX, in bytes).
NAME_MAX = 255
PATH_MAX = 4095


def path_problem(path: Path | str) -> str | None:
    """Why ``path`` cannot be a folder to write into (empty, a name or path too long), or ``None``.

    Checked before anything starts: an over-long name used to end in a traceback from the first ``mkdir``.
    """
    text = str(path)
    if not text.strip():
        return "is empty; give a folder (e.g. results)"
    if len(os.fsencode(text)) > PATH_MAX:
        return f"is {len(os.fsencode(text))} bytes long; paths are at most {PATH_MAX}"
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            return f"has a name of {len(os.fsencode(part))} bytes ({part[:40]}...); names are at most {NAME_MAX}"
    return None


#: ``errno`` values that mean "the disk cannot take this write" (a re-run after freeing space resumes).
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM}


def is_write_error(err: BaseException) -> bool:
    """Whether ``err`` (or what it wraps) says the disk or store cannot be written, not that the code broke."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return True
        text = str(err).lower()
        if "database or disk is full" in text or "readonly database" in text or "disk i/o error" in text:
            return True
        if "unable to open database file" in text:  # an immutable store (chattr +i) refuses even to open for writing
            return True
        if "no space left on device" in text or "read-only file system" in text or "file too large" in text:
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


class StorageFull(RuntimeError):
    """The output folder or the MLflow store stopped taking writes during a grid (one line, exit 3).

    Raised by the driver when a job failed because it could not write its files, or when a write to the
    store failed: every other job would fail the same way, so the grid stops; a re-run resumes.
    """


def describe_os_error(err: BaseException) -> str:
    """``No space left on device (path)`` without the traceback's noise; the OS or SQLite error a wrapper hides (MLflow
    and SQLAlchemy wrap SQLite's ``attempt to write a readonly database`` in their own words), if any."""
    import sqlite3

    inner: BaseException | None = err
    for _ in range(8):
        if inner is None:
            break
        if isinstance(inner, OSError) and inner.strerror:
            where = f" ({inner.filename})" if inner.filename else ""
            return f"{inner.strerror}{where}"
        orig = getattr(inner, "orig", None)  # SQLAlchemy's DBAPIError keeps the driver's error here
        if isinstance(inner, sqlite3.Error) or isinstance(orig, sqlite3.Error):
            return f"SQLite: {first_line(orig if isinstance(orig, sqlite3.Error) else inner)}"
        inner = inner.__cause__ or inner.__context__
    return first_line(err)


# -- whole files ----------------------------------------------------------------------------------------------------
#: Bytes per element of the storages ``torch.save`` writes, by storage class name.
_ELEMENT_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                  "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                  "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}  # fmt: skip


class _Stub:
    """What a torch object becomes when a torch file is read without torch: its name, nothing else."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *_args: Any, **_kwargs: Any) -> _Stub:
        return _Stub(self.name)

    def __setstate__(self, _state: Any) -> None:
        pass


def read_torch_file(path: Path) -> tuple[Any, str | None]:
    """The object in a ``torch.save`` file, read without torch (tensors as stubs), and what is wrong with the file.

    Checks what a torn or foreign file gets wrong, in the time it takes to read its index: the zip archive and its
    directory (a truncated copy has none), the pickle (its CRC, then unpickled), and every tensor storage the pickle
    names present in the archive at its full size. Returns ``(object, None)`` for a whole file and ``(None, why)``
    otherwise. Commands that do not train (``diffbench doctor``) and the driver's planning use it.
    """
    import pickle
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        return None, "missing"
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return None, f"unreadable ({first_line(err, 120)})"
    with archive:
        entries = {info.filename: info for info in archive.infolist()}
        pkl = next((name for name in entries if name.endswith("/data.pkl") and name.count("/") == 1), None)
        if pkl is None:
            return None, "not a torch file (no data.pkl)"
        prefix = pkl.split("/", 1)[0]
        storages: list[tuple[str, str, int]] = []

        class Reader(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if module == "torch" or module.startswith("torch."):
                    return _Stub(name)
                return super().find_class(module, name)

            def persistent_load(self, pid: Any) -> Any:
                if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                    kind = getattr(pid[1], "name", "")
                    storages.append((str(pid[2]), kind, int(pid[4])))
                return _Stub("storage")

        try:
            with archive.open(pkl) as f:
                obj = Reader(f).load()
        except Exception as err:  # noqa: BLE001 - a torn pickle or a CRC mismatch: the file is damaged
            return None, f"damaged ({type(err).__name__}: {first_line(err, 120)})"
        for key, kind, numel in storages:
            info = entries.get(f"{prefix}/data/{key}")
            if info is None:
                return None, f"damaged (tensor data {key} missing)"
            if info.file_size < numel * _ELEMENT_BYTES.get(kind, 0):
                return None, f"damaged (tensor data {key} cut short)"
    return obj, None


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` so that a crash leaves the old file or the new one, never a torn one (no torch needed)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
