"""What code produced a result: the installed version and the git commit (no torch, no MLflow)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str:
    """The project's git commit (``unknown`` outside a checkout)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def diffbench_version() -> str:
    """The installed diffbench version (``unknown`` when running from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffbench")
    except PackageNotFoundError:
        return "unknown"
