"""Tuned columns in reports, and ``diffbench report --tuning``: what each search of ``diffbench tune`` did.

* A job run a search chose (tag :data:`~bench.tracking.schema.TUNED`) is shown as its own method column,
  ``dkd (tuned)`` (:func:`mark_tuned`, applied when runs are loaded), so it is never averaged with untuned runs of
  the same method; its provenance line (:func:`provenance_lines`) states the budget, the search, the hold-out and
  the winning values (tag :data:`~bench.tracking.schema.TUNING`).
* ``report --tuning`` (:func:`searches`, :func:`render`) reads the tune runs and their trial runs: per search the
  trials (completed, stopped early, failed), the best hold-out score after each trial (the search's progress
  against the trial index), the winning values and the cost.

Nothing here imports torch or MLflow (a SQLite store is read directly, :func:`bench.report.load.load_kind`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from bench.tracking import schema as S


def mark_tuned(runs: pd.DataFrame) -> pd.DataFrame:
    """Relabel the runs a search chose: method ``dkd`` → ``dkd (tuned)`` (in place; the frame is returned)."""
    col = f"tags.{S.TUNED}"
    if col not in runs or "tags.method" not in runs or runs.empty:
        return runs
    mask = runs[col].fillna("").astype(str) != ""
    if mask.any():
        method = runs.loc[mask, "tags.method"].fillna("").astype(str)
        runs.loc[mask, "tags.method"] = method.where(method.str.endswith(S.TUNED_LABEL), method + S.TUNED_LABEL)
    return runs


def provenance_lines(runs: pd.DataFrame, shown: set[str] | None = None) -> list[str]:
    """One line per tuned column: how it was tuned (its runs' :data:`~bench.tracking.schema.TUNING` tag); ``shown``:
    only runs with these ids (those a leaderboard counts)."""
    col = f"tags.{S.TUNING}"
    if col not in runs or runs.empty:
        return []
    tuned = runs[runs[col].fillna("").astype(str) != ""]
    if shown is not None:
        tuned = tuned[tuned["run_id"].astype(str).isin(shown)]
    out = []
    keys = ["tags.method", "tags.teacher", "tags.student", col]
    for method, teacher, student, text in tuned[keys].fillna("").drop_duplicates().itertuples(index=False):
        pair = f"{teacher}→{student}" if teacher else student
        out.append(f"{method} on {pair}: tuned by {text}.")
    return sorted(out)


def shown_runs(tidy: pd.DataFrame) -> set[str]:
    """The run ids a leaderboard's cells were computed from."""
    if "run_ids" not in tidy:
        return set()
    return {r for ids in tidy["run_ids"].dropna().astype(str) for r in ids.split(",") if r}


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def searches(tunes: pd.DataFrame, trials: pd.DataFrame, tune: str | None = None) -> list[dict[str, Any]]:
    """Per tune run (newest first; ``tune``: only the one with this run id or key), per search, what it did.

    Each record: ``tune_run``, ``name``, the tune run's params (``budget``, ``search_alg``, ``holdout``,
    ``trial_recipe``, ``cost_unit``), ``search``, ``trials``, ``completed``, ``stopped``, ``failed``,
    ``best_by_trial`` (the best hold-out score after trial 0, 1, ...), ``best``, ``winner`` (the winning
    values), ``winner_trial``, ``cost`` (device-hours of its trials), ``status``.
    """
    if tunes.empty:
        return []
    if tune:
        keep = (tunes["run_id"] == tune) | (tunes.get(f"tags.{S.TUNE_KEY}", pd.Series("", index=tunes.index)) == tune)
        tunes = tunes[keep]
    tunes = tunes.sort_values("start_time", ascending=False, kind="stable")
    out: list[dict[str, Any]] = []
    for _, t in tunes.iterrows():
        run_id = t["run_id"]
        mine = trials[(trials.get(f"tags.{S.PARENT}", pd.Series("", index=trials.index)) == run_id)
                      & (trials.get(f"tags.{S.SUPERSEDED}", pd.Series("", index=trials.index)) != "true")] \
            if not trials.empty else trials  # fmt: skip
        params = {("search_alg" if k == "search" else k): t.get(f"params.{k}") for k in (*S.TUNE_PARAMS, "cost_unit")}
        names = sorted(set(mine[f"tags.{S.SEARCH}"].dropna())) if not mine.empty else []
        for name in names:
            rows = mine[mine[f"tags.{S.SEARCH}"] == name].copy()
            rows["_index"] = pd.to_numeric(rows[f"tags.{S.TRIAL_INDEX}"], errors="coerce")
            rows = rows.sort_values("_index", kind="stable")
            reasons = rows.get(f"tags.{S.STOP_REASON}", pd.Series("", index=rows.index)).fillna("").astype(str)
            scores = [_num(v) for v in rows.get(f"metrics.{S.BEST_SCORE}", pd.Series(index=rows.index))]
            best_by: list[float | None] = []
            best = winner = winner_trial = None
            for score in scores:
                if score is not None and (best is None or score > best):
                    best = score
                best_by.append(best)
            done = [(s, i, r) for s, (i, r) in zip(scores, rows.iterrows(), strict=True) if s is not None]
            completed = [(s, i, r) for s, i, r in done if reasons.loc[i] == "completed"]
            pool = completed or done
            if pool:
                s, _, r = max(pool, key=lambda x: x[0])
                winner = json.loads(r.get(f"params.{S.TRIAL_VALUES}") or "{}")
                winner_trial, best = int(r["_index"]), s
            cost = pd.to_numeric(rows.get("metrics.device_hours", pd.Series(index=rows.index)), errors="coerce")
            out.append({
                "tune_run": run_id, "name": t.get("tags.mlflow.runName") or "", **params, "search": name,
                "trials": len(rows), "completed": int((reasons == "completed").sum()),
                "failed": int(reasons.str.startswith("failed").sum()),
                "stopped": int((~reasons.isin(["completed"]) & ~reasons.str.startswith("failed")).sum()),
                "best_by_trial": best_by, "best": best, "winner": winner, "winner_trial": winner_trial,
                "cost": float(cost.fillna(0).sum()), "status": t.get("status"),
            })  # fmt: skip
    return out


def _values(values: dict[str, Any] | None) -> str:
    if not values:
        return "-"
    return ", ".join(f"{k.partition('.')[2]}={v:.4g}" if isinstance(v, float) else f"{k.partition('.')[2]}={v}"
                     for k, v in sorted(values.items()))  # fmt: skip


def _curve(best_by: list[float | None]) -> str:
    return " ".join("-" if v is None else f"{v:.2f}" for v in best_by)


COLUMNS = ("search", "trials", "completed", "stopped early", "failed", "best hold-out score after each trial",
           "winning values (trial)", "cost")  # fmt: skip


def rows(records: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in records:
        winner = f"{_values(r['winner'])} (trial {r['winner_trial']})" if r["winner"] else "-"
        out.append(
            [
                r["search"],
                str(r["trials"]),
                str(r["completed"]),
                str(r["stopped"]),
                str(r["failed"]),
                _curve(r["best_by_trial"]),
                winner,
                f"{r['cost']:.3g} {r.get('cost_unit') or 'device-hours'}",
            ]
        )
    return out


def headers(records: list[dict[str, Any]]) -> list[str]:
    """One line per tune run: its budget, search, hold-out and trial recipe."""
    seen, out = set(), []
    for r in records:
        if r["tune_run"] in seen:
            continue
        seen.add(r["tune_run"])
        holdout = r.get("holdout") or ""
        try:
            h = json.loads(holdout)
            holdout = f"hold-out {h['fraction']:.0%} of the training split (seed {h['seed']})"
        except (ValueError, TypeError, KeyError):
            pass
        out.append(f"tune run {r['tune_run']} ({r['status']}): {r.get('budget')}; {r.get('search_alg')}; {holdout}; "
                   f"{r.get('trial_recipe')} per trial")  # fmt: skip
    return out


def render_markdown(records: list[dict[str, Any]]) -> str:
    lines = []
    for head in headers(records):
        run = head.split()[2]
        lines += [f"**{head}**", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for r, row in zip(records, rows(records), strict=True)
                  if r["tune_run"] == run]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def render_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=1, default=str)


def to_rich(records: list[dict[str, Any]]) -> Any:
    """One table per tune run, in the first layout that fits the console (:func:`~.fitting.first_fitting`): a row per
    search with whole pieces on their own lines (the search as method / pair, one winning value per line), else one
    small field/value table per search. No number, name or value is cut."""
    from rich.console import Group

    parts: list[Any] = []
    for head in headers(records):
        run = head.split()[2]
        mine = [(r, row) for r, row in zip(records, rows(records), strict=True) if r["tune_run"] == run]
        parts.append(_Fitted(head, mine))
    return Group(*parts)


def _lines(column: int, cell: str) -> str:
    """A cell's text broken into whole pieces: the search as method / pair, winning values one per line."""
    if column == 0:
        return cell.replace(" ", "\n", 1)
    if column == 6:
        return cell.replace(", ", ",\n").replace(" (trial", "\n(trial")
    return cell


class _Fitted:
    """A tune run's searches, measured on the console: the widest layout that fits it."""

    def __init__(self, head: str, rows: list[tuple[dict[str, Any], list[str]]]) -> None:
        self.head, self.rows = head, rows

    def _wide(self) -> Any:
        from rich.table import Table

        table = Table(title=self.head, title_justify="left")
        for col in COLUMNS:
            table.add_column(col, no_wrap=True)
        for _, row in self.rows:
            table.add_row(*(_lines(i, cell) for i, cell in enumerate(row)))
        return table

    def _narrow(self) -> Any:
        from rich.table import Table

        table = Table(title=self.head, title_justify="left", show_header=False)
        table.add_column("field", no_wrap=True)
        table.add_column("value", no_wrap=True)
        for n, (_, row) in enumerate(self.rows):
            if n:
                table.add_section()
            for i, (col, cell) in enumerate(zip(COLUMNS, row, strict=True)):
                name = {5: "best after each trial", 6: "winning values"}.get(i, col)
                table.add_row(name, _lines(i, cell) if i in (0, 6) else cell)
        return table

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from bench.report.fitting import first_fitting

        yield first_fitting(console, options, [("wide", self._wide()), ("narrow", self._narrow())])[1]
