"""Writing a report file: refuse an unusable ``--out`` before any work, one line on a write error.

The check runs before the store is read, so a typo in ``--out`` costs nothing; the write itself
still catches ``OSError`` (a disk that fills up meanwhile, a permission the check could not see).
"""

from __future__ import annotations

import os
from pathlib import Path

from methods.errors import UserError


def check_out_file(out: Path) -> None:
    """Raise a user error if ``out`` cannot be a file we create: a folder, or under a file or a read-only folder.

    Nothing is created: missing parent folders are made only when the report is written.
    """
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give a file name, e.g. {str(out / 'report.html')!r}")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write --out {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"cannot write --out {str(out)!r}: no write permission in {str(parent)!r}")


def write_text(out: Path, text: str) -> None:
    """Create parent folders and write ``text``; an ``OSError`` becomes one user-error line."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot write --out {str(out)!r}: {err.strerror or err}") from None
