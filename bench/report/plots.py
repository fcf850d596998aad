"""Plots that do not exaggerate: absolute scores from zero beside the gain over vanilla with 95 % CIs.

One row per cell (pair · method), two panels sharing the rows:

* left, the absolute score as a bar that starts at zero (seed std as a whisker, the published number
  as a diamond, the teacher in grey): a 0.3-point difference looks like one, not like a landslide;
* right, a forest plot of the gain over vanilla with its 95 % interval (paired or Welch), zero marked: this is
  where differences are read, together with their uncertainty. A cell with one seed is drawn hollow
  and labelled "n=1, no CI" rather than with an interval it does not have.

One panel pair per task/data set, since their metrics do not share a scale. matplotlib's object API
with the Agg canvas is used, never pyplot's global state (safe in a CLI, a Ray worker or a notebook).
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.report.board import method_rank, pair_label
from bench.report.schema import TEACHER, VANILLA

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bench.report.board import Leaderboard

_ROW_IN = 0.28  # inches per cell row


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)


def figure(lb: Leaderboard) -> Figure:
    """The report's figure (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tidy = lb.tidy
    groups = list(tidy.groupby(["task", "dataset", "metric"], sort=False)) if not tidy.empty else []
    heights = [max(2, len(g)) * _ROW_IN + 1.0 for _, g in groups] or [2.0]
    fig = Figure(figsize=(12.0, sum(heights) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    if not groups:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center")
        ax.set_axis_off()
        return fig
    labels = [m for m in sorted(tidy["method"].unique(), key=method_rank) if m != TEACHER]
    colors = {m: f"C{i % 10}" for i, m in enumerate(labels)} | {TEACHER: "0.6"}
    axes = fig.subplots(len(groups), 2, squeeze=False, height_ratios=heights, width_ratios=[1, 1.15], sharey="row")
    for (key, g), (ax_abs, ax_gain) in zip(groups, axes, strict=True):
        _panel(lb, key, g, ax_abs, ax_gain, colors)
    return fig


def _panel(lb: Leaderboard, key: tuple[str, str, str], g: Any, ax_abs: Any, ax_gain: Any, colors: dict) -> None:
    """One task/data set: bars from zero on the left, the gain forest on the right (one artist per kind)."""
    task, dataset, metric = key
    rows = list(g.itertuples(index=False))
    ys = np.arange(len(rows))[::-1]  # first row on top
    ticks = ["\n".join(textwrap.wrap(f"{pair_label(r.teacher, r.student)} · {r.method}", 44)) for r in rows]
    color = [colors.get(r.method, "C0") for r in rows]
    have = np.array([r.n > 0 and _finite(r.mean) for r in rows], dtype=bool)
    mean = np.array([r.mean if h else 0.0 for r, h in zip(rows, have, strict=True)], dtype=float)
    err = np.array([r.std if h and _finite(r.std) else 0.0 for r, h in zip(rows, have, strict=True)], dtype=float)
    ax_abs.barh(ys[have], mean[have], xerr=err[have], color=np.array(color)[have], height=0.7, capsize=2,
                alpha=0.9, error_kw={"elinewidth": 1})  # fmt: skip
    for y, m, e, h in zip(ys, mean, err, have, strict=True):
        text, x = (f" {m:.2f}", m + e) if h else (" n=0, no finished run", 0.0)
        ax_abs.text(x, y, text, va="center", fontsize="x-small", color="black" if h else "0.4")
    pub = [(r.published, y) for r, y in zip(rows, ys, strict=True) if _finite(r.published)]
    if pub:
        ax_abs.plot(*zip(*pub, strict=True), marker="D", color="black", markersize=4, linestyle="none")
    hi = max([*(mean + err), *(p for p, _ in pub), 1.0])
    ax_abs.set_xlim(0, hi * 1.12)
    ax_abs.set_yticks(ys, ticks, fontsize="small")
    ax_abs.set_ylim(-0.7, len(rows) - 0.3)
    ax_abs.set_xlabel(f"{metric}, {lb.epoch} epoch (from 0)")
    ax_abs.set_title(f"{task} · {dataset}: mean, seed std, ◆ published", loc="left", fontsize="medium")
    _gains(ax_gain, ys, rows, color)
    ax_gain.axvline(0.0, color="black", linewidth=1.0)
    ax_gain.set_xlabel(f"gain over vanilla ({metric} points)")
    ax_gain.set_title("gain, 95 % CI (paired or Welch); ○ n=1: no CI", loc="left", fontsize="medium")
    ax_gain.tick_params(axis="y", left=False)
    lo, top = ax_gain.get_xlim()
    span = max(abs(lo), abs(top), 0.5)
    ax_gain.set_xlim(-span * 1.25, span * 1.25)
    ax_gain.hlines(ys[1:] + 0.5, -span * 2, span * 2, color="0.93", linewidth=0.5, zorder=0)  # row separators


def _gains(ax: Any, ys: np.ndarray, rows: list[Any], color: list[str]) -> None:
    """Gain points with their CI whiskers; hollow points labelled "n=1, no CI"; vanilla's zero as a tick."""
    ci, points = [], []
    for y, r, c in zip(ys, rows, color, strict=True):
        if r.base_method == VANILLA and r.n > 0:
            ax.plot(0.0, y, marker="|", color="0.5", markersize=8)
        if r.method == TEACHER or r.base_method == VANILLA or not _finite(r.gain):
            continue
        has_ci = _finite(r.gain_ci_low)
        if has_ci:
            ci.append((y, r.gain_ci_low, r.gain_ci_high, c))
        points.append((r.gain, y, c if has_ci else "white", c))
        label = f" {r.gain:+.2f}{r.sig_vs_vanilla}" + ("" if has_ci else f" ({r.note or 'no CI'})")
        x = r.gain_ci_high if has_ci else r.gain
        ax.annotate(label, (x, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize="x-small")
    if ci:
        y, lo, hi, c = zip(*ci, strict=True)
        ax.hlines(y, lo, hi, colors=c, linewidth=2)
    if points:
        x, y, face, edge = zip(*points, strict=True)
        ax.scatter(x, y, s=36, facecolors=face, edgecolors=edge, zorder=3)


def plot_png(lb: Leaderboard, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (what the HTML report embeds)."""
    buf = io.BytesIO()
    figure(lb).savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot(lb: Leaderboard, path_png: str | Path) -> Path:
    """Write the figure to ``path_png`` (parents created) and return the path."""
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plot_png(lb))
    return path
