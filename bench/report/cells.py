"""What one leaderboard cell says, and the paper-style pivot (one row per pair, one column per method).

A cell is composed once, as ``(kind, text)`` pieces (:func:`cell_parts`), and each renderer styles the
pieces its own way, so the terminal, Markdown, HTML and LaTeX can never disagree on a number, a mark
or an "n=1, no CI".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from bench.report.board import method_rank
from bench.report.schema import PAIR_KEYS, PAIRED, PAIRED_MARK, TEACHER, TEACHER_COLUMN, VERDICT_MARKS
from tasks.spec import DEFAULT_DECIMALS

#: Piece kinds written straight after the piece before them (marks), without a space.
GLUED: tuple[str, ...] = ("test", "sig", "vtest", "vsig")
#: Columns of the display table that name the row rather than hold a cell.
NAME_COLUMNS: tuple[str, ...] = (*PAIR_KEYS, "metric")


def fmt(x: float, decimals: int = DEFAULT_DECIMALS) -> str:
    return f"{x:.{decimals}f}"


def signed(x: float, decimals: int = DEFAULT_DECIMALS) -> str:
    """A difference with its sign: ``+0.99``, ``-0.012``."""
    return f"{x:+.{decimals}f}"


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(x)


def decimals_of(r: Any) -> int:
    """The decimals a tidy row's numbers are printed with (its ``decimals`` column; 2 for a row without one)."""
    d = getattr(r, "decimals", None)
    return int(d) if isinstance(d, int | float | np.number) and not math.isnan(d) else DEFAULT_DECIMALS


def improves(r: Any) -> bool:
    """Whether the row's gain over vanilla is an improvement: positive, or negative for a lower-is-better metric (a
    gain of zero counts as one, as it always has for the higher-is-better ones)."""
    return r.gain <= 0 if lower_better(r) else r.gain >= 0


def lower_better(r: Any) -> bool:
    """Whether the tidy row's metric is lower-is-better (its ``lower_is_better`` column; no for a row without one)."""
    v = getattr(r, "lower_is_better", False)
    return bool(v) if isinstance(v, bool | np.bool_) else False


def cell_parts(r: Any) -> list[tuple[str, str]]:
    """A cell as ``(kind, text)`` pieces, ``r`` being a row of :attr:`Leaderboard.tidy`.

    Kinds: ``mean``, ``std`` (the number only), ``n`` (``(n=3)``, ``(n=1, no CI)``), ``gain``, ``ci``
    (``[low, high]``), ``test`` (``ᵖ``: the interval and test are paired, glued), ``sig`` (``*``/``**``, glued to
    the gain), ``why`` (why a gain has no interval), ``vs`` (``vs dkd -0.50``), ``vtest`` (``ᵖ``), ``vsig``
    (``†``/``††``), ``none`` (no finished run: ``—`` and the reason), ``published`` (``paper 73.33``), ``verdict``
    (``✓``/``↓``/``↑``: the published number against the 95 % t-interval of our mean).
    """
    parts: list[tuple[str, str]] = []
    d = decimals_of(r)
    if r.n > 0 and _finite(r.mean):
        parts.append(("mean", fmt(r.mean, d)))
        if r.n > 1 and _finite(r.std):
            parts.append(("std", fmt(r.std, d)))
        if r.method != TEACHER or r.n > 1:
            parts.append(("n", f"(n={r.n}, no CI)" if r.n == 1 else f"(n={r.n})"))
        if _finite(r.gain):
            parts.append(("gain", signed(r.gain, d)))
            if _finite(r.gain_ci_low):
                parts.append(("ci", f"[{signed(r.gain_ci_low, d)}, {signed(r.gain_ci_high, d)}]"))
                if r.test == PAIRED:
                    parts.append(("test", PAIRED_MARK))
            elif r.n > 1 and r.note:
                parts.append(("why", f"({r.note})"))
            if r.sig_vs_vanilla:
                parts.append(("sig", r.sig_vs_vanilla))
        if _finite(r.diff_vs):
            parts.append(("vs", f"vs {r.vs_method} {signed(r.diff_vs, d)}"))
            if r.test_vs == PAIRED and _finite(r.diff_vs_ci_low):
                parts.append(("vtest", PAIRED_MARK))
            if r.sig_vs:
                parts.append(("vsig", r.sig_vs))
    else:
        parts.append(("none", f"— ({r.note or 'n=0, no finished run'})"))
    if _finite(r.published):
        parts.append(("published", f"paper {fmt(r.published, d)}"))
        if r.verdict in VERDICT_MARKS:
            parts.append(("verdict", VERDICT_MARKS[r.verdict]))
    return parts


def join_parts(parts: list[tuple[str, str]], pm: str = "±") -> str:
    """Pieces as plain text: marks glued to the piece before them, ``pm`` before the std, spaces elsewhere."""
    out = ""
    for kind, text in parts:
        if kind in GLUED:
            out += text
        elif kind == "std":
            out += f" {pm} {text}"
        else:
            out += (" " if out else "") + text
    return out


def text_cell(r: Any, pm: str = "±") -> str:
    """The cell as one line of plain text (Markdown, the display table)."""
    return join_parts(cell_parts(r), pm)


#: The line of a multi-line cell each piece kind belongs to (:func:`cell_lines`).
LINE_OF: dict[str, str] = {
    "mean": "score", "std": "score", "n": "score", "none": "score",
    "gain": "gain", "ci": "gain", "test": "gain", "sig": "gain", "why": "gain",
    "vs": "vs", "vtest": "vs", "vsig": "vs",
    "published": "paper", "verdict": "paper",
}  # fmt: skip


def cell_lines(r: Any, split_ci: bool = False) -> list[tuple[str, list[tuple[str, str]]]]:
    """The cell's pieces as the lines a multi-line rendering shows, each ``(line kind, pieces)``.

    Lines, in order and only when they have pieces: ``score`` (``72.47 ± 0.26 (n=3)`` or ``— (…)``), ``gain``
    (``+0.99 [+0.71, +1.27]ᵖ**``), ``vs`` (``vs dkd -0.50ᵖ†``), ``paper`` (``paper 73.08 ✓``). ``split_ci``: the
    interval (with its marks) or the reason it is missing goes on a line of its own, kind ``ci``, so a narrow
    column holds ``+0.99`` over ``[+0.71, +1.27]ᵖ**`` and no line is wider than an interval.
    """
    lines: list[tuple[str, list[tuple[str, str]]]] = []
    for kind, text in cell_parts(r):
        line = "ci" if split_ci and kind in ("ci", "why") else LINE_OF[kind]
        if kind in GLUED and lines:  # a mark stays on the line of the piece it is glued to
            line = lines[-1][0]
        if not lines or lines[-1][0] != line:
            lines.append((line, []))
        lines[-1][1].append((kind, text))
    return lines


def pivot(tidy: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str]:
    """One row per pair, method columns holding tidy row positions (-1: no entry); the title.

    Task, dataset and metric columns that are constant are folded into the title, as a paper
    table names its data set in the caption rather than on every row.
    """
    base = ["task", "dataset", "metric", "teacher", "student"]
    if tidy.empty:
        return pd.DataFrame(columns=base), [], "no finished runs"
    labels = sorted(tidy["method"].unique(), key=method_rank)
    pos = tidy.assign(_pos=np.arange(len(tidy)))
    wide = pos.pivot(index=base, columns="method", values="_pos").reindex(columns=labels)
    labels = [TEACHER_COLUMN if m == TEACHER else m for m in labels]
    wide.columns = labels
    wide = wide.fillna(-1).astype(int).reset_index()
    wide.columns.name = None
    folded = [c for c in ("task", "dataset", "metric") if wide[c].nunique() == 1]
    title = " · ".join([*(str(wide[c].iloc[0]) for c in folded), f"{tidy['epoch'].iloc[0]} epoch"])
    return wide.drop(columns=folded), labels, title


def display_table(tidy: pd.DataFrame, cell: Callable[[Any], str] = text_cell) -> tuple[pd.DataFrame, str]:
    """The pivot with each position replaced by ``cell(tidy row)``; the title."""
    wide, labels, title = pivot(tidy)
    rows = list(tidy.itertuples(index=False))
    out = wide.copy()
    for m in labels:
        out[m] = [cell(rows[i]) if i >= 0 else "" for i in wide[m]]
    out["teacher"] = out["teacher"].replace("", "—")
    return out, title


# ---------------------------------------------------------------------------------------------------
# Links into the MLflow UI. It is a hash router; MLflow 3.17's route table (``RoutePaths.runPage`` and
# ``getCompareRunPageRoute`` in its bundled JS) gives ``#/experiments/<exp>/runs/<run>`` and
# ``#/compare-runs?runs=[…]&experiments=[…]`` (JSON lists).
# ---------------------------------------------------------------------------------------------------
def run_url(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def runs_url(ui: str, experiment_ids: str, run_ids: str) -> str | None:
    """A link to the runs (comma lists): the run page for one run, MLflow's compare view for several."""
    runs = [r for r in str(run_ids).split(",") if r]
    exps = [e for e in str(experiment_ids).split(",") if e]
    if not runs or not exps:
        return None
    if len(runs) == 1 and len(exps) == 1:
        return run_url(ui, exps[0], runs[0])
    enc = lambda v: quote(json.dumps(v, separators=(",", ":")), safe="")  # noqa: E731
    return f"{ui.rstrip('/')}/#/compare-runs?runs={enc(runs)}&experiments={enc(exps)}"


def row_runs(tidy: pd.DataFrame, positions: list[int]) -> tuple[str, str]:
    """All run ids and experiment ids behind one table row (its cells' tidy positions)."""
    runs: list[str] = []
    exps: list[str] = []
    for i in positions:
        if i < 0:
            continue
        runs += [x for x in str(tidy["run_ids"].iat[i]).split(",") if x and x not in runs]
        exps += [x for x in str(tidy["experiment_id"].iat[i]).split(",") if x and x not in exps]
    return ",".join(runs), ",".join(exps)
