"""``diffbench report --reproduction``: how many published numbers our seeds reproduce, and the worst misses.

Each cell that shows a published number carries a verdict (:func:`bench.report.published.add_verdicts`, the rule
in :data:`RULE`). This module counts them (:func:`summary`: k of N cells reproduced) and ranks the misses, the
cells whose interval excludes the paper's number, by ``|ours - paper|`` in points of the metric, the distance a
reader acts on; each miss also states that distance in interval half-widths (how far outside the interval the
number lies, relative to our seed noise). Every format says the same: the terminal, Markdown, HTML and LaTeX
print the summary, the rule and the worst :data:`SHOWN` misses; CSV and JSON carry every cell with a published
number (JSON with the summary, the rule and the notes).
"""

from __future__ import annotations

import html
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.report.board import pair_label
from bench.report.schema import ABOVE, BELOW, REPRODUCED, TEACHER, UNDECIDED

if TYPE_CHECKING:
    from bench.report.board import Leaderboard

RULE = (
    "Rule: with n ≥ 2 seeds, reproduced when the published number lies in the 95 % t-interval of our seeds' mean, "
    "mean ± t(0.975, n-1)·std/√n; below when it lies above that interval (ours is lower), above when it lies below "
    "it (ours is higher); one seed: undecided (1 seed)."
)
RANKING = (
    "Worst misses first, by the size of ours − paper in points of the metric; 'half-widths' is the same distance in "
    "units of the interval's half-width t(0.975, n-1)·std/√n."
)
#: Misses the tables for people list (CSV and JSON carry all).
SHOWN = 10
#: Columns of the CSV (and of each JSON record), in order.
COLUMNS: list[str] = [
    "task", "dataset", "metric", "teacher", "student", "method", "n", "mean", "std", "mean_ci_low", "mean_ci_high",
    "half_width", "published", "diff", "half_widths", "verdict", "source", "recipe_preset", "student_init",
    "precision", "run_ids",
]  # fmt: skip
_MISSES = (BELOW, ABOVE)


def cells(lb: Leaderboard) -> pd.DataFrame:
    """Every cell with a published number (:data:`COLUMNS`), the misses first, worst (largest ``|diff|``) first.

    ``diff`` is ours − paper (points), ``half_width`` the half-width of our mean's 95 % interval and
    ``half_widths`` ``|diff| / half_width`` (inf for an interval of zero width, NaN with one seed).
    """
    t = lb.tidy
    published = pd.to_numeric(t["published"], errors="coerce") if len(t) else t["published"]
    if t.empty or not published.notna().any():
        return pd.DataFrame(columns=COLUMNS)
    out = t[published.notna()].copy()
    out["published"] = published
    out["half_width"] = (out["mean_ci_high"] - out["mean_ci_low"]) / 2
    out["diff"] = out["mean"] - out["published"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["half_widths"] = np.abs(out["diff"]) / out["half_width"]
    order = out["verdict"].map({BELOW: 0, ABOVE: 0, UNDECIDED: 1, REPRODUCED: 2}).fillna(3)
    out = out.assign(_order=order, _gap=-np.abs(out["diff"])).sort_values(["_order", "_gap"], kind="stable")
    return out.reindex(columns=COLUMNS).reset_index(drop=True)


def summary(lb: Leaderboard) -> dict[str, int]:
    """Counts: ``cells`` with a published number, and of them ``reproduced``, ``below``, ``above``, ``undecided``."""
    v = cells(lb)["verdict"]
    return {
        "cells": len(v),
        "reproduced": int((v == REPRODUCED).sum()),
        "below": int((v == BELOW).sum()),
        "above": int((v == ABOVE).sum()),
        "undecided": int((v == UNDECIDED).sum()),
    }


def headline(lb: Leaderboard) -> str:
    s = summary(lb)
    if not s["cells"]:
        return "Reproduction: no cell shows a published number (the notes say why)."
    return (
        f"Reproduction: {s['reproduced']} of {s['cells']} cell(s) with a published number reproduced "
        f"({s['below']} below, {s['above']} above, {s['undecided']} undecided: 1 seed)."
    )


def _label(r: Any) -> str:
    what = "teacher score" if r.method == TEACHER else r.method
    return f"{what} {pair_label(r.teacher, r.student)} ({r.task}/{r.dataset}, {r.metric})"


def _half_widths(x: float) -> str:
    return "∞ (no spread)" if math.isinf(x) else f"{x:.1f}"


def misses(lb: Leaderboard) -> pd.DataFrame:
    c = cells(lb)
    return c[c["verdict"].isin(_MISSES)].reset_index(drop=True)


def _rows(lb: Leaderboard) -> tuple[list[list[str]], int]:
    """The worst :data:`SHOWN` misses as table rows of text, and how many more there are."""
    m = misses(lb)
    rows = [
        [
            str(i),
            _label(r),
            f"{r.mean:.2f} (n={r.n})",
            f"[{r.mean_ci_low:.2f}, {r.mean_ci_high:.2f}]",
            f"{r.published:.2f}",
            f"{r.diff:+.2f}",
            _half_widths(r.half_widths),
            r.verdict,
            r.source or "",
        ]
        for i, r in enumerate(m.head(SHOWN).itertuples(index=False), start=1)
    ]
    return rows, max(len(m) - SHOWN, 0)


HEADER = ["#", "cell", "ours (n)", "95 % interval", "paper", "ours − paper", "half-widths", "verdict", "source"]


def _notes(lb: Leaderboard) -> list[str]:
    """The notes on published numbers (hidden, shown with caveats, unchecked)."""
    return [n for n in lb.notes if n.startswith("Published numbers")]


def lines(lb: Leaderboard) -> list[str]:
    """The summary as text lines: headline, the worst misses, the rule, the ranking, the notes."""
    rows, more = _rows(lb)
    out = [headline(lb)]
    if rows:
        out.append(f"Worst misses ({len(rows)} of {len(rows) + more}):")
        out += [
            f"{r[0]}. {r[1]}: ours {r[2]} {r[3]}, paper {r[4]}: {r[5]} points, {r[6]} half-widths, {r[7]}" for r in rows
        ]
        if more:
            out.append(f"… {more} more (the CSV and JSON formats list every cell).")
    elif summary(lb)["cells"]:
        out.append("No misses.")
    return [*out, RULE, RANKING, *_notes(lb)]


def render(lb: Leaderboard, fmt: str) -> str:
    """The reproduction summary in ``fmt`` (markdown, csv, json, html, latex)."""
    if fmt == "csv":
        return cells(lb).to_csv(index=False)
    if fmt == "json":
        return _json(lb)
    if fmt == "markdown":
        return _markdown(lb)
    if fmt == "html":
        return _html(lb)
    if fmt == "latex":
        return _latex(lb)
    from methods.errors import UserError

    raise UserError(f"unknown report format {fmt!r}")


def _json(lb: Leaderboard) -> str:
    from bench.report.render_json import _plain

    recs = [{k: _plain(v) for k, v in r.items()} for r in cells(lb).to_dict(orient="records")]
    for r in recs:
        r["run_ids"] = [x for x in (r["run_ids"] or "").split(",") if x]
        if isinstance(r["half_widths"], float) and math.isinf(r["half_widths"]):
            r["half_widths"] = "inf"
    doc = {
        "title": lb.title,
        "headline": headline(lb),
        "summary": summary(lb),
        "rule": RULE,
        "ranked_by": "abs(diff): the size of ours - paper in points of the metric",
        "misses": [r for r in recs if r["verdict"] in _MISSES],
        "cells": recs,
        "notes": _notes(lb),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _markdown(lb: Leaderboard) -> str:
    from bench.report.render_markdown import _table

    rows, more = _rows(lb)
    parts = [f"**Reproduction · {lb.title}**", headline(lb)]
    if rows:
        parts.append(_table(pd.DataFrame(rows, columns=HEADER)))
        if more:
            parts.append(f"… {more} more (the CSV and JSON formats list every cell).")
    bullets = "\n".join(f"- {line}" for line in [RULE, RANKING, *_notes(lb)])
    return "\n\n".join([*parts, bullets]) + "\n"


def _html(lb: Leaderboard) -> str:
    from bench.report.render_html import CSS

    e = html.escape
    rows, more = _rows(lb)
    body = [f"<h1>diffbench reproduction — {e(lb.title)}</h1>", f"<p>{e(headline(lb))}</p>"]
    if rows:
        cls = ["name" if h in ("cell", "verdict", "source") else "num" for h in HEADER]
        head = "".join(f'<th class="{c}">{e(h)}</th>' for c, h in zip(cls, HEADER, strict=True))
        trs = "\n".join(
            "<tr>" + "".join(f'<td class="{c}">{e(v)}</td>' for c, v in zip(cls, r, strict=True)) + "</tr>"
            for r in rows
        )
        body.append(f'<table class="leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{trs}\n</tbody>\n</table>')
        if more:
            body.append(f"<p>… {more} more (the CSV and JSON formats list every cell).</p>")
    body.append(
        '<ul class="notes">' + "".join(f"<li>{e(line)}</li>" for line in [RULE, RANKING, *_notes(lb)]) + "</ul>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>diffbench reproduction — {e(lb.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _latex(lb: Leaderboard) -> str:
    from bench.report.render_latex import label, latex_escape, table_float

    rows, more = _rows(lb)
    body = [[latex_escape(v) for v in r] for r in rows] or [[r"\multicolumn{" + str(len(HEADER)) + r"}{l}{no misses}"]]
    notes = [*([f"… {more} more (the CSV and JSON formats list every cell)."] if more else []), RULE, RANKING]
    notes += _notes(lb)
    colfmt = f"rl{'r' * (len(HEADER) - 4)}ll"
    head = [latex_escape(h) for h in HEADER]
    key = label(lb.title, prefix="diffbench-reproduction")
    return table_float(headline(lb), key, colfmt, head, body, [latex_escape(line) for line in notes])


def to_rich(lb: Leaderboard) -> Any:
    """The terminal rendering: the headline, the worst misses as a table that fits the console, the rule and notes.

    The table is printed in the first layout that fits (:func:`bench.report.fitting.first_fitting`): one line per
    miss, else (80 columns) each miss on a few lines (the cell's method, teacher and ``→ student``; ours over our
    interval; the paper's number over the verdict; the difference over the half-widths; the source wrapping between
    words). No number, interval or name is broken across lines.
    """
    return _Terminal(lb)


class _Terminal:
    def __init__(self, lb: Leaderboard) -> None:
        self.lb = lb

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        from bench.report.fitting import first_fitting

        rows, more = _rows(self.lb)
        yield Text(headline(self.lb), style="bold")
        if rows:
            yield first_fitting(console, options, [("wide", self._wide(rows)), ("narrow", self._narrow())])[1]
        caption = [*([f"… {more} more (--format csv or json lists every cell)."] if more else []), RULE, RANKING]
        for line in caption + _notes(self.lb):
            yield Text(line)

    def _wide(self, rows: list[list[str]]) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table()
        for i, h in enumerate(HEADER):
            table.add_column(Text(h), justify="left" if i in (1, 7, 8) else "right", no_wrap=i != 8)
        for r in rows:
            table.add_row(*(Text(v, style="red" if i == 7 else "") for i, v in enumerate(r)))
        return table

    def _narrow(self) -> Any:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        m = misses(self.lb).head(SHOWN)
        where = {(r.task, r.dataset, r.metric) for r in m.itertuples()}
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        if len(where) == 1:
            table.title = Text("{}/{}, {}".format(*next(iter(where))))
        heads = ["#", "cell", "ours (n)\n95 % interval", "paper\nverdict", "ours − paper\nhalf-widths", "source"]
        for i, h in enumerate(heads):
            table.add_column(Text(h), justify="left" if i in (1, 5) else "right", no_wrap=i != 5,
                             max_width=24 if i == 5 else None)  # fmt: skip
        for i, r in enumerate(m.itertuples(index=False), start=1):
            cell = ["teacher score" if r.method == TEACHER else r.method]
            cell += [r.teacher, f"→ {r.student}"] if r.teacher else [r.student]
            if len(where) > 1:
                cell.append(f"{r.task}/{r.dataset}, {r.metric}")
            table.add_row(
                Text(str(i)),
                Text("\n".join(cell)),
                Text(f"{r.mean:.2f} (n={r.n})\n[{r.mean_ci_low:.2f}, {r.mean_ci_high:.2f}]"),
                Text(f"{r.published:.2f}\n") + Text(r.verdict, style="red"),
                Text(f"{r.diff:+.2f}\n{_half_widths(r.half_widths)}"),
                Text(r.source or ""),
                end_section=True,
            )
        return table
