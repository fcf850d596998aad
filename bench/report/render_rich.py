"""The terminal rendering: a rich table that never breaks a number, an interval or a name across lines.

Every line of a cell holds whole pieces (:func:`~bench.report.cells.cell_lines`) and the columns do not wrap
(``no_wrap``); rather than letting rich fold a cell, the report measures its layouts on the console it is printed
to and shows the first whose natural width fits:

1. ``wide``: one column per method, each cell ``mean ± std (n)`` over ``gain [low, high]`` (then ``vs …`` and
   ``paper …``), teacher and student in columns of their own;
2. ``stacked``: the same with the interval on a line of its own, and the pair in one column (teacher over
   ``→ student``);
3. ``long``: one row per pair and method (teacher, vanilla, the methods), columns score / gain / paper: its width
   does not grow with the number of methods, so 80 columns hold it; then the same with the interval on its own line;
4. ``long`` with a key: pairs written ``P1``, ``P2``…, sweep labels ``kd[1]``…, the full names listed under the
   table.

Only when not even the last fits may rich wrap it (between words): the one case in which a token can break. The
legend, provenance and notes follow the table, wrapped at the console's width. A report of several tasks or data sets
prints one table per task, data set and metric (their metrics do not share a scale), each in the layout that fits it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bench.report.cells import cell_lines, improves, pivot, row_runs, runs_url
from bench.report.fitting import first_fitting
from bench.report.schema import REPRODUCED, TEACHER, TEACHER_COLUMN, VERDICT_MARKS

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table
    from rich.text import Text

    from bench.report.board import Leaderboard

#: Method labels longer than this (sweeps: ``kd[temperature=4,…]``) are headed on several lines, broken after
#: ``[`` and ``,``.
LABEL_WIDTH = 18
#: Far wider than any terminal: the width a layout is measured at to learn its natural width.
#: A layout: ``(name, table, …)``.


def to_rich(lb: Leaderboard, ui_url: str | None = None, reproduction: bool = False) -> Any:
    """The leaderboard as a rich renderable: the first layout that fits the console, then legend and notes.

    Args:
        lb: the leaderboard.
        ui_url: the MLflow UI address; the ``(n=…)`` of each cell and the student name then link
            (terminal hyperlinks) to the cell's and the row's runs.
        reproduction: the reproduction summary instead (:func:`bench.report.reproduction.to_rich`).
    """
    if reproduction:
        from bench.report.reproduction import to_rich as reproduction_rich

        return reproduction_rich(lb)
    return TerminalReport(lb, ui_url)


class TerminalReport:
    """A leaderboard that picks its layouts when printed (see the module docstring)."""

    def __init__(self, lb: Leaderboard, ui_url: str | None = None) -> None:
        self.lb = lb
        self.ui_url = ui_url

    def tables(self) -> list[TerminalTable]:
        """One table per task, data set and metric."""
        tidy = self.lb.tidy
        if tidy.empty:
            return [TerminalTable(tidy, self.ui_url)]
        groups = tidy.groupby(["task", "dataset", "metric"], sort=False).indices.values()
        return [TerminalTable(tidy.iloc[rows].reset_index(drop=True), self.ui_url) for rows in groups]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        for table in self.tables():
            _, rendered, key = table.choose(console, options)
            yield rendered
            for line in key:
                yield Text(line, style="dim")
            yield Text()
        for line in self.lb.footer():
            yield Text(line)


class TerminalTable:
    """The rows of one task, data set and metric, in the first layout that fits (see the module docstring)."""

    def __init__(self, tidy: Any, ui_url: str | None = None) -> None:
        self.tidy = tidy
        self.ui_url = ui_url

    def layouts(self) -> Iterator[tuple[str, Table, list[str]]]:
        """``(name, table, key lines)`` of each layout, widest first."""
        yield "wide", self._pivot_table(stacked=False), []
        yield "stacked", self._pivot_table(stacked=True), []
        yield "long", *self._long_table(split_ci=False, abbreviate=False)
        yield "long", *self._long_table(split_ci=True, abbreviate=False)
        yield "long-key", *self._long_table(split_ci=True, abbreviate=True)

    def choose(self, console: Console, options: ConsoleOptions) -> tuple[str, Table, list[str]]:
        """The first layout that fits the console (:func:`first_fitting`)."""
        return first_fitting(console, options, self.layouts())

    # -- the layouts -------------------------------------------------------------------------------------------
    def _title(self) -> Text:
        from rich.text import Text

        return Text(pivot(self.tidy)[2], style="bold")

    def _pivot_table(self, stacked: bool) -> Table:
        """One row per pair, one column per method; ``stacked``: intervals on their own line, the pair one column."""
        from rich.table import Table
        from rich.text import Text

        tidy = self.tidy
        wide, labels, _ = pivot(tidy)
        names = [c for c in wide.columns if c not in labels]
        table = Table(title=self._title(), show_lines=True)
        if stacked:
            table.add_column(Text("\n".join(_header_lines(names))), no_wrap=True)
        else:
            for c in names:
                table.add_column(Text(c), no_wrap=True)
        for m in labels:
            table.add_column(Text("\n".join(_label_lines(m))), justify="right", no_wrap=True)
        rows = list(tidy.itertuples(index=False))
        for r in wide.itertuples(index=False):
            vals = dict(zip(wide.columns, r, strict=True))
            positions = [vals[m] for m in labels]
            link = runs_url(self.ui_url, *reversed(row_runs(tidy, positions))) if self.ui_url else None
            if stacked:
                cells: list[Any] = [_lines_text(_pair_lines({c: vals[c] for c in names}), link)]
            else:
                cells = [_name_text(str(vals[c]) or "—", link if c == "student" else None) for c in names]
            cells += [self._cell(rows[p], split_ci=stacked) if p >= 0 else Text() for p in positions]
            table.add_row(*cells)
        return table

    def _long_table(self, split_ci: bool, abbreviate: bool) -> tuple[Table, list[str]]:
        """One row per pair and method; ``abbreviate``: pairs and sweep labels by short names, listed in a key."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        tidy = self.tidy
        wide, labels, _ = pivot(tidy)
        names = [c for c in wide.columns if c not in labels]
        published = bool(tidy["published"].notna().any())
        table = Table(title=self._title(), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        head = "pair" if abbreviate else "\n".join(_header_lines(names))
        table.add_column(Text(head), no_wrap=True)
        table.add_column(Text("method"), no_wrap=True)
        table.add_column(Text("mean ± std (n)"), justify="right", no_wrap=True)
        table.add_column(Text("gain [95 % CI]"), justify="right", no_wrap=True)
        if published:
            table.add_column(Text("paper"), justify="right", no_wrap=True)
        short = _short_labels(labels) if abbreviate else {m: m for m in labels}
        key = []
        rows = list(tidy.itertuples(index=False))
        for i, r in enumerate(wide.itertuples(index=False)):
            last_pair = i == len(wide) - 1
            vals = dict(zip(wide.columns, r, strict=True))
            cells = [(m, vals[m]) for m in labels if vals[m] >= 0]
            link = runs_url(self.ui_url, *reversed(row_runs(tidy, [p for _, p in cells]))) if self.ui_url else None
            lines = _pair_lines({c: vals[c] for c in names})
            if abbreviate:
                key.append(f"P{i + 1} = {' '.join(lines)}")
                lines = [f"P{i + 1}"]
            spread = _spread(lines, len(cells))
            for k, ((m, p), pair_text) in enumerate(zip(cells, spread, strict=True)):
                parts = dict(cell_lines(rows[p], split_ci=split_ci))
                gain = [parts[x] for x in ("gain", "ci", "vs") if x in parts]
                row = [
                    _lines_text(pair_text.split("\n"), link),
                    Text(TEACHER if m == TEACHER_COLUMN else short[m]),
                    self._styled(rows[p], parts.get("score", [])),
                    _join_texts([self._styled(rows[p], g) for g in gain]),
                ]
                if published:
                    paper = [(k_, t.removeprefix("paper ")) for k_, t in parts.get("paper", [])]
                    row.append(self._styled(rows[p], paper))
                table.add_row(*row, end_section=k == len(cells) - 1 and not last_pair)
        key += [f"{s} = {m}" for m, s in short.items() if s != m]
        return table, key

    # -- cells -------------------------------------------------------------------------------------------------
    def _cell(self, r: Any, split_ci: bool) -> Text:
        return _join_texts([self._styled(r, parts) for _, parts in cell_lines(r, split_ci=split_ci)])

    def _styled(self, r: Any, parts: list[tuple[str, str]]) -> Text:
        """One line of a cell: the mean bold, the gain green or red, marks bold, a missing interval yellow."""
        from rich.style import Style
        from rich.text import Text

        link = runs_url(self.ui_url, r.experiment_id, r.run_ids) if self.ui_url else None
        t = Text(no_wrap=True)
        for kind, text in parts:
            sep = "" if not t or kind in ("test", "sig", "vtest", "vsig") else " "
            if kind == "std":
                text, sep = f"± {text}", " "
            if kind == "mean":
                style: Any = "bold"
            elif kind == "n":
                style = Style(dim="no CI" not in text, color="yellow" if "no CI" in text else None, link=link)
            elif kind == "gain":
                style = "green" if improves(r) else "red"  # a lower loss is an improvement
            elif kind in ("why", "none"):
                style = "yellow"
            elif kind in ("sig", "vsig"):
                style = "bold"
            elif kind == "vs":
                style = "cyan"
            elif kind == "verdict":
                style = "bold green" if text == VERDICT_MARKS[REPRODUCED] else "bold red"
            elif kind == "published":
                style = "dim italic"
            else:
                style = ""
            t.append(sep + text, style=style)
        return t


def _join_texts(lines: list[Text]) -> Text:
    from rich.text import Text

    return Text("\n").join(lines) if lines else Text()


def _name_text(name: str, link: str | None) -> Text:
    from rich.style import Style
    from rich.text import Text

    return Text(name, style=Style(link=link) if link else "")


def _lines_text(lines: list[str], link: str | None) -> Text:
    """Name lines; the student's (``→ student``, or a lone name) links to the row's runs."""
    from rich.style import Style
    from rich.text import Text

    out = [Text(s, style=Style(link=link) if link and (s.startswith("→") or len(lines) == 1) else "") for s in lines]
    return _join_texts(out)


def _pair_lines(names: dict[str, Any]) -> list[str]:
    """A row's names as lines: task, data set and metric where they vary, the teacher, ``→ student``."""
    lines = [str(names[c]) for c in names if c not in ("teacher", "student")]
    teacher, student = str(names.get("teacher", "") or ""), str(names.get("student", "") or "")
    if teacher and teacher != "—":
        lines += [teacher, f"→ {student}"]
    elif student or "student" in names:
        lines.append(student)
    return lines


def _header_lines(names: list[str]) -> list[str]:
    """The header of the one name column: its lines' names (``teacher`` over ``→ student``)."""
    return [c if c != "student" else "→ student" for c in names]


def _spread(lines: list[str], rows: int) -> list[str]:
    """``lines`` over ``rows`` rows, one each; the last row takes what is left (as several lines)."""
    if rows <= 0:
        return []
    out = lines[: rows - 1] + ["\n".join(lines[rows - 1 :])]
    return out + [""] * (rows - len(out))


def _label_lines(label: str) -> list[str]:
    """A method label as header lines: long sweep labels break after ``[`` and each ``,``, nowhere else."""
    if len(label) <= LABEL_WIDTH or "[" not in label:
        return [label]
    base, _, rest = label.partition("[")
    items = rest.split(",")
    return [f"{base}[", *(f"{s}," for s in items[:-1]), items[-1]]


def _short_labels(labels: list[str]) -> dict[str, str]:
    """Sweep labels longer than :data:`LABEL_WIDTH` as ``kd[1]``, ``kd[2]``… (numbered per method); others as is."""
    out: dict[str, str] = {}
    counts: dict[str, int] = {}
    for m in labels:
        if len(m) > LABEL_WIDTH and "[" in m:
            base = m.split("[", 1)[0]
            counts[base] = counts.get(base, 0) + 1
            out[m] = f"{base}[{counts[base]}]"
        else:
            out[m] = m
    return out
