"""Plans a user can inspect before spending GPU-hours: every preset resolved, every job of a grid spelled out.

``diffbench list presets --json`` prints :func:`presets_json` (each task's recipe presets with every resolved field,
per data set, and the source they mirror; each grid preset's expansion); ``diffbench run ... --dry-run --json``
prints :func:`jobs_json` (each job with its hash, role, method, pair, seed, resolved hyper-parameters, the whole
resolved recipe and its starting weights). Torch-free, like everything in :mod:`bench.jobs`.
"""

from __future__ import annotations

from typing import Any

from bench.jobs.grid import GridSpec, grid_from_preset, seeds_of
from bench.jobs.presets import GRID_PRESETS, PAPER_PREFIX, PAPER_PRESETS
from bench.jobs.spec import RANDOM_INIT, JobSpec
from methods.errors import UserError
from tasks.spec import TaskSpec, task_names, task_spec


def _recipes_of(task: TaskSpec) -> dict[str, Any]:
    """Each recipe preset of ``task``: its source, and per data set it applies to the resolved recipe (and the
    teacher's where it differs, and the fields that differ per student of the data set's default pairs)."""
    out: dict[str, Any] = {}
    for preset in task.presets:
        per_dataset: dict[str, Any] = {}
        for dataset in task.preset_datasets.get(preset, task.datasets):
            students = list(dict.fromkeys(a for pair in task.default_pairs(dataset) for a in pair)) or [None]
            try:
                recipes = {s: task.recipe(dataset, s, preset).to_dict() for s in students}
                teacher = task.teacher_recipe(dataset, students[0], preset).to_dict()
            except UserError:  # a preset that does not apply to this data set
                continue
            base = recipes[students[0]]
            entry: dict[str, Any] = {"recipe": base}
            by_student = {s: {k: v for k, v in r.items() if base.get(k) != v} for s, r in recipes.items()}
            by_student = {s: d for s, d in by_student.items() if d}
            if by_student:
                entry["by_student"] = by_student
            if teacher != base:
                entry["teacher_recipe"] = {k: v for k, v in teacher.items() if base.get(k) != v}
            per_dataset[dataset] = entry
        out[preset] = {"source": task.preset_sources.get(preset, ""), "datasets": per_dataset}
    return out


def _grid_json(grid: GridSpec) -> dict[str, Any]:
    task = task_spec(grid.task)
    dataset = grid.dataset or task.default_dataset
    return {
        "task": grid.task,
        "dataset": dataset,
        "pairs": [list(p) for p in (grid.pairs or task.default_pairs(dataset))],
        "methods": ["vanilla", *grid.methods],
        "seeds": seeds_of(grid.seeds),
        "recipe": grid.preset or "(the data set's default)",
        "recipe_overrides": dict(grid.recipe),
        "method_overrides": {m: dict(v) for m, v in grid.sets.items()},
    }


def presets_json() -> dict[str, Any]:
    """Every recipe preset of every task (resolved) and every grid preset (expanded, with its sources)."""
    grids: dict[str, Any] = {name: _grid_json(grid_from_preset(name)) for name in GRID_PRESETS}
    for name, p in PAPER_PRESETS.items():
        entry = _grid_json(grid_from_preset(f"{PAPER_PREFIX}{name}"))
        entry.update(
            title=p.title,
            source=p.source,
            teachers={"files": dict(p.teachers), "from": p.teachers_from} if p.teachers else "trained by the grid",
            student_init={"files": dict(p.students), "from": p.students_from} if p.students else RANDOM_INIT,
            notes=list(p.notes),
        )
        grids[f"{PAPER_PREFIX}{name}"] = entry
    return {"recipes": {t: _recipes_of(task_spec(t)) for t in task_names()}, "grids": grids}


def job_json(job: JobSpec) -> dict[str, Any]:
    """One job as ``--dry-run --json`` prints it."""
    return {
        "hash": job.job_hash,
        "label": job.label,
        "role": job.role,
        "task": job.task,
        "dataset": job.dataset,
        "method": job.method,
        "teacher": job.teacher,
        "teacher_weights": job.teacher_ref,
        "student": job.student,
        "seed": job.seed,
        "hparams": dict(job.hparams),
        "recipe": dict(job.recipe),
        "student_init": job.student_init or RANDOM_INIT,
        "student_init_file": job.student_init_path,
        "data": job.data_id,
    }


def jobs_json(jobs: list[JobSpec]) -> dict[str, Any]:
    """Every job of an expanded grid (``diffbench run --dry-run --json``)."""
    return {"jobs": [job_json(j) for j in jobs], "count": len(jobs)}
