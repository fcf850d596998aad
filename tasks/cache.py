"""Where generated data sets are cached: one setting, ``DIFFBENCH_CACHE``.

The embedded data sets (detection and segmentation ``shapes``) are generated once and reused by every
run. ``DIFFBENCH_CACHE`` names the folder; without it the XDG base-directory rule applies
(``$XDG_CACHE_HOME/diffbench``, else ``~/.cache/diffbench``). Every task asks :func:`cache_dir`, so one
variable moves (or isolates, in tests and CI) all of them. Read at call time, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that names diffbench's cache folder.
CACHE_ENV = "DIFFBENCH_CACHE"


def cache_dir() -> Path:
    """``$DIFFBENCH_CACHE``, else ``$XDG_CACHE_HOME/diffbench``, else ``~/.cache/diffbench`` (``~`` expanded).

    Empty variables count as unset, like the XDG specification says for ``XDG_CACHE_HOME``.
    """
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "diffbench"
