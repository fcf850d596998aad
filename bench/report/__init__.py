"""Leaderboards from MLflow runs: the engine behind ``diffbench report``.

The training loop records one MLflow child run per job (tag ``diffbench.kind=job``) with the grid
axes as tags and summary metrics ``best_<metric>`` / ``last_<metric>``. This package turns those runs
into the table a distillation paper prints (one row per teacher→student pair, one column per method),
with the statistics and provenance a reader needs to trust it.

The pipeline is three pure steps, one module each, so each can be tested and reused on its own:

* :mod:`~bench.report.load` — :func:`load_runs` (a flat frame whose column names follow
  :func:`mlflow.search_runs`, optionally one grid's jobs: a SQLite store is read directly, any other
  through one paged ``search_runs`` query) and :func:`load_reference` (the published numbers);
* :mod:`~bench.report.aggregate` — :func:`leaderboard` → a :class:`Leaderboard`
  (:mod:`~bench.report.board`): dedupe, filter, mean ± std over seeds, the gain over vanilla with a
  95 % interval and test, paired by seed where both cells ran the same seeds, else Welch's
  (:mod:`~bench.report.stats`), published numbers only beside runs of the paper's setting (recipe
  preset, starting weights, precision) with a reproduction verdict (:mod:`~bench.report.published`),
  provenance (:mod:`~bench.report.provenance`);
* renderers, one module each — :func:`to_rich`, :func:`render` (markdown, csv, html, latex, json),
  :func:`plot`, :func:`html_report`; :mod:`~bench.report.reproduction` renders the reproduction
  summary (``--reproduction``) in the same formats.

Nothing here imports torch; MLflow (only for stores other than SQLite), ``scipy.special`` and
matplotlib are imported where used, so ``import bench.report`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.report.aggregate import leaderboard
from bench.report.board import Leaderboard
from bench.report.load import GRID_JOBS_ARTIFACT, load_reference, load_runs
from bench.report.plots import plot, plot_png
from bench.report.render_html import html_report
from bench.report.render_rich import to_rich
from bench.report.schema import (
    DEFAULT_REFERENCE,
    EPOCHS,
    FORMATS,
    METHOD_ORDER,
    PRIMARY_METRIC,
    PUBLISHED_MODES,
    SUFFIX_FORMATS,
    TASK_METRICS,
    TEACHER_COLUMN,
    TIDY_COLUMNS,
)
from methods.errors import UserError, unknown

if TYPE_CHECKING:
    from pathlib import Path


def render(lb: Leaderboard, fmt: str, *, ui_url: str | None = None, reproduction: bool = False) -> str:
    """The leaderboard as text in ``fmt`` (markdown, csv, html, latex, json).

    CSV and JSON carry the tidy numbers (one record per pair and method) for machines; markdown,
    HTML and LaTeX carry the paper-style table for people. Every format states the legend, the
    provenance and the notes; HTML embeds the figure. ``ui_url`` adds links to the MLflow UI.
    ``reproduction``: the reproduction summary instead (:mod:`bench.report.reproduction`: k of N cells
    with a published number reproduced, then the worst misses).
    """
    if reproduction:
        if fmt not in FORMATS:
            raise unknown("report format", fmt, FORMATS)
        from bench.report import reproduction as repro

        return repro.render(lb, fmt)
    from bench.report.render_csv import render_csv
    from bench.report.render_json import render_json
    from bench.report.render_latex import render_latex
    from bench.report.render_markdown import render_markdown

    if fmt == "markdown":
        return render_markdown(lb, ui_url)
    if fmt == "csv":
        return render_csv(lb)
    if fmt == "json":
        return render_json(lb, ui_url)
    if fmt == "html":
        return html_report(lb, ui_url=ui_url)
    if fmt == "latex":
        return render_latex(lb)
    raise unknown("report format", fmt, FORMATS)


def format_for(out: Path | None, fmt: str | None) -> str | None:
    """The format to write: ``fmt`` when given, else the one ``out``'s suffix names (``.md``, ``.html``…).

    Raises:
        UserError: an unknown ``fmt``, or an ``out`` whose suffix names no format and no ``fmt``.
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise unknown("format", fmt, FORMATS)
        return fmt
    if out is None:
        return None
    found = SUFFIX_FORMATS.get(out.suffix.lower())
    if found is None:
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise UserError(f"cannot tell the format of {str(out)!r} from its suffix ({known}); pass --format")
    return found


__all__ = [
    "DEFAULT_REFERENCE",
    "EPOCHS",
    "FORMATS",
    "GRID_JOBS_ARTIFACT",
    "METHOD_ORDER",
    "PRIMARY_METRIC",
    "TASK_METRICS",
    "PUBLISHED_MODES",
    "SUFFIX_FORMATS",
    "TEACHER_COLUMN",
    "TIDY_COLUMNS",
    "Leaderboard",
    "format_for",
    "html_report",
    "leaderboard",
    "load_reference",
    "load_runs",
    "plot",
    "plot_png",
    "render",
    "to_rich",
]
