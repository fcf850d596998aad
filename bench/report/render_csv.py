"""The CSV rendering: the tidy numbers, one record per pair and method, for machines.

Every record carries its own provenance columns (recipe preset and fields, commit, version, dates)
and its ``note`` ("n=1, no CI", "n=0, no finished run"), so a row copied out of the file still says
what it is. p-values and marks are columns; the legend is in the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.report.board import Leaderboard


def render_csv(lb: Leaderboard) -> str:
    return lb.tidy.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
