"""Grids: task × dataset × teacher→student pair × method × seed, expanded into jobs.

A grid comes from a named preset, an ``experiment.yaml`` and command-line flags, in that order of
precedence (flags win). Expansion validates every name before anything trains and always adds the
``vanilla`` student, so every leaderboard row has its baseline. Teachers without a checkpoint become
teacher jobs, listed first; their students refer to them by hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.spec import VANILLA, JobSpec, resolve_job
from methods.base import UserError
from tasks.base import get_task

ALL_METHODS = ("kd", "dkd", "fitnet", "diffkd")


@dataclass(frozen=True)
class GridSpec:
    """What ``diffbench run`` expands. Empty fields take the task's defaults.

    Attributes:
        pairs: ``(teacher, student)`` architecture pairs; empty → the task's default pairs.
        methods: methods besides ``vanilla`` (added anyway).
        seeds: how many seeds per (pair, method): seeds ``0..seeds-1``.
        sets: per-method hyper-parameter overrides ``{"dkd": {"beta": 6}}``.
        recipe: recipe overrides (``epochs``, ``batch_size``, ``lr``, ...), students and teachers alike.
        teacher_recipe: extra overrides for teacher jobs only (e.g. more epochs).
        preset: the task's recipe preset name.
        teacher_checkpoints: ``{teacher arch: weights file}``; others are trained by teacher jobs.
    """

    task: str = "classification"
    dataset: str | None = None
    data_dir: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    methods: tuple[str, ...] = ALL_METHODS
    seeds: int = 1
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    teacher_recipe: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    teacher_checkpoints: dict[str, str] = field(default_factory=dict)
    #: ``linear``: scale the preset's lr with the batch (``--scale-lr``); ``None``: the recipe's lr.
    scale_lr: str | None = None

    def merged(self, **changes: Any) -> GridSpec:
        """A copy with the non-empty ``changes`` applied (dicts are merged, not replaced)."""
        out: dict[str, Any] = {}
        for key, value in changes.items():
            if value is None or value == () or value == {} or value == []:
                continue
            current = getattr(self, key)
            if isinstance(current, dict) and key == "sets":
                merged = {m: dict(v) for m, v in current.items()}
                for m, kv in value.items():
                    merged.setdefault(m, {}).update(kv)
                out[key] = merged
            elif isinstance(current, dict):
                out[key] = {**current, **value}
            else:
                out[key] = value
        return replace(self, **out)


#: Named grids. ``default`` is what ``diffbench run`` with no arguments runs.
GRID_PRESETS: dict[str, dict[str, Any]] = {
    "default": {"task": "classification", "dataset": "digits"},
    "smoke": {"task": "classification", "dataset": "digits", "preset": "smoke"},
    "cifar100": {"task": "classification", "dataset": "cifar100", "preset": "cifar100"},
    "imagenet": {"task": "classification", "dataset": "imagenet", "preset": "imagenet"},
    "detection": {"task": "detection"},
    "segmentation": {"task": "segmentation"},
}

_CONFIG_KEYS = {f.name for f in fields(GridSpec)} | {"epochs", "batch_size", "lr", "set"}


def parse_pair(text: str) -> tuple[str, str]:
    teacher, sep, student = text.partition(":")
    if not sep or not teacher or not student:
        raise UserError(f"pair {text!r}: expected teacher:student, e.g. resnet32x4:resnet8x4")
    return teacher.strip(), student.strip()


def grid_from_preset(name: str) -> GridSpec:
    if name not in GRID_PRESETS:
        raise UserError(f"unknown preset {name!r}; valid: {', '.join(GRID_PRESETS)}")
    return GridSpec(**GRID_PRESETS[name])


def load_config(path: Path) -> dict[str, Any]:
    """Read and validate ``experiment.yaml`` into :meth:`GridSpec.merged` keywords."""
    import yaml

    if not path.is_file():
        raise UserError(f"config {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config {str(path)!r} is not a text file (not UTF-8); expected YAML") from None
    except OSError as err:
        raise UserError(f"config {str(path)!r} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"config {str(path)!r} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {str(path)!r}: expected a mapping of keys, got {type(data).__name__}")
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise UserError(
            f"config {str(path)!r}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_CONFIG_KEYS))}"
        )
    out: dict[str, Any] = {}

    def want(key: str, types: type | tuple[type, ...], what: str) -> Any:
        value = data[key]
        if not isinstance(value, types) or isinstance(value, bool):  # YAML's true is an int to Python
            raise UserError(f"config {str(path)!r}: {key} must be {what}, got {value!r}")
        return value

    for key in ("task", "dataset", "data_dir", "preset"):
        if key in data:
            out[key] = str(want(key, str, "a string"))
    if "pairs" in data:
        pairs = want("pairs", list, "a list of teacher:student strings")
        out["pairs"] = tuple(parse_pair(str(p)) for p in pairs)
    if "methods" in data:
        methods = data["methods"]
        methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else methods
        if not isinstance(methods, list):
            raise UserError(f"config {str(path)!r}: methods must be a list, got {methods!r}")
        out["methods"] = tuple(str(m) for m in methods)
    if "seeds" in data:
        out["seeds"] = want("seeds", int, "a positive integer")
    for key in ("set", "sets"):
        if key in data:
            sets = want(key, dict, "a mapping method -> {name: value}")
            for m, kv in sets.items():
                if not isinstance(kv, dict):
                    raise UserError(f"config {str(path)!r}: {key}.{m} must be a mapping name -> value")
            out["sets"] = {str(m): dict(kv) for m, kv in sets.items()}
    recipe = dict(want("recipe", dict, "a mapping")) if "recipe" in data else {}
    for key in ("epochs", "batch_size", "lr"):
        if key in data:
            recipe[key] = want(key, (int, float), "a number")
    if recipe:
        out["recipe"] = recipe
    if "teacher_recipe" in data:
        out["teacher_recipe"] = dict(want("teacher_recipe", dict, "a mapping"))
    if "teacher_checkpoints" in data:
        tc = want("teacher_checkpoints", dict, "a mapping arch -> path")
        out["teacher_checkpoints"] = {str(k): str(v) for k, v in tc.items()}
    return out


def expand(grid: GridSpec, device: str = "cpu") -> list[JobSpec]:
    """Teacher jobs first, then vanilla students, then every (pair, method, seed).

    ``device`` (``cpu`` / ``cuda``): where the jobs will run, which decides the recipes' ``auto`` settings.
    """
    from tasks.base import Recipe

    task = get_task(grid.task)
    dataset = grid.dataset or task.default_dataset
    task.check_names(dataset)
    pairs = list(grid.pairs) or list(task.default_pairs(dataset))
    if not pairs:
        raise UserError(f"task {grid.task!r} has no default pairs for {dataset!r}; give --pairs teacher:student")
    if grid.seeds < 1:
        raise UserError(f"--seeds must be at least 1 (got {grid.seeds})")
    methods = [m for m in dict.fromkeys(grid.methods) if m != VANILLA]
    valid_recipe = {f.name for f in fields(Recipe)}
    bad = sorted((set(grid.recipe) | set(grid.teacher_recipe)) - valid_recipe)
    if bad:
        raise UserError(f"unknown recipe setting(s) {', '.join(bad)}; valid: {', '.join(sorted(valid_recipe))}")
    extra_sets = sorted(set(grid.sets) - set(methods))
    if extra_sets:
        raise UserError(
            f"--set names method(s) {', '.join(extra_sets)} that the grid does not run "
            f"(methods: {', '.join(methods) or 'vanilla only'})"
        )
    common = {"task": grid.task, "dataset": dataset, "data_dir": grid.data_dir, "preset": grid.preset, "device": device,
              "scale_lr": grid.scale_lr}

    jobs: list[JobSpec] = []
    teacher_refs: dict[str, str] = {}
    for teacher, _ in pairs:
        if teacher in teacher_refs:
            continue
        if teacher in grid.teacher_checkpoints:
            path = Path(grid.teacher_checkpoints[teacher]).expanduser().resolve()
            if not path.is_file():
                raise UserError(f"teacher checkpoint for {teacher!r} not found: {path}")
            teacher_refs[teacher] = f"file:{path}"
        else:
            tjob = resolve_job(
                **common, student=teacher, role="teacher", recipe_overrides={**grid.recipe, **grid.teacher_recipe}
            )
            jobs.append(tjob)
            teacher_refs[teacher] = f"job:{tjob.job_hash}"
    unused = sorted(set(grid.teacher_checkpoints) - {t for t, _ in pairs})
    if unused:
        raise UserError(f"--teacher-checkpoint given for {', '.join(unused)}, which no pair uses as teacher")
    for student in dict.fromkeys(s for _, s in pairs):
        for seed in range(grid.seeds):
            jobs.append(resolve_job(**common, student=student, seed=seed, recipe_overrides=grid.recipe))
    for teacher, student in pairs:
        for method in methods:
            for seed in range(grid.seeds):
                jobs.append(
                    resolve_job(
                        **common,
                        student=student,
                        teacher=teacher,
                        teacher_ref=teacher_refs[teacher],
                        method=method,
                        seed=seed,
                        recipe_overrides=grid.recipe,
                        hparam_overrides=grid.sets.get(method),
                    )
                )
    unique: dict[str, JobSpec] = {}
    for job in jobs:
        unique.setdefault(job.job_hash, job)
    return list(unique.values())
