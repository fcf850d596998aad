"""The LaTeX rendering: a ``booktabs`` table that fits the text width, its caption the title, notes below it.

Each cell is a stack of lines (score; gain; interval; ``--vs``; paper: a nested ``tabular``), so the interval sits on
a line of its own within its cell, and the ``tabular`` is scaled to ``\\linewidth`` with ``\\resizebox``, so a wide
table fits the page. The float is centred and labelled ``tab:diffbench-…`` (from the title), and a comment on its
first line names the packages it needs: ``booktabs`` and ``graphicx``. Quotes are typeset ones (```paper''``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.report.cells import NAME_COLUMNS, cell_lines, join_parts, pivot

if TYPE_CHECKING:
    from bench.report.board import Leaderboard

#: The first line of every LaTeX table the report writes.
PACKAGES = r"% Needs \usepackage{booktabs,graphicx} in the preamble (its rules; \resizebox to fit the text width)."

_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}
_UNICODE = {
    "±": r"$\pm$",
    "→": r"$\rightarrow$",
    "†": r"$^{\dagger}$",
    "ᵖ": r"$^{\mathrm{p}}$",
    "✓": r"$\surd$",  # no check mark in the default fonts (amssymb's \checkmark): the square-root sign stands in
    "√": r"$\surd$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "·": r"$\cdot$",
    "—": "---",
    "–": "--",
    "…": r"\ldots{}",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "∞": r"$\infty$",
    "−": r"$-$",
    "<": r"$<$",
    ">": r"$>$",
    "`": r"\textasciigrave{}",
}
#: A quote that opens: at the start or after a space or an opening bracket, before a non-space.
_OPENING = re.compile(r"""(?:(?<=^)|(?<=[\s(\[]))(['"])(?=\S)""")


def latex_escape(s: Any) -> str:
    """Plain text → LaTeX that compiles with the default (pdf)LaTeX fonts: no raw Unicode symbols.

    Quotes become typeset ones (``'paper'`` → ```paper'``, ``"x"`` → ````x''``), an apostrophe stays one, and a
    flag's ``--`` stays two hyphens (``-{}-``) rather than becoming an en dash.
    """
    text = str(s)
    out: list[str] = []
    opening = {m.start() for m in _OPENING.finditer(text)}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            out.append("-{}-")
            i += 2
            continue
        if ch == "'":
            out.append("`" if i in opening else "'")
        elif ch == '"':
            out.append("``" if i in opening else "''")
        else:
            out.append(_SPECIAL.get(ch, _UNICODE.get(ch, ch)))
        i += 1
    return "".join(out)


def _stack(lines: Sequence[str], valign: str) -> str:
    """Lines stacked right-aligned in a cell (a nested ``tabular``, no package needed), top or bottom aligned.

    Each line is braced, so one that starts with ``[`` (an interval) is text, not ``\\``'s optional argument.
    """
    inner = r" \\ ".join("{" + line + "}" for line in lines)
    return rf"\begin{{tabular}}[{valign}]{{@{{}}r@{{}}}}{inner}\end{{tabular}}"


def _cell(r: Any) -> str:
    """A cell as a stack of its lines, the interval on a line of its own (right-aligned)."""
    lines = [latex_escape(join_parts(parts)) for _, parts in cell_lines(r, split_ci=True)]
    if len(lines) == 1:
        return "{" + lines[0] + "}"
    return _stack(lines, "t")


def _head(column: str) -> str:
    """A column head; a sweep label (``kd[a=1, b=2]``) as a stack of a line per hyper-parameter."""
    parts = column.split(", ")
    if len(parts) == 1:
        return latex_escape(column)
    lines = [latex_escape(p + ("," if i < len(parts) - 1 else "")) for i, p in enumerate(parts)]
    return _stack(lines, "b")


def label(title: str, prefix: str = "diffbench") -> str:
    """A ``\\label`` key from a title: ``tab:diffbench-classification-cifar100-top1-best-epoch``."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"tab:{prefix}-{slug}" if slug else f"tab:{prefix}"


def table_float(
    caption: str, key: str, colfmt: str, head: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str]
) -> str:
    """A centred ``table`` float: caption and label, the ``tabular`` scaled to the text width, notes below.

    ``head``, ``rows`` and ``notes`` are LaTeX already (escaped); ``caption`` is plain text.
    """
    body = "\n".join(" & ".join(r) + r" \\" + (r" \addlinespace" if i < len(rows) - 1 else "")
                     for i, r in enumerate(rows))  # fmt: skip
    block = "\n".join(f"\\par {line}" for line in notes)
    return (
        f"{PACKAGES}\n\\begin{{table}}[t]\n\\centering\n\\caption{{{latex_escape(caption)}}}\n\\label{{{key}}}\n"
        f"\\resizebox{{\\linewidth}}{{!}}{{%\n\\begin{{tabular}}{{{colfmt}}}\n\\toprule\n"
        f"{' & '.join(head)} \\\\\n\\midrule\n{body}\n\\bottomrule\n\\end{{tabular}}%\n}}\n"
        f"\\par\\smallskip\n\\begin{{minipage}}{{\\linewidth}}\\footnotesize\\raggedright\n{block}\n\\end{{minipage}}\n"
        "\\end{table}\n"
    )


def render_latex(lb: Leaderboard) -> str:
    """A ``table`` float: the cells in a ``tabular`` that fits the page, then the legend, provenance and notes."""
    wide, labels, title = pivot(lb.tidy)
    notes = [latex_escape(line) for line in lb.footer()]
    if lb.tidy.empty:
        return table_float(lb.title, label(lb.title), "l", [""], [["no finished runs"]], notes)
    rows = list(lb.tidy.itertuples(index=False))
    body = []
    for r in wide.itertuples(index=False):
        cells = []
        for c, v in zip(wide.columns, r, strict=True):
            if c in labels:
                cells.append(_cell(rows[v]) if v >= 0 else "")
            else:
                cells.append(latex_escape(v or "—"))
        body.append(cells)
    head = [_head(c) for c in wide.columns]
    colfmt = "".join("l" if c in NAME_COLUMNS else "r" for c in wide.columns)
    return table_float(lb.title, label(lb.title), colfmt, head, body, notes)
