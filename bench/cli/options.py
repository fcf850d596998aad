"""What every command shares: the consoles, the exit codes, the one-line error voice, and the options.

Options that several commands take are declared once here, as parameters a command receives through
:func:`with_options` (Typer reads a command's signature, so the decorator gives each command the parameters of
its option groups and calls it with their values as one dict). ``run`` and ``tune`` therefore take exactly the
same grid flags, and an ``experiment.yaml`` key is always the long name of its flag (:mod:`bench.cli.config`).

Imports typer and rich only.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bench.execute.signals import EXIT_INTERRUPTED, EXIT_TERMINATED  # noqa: F401 - the codes of Ctrl-C and SIGTERM
from methods.errors import UserError

console = Console()
err_console = Console(stderr=True)

#: Exit codes of every command.
EXIT_OK = 0
#: ``diffbench run``: some jobs failed (each is listed with its reason; the rest of the grid finished).
EXIT_JOBS_FAILED = 1
#: Bad input: one ``error:`` line, nothing started.
EXIT_USER_ERROR = 2
#: The output folder or MLflow store stopped taking writes mid-grid (a re-run resumes).
EXIT_STORAGE = 3


def error_line(message: str) -> None:
    """The one voice of every error: ``error: <message>`` in red on stderr, never wrapped mid-word."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def user_errors(fn: Callable) -> Callable:
    """Print a :class:`~methods.errors.UserError` as one line and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            error_line(str(err))
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper


#: The release until which an old spelling that changed meaning is refused with its new spelling (then it is gone).
OLD_SPELLINGS_UNTIL = "0.2"


def refuse_file_as_output(command: str, output: Path | None, suffixes: Sequence[str], writes: str) -> None:
    """Refuse ``-o/--output FILE`` where ``FILE`` has a suffix of ``suffixes`` and is no folder: before 0.1.x ``-o``
    meant the file some commands write; it is the results folder in every command now, and a written file is
    ``--out FILE``. One line, naming the new spelling (``writes``: what ``--out`` writes, e.g. ``the page``).

    Kept until :data:`OLD_SPELLINGS_UNTIL`; a results folder named like ``x.html`` that exists is still accepted.
    """
    if output is None or Path(output).suffix.lower() not in {s.lower() for s in suffixes} or Path(output).is_dir():
        return
    raise UserError(f"{command}: -o/--output is the results folder since 0.1.x; write {writes} with --out {output}")


def load_plugins(modules: list[str] | None) -> None:
    """Entry-point plugins and ``--import`` modules: loaded by the commands that use the registries, never at
    ``--help``."""
    from bench.jobs.plugins import load_plugins as load

    load(modules)


# -- declaring options once ---------------------------------------------------------------------------------------
#: Options whose values are numbers, by parameter name: the function that reads one (a :class:`UserError` for a bad
#: value). A flag and its YAML key go through it (:mod:`bench.cli.config`), so ``epochs: [3]`` and ``epochs: true``
#: are refused like ``--epochs x``, and ``1e30`` is a number in both.
NUMERIC: dict[str, Callable[[Any], Any]] = {}


def numeric(name: str, flag: str, *, integer: bool = False, low: float | None = None,
            high: float | None = None) -> Callable[[Any], Any]:  # fmt: skip
    """The flag parser of a numeric option (:func:`bench.jobs.values.number`); registers its reader in NUMERIC."""

    def read(value: Any) -> Any:
        from bench.jobs.values import number

        return number(value, flag, integer=integer, low=low, high=high, finite=False)

    def parse(value: Any) -> Any:
        try:
            return read(value)
        except UserError as err:
            raise typer.BadParameter(str(err).removeprefix(f"{flag} ")) from None

    parse.__name__ = "integer" if integer else "number"
    NUMERIC[name] = read
    return parse


def num_option(name: str, annotation: Any, default: Any, flag: str, *, help: str, panel: str | None = None,
               integer: bool = False, low: float | None = None, high: float | None = None,
               **kw: Any) -> inspect.Parameter:  # fmt: skip
    """A numeric option: :func:`option` with the one number parser (``--lr 1e-4``, ``--epochs 1e3``)."""
    parser = numeric(name, flag, integer=integer, low=low, high=high)
    return option(name, annotation, default, flag, help=help, panel=panel, parser=parser, metavar=
                  "INTEGER" if integer else "FLOAT", **kw)  # fmt: skip


def option(name: str, annotation: Any, default: Any, *flags: str, help: str, panel: str | None = None,
           **kw: Any) -> inspect.Parameter:  # fmt: skip
    """One option as a command parameter: ``option("epochs", int | None, None, "--epochs", help=...)``."""
    info = typer.Option(*flags, help=help, rich_help_panel=panel, **kw)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation,
                             info])  # fmt: skip


def with_options(*groups: Sequence[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Give a command ``fn(ctx, params)`` the options of ``groups``; Typer calls it with their values in ``params``."""
    params = [p for group in groups for p in group]
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"an option is declared twice: {sorted(n for n in names if names.count(n) > 1)}")

    def decorate(fn: Callable) -> Callable:
        def command(ctx: typer.Context, **values: Any) -> Any:
            return fn(ctx, values)

        functools.update_wrapper(command, fn)
        del command.__wrapped__  # Typer must read the signature below, not fn's
        sig = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context), *params]
        command.__signature__ = inspect.Signature(sig)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in sig}
        return command

    return decorate


GRID, RECIPE, SPEED, RUN, TRACK = "Grid", "Recipe", "Speed settings", "Execution", "Output and tracking"

TASK_HELP = "classification | detection | segmentation"

DATA = [
    option("dataset", str | None, None, "--dataset", help="Data set name; default: the task's embedded one.",
           panel=GRID),
    option("data_dir", Path | None, None, "--data-dir", help="Folder holding the data set in its official layout.",
           panel=GRID),
]  # fmt: skip

#: The recipe flags of ``run`` and ``train`` (``--set recipe.<field>`` reaches every other field).
RECIPE_FLAGS = [
    option("sets", list[str] | None, None, "--set", panel=RECIPE,
           help="SCOPE.NAME=VALUE, scope a method, recipe or teacher: --set dkd.beta=6, "
           "--set recipe.weight_decay=1e-4, --set teacher.epochs=40 (repeatable)."),
    num_option("epochs", int | None, None, "--epochs", integer=True, panel=RECIPE,
               help="Training epochs (default: the recipe preset's)."),
    num_option("batch_size", int | None, None, "--batch-size", integer=True, panel=RECIPE,
               help="Global batch size (default: the recipe preset's)."),
    num_option("lr", float | None, None, "--lr", help="Base learning rate (default: the recipe preset's).",
               panel=RECIPE),
    num_option("max_steps", int | None, None, "--max-steps", integer=True, panel=RECIPE,
               help="Cap on steps per epoch (smoke runs)."),
    option("scale_lr", str | None, None, "--scale-lr", panel=RECIPE,
           help="none (default: the recipe's lr) | linear: lr x batch / the preset's batch."),
]  # fmt: skip

SPEED_FLAGS = [
    option("precision", str | None, None, "--precision", panel=SPEED,
           help="auto (bf16 on CUDA, fp32 elsewhere) | fp32 (strict reproduction) | bf16 | fp16."),
    option("channels_last", str | None, None, "--channels-last", panel=SPEED,
           help="auto (on for CUDA) | on | off: NHWC tensors for conv models."),
    option("compile_mode", str | None, None, "--compile", panel=SPEED,
           help="off | on | reduce-overhead | max-autotune: torch.compile the step's models."),
    option("data_pipeline", str | None, None, "--data-pipeline", panel=SPEED,
           help="auto | device (in-memory data on the device) | pil (DataLoader)."),
    option("sync_bn", str | None, None, "--sync-bn", panel=SPEED,
           help="auto (on for segmentation) | on | off: BatchNorm over the global batch when a job has several "
           "workers."),
]  # fmt: skip

CONFIG = [
    option("config", Path | None, None, "--config", help="experiment.yaml: keys are this command's option names.",
           panel=GRID),
    option("imports", list[str] | None, None, "--import", "--imports", panel=GRID,
           help="Plugin module(s) to import first: a module name or a .py file that registers methods or architectures "
           "(repeatable or comma list; installed entry points load anyway)."),
]  # fmt: skip


def output_folder(value: Any) -> Path:
    """``--output``: a folder, refused in one line when empty (``''`` would mean the current folder) or too long."""
    from bench.jobs.files import path_problem

    problem = path_problem(str(value))
    if problem:
        raise typer.BadParameter(problem)
    return Path(value)


#: Where results go and how they are tracked (every command that trains or reads runs).
OUTPUT = [
    option("output", Path, Path("results"), "--output", "-o", panel=TRACK, parser=output_folder, metavar="PATH",
           help="Results folder: the MLflow store and the jobs' files (every command's -o)."),
    option("tracking_uri", str | None, None, "--tracking-uri", help="MLflow server; default: OUTPUT/mlflow.db.",
           panel=TRACK),
    option("experiment", str, "diffbench", "--experiment", help="MLflow experiment name.", panel=TRACK),
]  # fmt: skip

DEVICE = [option("device", str, "auto", "--device", help="auto | cpu | cuda | cuda:N", panel=RUN)]

#: The grid a ``run`` (and a ``tune``) expands.
GRID_FLAGS = [
    option("task", str | None, None, "--task", help=TASK_HELP, panel=GRID),
    *DATA,
    option("pairs", list[str] | None, None, "--pairs", help="teacher:student,... (comma list or repeated).",
           panel=GRID),
    option("methods", list[str] | None, None, "--methods", help="kd,dkd,fitnet,diffkd (vanilla is always added).",
           panel=GRID),
    option("seeds", str | None, None, "--seeds", help="A count (3: seeds 0,1,2) or a comma list of seeds (0,5,7).",
           panel=GRID),
    option("preset", str | None, None, "--preset", panel=GRID,
           help="Grid preset: default, smoke, cifar100, imagenet, detection, segmentation or paper:<table> "
           "(a whole grid; a recipe is --recipe; diffbench list presets)."),
    option("recipe", str | None, None, "--recipe", panel=RECIPE,
           help="The task's recipe preset: epochs, batch, lr... (diffbench list presets; train calls it --preset)."),
    option("teacher_checkpoint", list[str] | None, None, "--teacher-checkpoint", panel=GRID,
           help="ARCH=PATH: use these teacher weights."),
    option("student_checkpoint", list[str] | None, None, "--student-checkpoint", panel=GRID,
           help="ARCH=PATH: every job that trains ARCH starts from these weights (a whole model, or an ImageNet "
           "backbone in torchvision, detectron2 or the papers' layouts); ARCH=random: from random weights."),
    *RECIPE_FLAGS,
    *SPEED_FLAGS,
    *CONFIG,
]  # fmt: skip

#: How a grid's jobs run (``run``, ``tune``).
EXECUTION = [
    option("executor", str, "ray", "--executor", help="ray | local (one job at a time, in this process)", panel=RUN),
    num_option("cpus_per_job", float | None, None, "--cpus-per-job", panel=RUN,
               help="CPUs of each job, split between its data-parallel workers (default: the cluster's CPUs shared "
               "by the stage's jobs)."),
    num_option("gpus_per_job", float, 0.0, "--gpus-per-job", help="Fractions share a GPU, e.g. 0.25.", panel=RUN),
    num_option("max_concurrent", int | None, None, "--max-concurrent", integer=True, panel=RUN,
               help="Jobs at once (default: as many as fit)."),
    num_option("max_failures", int, 1, "--max-failures", help="Retries of a crashed job (from its checkpoint).",
               panel=RUN, integer=True),
    option("address", str | None, None, "--address", help="Join a Ray cluster: auto or HOST:PORT.", panel=RUN),
    num_option("workers_per_job", int | None, None, "--workers-per-job", panel=RUN, integer=True,
               help="Data-parallel workers per job (Ray Train; CPU workers unless --gpus-per-job gives them GPUs). "
               "The batch is global."),
    *DEVICE,
    *OUTPUT,
    option("log_model", bool, True, "--log-model/--no-log-model", envvar="DIFFBENCH_LOG_MODEL", panel=TRACK,
           help="Log each finished job's best model to MLflow (runs:/<run id>/student; a few seconds per job)."),
    option("teacher_cache", bool, True, "--teacher-cache/--no-teacher-cache", envvar="DIFFBENCH_TEACHER_CACHE",
           panel=RUN, help="Reuse a teacher job another output folder finished with the same hash, and keep "
           "finished teachers for others ($DIFFBENCH_CACHE/teachers)."),
]  # fmt: skip


def run_options(p: dict[str, Any]) -> Any:
    """The :class:`~bench.execute.options.RunOptions` of a command's parameters (validated once, here)."""
    from bench.execute.options import RunOptions

    return RunOptions(
        output=p["output"], executor=p.get("executor", "local"), tracking_uri=p.get("tracking_uri"),
        experiment=p["experiment"], device=p["device"], cpus_per_job=p.get("cpus_per_job"),
        gpus_per_job=p.get("gpus_per_job", 0.0), max_concurrent=p.get("max_concurrent"),
        max_failures=p.get("max_failures", 1), address=p.get("address"), workers_per_job=p.get("workers_per_job"),
        rerun=bool(p.get("rerun")), log_models=bool(p.get("log_model", True)),
        teacher_cache=bool(p.get("teacher_cache", False)),
    )  # fmt: skip


def annotation(group: Sequence[inspect.Parameter], name: str) -> Any:
    """The annotated type of option ``name`` in ``group``, for a command that declares it in its own signature."""
    return next(p.annotation for p in group if p.name == name)


DatasetOpt = annotation(DATA, "dataset")
DataDirOpt = annotation(DATA, "data_dir")
DeviceOpt = annotation(DEVICE, "device")
ImportOpt = annotation(CONFIG, "imports")
