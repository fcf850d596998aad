"""What a report's numbers were obtained with: recipe, code version, commit and dates, per task/data set.

A KD table is only comparable to another when the recipes match; the most common complaint in KD
trackers is a result that does not reproduce because a setting went unrecorded. So every rendering
says which recipe (preset name and its key values), which diffbench version and commit, and which
dates its runs come from, and says loudly when one table mixes recipes or commits.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.report.schema import RECIPE_FIELDS

_SHOWN = {"epochs": "epochs", "batch_size": "batch", "lr": "lr", "precision": "precision"}
UNKNOWN = "unknown"


def _values(frame: pd.DataFrame, col: str) -> list[str]:
    return sorted({str(v) for v in frame[col].unique()}, key=natural_key)  # unique(): thousands of runs, few values


def natural_key(s: str) -> tuple[int, float, str]:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def _when(ts: Any) -> str | None:
    return None if pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M")


def summarise(students: pd.DataFrame, teachers: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per (task, dataset) of the runs a table shows.

    Args:
        students: the finished student runs counted in the table (normalised: ``recipe_preset``, the
            :data:`RECIPE_FIELDS`, ``recipe_key``, ``git_commit``, ``diffbench_version``, times).
        teachers: the finished teacher runs whose scores the table shows (same columns).

    Returns:
        Records with the distinct values of each recipe field, preset, version and commit, the number
        of distinct recipes, the run count and the first start / last end (``YYYY-MM-DD HH:MM`` UTC).
        ``teachers`` is set when the teacher runs' recipe differs from the students'.
    """
    out: list[dict[str, Any]] = []
    # A vanilla run counts once, although it fills the vanilla cell of every pair with its student.
    students = students.drop_duplicates("run_id")
    teachers = teachers.drop_duplicates("run_id")
    frames = [f for f in (students, teachers) if len(f)]
    if not frames:
        return out
    groups = pd.concat(frames)[["task", "dataset"]].drop_duplicates()
    for task, dataset in groups.itertuples(index=False, name=None):
        s = students[(students["task"] == task) & (students["dataset"] == dataset)]
        t = teachers[(teachers["task"] == task) & (teachers["dataset"] == dataset)]
        both = pd.concat([f for f in (s, t) if len(f)])
        main = s if len(s) else t
        rec: dict[str, Any] = {"task": task, "dataset": dataset, "runs": len(both)}
        rec["recipe_preset"] = _values(main, "recipe_preset")
        rec.update({f: _values(main, f) for f in RECIPE_FIELDS})
        rec["recipes"] = int(main["recipe_key"].nunique())
        rec["diffbench_version"] = _values(both, "diffbench_version")
        rec["git_commit"] = _values(both, "git_commit")
        rec["first_run"] = _when(both["start_time"].min())
        rec["last_run"] = _when(both["end_time"].max())
        rec["teachers"] = None
        if len(s) and len(t):
            theirs = {"recipe_preset": _values(t, "recipe_preset"), **{f: _values(t, f) for f in RECIPE_FIELDS}}
            if any(theirs[k] != rec[k] for k in theirs):
                rec["teachers"] = theirs
        out.append(rec)
    return out


def _recipe_text(rec: dict[str, Any]) -> str:
    presets = rec["recipe_preset"]
    name = f"recipe {', '.join(repr(p) for p in presets)}" if presets != [UNKNOWN] else "recipe preset unknown"
    fields = ", ".join(f"{_SHOWN[f]} {'/'.join(rec[f]) or '?'}" for f in RECIPE_FIELDS)
    return f"{name} ({fields})"


def lines(records: list[dict[str, Any]]) -> list[str]:
    """Each provenance record as one sentence, plus a warning per mixed recipe or commit."""
    out: list[str] = []
    for rec in records:
        where = f"{rec['task']}/{rec['dataset']}"
        commits = rec["git_commit"]
        versions = rec["diffbench_version"]
        code = f"diffbench {'/'.join(versions)}, commit {', '.join(commits)}"
        first, last = rec["first_run"] or "?", rec["last_run"] or "?"
        dates = f"runs {first} UTC" if first == last else f"runs {first} – {last} UTC"
        text = f"Provenance {where}: {rec['runs']} run(s), {_recipe_text(rec)}; {code}; {dates}."
        if rec["teachers"] is not None:
            text = text[:-1] + f"; teachers: {_recipe_text(rec['teachers'])}."
        out.append(text)
        if rec["recipes"] > 1 or len(rec["recipe_preset"]) > 1:
            out.append(
                f"Warning: {where} mixes {max(rec['recipes'], len(rec['recipe_preset']))} recipes; "
                "compare only cells trained with the same recipe (columns are split by configuration)."
            )
        if len([c for c in commits if c != UNKNOWN]) > 1:
            out.append(f"Warning: {where} mixes code versions (commits {', '.join(commits)}).")
    return out
