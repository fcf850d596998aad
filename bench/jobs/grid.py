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

from bench.jobs.presets import GRID_PRESETS, PAPER_PREFIX, paper_preset, preset_names
from bench.jobs.spec import RANDOM_INIT, VANILLA, JobSpec, file_identity, resolve_job
from bench.jobs.values import SEED_MAX, number
from methods import catalog
from methods.errors import UserError, did_you_mean, unknown
from tasks.recipe import Recipe
from tasks.spec import task_spec

#: The most seeds a count may ask for (``--seeds 4294967296`` once tried to build a list of four billion).
MAX_SEED_COUNT = 10_000


@dataclass(frozen=True)
class GridSpec:
    """What ``diffbench run`` expands. Empty fields take the task's defaults.

    Attributes:
        pairs: ``(teacher, student)`` architecture pairs; empty → the task's default pairs.
        methods: methods besides ``vanilla`` (added anyway).
        seeds: how many seeds per (pair, method) (``3``: seeds 0, 1, 2), or the seeds themselves.
        sets: per-method hyper-parameter overrides ``{"dkd": {"beta": 6}}``.
        recipe: recipe overrides (``epochs``, ``batch_size``, ``lr``, ...), students and teachers alike, except
            ``extra``: a data set's settings of the students' split (``colorshapes-few``'s ``labelled_per_class``),
            which would silently change what a teacher learns from; a teacher's is :attr:`teacher_recipe`'s.
        teacher_recipe: extra overrides for teacher jobs only (e.g. more epochs).
        preset: the task's recipe preset name.
        teacher_checkpoints: ``{teacher arch: weights file}``; others are trained by teacher jobs.
        student_checkpoints: ``{arch: weights file or "random"}``: the starting weights of every job that trains
            ``arch`` (students, and teacher jobs of that arch); others start as the task's default.
    """

    task: str = "classification"
    dataset: str | None = None
    data_dir: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    methods: tuple[str, ...] = catalog.BUILTIN
    seeds: int | tuple[int, ...] = 1
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    teacher_recipe: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    teacher_checkpoints: dict[str, str] = field(default_factory=dict)
    student_checkpoints: dict[str, str] = field(default_factory=dict)
    #: the paper preset this grid comes from (``--preset paper:<name>``): it must be given the paper's weights
    #: files (:class:`~bench.jobs.presets.PaperPreset`).
    paper: str | None = None
    #: ``linear``: scale the preset's lr with the batch (``--scale-lr``); ``None``: the recipe's lr.
    scale_lr: str | None = None
    #: a smoke grid (``--preset smoke``): small whatever the data set: without ``pairs``, only the data set's
    #: smallest default pair; one epoch (the task's ``smoke`` recipe, else ``epochs=1``) unless the flags say more.
    smoke: bool = False

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


def seeds_of(seeds: int | tuple[int, ...] | str) -> list[int]:
    """``3`` → seeds 0, 1, 2; ``"0,5,7"`` or ``(0, 5, 7)`` → those seeds (``--seeds`` takes a count or a list).

    Every seed must lie within 0..2^32-1 (what NumPy and the workers can be seeded with: a larger one used to pass
    here and crash the students mid-grid), and a count at most :data:`MAX_SEED_COUNT`.
    """
    if isinstance(seeds, str):
        parts = [p.strip() for p in seeds.split(",") if p.strip()]
        if not parts:
            raise UserError(f"--seeds {seeds!r}: expected a count (3) or a comma list of seeds (0,1,2)")
        try:
            values = [number(p, "--seeds", integer=True) for p in parts]
        except UserError:
            raise UserError(f"--seeds {seeds!r}: expected a count (3) or a comma list of seeds (0,1,2)") from None
        seeds = values[0] if len(values) == 1 and "," not in seeds else tuple(values)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise UserError(f"--seeds must be at least 1 (got {seeds})")
        if seeds > MAX_SEED_COUNT:
            raise UserError(f"--seeds {seeds}: a count of seeds must be at most {MAX_SEED_COUNT}; give the seeds "
                            f"themselves as a comma list (0,{SEED_MAX}) for large ones")  # fmt: skip
        return list(range(seeds))
    if isinstance(seeds, bool) or not isinstance(seeds, list | tuple):
        raise UserError(f"--seeds {seeds!r}: expected a count (3) or a comma list of seeds (0,1,2)")
    out = list(dict.fromkeys(int(number(x, "--seeds", integer=True)) for x in seeds))
    if not out or any(x < 0 for x in out):
        raise UserError(f"--seeds {seeds!r}: seeds must be integers >= 0")
    too_big = [x for x in out if x > SEED_MAX]
    if too_big:
        raise UserError(f"--seeds: seed {too_big[0]} is out of range; seeds must be within 0..{SEED_MAX}")
    return out


def student_init(value: str) -> tuple[str, str | None]:
    """``(student_init, student_init_path)`` of a ``--student-checkpoint`` value: ``random``, or a weights file (its
    content hash and absolute path)."""
    if value == RANDOM_INIT:
        return RANDOM_INIT, None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"--student-checkpoint: {path} does not exist (give a weights file, or 'random')")
    return file_identity(path)


def parse_pair(text: str) -> tuple[str, str]:
    teacher, sep, student = text.partition(":")
    if not sep or not teacher or not student:
        raise UserError(f"pair {text!r}: expected teacher:student, e.g. resnet32x4:resnet8x4")
    return teacher.strip(), student.strip()


def grid_from_preset(name: str) -> GridSpec:
    """The grid of ``--preset NAME``: one of diffbench's (:data:`GRID_PRESETS`) or a paper's (``paper:<name>``)."""
    if name.startswith(PAPER_PREFIX):
        p = paper_preset(name.removeprefix(PAPER_PREFIX))
        return GridSpec(**p.grid, paper=name)
    if name not in GRID_PRESETS:
        from tasks.spec import task_names

        recipe_of = [t for t in task_names() if name in task_spec(t).presets]
        hint = f"('{name}' is a {recipe_of[0]} recipe preset: --recipe {name})" if recipe_of else ""
        raise unknown("grid preset", name, preset_names(), hint)
    return GridSpec(**GRID_PRESETS[name])


def _check_paper_files(grid: GridSpec) -> None:
    """A paper preset runs the paper's teachers and starting weights: refuse, naming every file, when one is missing."""
    p = paper_preset(grid.paper.removeprefix(PAPER_PREFIX)) if grid.paper else None
    if p is None:
        return
    parts = []
    for flag, files, given, where in (
        ("--teacher-checkpoint", p.teachers, grid.teacher_checkpoints, p.teachers_from),
        ("--student-checkpoint", p.students, grid.student_checkpoints, p.students_from),
    ):
        missing = [f"{flag} {arch}={file}" for arch, file in files.items() if arch not in given]
        if missing:
            parts.append(f"{' '.join(missing)} ({where})")
    if parts:
        raise UserError(f"{grid.paper} runs the paper's own weights; give {'; and '.join(parts)}")


def expand(grid: GridSpec, device: str = "cpu") -> list[JobSpec]:
    """Teacher jobs first, then vanilla students, then every (pair, method, seed).

    ``device`` (``cpu`` / ``cuda``): where the jobs will run, which decides the recipes' ``auto`` settings.
    """
    task = task_spec(grid.task)
    _check_paper_files(grid)
    dataset = grid.dataset or task.default_dataset
    task.check_names(dataset)
    if grid.pairs:
        pairs = list(grid.pairs)
    elif grid.smoke:
        pairs = [p for p in [task.smallest_pair(dataset)] if p is not None]
    else:
        pairs = list(task.default_pairs(dataset))
    if not pairs:
        raise UserError(f"task {grid.task!r} has no default pairs for {dataset!r}; give --pairs teacher:student")
    seed_list = seeds_of(grid.seeds)
    methods = [m for m in dict.fromkeys(grid.methods) if m != VANILLA]
    for m in methods:
        catalog.method_info(m)  # a misspelt method: one line with a "did you mean"
    valid_recipe = {f.name for f in fields(Recipe)}
    bad = sorted((set(grid.recipe) | set(grid.teacher_recipe)) - valid_recipe)
    if bad:
        raise unknown("recipe setting(s)", bad, sorted(valid_recipe))
    extra_sets = sorted(set(grid.sets) - set(methods))
    if extra_sets:
        raise UserError(
            f"--set names method(s) {', '.join(extra_sets)} that the grid does not run "
            f"(methods: {', '.join(methods) or 'vanilla only'}){did_you_mean(extra_sets, methods)}"
        )
    preset, recipe = grid.preset, dict(grid.recipe)
    if grid.smoke and preset == "smoke" and preset not in task.presets:
        preset = None  # a task without a smoke recipe: its default recipe, for one epoch (below)
    if grid.smoke and preset != "smoke":
        recipe = {"epochs": 1, **recipe}  # --epochs still wins
    common = {
        "task": grid.task,
        "dataset": dataset,
        "data_dir": grid.data_dir,
        "preset": preset,
        "device": device,
        "scale_lr": grid.scale_lr,
    }

    inits = {arch: student_init(path) for arch, path in grid.student_checkpoints.items()}
    trained = {t for t, _ in pairs if t not in grid.teacher_checkpoints} | {s for _, s in pairs}
    unused = sorted(set(inits) - trained)
    if unused:
        raise UserError(f"--student-checkpoint given for {', '.join(unused)}, which this grid does not train")

    def init_of(arch: str) -> dict[str, str | None]:
        ref, path = inits.get(arch, (None, None))
        return {"student_init": ref, "student_init_path": path}

    jobs: list[JobSpec] = []
    teacher_refs: dict[str, str] = {}
    teacher_paths: dict[str, str | None] = {}
    for teacher, _ in pairs:
        if teacher in teacher_refs:
            continue
        if teacher in grid.teacher_checkpoints:
            path = Path(grid.teacher_checkpoints[teacher]).expanduser().resolve()
            if not path.is_file():
                raise UserError(f"teacher checkpoint for {teacher!r} not found: {path}")
            teacher_refs[teacher], teacher_paths[teacher] = file_identity(path)
        else:
            teacher_overrides = {**{k: v for k, v in recipe.items() if k != "extra"}, **grid.teacher_recipe}
            tjob = resolve_job(**common, student=teacher, role="teacher", **init_of(teacher),
                               recipe_overrides=teacher_overrides)  # fmt: skip
            jobs.append(tjob)
            teacher_refs[teacher] = f"job:{tjob.job_hash}"
    unused = sorted(set(grid.teacher_checkpoints) - {t for t, _ in pairs})
    if unused:
        raise UserError(f"--teacher-checkpoint given for {', '.join(unused)}, which no pair uses as teacher")
    for student in dict.fromkeys(s for _, s in pairs):
        for seed in seed_list:
            jobs.append(resolve_job(**common, student=student, seed=seed, recipe_overrides=recipe,
                                    **init_of(student)))  # fmt: skip
    for teacher, student in pairs:
        for method in methods:
            for seed in seed_list:
                jobs.append(
                    resolve_job(
                        **common,
                        student=student,
                        teacher=teacher,
                        teacher_ref=teacher_refs[teacher],
                        teacher_path=teacher_paths.get(teacher),
                        method=method,
                        seed=seed,
                        recipe_overrides=recipe,
                        hparam_overrides=grid.sets.get(method),
                        **init_of(student),
                    )
                )
    unique: dict[str, JobSpec] = {}
    for job in jobs:
        unique.setdefault(job.job_hash, job)
    return list(unique.values())
