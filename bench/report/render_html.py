"""The HTML rendering: one standalone page (table, legend, provenance, the figure embedded as base64).

Embedding the image keeps the report one file that can be mailed or attached to an issue, and means
``--format html`` never leaves a PNG behind in the results folder. Cells are lines (score, gain and interval,
``--vs``, paper: :func:`~bench.report.cells.cell_lines`) of tokens that never break inside (a number, an interval
with its marks, a name); lines wrap only between tokens, method labels only at ``[``, ``,`` and ``=``. A table
wider than the window scrolls sideways in its own box, so the page never does. The figure is drawn at twice its
display resolution and shown at its natural size (:data:`~bench.report.plots.WIDTH_IN` inches at 100 px per inch),
so its text stays as large as the page's at any window width down to 800 px. With the MLflow UI address known,
each row's student and each cell's ``(n=…)`` link to their runs.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report.cells import GLUED, NAME_COLUMNS, cell_lines, improves, pivot, row_runs, runs_url
from methods.errors import UserError

if TYPE_CHECKING:
    from bench.report.board import Leaderboard

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5rem auto; max-width: 90rem;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.35rem; }
h2 { font-size: 1.05rem; margin-top: 1.6rem; }
div.scroll { overflow-x: auto; }  /* a table wider than the window scrolls in its box; the page does not */
table.leaderboard { border-collapse: collapse; font-size: 0.88rem; margin: 0.8rem 0; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.5rem;
                    text-align: right; vertical-align: top; }
/* words break only where a space or a <wbr> allows it, never inside ("studen-t") */
table.leaderboard th { background: #f4f4f4; border-bottom: 2px solid #999; word-break: keep-all;
                    overflow-wrap: normal; }
table.leaderboard .name { text-align: left; white-space: nowrap; }
table.leaderboard tr:hover td { background: #fafafa; }
.tok { white-space: nowrap; }
.line { display: block; }
.mean { font-weight: 600; }
.n { color: #666; font-size: 0.8em; }
.noci { color: #a15c00; font-weight: 600; }
.gain.pos { color: #1a7f37; }
.gain.neg { color: #b42318; }
.ci { color: #555; font-size: 0.9em; }
.sig { font-weight: 700; }
.vs { color: #0b6b8a; font-size: 0.9em; }
.paper { color: #777; font-style: italic; font-size: 0.9em; }
.verdict { font-style: normal; font-weight: 700; }
.none { color: #a15c00; }
ul.notes { color: #444; font-size: 0.85rem; padding-left: 1.2rem; }
ul.notes li { margin: 0.2rem 0; }
img.plot { max-width: 100%; height: auto; border: 1px solid #eee; }
@media (max-width: 60rem) {  /* a narrow window: a denser table, so five methods fit 800 px without scrolling */
  body { padding: 0 0.5rem; }
  table.leaderboard { font-size: 0.78rem; }
  table.leaderboard th, table.leaderboard td { padding: 0.3rem 0.25rem; }
  .ci { white-space: normal; }  /* only where the columns need it: "[+0.71," over "+1.27]", numbers whole */
}
"""

#: Piece kinds written into the token before them (no line break between): the marks, and the verdict after
#: the published number.
_HTML_GLUED = (*GLUED, "verdict")
#: Piece kinds that may wrap between their words (a long reason); every other piece is one unbreakable token.
_WORDS = ("none", "why")


def _e(s: Any) -> str:
    return html.escape(str(s))


def _link(inner: str, url: str | None) -> str:
    return f'<a href="{_e(url)}" target="_blank" rel="noopener">{inner}</a>' if url else inner


def _piece(kind: str, text: str, url: str | None) -> str:
    """One piece as HTML (its class says what it is; ``(n=…)`` and ``—`` link to the cell's runs)."""
    t = _e(text)
    if kind == "std":
        return f"± {t}"
    if kind == "n":
        return _link(f'<span class="{"noci" if "no CI" in text else "n"}">{t}</span>', url)
    if kind == "none":
        return _link(f'<span class="none">{t}</span>', url)
    if kind == "why":
        return f'<span class="noci">{t}</span>'
    if kind in ("test", "vtest"):
        return f'<span class="test" title="paired">{t}</span>'
    if kind == "verdict":
        return f' <span class="verdict">{t}</span>'
    cls = {"mean": "mean", "ci": "ci", "sig": "sig", "vsig": "sig"}.get(kind)
    return f'<span class="{cls}">{t}</span>' if cls else t


def _cell(r: Any, ui_url: str | None) -> str:
    """One cell: a block per line (score, gain and interval, ``--vs``, paper), tokens that never break inside."""
    url = runs_url(ui_url, r.experiment_id, r.run_ids) if ui_url else None
    out = []
    for line, parts in cell_lines(r):
        tokens: list[tuple[str, str]] = []  # (first kind, html)
        for kind, text in parts:
            if kind in _HTML_GLUED and tokens:
                tokens[-1] = (tokens[-1][0], tokens[-1][1] + _piece(kind, text, url))
            else:
                tokens.append((kind, _piece(kind, text, url)))
        words = " ".join(h if k in _WORDS else f'<span class="tok">{h}</span>' for k, h in tokens)
        cls = f"gain {'pos' if improves(r) else 'neg'}" if line == "gain" else line  # pos: green, an improvement
        out.append(f'<span class="line {cls}">{words}</span>')
    return "".join(out)


def _breakable(label: str) -> str:
    """A method label that may wrap after ``[``, ``,``, ``=`` and ``_`` (sweep labels are long), inside no word."""
    return re.sub(r"([\[,=_])", r"\1<wbr>", _e(label))


def html_table(lb: Leaderboard, ui_url: str | None = None) -> str:
    """The leaderboard as an HTML ``<table>`` (no page around it)."""
    if lb.tidy.empty:
        return "<p>No finished runs match.</p>"
    wide, labels, _ = pivot(lb.tidy)
    rows = list(lb.tidy.itertuples(index=False))
    head = "".join(f'<th class="{"name" if c in NAME_COLUMNS else "num"}">{_breakable(c)}</th>' for c in wide.columns)
    body = []
    for r in wide.itertuples(index=False):
        vals = list(zip(wide.columns, r, strict=True))
        positions = [v for c, v in vals if c in labels]
        link = runs_url(ui_url, *reversed(row_runs(lb.tidy, positions))) if ui_url else None
        tds = []
        for c, v in vals:
            if c in labels:
                tds.append(f'<td class="num">{_cell(rows[v], ui_url) if v >= 0 else ""}</td>')
            else:
                text = _e(v or "—")
                if c == "student" and link:
                    text = f'<a href="{_e(link)}" target="_blank" rel="noopener" title="runs of this row">{text}</a>'
                tds.append(f'<td class="name">{text}</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    rows_html = "\n".join(body)
    table = f'<table class="leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows_html}\n</tbody>\n</table>'
    return f'<div class="scroll">{table}</div>'


def html_report(
    lb: Leaderboard, plot_path: str | Path | None = None, *, ui_url: str | None = None, embed_plot: bool = True
) -> str:
    """A standalone HTML page: table, legend, provenance, notes and the figure (base64 PNG).

    Args:
        lb: the leaderboard.
        plot_path: a PNG to embed (e.g. one :func:`~bench.report.plot` wrote); by default the figure
            is drawn in memory, so no file is written.
        ui_url: the MLflow UI address, for run links.
        embed_plot: draw and embed the figure when ``plot_path`` is not given.
    """
    png: bytes | None = None
    width = ""
    if plot_path is not None:
        p = Path(plot_path)
        if not p.is_file():
            raise UserError(f"plot {p} does not exist (call plot() first)")
        png = p.read_bytes()
    elif embed_plot and not lb.tidy.empty:
        from bench.report.plots import DPI, WIDTH_IN, plot_png

        png = plot_png(lb, dpi=2 * DPI)  # shown at half its pixels: sharp on high-density screens
        width = f' width="{round(WIDTH_IN * DPI)}"'
    img = ""
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        img = f'<h2>Figure</h2>\n<img class="plot"{width} alt="scores from zero and gains over vanilla with 95 % ' \
              f'CIs" src="data:image/png;base64,{data}">'  # fmt: skip
    legend = "".join(f"<li>{_e(line)}</li>" for line in lb.legend())
    # Under its own heading, a provenance sentence does not start with "Provenance" again.
    prov = "".join(f"<li>{_e(line)}</li>" for line in lb.provenance_lines(heading=False))
    notes = "".join(f"<li>{_e(line)}</li>" for line in lb.notes_lines())
    title = _e(lb.title)
    sections = [
        f"<h1>diffbench leaderboard — {title}</h1>",
        html_table(lb, ui_url),
        f'<ul class="notes legend">{legend}</ul>',
        f'<h2>Provenance</h2>\n<ul class="notes provenance">{prov}</ul>' if prov else "",
        f'<h2>Notes</h2>\n<ul class="notes">{notes}</ul>' if notes else "",
        img,
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>diffbench — {title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body>\n</html>\n"
    )
