"""Plots that do not exaggerate: absolute scores from zero, then the gain over vanilla with 95 % CIs.

Per task/data set (their metrics do not share a scale), two panels, one above the other:

* the absolute score of every cell (pair · method) as a bar that starts at zero (seed std as a whisker, the
  published number as a diamond where one is shown, the teacher in grey): a 0.3-point difference looks like
  one, not like a landslide;
* a forest plot of the gain over vanilla with its 95 % interval (paired or Welch), zero marked, for the cells that
  have a gain (not the teacher's or vanilla's own rows): this is where differences are read, together with their
  uncertainty. A cell with one seed is drawn hollow and labelled "n=1, no CI" rather than with an interval it does
  not have.

The figure is sized for a page: :data:`WIDTH_IN` wide at :data:`DPI` (so the HTML report shows it at its natural
size in an 800-pixel window), its height grows with the rows, and its text is set in points that stay readable
there (:data:`FONT_PT`). A row is labelled with its method, and its pair too when the panel holds several (else the
title names the pair); a long sweep label wraps between its words and its row grows to hold it. Titles and markers
name only what is drawn. matplotlib's object API with the Agg canvas is
used, never pyplot's global state (safe in a CLI, a Ray worker or a notebook).
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.report.board import MISSING_METRIC, method_rank, pair_label
from bench.report.cells import decimals_of, fmt, lower_better, signed
from bench.report.schema import TEACHER, VANILLA

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from bench.report.board import Leaderboard

#: Figure width in inches and the resolution at which one figure pixel is one CSS pixel of the HTML page.
WIDTH_IN = 7.5
DPI = 100
#: Text sizes in points: tick labels and value labels, titles. At :data:`DPI` 9 pt is 12.5 px.
FONT_PT = 9.0
TITLE_PT = 10.0
_ROW_IN = 0.26  # inches per cell row (at least)
_LINE_IN = FONT_PT * 1.25 / 72  # inches per line of a wrapped row label
_LABEL_CHARS = 36  # a row label wraps past this many characters (between words)
_PANEL_IN = 1.1  # inches per panel for its two title lines, axis label and ticks
#: Rows drawn per panel at most: a panel of hundreds of cells is neither readable nor quick to draw (240 rows took
#: 13 s and 106 inches); past it the panel shows its first rows and its title says how many the table holds.
MAX_ROWS = 48


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)


def _has_gain(r: Any) -> bool:
    """A row the forest plot shows: a method with a gain (the teacher's and vanilla's rows have none to show)."""
    return r.method != TEACHER and r.base_method != VANILLA and r.n > 0 and _finite(r.gain)


def figure(lb: Leaderboard) -> Figure:
    """The report's figure (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tidy = lb.tidy
    groups = list(tidy.groupby(["task", "dataset", "metric"], sort=False)) if not tidy.empty else []
    panels: list[tuple[str, tuple[str, str, str], list[Any], _Rows]] = []
    for key, g in groups:
        rows = list(g.itertuples(index=False))
        panels.append(("score", key, rows[:MAX_ROWS], _Rows(rows[:MAX_ROWS], len(rows))))
        gains = [r for r in rows if _has_gain(r)]
        if gains:
            panels.append(("gain", key, gains[:MAX_ROWS], _Rows(gains[:MAX_ROWS], len(gains))))
    heights = [len(rows) * p.pitch + _PANEL_IN for _, _, rows, p in panels] or [2.0]
    fig = Figure(figsize=(WIDTH_IN, sum(heights)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", fontsize=TITLE_PT)
        ax.set_axis_off()
        return fig
    labels = [m for m in sorted(tidy["method"].unique(), key=method_rank) if m != TEACHER]
    colors = {m: f"C{i % 10}" for i, m in enumerate(labels)} | {TEACHER: "0.6"}
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
    for (kind, key, rows, names), ax in zip(panels, axes, strict=True):
        names.axis(ax)
        (_scores if kind == "score" else _gains)(lb, key, rows, ax, colors, names.where(key))
    return fig


class _Rows:
    """A panel's row labels: the method alone when every row has the same pair (named in the title instead),
    else ``teacher→student · method``; wrapped between words (after a sweep label's commas), never inside one."""

    def __init__(self, rows: list[Any], total: int | None = None) -> None:
        self.hidden = (total or len(rows)) - len(rows)  # rows past MAX_ROWS, left to the table
        pairs = {pair_label(r.teacher, r.student) for r in rows if r.method != TEACHER}
        self.pair = next(iter(pairs)) if len(pairs) == 1 else None
        self.ticks = [
            "\n".join(textwrap.wrap(text, _LABEL_CHARS, break_long_words=False, break_on_hyphens=False))
            for text in (
                ("teacher score" if r.method == TEACHER else r.method)
                if self.pair
                else f"{pair_label(r.teacher, r.student)} · {r.method}"
                for r in rows
            )
        ]
        lines = max(t.count("\n") + 1 for t in self.ticks)
        self.pitch = max(_ROW_IN, lines * _LINE_IN + 0.08)  # inches per row: a wrapped label never meets the next

    def axis(self, ax: Axes) -> None:
        """One y position per row, the first on top."""
        ys = np.arange(len(self.ticks))[::-1]
        ax.set_yticks(ys, self.ticks, fontsize=FONT_PT)
        ax.set_ylim(-0.7, len(self.ticks) - 0.3)
        ax.tick_params(axis="x", labelsize=FONT_PT)

    def where(self, key: tuple[str, str, str]) -> str:
        """The panel's task · data set, and its pair when every row has the same one; how many rows it leaves out."""
        where = " · ".join([key[0], key[1], *([self.pair] if self.pair else [])])
        if self.hidden:
            where += f" (first {len(self.ticks)} of {len(self.ticks) + self.hidden} rows; the table has all)"
        return where


def _scores(lb: Leaderboard, key: tuple[str, str, str], rows: list[Any], ax: Axes, colors: dict, where: str) -> None:
    """Bars from zero with the seed std; the published number as a diamond where one is shown."""
    metric = key[2]
    ys = np.arange(len(rows))[::-1]
    color = [colors.get(r.method, "C0") for r in rows]
    have = np.array([r.n > 0 and _finite(r.mean) for r in rows], dtype=bool)
    mean = np.array([r.mean if h else 0.0 for r, h in zip(rows, have, strict=True)], dtype=float)
    err = np.array([r.std if h and _finite(r.std) else 0.0 for r, h in zip(rows, have, strict=True)], dtype=float)
    ax.barh(ys[have], mean[have], xerr=err[have], color=np.array(color)[have], height=0.7, capsize=2, alpha=0.9,
            error_kw={"elinewidth": 1})  # fmt: skip
    for r, y, m, e, h in zip(rows, ys, mean, err, have, strict=True):
        text, x = (f" {fmt(m, decimals_of(r))}", m + e) if h else (f" {_empty_note(r)}", 0.0)
        if _finite(r.published):  # the number starts right of the published diamond, not under it
            x = max(x, r.published)
        ax.annotate(text, (x, y), xytext=(4 if _finite(r.published) else 0, 0), textcoords="offset points",
                    va="center", fontsize=FONT_PT, color="black" if h else "0.4")  # fmt: skip
    pub = [(r.published, y) for r, y in zip(rows, ys, strict=True) if _finite(r.published)]
    if pub:
        ax.plot(*zip(*pub, strict=True), marker="D", color="black", markersize=4, linestyle="none")
    hi = max([*(mean + err), *(p for p, _ in pub), 10.0 ** (2 - max(decimals_of(r) for r in rows))])  # 1 at 2 decimals
    ax.set_xlim(0, hi * 1.15)
    lower = " (lower is better)" if any(lower_better(r) for r in rows) else ""
    ax.set_xlabel(f"{metric}{lower}, {lb.epoch} epoch (from 0)", fontsize=FONT_PT)
    shown = "mean, seed std" + (", ◆ published" if pub else "")
    ax.set_title(f"{where}\n{shown}", loc="left", fontsize=TITLE_PT)


def _gains(lb: Leaderboard, key: tuple[str, str, str], rows: list[Any], ax: Axes, colors: dict, where: str) -> None:
    """Gain points with their CI whiskers, hollow points labelled "n=1, no CI", zero (vanilla) marked."""
    metric = key[2]
    ys = np.arange(len(rows))[::-1]
    ci, points = [], []
    for y, r in zip(ys, rows, strict=True):
        c = colors.get(r.method, "C0")
        has_ci = _finite(r.gain_ci_low)
        if has_ci:
            ci.append((y, r.gain_ci_low, r.gain_ci_high, c))
        points.append((r.gain, y, c if has_ci else "white", c))
        label = f" {signed(r.gain, decimals_of(r))}{r.sig_vs_vanilla}" + ("" if has_ci else f" ({r.note or 'no CI'})")
        x = r.gain_ci_high if has_ci else r.gain
        ax.annotate(label, (x, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=FONT_PT)
    if ci:
        y, lo, hi, c = zip(*ci, strict=True)
        ax.hlines(y, lo, hi, colors=c, linewidth=2)
    x, y, face, edge = zip(*points, strict=True)
    ax.scatter(x, y, s=36, facecolors=face, edgecolors=edge, zorder=3)
    ax.axvline(0.0, color="black", linewidth=1.0)
    lower = "; negative is better" if any(lower_better(r) for r in rows) else ""
    ax.set_xlabel(f"gain over vanilla ({metric} points{lower})", fontsize=FONT_PT)
    hollow = "; ○ n=1: no CI" if len(ci) < len(points) else ""
    ax.set_title(f"{where}\ngain over vanilla, 95 % CI (paired or Welch){hollow}", loc="left", fontsize=TITLE_PT)
    ends = [0.0, *(p[0] for p in points), *(c[1] for c in ci), *(c[2] for c in ci)]
    lo, hi = min(ends), max(ends)
    span = max(hi - lo, 0.5 * 10.0 ** (2 - max(decimals_of(r) for r in rows)))  # 0.5 points at 2 decimals
    ax.set_xlim(lo - 0.08 * span, hi + 0.45 * span)  # zero always shown; room for the labels right of the intervals
    if len(ys) > 1:
        ax.hlines(ys[1:] + 0.5, lo - span, hi + span, color="0.93", linewidth=0.5, zorder=0)  # row separators


def _empty_note(r: Any) -> str:
    """What an n=0 bar says: that its runs did not log the metric, else that none finished."""
    return r.note if MISSING_METRIC in str(r.note) else "n=0, no finished run"


def plot_png(lb: Leaderboard, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes; ``dpi`` above :data:`DPI` draws it sharper for high-density screens."""
    buf = io.BytesIO()
    figure(lb).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot(lb: Leaderboard, path_png: str | Path) -> Path:
    """Write the figure to ``path_png`` (parents created) and return the path."""
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plot_png(lb))
    return path
