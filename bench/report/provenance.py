"""What a report's numbers were obtained with: recipe, starting weights, workers, code version, commit and dates.

A KD table is only comparable to another when the recipes match; the most common complaint in KD
trackers is a result that does not reproduce because a setting went unrecorded. So every rendering
says, per task and data set, which recipe (preset name and its key values), which starting weights
(random, or the pretrained files' names), how many data-parallel workers, which diffbench version and
commit, and which dates its runs come from, and says loudly when one table mixes recipes or commits.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.report.schema import INIT_PRETRAINED, RECIPE_FIELDS

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
            :data:`RECIPE_FIELDS`, ``recipe_only_key``, ``student_init``, ``student_init_file``, ``init_ref``,
            ``workers``, ``git_commit``, ``diffbench_version``, times).
        teachers: the finished teacher runs whose scores the table shows (same columns).

    Returns:
        Records with the distinct values of each recipe field, preset, version and commit, the number
        of distinct recipes, the run count and the first start / last end (``YYYY-MM-DD HH:MM`` UTC);
        the students' starting weights (``student_init``: ``pretrained`` / ``random``; ``student_init_file``:
        the pretrained files' names) and data-parallel worker counts (``workers``, ``unknown`` for runs that
        do not record it). ``teachers`` is set when the teacher runs' recipe differs from the students'.
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
        rec.update(_init(main))
        rec["workers"] = _values(main, "workers")
        rec["recipes"] = int(main["recipe_only_key"].nunique())
        rec["diffbench_version"] = _values(both, "diffbench_version")
        rec["git_commit"] = _values(both, "git_commit")
        rec["first_run"] = _when(both["start_time"].min())
        rec["last_run"] = _when(both["end_time"].max())
        rec["teachers"] = None
        rec["teacher_init"] = None
        if len(s) and len(t):
            theirs_init = _init(t)
            if theirs_init != _init(s):
                rec["teacher_init"] = theirs_init
            theirs = {"recipe_preset": _values(t, "recipe_preset"), **{f: _values(t, f) for f in RECIPE_FIELDS}}
            if any(theirs[k] != rec[k] for k in theirs):
                rec["teachers"] = theirs
        out.append(rec)
    return out


def _init(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The starting weights' kinds and the pretrained files' names (``sha256:<12 hex>`` where no name was logged)."""
    pre = runs[runs["student_init"] == INIT_PRETRAINED]
    files = pre["student_init_file"].where(pre["student_init_file"] != "", pre["init_ref"].str[: len("sha256:") + 12])
    return {"student_init": _values(runs, "student_init"), "student_init_file": sorted(set(files), key=natural_key)}


def _init_text(rec: dict[str, Any]) -> str:
    kinds = [f"{k} weights" + (f" ({', '.join(rec['student_init_file'])})" if k == INIT_PRETRAINED else "")
             for k in rec["student_init"]]  # fmt: skip
    return " and ".join(kinds) or "?"


def _workers_text(workers: list[str]) -> str:
    return "/".join("not recorded" if w == UNKNOWN else w for w in workers) or "?"


def _recipe_text(rec: dict[str, Any]) -> str:
    presets = rec["recipe_preset"]
    name = f"recipe {', '.join(repr(p) for p in presets)}" if presets != [UNKNOWN] else "recipe preset unknown"
    fields = ", ".join(f"{_SHOWN[f]} {'/'.join(rec[f]) or '?'}" for f in RECIPE_FIELDS)
    return f"{name} ({fields})"


def lines(records: list[dict[str, Any]], heading: bool = True) -> list[str]:
    """Each provenance record as one sentence, plus a warning per mixed recipe or commit.

    ``heading=False`` leaves out the word "Provenance" the sentences start with, for a page that heads them
    with it already.
    """
    out: list[str] = []
    for rec in records:
        where = f"{rec['task']}/{rec['dataset']}"
        commits = rec["git_commit"]
        versions = rec["diffbench_version"]
        code = f"diffbench {'/'.join(versions)}, commit {', '.join(commits)}"
        first, last = rec["first_run"] or "?", rec["last_run"] or "?"
        dates = f"runs {first} UTC" if first == last else f"runs {first} – {last} UTC"
        text = f"{'Provenance ' if heading else ''}{where}: {rec['runs']} run(s), {_recipe_text(rec)}; {code}; {dates}."
        if rec["teachers"] is not None:
            text = text[:-1] + f"; teachers: {_recipe_text(rec['teachers'])}."
        out.append(text)
        teachers = f" (teachers: {_init_text(rec['teacher_init'])})" if rec.get("teacher_init") else ""
        out.append(
            f"Initialisation {where}: runs start from {_init_text(rec)}{teachers}; "
            f"data-parallel workers per run: {_workers_text(rec['workers'])}."
        )
        if rec["recipes"] > 1 or len(rec["recipe_preset"]) > 1:
            out.append(
                f"Warning: {where} mixes {max(rec['recipes'], len(rec['recipe_preset']))} recipes; "
                "compare only cells trained with the same recipe (columns are split by configuration)."
            )
        starts = len(rec["student_init"]) + max(len(rec["student_init_file"]) - 1, 0)
        if starts > 1:
            out.append(
                f"Warning: {where} mixes starting weights ({_init_text(rec)}); compare only cells that started from "
                "the same weights (columns are split by starting point)."
            )
        if len([c for c in commits if c != UNKNOWN]) > 1:
            out.append(f"Warning: {where} mixes code versions (commits {', '.join(commits)}).")
    return out
