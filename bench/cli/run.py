"""The bodies of ``diffbench run`` and ``diffbench train``: flags (already merged with ``--config``) → jobs → run.

``bench.cli.app`` declares the options (the one schema, see :mod:`bench.cli.config`); this module turns their
values into a :class:`~bench.jobs.grid.GridSpec` or one :class:`~bench.jobs.spec.JobSpec` and hands them to
:func:`bench.execute.driver.run_grid`. ``train`` is a grid of one job on the in-process executor: it takes the
output lock, logs its MLflow run and resumes exactly like any grid job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.cli.config import RECIPE_SCOPES, parse_sets, split_list
from methods.errors import UserError

#: ``diffbench run``: some jobs failed (each is listed with its reason; the rest of the grid finished).
EXIT_JOBS_FAILED = 1


def speed_settings(p: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields of the speed flags (absent where a flag was not given)."""
    out: dict[str, Any] = {}
    for flag, key in (("--channels-last", "channels_last"), ("--sync-bn", "sync_bn")):
        value = p.get(key)
        if value not in (None, "auto", "on", "off"):
            raise UserError(f"{flag} {value!r}: expected auto, on or off")
        if value is not None:
            out[key] = {"on": True, "off": False, "auto": None}[value]
    if p.get("compile_mode"):
        out["compile"] = {"on": "default"}.get(p["compile_mode"], p["compile_mode"])
    for key in ("precision", "data_pipeline"):
        if p.get(key):
            out[key] = p[key]
    return out


def recipe_overrides(p: dict[str, Any], sets: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(every job's, teacher jobs') recipe overrides: ``--set recipe.*`` / ``--set teacher.*`` under the flags.

    A recipe flag (``--epochs``) wins over ``--set recipe.epochs``: flags are the explicit form.
    """
    flags = {k: p.get(k) for k in ("epochs", "batch_size", "lr", "max_steps", "num_workers")}
    recipe = {**sets.get("recipe", {}), **{k: v for k, v in flags.items() if v is not None}, **speed_settings(p)}
    if "speed_settings" in recipe:  # pragma: no cover - defensive
        recipe.pop("speed_settings")
    return recipe, dict(sets.get("teacher", {}))


def _checkpoints(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        arch, sep, path = item.partition("=")
        if not sep or not arch or not path:
            raise UserError(f"--teacher-checkpoint {item!r}: expected ARCH=PATH")
        out[arch.strip()] = path.strip()
    return out


def build_grid(p: dict[str, Any]) -> Any:
    """The :class:`~bench.jobs.grid.GridSpec` of ``diffbench run``'s parameters (preset, then the flags)."""
    from bench.jobs.grid import GridSpec, grid_from_preset, parse_pair

    if p.get("preset"):
        grid = grid_from_preset(p["preset"])
    elif not any(p.get(k) for k in ("task", "dataset", "pairs")):
        grid = grid_from_preset("default")  # a plain `diffbench run`, perhaps with --methods, --epochs...: 3 seeds
    else:
        grid = GridSpec(task=p.get("task") or "classification")
    sets = parse_sets(p.get("sets"))
    recipe, teacher_recipe = recipe_overrides(p, sets)
    method_sets = {k: v for k, v in sets.items() if k not in RECIPE_SCOPES}
    return grid.merged(
        task=p.get("task"),
        dataset=p.get("dataset"),
        data_dir=str(Path(p["data_dir"]).expanduser().resolve()) if p.get("data_dir") else None,
        pairs=tuple(parse_pair(x) for x in split_list(p.get("pairs"))),
        methods=tuple(split_list(p.get("methods"))),
        seeds=p.get("seeds"),
        sets=method_sets,
        recipe=recipe,
        teacher_recipe=teacher_recipe,
        preset=p.get("recipe"),
        teacher_checkpoints=_checkpoints(p.get("teacher_checkpoint")),
        scale_lr=p.get("scale_lr"),
    )


def dry_run_table(jobs: list[Any]) -> Table:
    table = Table(title=f"{len(jobs)} jobs")
    for col in ("hash", "role", "method", "teacher", "student", "seed", "epochs", "hyper-parameters"):
        table.add_column(col)
    for j in jobs:
        table.add_row(j.job_hash, j.role, j.method, j.teacher or "", j.student, str(j.seed),
                      str(j.recipe.get("epochs")), ", ".join(f"{k}={v}" for k, v in j.hparams))  # fmt: skip
    return table


def run_command(ctx: Any, p: dict[str, Any], console: Console) -> int:
    """``diffbench run``: returns the exit code (0, 1 = some jobs failed)."""
    from bench.cli.config import command_line, resolved_yaml
    from bench.execute.ray_tune import validate_request
    from bench.jobs.grid import expand
    from bench.execute.preflight import check_device
    from bench.execute.driver import run_grid

    if p["executor"] not in ("ray", "local"):
        raise UserError(f"unknown executor {p['executor']!r}; valid: ray, local")
    validate_request(p.get("cpus_per_job"), p["gpus_per_job"], p.get("max_concurrent"))
    device_kind = check_device(p["device"], p["executor"], p["gpus_per_job"], p.get("address")).split(":")[0]
    grid = build_grid(p)
    jobs = expand(grid, device=device_kind)
    if p.get("dry_run"):
        console.print(dry_run_table(jobs))
        return 0
    config_text = resolved_yaml(ctx, p, {"jobs": [f"{j.job_hash} {j.label}" for j in jobs]})
    command = command_line(ctx, p)
    failed = run_grid(
        jobs,
        output=p["output"],
        executor=p["executor"],
        tracking_uri=p.get("tracking_uri"),
        experiment=p["experiment"],
        device=p["device"],
        cpus_per_job=p.get("cpus_per_job"),
        gpus_per_job=p["gpus_per_job"],
        max_concurrent=p.get("max_concurrent"),
        max_failures=p["max_failures"],
        address=p.get("address"),
        console=console,
        workers_per_job=p.get("workers_per_job"),
        config_text=config_text,
        rerun=bool(p.get("rerun")),
        command=command,
        log_models=bool(p.get("log_model", True)),
    )
    return EXIT_JOBS_FAILED if failed else 0


def train_job(p: dict[str, Any]) -> Any:
    """The one :class:`~bench.jobs.spec.JobSpec` of ``diffbench train``'s parameters."""
    from bench.jobs.spec import VANILLA, resolve_job
    from bench.engine.loop import pick_device

    method = p["method"]
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
        raise UserError(f"--set names {', '.join(other)}, but this job trains {method!r}")
    recipe, _teacher = recipe_overrides(p, sets)
    from bench.execute.preflight import teacher_identity

    ref, path = teacher_identity(ckpt) if ckpt is not None else (None, None)
    return resolve_job(
        task=p["task"],
        dataset=p.get("dataset"),
        student=p["student"],
        method=method,
        teacher=p.get("teacher"),
        teacher_ref=ref,
        teacher_path=path,
        seed=p["seed"],
        data_dir=p.get("data_dir"),
        preset=p.get("preset"),
        recipe_overrides=recipe,
        hparam_overrides=sets.get(method),
        device=pick_device(p["device"]).type,
        scale_lr=p.get("scale_lr"),
    )
