"""The :class:`Leaderboard` a report computes once and every renderer reads, with its legend and footer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.report import provenance
from bench.report.schema import (
    ABOVE,
    BELOW,
    METHOD_ORDER,
    PAIRED_MARK,
    REPRODUCED,
    SIG_VANILLA,
    SIG_VS,
    TEACHER,
    VERDICT_MARKS,
)
from bench.tracking.schema import TUNED_LABEL

#: What the note of a cell whose finished runs did not log the metric says (``n=0, 3 finished runs without …``).
MISSING_METRIC = " without "


@dataclass
class Leaderboard:
    """A computed leaderboard.

    Attributes:
        tidy: one row per (pair, method), columns :data:`~bench.report.schema.TIDY_COLUMNS`: the
            numbers (``mean, std, n``), the comparisons (gain over vanilla with its 95 % CI, p, mark and
            ``test``: ``paired`` or ``welch``; the same against ``vs``), the published number and the
            paper's setting, the cell's provenance and its run ids. Method ``teacher`` holds the teacher's
            score. This is what CSV and JSON export.
        table: the display frame, one row per pair, cells as plain text (what markdown shows).
        epoch: ``best`` or ``last``.
        title: what the table shows (constant task/dataset/metric are folded in here).
        failed: failed jobs left out (``task … method, seed, failure_reason, run_id``).
        unfinished: counts of other non-finished runs by status (``RUNNING``, ``KILLED``…).
        notes: warnings worth printing under the table.
        provenance: per task/data set, the recipe, versions, commits and dates of the runs shown
            (see :func:`bench.report.provenance.summarise`).
        vs: the reference method of the second comparison, if any.
        grid: the grid the runs were restricted to (``run_id``, ``name``, ``line``), if any.
    """

    tidy: pd.DataFrame
    table: pd.DataFrame
    epoch: str
    title: str
    failed: pd.DataFrame
    unfinished: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    vs: str | None = None
    grid: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        """No student cell has a finished run (a table of teachers or of n=0 cells says nothing)."""
        t = self.tidy
        return not ((t["n"] > 0) & (t["method"] != TEACHER)).any() if len(t) else True

    @property
    def shows_published(self) -> bool:
        """Some cell shows a published number (else no legend line or figure marker explains one)."""
        return bool(len(self.tidy)) and bool(self.tidy["published"].notna().any())

    @property
    def methods(self) -> list[str]:
        """Method column labels in display order (without ``teacher``)."""
        return [m for m in sorted(set(self.tidy["method"]), key=method_rank) if m != TEACHER]

    def missing_metric(self) -> pd.DataFrame:
        """The cells whose finished runs did not log the metric (note ``n=0, 3 finished runs without …``)."""
        t = self.tidy
        if not len(t) or "note" not in t:
            return t.iloc[0:0]
        return t[(t["n"] == 0) & t["note"].astype(str).str.contains(MISSING_METRIC, regex=False)]

    def empty_reason(self) -> str:
        """One line for an empty table: what did not finish and the first failure's reason, or the metric its runs
        did not log."""
        missing = self.missing_metric()
        if len(missing) and not len(self.failed):
            t = missing.iloc[0]
            return (
                f"no finished run logged {t['epoch']}_{t['metric']} ({len(missing)} cell(s) without it, e.g. "
                f"{t['method']} {pair_label(t['teacher'], t['student'])} on {t['task']}/{t['dataset']}: {t['note']})"
            )
        counts = {"failed": len(self.failed)} | {s.lower(): n for s, n in sorted(self.unfinished.items())}
        shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        why = f" ({shown})" if shown else ""
        if len(self.failed):
            r = self.failed.iloc[0]
            why += f"; first failure: {r['method']} {pair_label(r['teacher'], r['student'])} seed {r['seed']}: "
            why += (str(r["failure_reason"]) or "no reason recorded").splitlines()[0][:200]
        return f"no finished runs match{why}"

    def legend(self) -> list[str]:
        """What the cells and the marks mean: printed under every table."""
        metric = "/".join(sorted(set(self.tidy["metric"]))) or "the metric"
        t = self.tidy
        lower = set(t.loc[t["lower_is_better"].eq(True), "metric"]) if "lower_is_better" in t else set()
        if lower:  # a loss: name its direction, and what a gain's sign then means
            metric = "/".join(f"{m} (lower is better)" if m in lower else m for m in sorted(set(self.tidy["metric"])))
        marks = ", ".join(f"{s} p < {p:g}" for p, s in reversed(SIG_VANILLA))
        lines = [
            f"Cells: mean ± sample std over seeds (n) of {metric} at the {self.epoch} epoch; gain over vanilla "
            "(same recipe and starting weights) with its 95 % confidence interval [low, high]"
            + ("; a negative gain is an improvement" if lower else "")
            + ("; 'paper' = the published number." if self.shows_published else "."),
            f"Tests: paired ({PAIRED_MARK} after the interval) when the method and vanilla ran the same seeds, each "
            "once, at least 2 (seed i of both started from the same weights and saw the same data order): the "
            "one-sample t-interval and two-sided t-test of the per-seed differences (scipy's ttest_rel); otherwise "
            "Welch's interval (Welch–Satterthwaite degrees of freedom) and two-sided t-test.",
            f"Marks: {marks}: the cell's test against vanilla (same recipe and starting weights)",
            "n=1, no CI: one finished seed, so no spread, interval or test is known; "
            "n=0: requested, but no finished run"
            + (" (or its finished runs did not log the metric)." if len(self.missing_metric()) else "."),
        ]
        if self.vs:
            vs_marks = ", ".join(f"{s} p < {p:g}" for p, s in reversed(SIG_VS))
            lines[2] += (
                f"; 'vs {self.vs}' = difference to {self.vs} (paired{PAIRED_MARK} or Welch, by the same rule), "
                f"{vs_marks} against {self.vs}"
            )
        lines[2] += "."
        return lines + self._verdict_legend()

    def _verdict_legend(self) -> list[str]:
        """The reproduction marks on this page, one line (none when no cell carries one)."""
        shown = set(self.tidy.loc[self.tidy["published"].notna(), "verdict"]) if len(self.tidy) else set()
        meaning = {
            REPRODUCED: "reproduced (the paper's number lies inside the interval)",
            BELOW: "ours is below (the paper's number lies above the interval)",
            ABOVE: "ours is above (the paper's number lies below the interval)",
        }
        marks = [f"{VERDICT_MARKS[v]} {meaning[v]}" for v in (REPRODUCED, BELOW, ABOVE) if v in shown]
        if not marks:
            return []
        return [
            "After 'paper': the published number against the 95 % t-interval of our seeds' mean "
            f"(mean ± t(0.975, n-1)·std/√n): {'; '.join(marks)}. A cell with one seed gets none (undecided); "
            "--reproduction lists the verdicts."
        ]

    def provenance_lines(self, heading: bool = True) -> list[str]:
        """The grid the runs came from and the provenance sentences (:func:`bench.report.provenance.lines`).

        ``heading=False``: for a page that prints them under its own "Provenance" heading, the sentences do not
        start with the word again.
        """
        out = [self.grid["line"] + "."] if self.grid else []
        return out + provenance.lines(self.provenance, heading=heading)

    def notes_lines(self) -> list[str]:
        """Failed and unfinished runs left out, then the notes: what :meth:`footer` adds after the provenance."""
        lines = []
        if len(self.failed):
            shown = [
                f"{r.method} {pair_label(r.teacher, r.student)} s{r.seed}: {r.failure_reason or 'no reason recorded'}"
                for r in self.failed.head(10).itertuples()
            ]
            more = f"; … {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
            lines.append(f"{len(self.failed)} failed job(s) left out: " + "; ".join(shown) + more)
        if self.unfinished:
            lines.append(
                "Not finished, left out: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.unfinished.items()))
            )
        return lines + self.notes

    def footer(self) -> list[str]:
        """Legend, provenance and notes (failures, unfinished runs, hidden published numbers)."""
        return self.legend() + self.provenance_lines() + self.notes_lines()


def pair_label(teacher: str, student: str) -> str:
    return f"{teacher}→{student}" if teacher else student


def method_rank(label: str) -> tuple[int, str, str]:
    base = label.split("[", 1)[0].removesuffix(TUNED_LABEL)  # a tuned column sits beside its method
    if base == TEACHER:
        return (-1, "", label)
    if base in METHOD_ORDER:
        return (METHOD_ORDER.index(base), "", label)
    return (len(METHOD_ORDER), base, label)
