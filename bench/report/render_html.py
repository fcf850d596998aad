"""The HTML rendering: one standalone page (table, legend, provenance, the figure embedded as base64).

Embedding the image keeps the report one file that can be mailed or attached to an issue, and means
``--format html`` never leaves a PNG behind in the results folder. The table wraps to the page
width (cells break lines instead of scrolling off the page); with the MLflow UI address known, each
row's student and each cell's ``(n=…)`` link to their runs.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report.cells import NAME_COLUMNS, cell_parts, pivot, row_runs, runs_url
from methods.errors import UserError

if TYPE_CHECKING:
    from bench.report.board import Leaderboard

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5rem auto; max-width: 90rem;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.35rem; }
h2 { font-size: 1.05rem; margin-top: 1.6rem; }
div.scroll { overflow-x: auto; }  /* only when even the wrapped table is wider than the window */
table.leaderboard { border-collapse: collapse; font-size: 0.88rem; margin: 0.8rem 0; width: 100%;
                    table-layout: auto; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.45rem;
                    text-align: right; vertical-align: top; white-space: normal; overflow-wrap: break-word; }
table.leaderboard .tok { white-space: nowrap; }
table.leaderboard th { background: #f4f4f4; border-bottom: 2px solid #999; overflow-wrap: anywhere; }
table.leaderboard td.name, table.leaderboard th.name { text-align: left; }
table.leaderboard tr:hover td { background: #fafafa; }
.mean { font-weight: 600; }
.n { color: #666; font-size: 0.8em; }
.noci { color: #a15c00; font-weight: 600; }
.gain { display: block; }
.gain.pos { color: #1a7f37; }
.gain.neg { color: #b42318; }
.ci { color: #555; font-size: 0.85em; }
.sig { font-weight: 700; }
.vs { display: block; color: #0b6b8a; font-size: 0.9em; }
.paper { display: block; color: #777; font-style: italic; font-size: 0.85em; }
.verdict { font-style: normal; font-weight: 700; }
.none { color: #a15c00; }
ul.notes { color: #444; font-size: 0.85rem; padding-left: 1.2rem; }
ul.notes li { margin: 0.2rem 0; }
img.plot { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def _e(s: Any) -> str:
    return html.escape(str(s))


def _a(text: str, url: str | None, cls: str) -> str:
    inner = f'<span class="{cls} tok">{text}</span>'
    return f'<a href="{_e(url)}" target="_blank" rel="noopener">{inner}</a>' if url else inner


def _cell(r: Any, ui_url: str | None) -> str:
    """One cell: the score line, then the gain, the ``--vs`` difference and the paper's number as blocks."""
    url = runs_url(ui_url, r.experiment_id, r.run_ids) if ui_url else None
    head: list[str] = []
    blocks: dict[str, list[str]] = {"gain": [], "vs": [], "paper": []}
    for kind, text in cell_parts(r):
        t = _e(text)
        if kind == "mean":
            head.append(f'<span class="mean tok">{t}</span>')
        elif kind == "std":
            head.append(f' <span class="tok">± {t}</span>')
        elif kind == "n":
            head.append(" " + _a(t, url, "noci" if "no CI" in text else "n"))
        elif kind == "none":
            head.append(_a(t, url, "none"))
        elif kind == "gain":
            blocks["gain"].append(f'<span class="tok">{t}</span>')
        elif kind == "ci":  # "[low," and "high]" may go on two lines, a number never breaks
            low, _, high = t.partition(" ")
            blocks["gain"].append(
                f' <span class="ci"><span class="tok">{low}</span> <span class="tok">{high}</span></span>'
            )
        elif kind == "why":
            blocks["gain"].append(f' <span class="noci">{t}</span>')
        elif kind in ("sig", "vsig"):
            blocks["gain" if kind == "sig" else "vs"].append(f'<span class="sig">{t}</span>')
        elif kind in ("test", "vtest"):
            blocks["gain" if kind == "test" else "vs"].append(f'<span class="test" title="paired">{t}</span>')
        elif kind == "vs":
            words, _, number = t.rpartition(" ")
            blocks["vs"].append(f'<span class="tok">{words}</span> <span class="tok">{number}</span>')
        elif kind == "verdict":
            blocks["paper"].append(f' <span class="verdict">{t}</span>')
        else:
            blocks["paper"].append(f'<span class="tok">{t}</span>')
    classes = {"gain": f"gain {'neg' if r.gain < 0 else 'pos'}", "vs": "vs", "paper": "paper"}
    return "".join(head) + "".join(f'<span class="{classes[k]}">{"".join(v)}</span>' for k, v in blocks.items() if v)


def _breakable(label: str) -> str:
    """A method label that may wrap after ``[``, ``,`` and ``=`` (sweep labels are long), nowhere else."""
    return re.sub(r"([\[,=])", r"\1<wbr>", _e(label))


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
    if plot_path is not None:
        p = Path(plot_path)
        if not p.is_file():
            raise UserError(f"plot {p} does not exist (call plot() first)")
        png = p.read_bytes()
    elif embed_plot and not lb.tidy.empty:
        from bench.report.plots import plot_png

        png = plot_png(lb)
    img = ""
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        img = f'<h2>Figure</h2>\n<img class="plot" alt="scores from zero and gains over vanilla with 95 % CIs" ' \
              f'src="data:image/png;base64,{data}">'  # fmt: skip
    legend = "".join(f"<li>{_e(line)}</li>" for line in lb.legend())
    prov = "".join(f"<li>{_e(line)}</li>" for line in lb.provenance_lines())
    notes = "".join(f"<li>{_e(line)}</li>" for line in lb.footer()[len(lb.legend()) + len(lb.provenance_lines()) :])
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
