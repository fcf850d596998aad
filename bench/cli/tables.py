"""Tables that fit the terminal without cutting a value: columns are left out (named in a note) rather than
any cell being shortened to ``…``. A value a user copies (a job hash) is never wrapped or cut."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def fitted_table(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    droppable: Sequence[str] = (),
    left: Sequence[str] = (),
) -> tuple[Table, list[str]]:
    """A table of ``rows`` whose every cell shows whole at ``console.width``, and the columns left out for it.

    Columns in ``droppable`` are left out, in that order, while the table laid out at the console's width cuts a
    word (a header or a value) to ``…``; ``left``: the left-justified columns (the rest are numbers: right-justified).
    """
    shown = list(columns)
    dropped: list[str] = []
    candidates = [c for c in droppable if c in shown]
    while True:
        table = Table(title=title)
        keep = [columns.index(c) for c in shown]
        for c in shown:
            table.add_column(c, justify="left" if c in left else "right")
        for r in rows:
            table.add_row(*(r[i] for i in keep))
        if not candidates or _fits(table, console.width):
            return table, dropped
        col = candidates.pop(0)
        shown.remove(col)
        dropped.append(col)


def _fits(table: Table, width: int) -> bool:
    """Whether ``table`` shows at ``width`` with no cell or header cut to ``…``."""
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, legacy_windows=False).print(table)
    return "…" not in buf.getvalue()
