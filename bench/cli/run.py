"""``diffbench run`` and ``diffbench train``: flags (merged with ``--config``) → jobs → the driver.

Both build their jobs and one :class:`~bench.execute.options.RunOptions` once, from the same option groups
(:mod:`.options`), and hand them to :func:`bench.execute.driver.run_grid`. ``train`` is a grid of one job on
the in-process executor: it takes the output lock, logs its MLflow run and resumes exactly like any grid job.
Every name and value is checked before torch is imported (:mod:`bench.jobs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from bench.cli.config import command_line, effective, resolved_yaml
from bench.cli.options import (
    CONFIG,
    DATA,
    DEVICE,
    EXECUTION,
    EXIT_JOBS_FAILED,
    EXIT_STORAGE,
    GRID,
    GRID_FLAGS,
    OUTPUT,
    RECIPE,
    RECIPE_FLAGS,
    RUN,
    SPEED_FLAGS,
    console,
    error_line,
    load_plugins,
    num_option,
    option,
    run_options,
    user_errors,
    with_options,
)
from bench.execute.signals import acknowledge, exit_code, interrupts, shutdown_ray
from bench.jobs.overrides import RECIPE_SCOPES, parse_checkpoints, parse_sets, recipe_overrides, split_list
from methods import catalog
from methods.errors import UserError, did_you_mean

RUN_ONLY = [
    option("rerun", bool, False, "--rerun", panel=RUN,
           help="Train matching jobs again from scratch; their old runs are kept, marked superseded. (Without it, "
           "finished jobs are skipped and unfinished ones resume.)"),
    option("dry_run", bool, False, "--dry-run", help="Print the expanded grid and exit.", panel=RUN),
    option("as_json", bool, False, "--json", panel=RUN,
           help="With --dry-run: one JSON object on stdout, every job with its hash, role, method, pair, seed, "
           "resolved hyper-parameters, resolved recipe and starting weights."),
]  # fmt: skip

TRAIN_FLAGS = [
    option("student", str | None, None, "--student", help="Student architecture.", panel=GRID),
    option("task", str, "classification", "--task", help="classification | detection | segmentation", panel=GRID),
    *DATA,
    option("method", str, "vanilla", "--method", help="vanilla, kd, dkd, fitnet or diffkd.", panel=GRID),
    option("teacher", str | None, None, "--teacher", help="Teacher architecture.", panel=GRID),
    option("teacher_checkpoint", Path | None, None, "--teacher-checkpoint", panel=GRID,
           help="Teacher weights (mdistiller, torchvision or ours)."),
    option("student_checkpoint", str | None, None, "--student-checkpoint", panel=GRID,
           help="The student's starting weights (a whole model or an ImageNet backbone), or 'random'."),
    option("preset", str | None, None, "--preset", panel=RECIPE,
           help="The task's recipe preset, as run's --recipe (not a grid preset; see `diffbench list presets`)."),
    num_option("seed", int, 0, "--seed", help="The job's random seed (0..2^32-1).", panel=GRID, integer=True,
               low=0, high=2**32 - 1),
    *RECIPE_FLAGS,
    num_option("num_workers", int | None, None, "--num-workers", help="Data-loader worker processes.", panel=RECIPE,
               integer=True),
    *SPEED_FLAGS,
    num_option("workers", int, 1, "--workers", help="Data-parallel workers (Ray Train, DDP); the batch is global.",
               panel=RUN, integer=True),
    *CONFIG,
    *OUTPUT,
    *DEVICE,
]  # fmt: skip


def grid_of(p: dict[str, Any]) -> Any:
    """The :class:`~bench.jobs.grid.GridSpec` of ``run``'s parameters (preset, then the flags)."""
    from bench.jobs.grid import GridSpec, grid_from_preset, parse_pair

    if p.get("preset"):
        grid = grid_from_preset(p["preset"])
    elif not any(p.get(k) for k in ("task", "dataset", "pairs")):
        grid = grid_from_preset("default")  # a plain `diffbench run`, perhaps with --methods, --epochs...: 3 seeds
    else:
        grid = GridSpec(task=p.get("task") or "classification")
    if p.get("task") and p["task"] != grid.task and not p.get("dataset"):
        grid = replace(grid, dataset=None)  # the preset's data set belongs to its task: the new task's default
    sets = parse_sets(p.get("sets"))
    recipe, teacher_recipe = recipe_overrides(p, sets)
    return grid.merged(
        task=p.get("task"),
        dataset=p.get("dataset"),
        data_dir=str(Path(p["data_dir"]).expanduser().resolve()) if p.get("data_dir") else None,
        pairs=tuple(parse_pair(x) for x in split_list(p.get("pairs"))),
        methods=tuple(split_list(p.get("methods"))),
        seeds=p.get("seeds"),
        sets={k: v for k, v in sets.items() if k not in RECIPE_SCOPES},
        recipe=recipe,
        teacher_recipe=teacher_recipe,
        preset=p.get("recipe"),
        teacher_checkpoints=parse_checkpoints(p.get("teacher_checkpoint")),
        student_checkpoints=parse_checkpoints(p.get("student_checkpoint"), "--student-checkpoint"),
        scale_lr=p.get("scale_lr"),
    )


#: Recipe flags written with the value the jobs use, when every job of the grid uses one value.
_RECIPE_KEYS = ("epochs", "batch_size", "lr")


def resolved_grid(p: dict[str, Any], grid: Any, jobs: list[Any]) -> dict[str, Any]:
    """The options of ``p`` with the grid's defaults spelled out: the task, data set, pairs, methods and seeds the
    jobs were expanded from, the grid preset (``default`` for a plain `diffbench run`), and the epochs, batch size
    and learning rate where every job uses one value (else the recipe preset decides, as it did). Read back by
    ``--config``, they expand to the same jobs, whatever the executor or machine; device-dependent settings
    (``auto``) stay as given.
    """
    from bench.jobs.grid import seeds_of
    from methods.catalog import VANILLA
    from tasks.spec import task_spec

    dataset = grid.dataset or task_spec(grid.task).default_dataset
    pairs = list(grid.pairs) or list(task_spec(grid.task).default_pairs(dataset))
    methods = [m for m in dict.fromkeys(grid.methods) if m != VANILLA] or [VANILLA]
    out = {
        "task": grid.task,
        "dataset": dataset,
        "pairs": [f"{t}:{s}" for t, s in pairs],
        "methods": methods,
        "seeds": seeds_of(grid.seeds),
    }
    if not p.get("preset") and not any(p.get(k) for k in ("task", "dataset", "pairs")):
        out["preset"] = "default"  # what grid_of ran; with the values above it changes nothing
    for key in _RECIPE_KEYS:
        if p.get(key) is not None or (key == "lr" and p.get("scale_lr") == "linear"):
            continue  # as given (a scaled lr would be scaled again)
        values = {j.recipe.get(key) for j in jobs}
        if len(values) == 1 and None not in values:
            out[key] = values.pop()
    return out


def dry_run_table(jobs: list[Any]) -> Table:
    """The plan: one row per job, its full hash first (what `diffbench export <hash>` takes: never cut, at any
    width the other columns leave room for); the job's role, method, pair and seed in one label column."""
    table = Table(title=f"{len(jobs)} jobs")
    table.add_column("hash", no_wrap=True, min_width=max((len(j.job_hash) for j in jobs), default=12))
    table.add_column("job", overflow="fold")
    table.add_column("epochs", no_wrap=True, justify="right")
    table.add_column("hyper-parameters", overflow="fold", ratio=1)
    for j in jobs:
        table.add_row(j.job_hash, j.label, str(j.recipe.get("epochs")),
                      ", ".join(f"{k}={v}" for k, v in j.hparams))  # fmt: skip
    return table


def _print_plan(jobs: list[Any], as_json: bool) -> None:
    if as_json:
        import json
        import sys

        from bench.jobs.plan import jobs_json

        sys.stdout.write(json.dumps(jobs_json(jobs), indent=1, default=str) + "\n")
    else:
        console.print(dry_run_table(jobs))


def grid_exit(start: Callable[[], int]) -> int:
    """Run a grid; its exit code: 0, 1 (jobs failed), 3 (storage), 130 (Ctrl-C) or 143 (SIGTERM).

    Ctrl-C and SIGTERM are handled from the first second to the last (:func:`~bench.execute.signals.interrupts`):
    whenever they come, the grid ends with one line (a second interrupt: one more, and at once).
    """
    from bench.jobs.files import StorageFull

    with interrupts():
        try:
            failed = start()
        except KeyboardInterrupt as err:
            acknowledge()
            console.print("[yellow]interrupted[/]: finished jobs are kept; run the same command again to resume",
                          highlight=False)  # fmt: skip
            shutdown_ray()  # the graceful wait; a second Ctrl-C skips it (one more line, same exit code)
            return exit_code(err)
        except StorageFull as err:
            error_line(str(err))
            return EXIT_STORAGE
    return EXIT_JOBS_FAILED if failed else 0


@user_errors
@with_options(GRID_FLAGS, EXECUTION, RUN_ONLY)
def run(ctx: typer.Context, params: dict[str, Any]) -> None:
    """Run a grid: teachers first, then vanilla and distilled students, every job recorded in MLflow.

    With no arguments: the embedded default (classification, methods vanilla, kd, dkd, fitnet, diffkd).
    Re-running the same command skips finished jobs and resumes interrupted ones. --config takes an
    experiment.yaml whose keys are these options' names (batch_size, set, teacher_checkpoint, ...);
    flags given on the command line win over it. The resolved configuration of every grid (its task, data set,
    pairs, methods and seeds spelled out) is written to OUTPUT/grids/<grid hash>.yaml and to the grid's MLflow
    run; `diffbench run --config` on that file runs the same jobs.
    Exit code: 0 when every job finished, 1 when some failed, 2 for bad input (nothing started),
    3 when the output folder or MLflow store stopped taking writes, 130 after Ctrl-C, 143 after SIGTERM.
    """
    with interrupts():  # Ctrl-C and SIGTERM from the first second: one line, 130 / 143
        p = effective(ctx, params.get("config"))
        load_plugins(p.get("imports"))
        options = run_options(p)
        from bench.jobs.grid import expand

        if p.get("as_json") and not p.get("dry_run"):
            raise UserError("--json prints the plan of --dry-run; add --dry-run")
        grid = grid_of(p)
        jobs = expand(grid, device="cpu")  # every name and value checked, before torch is imported
        if options.device != "cpu":
            from bench.execute.preflight import check_device

            device = check_device(options).split(":")[0]
            if device != "cpu":
                jobs = expand(grid, device=device)  # the recipes' automatic speed settings follow the device
        if p.get("dry_run"):
            _print_plan(jobs, bool(p.get("as_json")))
            return
        config_text = resolved_yaml(ctx, {**p, **resolved_grid(p, grid, jobs)},
                                    {"jobs": [f"{j.job_hash} {j.label}" for j in jobs]})  # fmt: skip
        command = command_line(ctx, p)
        from bench.execute.driver import run_grid

        raise typer.Exit(grid_exit(lambda: run_grid(jobs, options, console, config_text=config_text, command=command)))


def train_job(p: dict[str, Any]) -> Any:
    """The one :class:`~bench.jobs.spec.JobSpec` of ``diffbench train``'s parameters (``device``: resolved)."""
    from bench.jobs.grid import student_init
    from bench.jobs.spec import VANILLA, file_identity, resolve_job

    method = p["method"]
    if method != VANILLA:
        catalog.method_info(method)  # a misspelt method: one line with a "did you mean"
    ckpt = p.get("teacher_checkpoint")
    if method != VANILLA and ckpt is None:
        raise UserError(
            f"method {method!r} needs --teacher and --teacher-checkpoint (or use `diffbench run`, "
            "which trains missing teachers)"
        )
    if ckpt is not None and not Path(ckpt).is_file():
        raise UserError(f"teacher checkpoint {str(ckpt)!r} does not exist")
    sets = parse_sets(p.get("sets"))
    other = sorted(set(sets) - {method, *RECIPE_SCOPES})
    if other:
        guess = did_you_mean(other, [method])
        raise UserError(f"--set names {', '.join(other)}, but this job trains {method!r}{guess}")
    recipe, _teacher = recipe_overrides(p, sets)
    ref, path = file_identity(ckpt) if ckpt is not None else (None, None)
    init, init_path = student_init(p["student_checkpoint"]) if p.get("student_checkpoint") else (None, None)
    kw = {"task": p["task"], "dataset": p.get("dataset"), "student": p["student"], "method": method,
          "teacher": p.get("teacher"), "teacher_ref": ref, "teacher_path": path, "seed": p["seed"],
          "data_dir": p.get("data_dir"), "preset": p.get("preset"), "recipe_overrides": recipe,
          "hparam_overrides": sets.get(method), "scale_lr": p.get("scale_lr"),
          "student_init": init, "student_init_path": init_path}  # fmt: skip
    resolve_job(**kw, device="cpu")  # every name and value checked, before torch is imported
    from bench.engine.device import pick_device

    return resolve_job(**kw, device=pick_device(p["device"]).type)


@user_errors
@with_options(TRAIN_FLAGS)
def train(ctx: typer.Context, params: dict[str, Any]) -> None:
    """Train one job in this process: a vanilla student, or a student distilled from a teacher checkpoint.

    A grid of one job: it takes the output folder's lock, logs an MLflow run that `diffbench report`
    shows, and resumes from its checkpoint when run again. Writes the checkpoint, metrics and the exported
    student (weights only) to OUTPUT/jobs/<job hash>/. With --workers N the job runs as N data-parallel
    workers on Ray Train (one GPU each on CUDA, gloo on CPU), the recipe's batch split between them.
    """
    with interrupts():  # Ctrl-C and SIGTERM from the first second: one line, 130 / 143
        p = effective(ctx, params.get("config"))
        load_plugins(p.get("imports"))
        if not p.get("student"):
            raise UserError("train needs --student (or `student:` in --config)")
        if p["workers"] < 1:
            raise UserError(f"--workers must be at least 1, got {p['workers']}")
        options = run_options({**p, "executor": "local", "max_failures": 0})
        spec = train_job(p)
        if p["workers"] != 1:
            _train_workers(spec, options, p["workers"])
            return
        from bench.execute.driver import run_grid
        from bench.jobs.files import job_dir, read_result

        code = grid_exit(lambda: run_grid([spec], options, console, command=command_line(ctx, p)))
        result = read_result(job_dir(options.output.resolve(), spec.job_hash))
        if result is not None:
            _result_table(spec.label, result)
        raise typer.Exit(code)


def _result_table(title: str, result: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
    console.print(f"student weights: {result['student_path']}", highlight=False)


def _train_workers(spec: Any, options: Any, workers: int) -> None:
    """``diffbench train --workers N``: the job as one Ray Train run on a local Ray instance."""
    from bench.engine.device import pick_device
    from bench.engine.loop import JobFailed
    from bench.execute.lock import OutputLock, prepare_output
    from bench.execute.options import Workers
    from bench.execute.ray_train import train_one
    from bench.execute.ray_tune import init_ray

    if spec.recipe["batch_size"] % workers:
        raise UserError(f"batch size {spec.recipe['batch_size']} does not divide over {workers} workers")
    gpus = 1.0 if pick_device(options.device).type == "cuda" else 0.0
    output = prepare_output(options.output)
    with OutputLock(output):
        console.print(init_ray(None), highlight=False)
        try:
            result = train_one(spec, output, Workers(workers, 1.0, gpus))
        except JobFailed as err:
            error_line(f"job failed: {err}")
            raise typer.Exit(EXIT_JOBS_FAILED) from None
    _result_table(f"{spec.label} ({workers} workers)", result)
