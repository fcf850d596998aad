"""The terminal's layout chooser: of several renderings of one table, the first that fits the console's width.

Shared by the leaderboard (:mod:`.render_rich`) and the reproduction summary (:mod:`.reproduction`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions

#: The width a table is measured at when nothing constrains it.
_UNBOUNDED = 100_000
Layout = TypeVar("Layout", bound=tuple)


def first_fitting(console: Console, options: ConsoleOptions, layouts: Iterable[Layout]) -> Layout:
    """The first ``(name, table, …)`` whose table's natural width fits ``options.max_width``.

    A table's natural width is what it measures when nothing constrains it: its ``no_wrap`` columns at their
    longest line. When none fits, the last is returned with every column allowed to wrap (between words,
    folding only a word longer than its column) and ``-wrapped`` added to its name.
    """
    from rich.measure import Measurement

    unbounded = options.update_width(_UNBOUNDED)
    layout = None
    for layout in layouts:
        if Measurement.get(console, unbounded, layout[1]).maximum <= options.max_width:
            return layout
    assert layout is not None, "no layout to choose from"
    for column in layout[1].columns:
        column.no_wrap, column.overflow = False, "fold"
    return (f"{layout[0]}-wrapped", *layout[1:])
