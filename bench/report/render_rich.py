"""The terminal rendering: a rich table, gains coloured, marks bold, published numbers dimmed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.report.cells import cell_parts, pivot, row_runs, runs_url
from bench.report.schema import REPRODUCED, VERDICT_MARKS

if TYPE_CHECKING:
    from bench.report.board import Leaderboard


def to_rich(lb: Leaderboard, ui_url: str | None = None, reproduction: bool = False) -> Any:
    """A rich table whose caption holds the legend, the provenance and the notes.

    Args:
        lb: the leaderboard.
        ui_url: the MLflow UI address; the ``(n=…)`` of each cell and the student name then link
            (terminal hyperlinks) to the cell's and the row's runs.
        reproduction: the reproduction summary instead (:func:`bench.report.reproduction.to_rich`).
    """
    if reproduction:
        from bench.report.reproduction import to_rich as reproduction_rich

        return reproduction_rich(lb)
    from rich.markup import escape
    from rich.style import Style
    from rich.table import Table
    from rich.text import Text

    # Method labels such as ``kd[temperature=4]`` look like rich markup: escape every plain string.
    caption = escape("\n".join(lb.footer()))
    table = Table(title=escape(lb.title), caption=caption, caption_justify="left", show_lines=True)
    wide, labels, _ = pivot(lb.tidy)
    names = [c for c in wide.columns if c not in labels]
    # "fold" wraps a long word instead of cutting it to "resne…": a narrow terminal loses no name or digit.
    for c in names:
        table.add_column(escape(c), justify="left", overflow="fold")
    for m in labels:
        table.add_column(escape(m), justify="right", overflow="fold")
    rows = list(lb.tidy.itertuples(index=False))
    for r in wide.itertuples(index=False):
        vals = list(zip(wide.columns, r, strict=True))
        positions = [v for c, v in vals if c in labels]
        row_link = runs_url(ui_url, *reversed(row_runs(lb.tidy, positions))) if ui_url else None
        cells: list[Any] = []
        for c, v in vals:
            if c in names:
                text = Text(str(v) or "—")
                if c == "student" and row_link:
                    text.stylize(Style(link=row_link))
                cells.append(text)
        cells += [_cell(rows[v], ui_url) if v >= 0 else "" for c, v in vals if c in labels]
        table.add_row(*cells)
    return table


def _cell(r: Any, ui_url: str | None) -> Any:
    from rich.style import Style
    from rich.text import Text

    t = Text()
    link = runs_url(ui_url, r.experiment_id, r.run_ids) if ui_url else None
    for kind, text in cell_parts(r):
        if kind == "mean":
            t.append(text, style="bold")
        elif kind == "std":
            t.append(f" ± {text}")
        elif kind == "n":
            style = Style(dim="no CI" not in text, color="yellow" if "no CI" in text else None, link=link)
            t.append(f" {text}", style=style)
        elif kind == "gain":
            t.append(f"\n{text}", style="green" if r.gain >= 0 else "red")
        elif kind in ("ci", "why"):
            t.append(f" {text}", style="yellow" if kind == "why" else "")
        elif kind in ("sig", "vsig"):
            t.append(text, style="bold")
        elif kind in ("test", "vtest"):
            t.append(text)
        elif kind == "vs":
            t.append(f"\n{text}", style="cyan")
        elif kind == "none":
            t.append(text, style="yellow")
        elif kind == "verdict":
            t.append(f" {text}", style="bold green" if text == VERDICT_MARKS[REPRODUCED] else "bold red")
        else:
            t.append(f"\n{text}", style="dim italic")
    return t
