"""The LaTeX rendering: a ``booktabs`` table whose caption is the title, legend and provenance below it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.report.cells import NAME_COLUMNS, display_table, text_cell

if TYPE_CHECKING:
    from bench.report.board import Leaderboard

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
}


def latex_escape(s: Any) -> str:
    """Plain text → LaTeX that compiles with the default (pdf)LaTeX fonts: no raw Unicode symbols."""
    return "".join(_SPECIAL.get(ch, _UNICODE.get(ch, ch)) for ch in str(s))


def _cell(r: Any) -> str:
    return latex_escape(text_cell(r))


def render_latex(lb: Leaderboard) -> str:
    """A ``table`` float: ``tabular`` with the cells, then the legend, provenance and notes in small type."""
    table, _ = display_table(lb.tidy, _cell)
    if table.empty:
        table = pd.DataFrame({"": ["no finished runs"]})
    table = table.copy()
    for c in NAME_COLUMNS:
        if c in table:
            table[c] = table[c].map(latex_escape)
    table.columns = [latex_escape(c) for c in table.columns]
    styler = table.style.hide(axis="index")
    colfmt = "".join("l" if c in NAME_COLUMNS else "r" for c in table.columns)
    tex = styler.to_latex(hrules=True, column_format=colfmt, caption=latex_escape(lb.title), position="t")
    notes = "\n".join(f"\\par {latex_escape(line)}" for line in lb.footer())
    block = f"\\begin{{minipage}}{{\\linewidth}}\\footnotesize\n{notes}\n\\end{{minipage}}\n"
    return tex.replace("\\end{table}", block + "\\end{table}")
