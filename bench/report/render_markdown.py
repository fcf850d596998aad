"""The Markdown rendering: a GitHub table, the legend and provenance as a list under it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.report.cells import NAME_COLUMNS, display_table, runs_url, text_cell

if TYPE_CHECKING:
    from bench.report.board import Leaderboard


def _table(df: pd.DataFrame) -> str:
    """A GitHub table without ``tabulate`` (pandas' ``to_markdown`` needs it; one dependency less)."""

    def esc(v: Any) -> str:
        return str(v).replace("|", r"\|").replace("\n", " ")

    head = [esc(c) for c in df.columns]
    rows = [[esc(v) for v in r] for r in df.itertuples(index=False)]
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]
    right = [c not in NAME_COLUMNS for c in df.columns]
    spec = list(zip(widths, right, strict=True))

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if r else v.ljust(w) for v, (w, r) in zip(vals, spec, strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1)) for w, r in spec) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def _linked_cell(ui_url: str) -> Any:
    """A cell whose ``(n=…)`` links to its runs in the MLflow UI."""

    def cell(r: Any) -> str:
        text = text_cell(r)
        url = runs_url(ui_url, r.experiment_id, r.run_ids)
        n = f"(n={r.n}, no CI)" if r.n == 1 else f"(n={r.n})"
        return text.replace(n, f"[{n}]({url})", 1) if url and n in text else text

    return cell


def render_markdown(lb: Leaderboard, ui_url: str | None = None) -> str:
    """The paper-style table, then the legend, provenance and notes as a bullet list."""
    table = display_table(lb.tidy, _linked_cell(ui_url))[0] if ui_url else lb.table
    body = _table(table) if not lb.tidy.empty else "_No finished runs match._"
    return f"**{lb.title}**\n\n{body}\n\n" + "\n".join(f"- {line}" for line in lb.footer()) + "\n"
