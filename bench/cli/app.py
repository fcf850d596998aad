"""The ``diffbench`` command line (Typer + rich).

Every command turns a :class:`~methods.base.UserError` into one red line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from methods.errors import UserError

console = Console()
err_console = Console(stderr=True)


class _OneLineErrors(TyperGroup):
    """Typer's own usage errors (a bad option value, an unknown flag) as the one ``error:`` line every other
    input error gets, instead of a usage block and a boxed panel; exit code 2 as before."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:  # fmt: skip
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            err_console.print("[bold red]aborted[/]")
            rv = 1
        except Exception as err:
            # Click's exceptions (vendored by newer Typer as typer._click): a message and an exit code.
            if not (hasattr(err, "format_message") and hasattr(err, "exit_code")):
                raise
            if type(err).__name__ == "NoArgsIsHelpError":
                err.show()
                rv = 0
            else:
                ctx = getattr(err, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                err_console.print(f"[bold red]error:[/] {escape(err.format_message() + hint)}", highlight=False,
                                  soft_wrap=True)  # fmt: skip
                rv = err.exit_code
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="diffbench",
    cls=_OneLineErrors,
    help="Knowledge-distillation benchmark: DiffKD, KD, DKD and FitNet on classification, detection and segmentation.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _print_version(value: bool) -> None:
    if value:
        from bench.tracking.version import diffbench_version, git_commit

        commit = git_commit()
        console.print(f"diffbench {diffbench_version()}" + (f" (commit {commit})" if commit != "unknown" else ""),
                      highlight=False)  # fmt: skip
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Knowledge-distillation benchmark: DiffKD, KD, DKD and FitNet on classification, detection and segmentation."""


EXIT_USER_ERROR = 2
#: ``diffbench run``: some jobs failed (each is listed with its reason; the rest of the grid finished).
EXIT_JOBS_FAILED = 1


def user_errors(fn: Callable) -> Callable:
    """Print a UserError as one line and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper


# The one schema and the one --set syntax (see bench.cli.config); re-exported for the commands below.
from bench.cli.config import effective, parse_sets, split_list  # noqa: E402

TaskOpt = Annotated[str, typer.Option("--task", help="classification | detection | segmentation")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Data set name; default: the task's embedded one.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder holding the data set in its official layout.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="auto (bf16 on CUDA, fp32 elsewhere) | fp32 (strict reproduction) | bf16 | fp16."),
]
ChannelsLastOpt = Annotated[
    str | None, typer.Option("--channels-last", help="auto (on for CUDA) | on | off: NHWC tensors for conv models.")
]
CompileOpt = Annotated[
    str | None,
    typer.Option("--compile", help="off | on | reduce-overhead | max-autotune: torch.compile the step's models."),
]
ScaleLrOpt = Annotated[
    str | None,
    typer.Option("--scale-lr", help="none (default: the recipe's lr) | linear: lr x batch / the preset's batch."),
]
SyncBnOpt = Annotated[
    str | None,
    typer.Option("--sync-bn", help="auto (on for segmentation) | on | off: BatchNorm over the global batch "
                 "when a job has several workers."),
]
DataPipelineOpt = Annotated[
    str | None,
    typer.Option("--data-pipeline", help="auto | device (in-memory data on the device) | pil (DataLoader)."),
]


OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output folder (jobs, MLflow store, reports).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="SCOPE.NAME=VALUE, scope a method, recipe or teacher: --set dkd.beta=6, "
                 "--set recipe.weight_decay=1e-4, --set teacher.epochs=40 (repeatable)."),
]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: the recipe preset's).")]
BatchOpt = Annotated[
    int | None, typer.Option("--batch-size", help="Global batch size (default: the recipe preset's).")
]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Base learning rate (default: the recipe preset's).")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Cap on steps per epoch (smoke runs).")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="experiment.yaml: keys are this command's option names.")
]
TrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow server; default: OUTPUT/mlflow.db.")]
ExperimentOpt = Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")]

ImportOpt = Annotated[
    list[str] | None,
    typer.Option("--import", "--imports", help="Plugin module(s) to import first: a module name or a .py file that "
                 "registers methods or architectures (repeatable or comma list; installed entry points load anyway)."),
]


def _load_plugins(modules: list[str] | None) -> None:
    """Entry-point plugins and ``--import`` modules: loaded by the commands that use the registries, never at --help."""
    from bench.jobs.plugins import load_plugins

    load_plugins(modules)


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    student: Annotated[str | None, typer.Option("--student", help="Student architecture.")] = None,
    task: TaskOpt = "classification",
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    method: Annotated[str, typer.Option("--method", help="vanilla, kd, dkd, fitnet or diffkd.")] = "vanilla",
    teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher architecture.")] = None,
    teacher_checkpoint: Annotated[
        Path | None, typer.Option("--teacher-checkpoint", help="Teacher weights (mdistiller, torchvision or ours).")
    ] = None,
    sets: SetOpt = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Recipe preset (see `diffbench list presets`).")
    ] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", help="Data-loader worker processes.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The job's random seed.")] = 0,
    max_steps: MaxStepsOpt = None,
    precision: PrecisionOpt = None,
    channels_last: ChannelsLastOpt = None,
    compile_mode: CompileOpt = None,
    data_pipeline: DataPipelineOpt = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Data-parallel workers (Ray Train, DDP); the batch is global.")
    ] = 1,
    scale_lr: ScaleLrOpt = None,
    sync_bn: SyncBnOpt = None,
    config: ConfigOpt = None,
    imports: ImportOpt = None,
    output: OutputOpt = Path("results"),
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = "diffbench",
    device: DeviceOpt = "auto",
) -> None:
    """Train one job in this process: a vanilla student, or a student distilled from a teacher checkpoint.

    A grid of one job: it takes the output folder's lock, logs an MLflow run that `diffbench report`
    shows, and resumes from its checkpoint when run again. Writes the checkpoint, metrics and the exported
    student (weights only) to OUTPUT/jobs/<job hash>/. With --workers N the job runs as N data-parallel
    workers on Ray Train (one GPU each on CUDA, gloo on CPU), the recipe's batch split between them.
    """
    from bench.cli.run import train_job

    p = effective(ctx, config)
    _load_plugins(p.get("imports"))
    if not p.get("student"):
        raise UserError("train needs --student (or `student:` in --config)")
    spec = train_job(p)
    if p["workers"] != 1:
        _train_workers(spec, p["output"], p["workers"], p["device"])
        return
    from bench.cli.config import command_line
    from bench.execute.driver import run_grid

    code = _grid_exit(lambda: run_grid([spec], output=p["output"], executor="local", tracking_uri=p.get("tracking_uri"),
                                       experiment=p["experiment"], device=p["device"], console=console,
                                       max_failures=0, step_progress=True, command=command_line(ctx, p)))  # fmt: skip
    from bench.jobs.spec import job_dir
    from bench.engine.loop import read_result

    result = read_result(job_dir(Path(p["output"]).resolve(), spec.job_hash))
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


def _grid_exit(start: Callable[[], int]) -> int:
    """Run a grid; its exit code: 0, 1 (jobs failed), 3 (storage), 130 (Ctrl-C) or 143 (SIGTERM)."""
    from bench.cli.run import EXIT_JOBS_FAILED
    from bench.execute.driver import EXIT_STORAGE, StorageFull

    try:
        failed = start()
    except KeyboardInterrupt as err:
        return getattr(err, "exit_code", 130)
    except StorageFull as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return EXIT_STORAGE
    return EXIT_JOBS_FAILED if failed else 0


def _train_workers(spec: Any, output: Path, workers: int, device: str) -> None:
    """``diffbench train --workers N``: the job as one Ray Train run on a local Ray instance."""
    from bench.execute.ray_tune import init_ray
    from bench.execute.lock import OutputLock, check_writable
    from bench.execute.ray_train import Workers, train_one
    from bench.engine.loop import JobFailed, pick_device

    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if spec.recipe["batch_size"] % workers:
        raise UserError(f"batch size {spec.recipe['batch_size']} does not divide over {workers} workers")
    gpus = 1.0 if pick_device(device).type == "cuda" else 0.0
    output = check_writable(output)
    with OutputLock(output):
        console.print(init_ray(None), highlight=False)
        try:
            result = train_one(spec, output, Workers(workers, 1.0, gpus))
        except JobFailed as err:
            err_console.print(f"[bold red]job failed:[/] {escape(str(err))}", highlight=False)
            raise typer.Exit(1) from None
    _result_table(f"{spec.label} ({workers} workers)", result)


@app.command("eval")
@user_errors
def eval_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Weights: ours, mdistiller's or torchvision's.")],
    arch: Annotated[
        str | None, typer.Option("--arch", help="Architecture (default: the one our student.pt records).")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Default: recorded, else classification.")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch.")] = 128,
    num_workers: Annotated[int, typer.Option("--num-workers", help="Data-loader worker processes.")] = 2,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Evaluate a checkpoint on the data set's test split (top-1/top-5, box AP or mIoU).

    A diffbench student.pt records its architecture, task, data set and data folder: they are the defaults
    (an explicit option that contradicts the record is refused).
    """
    from bench.engine.loop import evaluate_checkpoint, recorded_job

    rec = recorded_job(checkpoint)
    for name, given in (("arch", arch), ("task", task), ("dataset", dataset)):
        if given is not None and rec.get(name) not in (None, given):
            raise UserError(f"--{name} {given!r} contradicts the checkpoint, which records {rec[name]!r}")
    arch, task = arch or rec.get("arch"), task or rec.get("task") or "classification"
    if arch is None:
        raise UserError("--arch is needed: the checkpoint does not record its architecture (not a diffbench student)")
    from tasks.base import get_task

    dataset = dataset or rec.get("dataset") or get_task(task).default_dataset
    data_dir = data_dir or (Path(rec["data_dir"]) if rec.get("data_dir") else None)
    result = evaluate_checkpoint(task, dataset, data_dir, arch, checkpoint, device=device, batch_size=batch_size,
                                 num_workers=num_workers)  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(title=f"{arch} on {dataset}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    console.print(table)


@app.command()
@user_errors
def speed(
    teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher architecture (not with --data).")] = None,
    student: Annotated[str | None, typer.Option("--student", help="Student architecture (not with --data).")] = None,
    task: TaskOpt = "classification",
    methods: Annotated[
        list[str] | None, typer.Option("--methods", help="Comma list; vanilla is always timed (--workers: only these).")
    ] = None,
    dataset: DatasetOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Timed rounds (one block per row each); --data: batches (200).")
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps per row first.")] = 3,
    inner: Annotated[
        int | None, typer.Option("--inner", help="Steps per timed block (default 1 on CPU, 10 on CUDA).")
    ] = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="e.g. --set diffkd.use_ae=true")] = None,
    precision: Annotated[
        list[str] | None,
        typer.Option("--precision", help="Comma list: auto (bf16 on CUDA, else fp32), fp32, bf16, fp16."),
    ] = None,
    channels_last: Annotated[
        list[str] | None, typer.Option("--channels-last", help="Comma list: auto (on for CUDA), on, off.")
    ] = None,
    compile_mode: Annotated[
        list[str] | None,
        typer.Option("--compile", help="Comma list: off, on, reduce-overhead, max-autotune (torch.compile)."),
    ] = None,
    peak_tflops: Annotated[
        float | None, typer.Option("--peak-tflops", help="The device's dense peak (TFLOP/s) for '% peak'.")
    ] = None,
    data: Annotated[
        bool, typer.Option("--data", help="Time the data pipeline alone: PIL DataLoader vs device-resident.")
    ] = False,
    data_dir: DataDirOpt = None,
    images: Annotated[
        int, typer.Option("--images", help="--data: random CIFAR-shaped images without --data-dir.")
    ] = 50_000,
    workers: Annotated[
        list[str] | None,
        typer.Option(
            "--workers",
            help="Comma list of worker counts: data-parallel scaling (weak: --batch-size per worker) with N local "
            "DDP workers, images/s and efficiency vs one worker.",
        ),
    ] = None,
    imports: ImportOpt = None,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Time full training steps per method and speed variant on synthetic data (rows interleaved, median of rounds).

    Every combination of --precision, --channels-last and --compile is a variant; each method × variant is
    one row with ms/step, images/s, model FLOPs per image, achieved TFLOP/s, % of the device's dense peak
    and (CUDA) peak memory. --data times the data pipeline instead. --workers 1,2,4 times each method with
    N data-parallel local workers instead (one variant; efficiency = images/s(N) / (N × images/s(1))).
    """
    _load_plugins(imports)
    from bench.speed.steps import SpeedRow
    from bench.speed.steps import run as run_speed
    from bench.speed.data import data_benchmark
    from bench.speed.table import COLUMNS, row_cells, visible_columns

    if data and workers is not None:
        raise UserError("--workers times training steps; it does not combine with --data")
    if data:
        cl = split_list(channels_last)
        result = data_benchmark(task, dataset, str(data_dir) if data_dir else None, batch_size, steps or 200,
                                device, images, channels_last=cl == ["on"])  # fmt: skip
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
            return
        table = Table(title=f"data pipeline: {result['images']:,} {result['dataset']} training images, batch "
                            f"{batch_size}, {result['cpus']} CPUs, device {result['device']}")  # fmt: skip
        for col in ("pipeline", "images/s", "note"):
            table.add_column(col, justify="right" if col == "images/s" else "left")
        by_w = ", ".join(f"{w} workers {v:,.0f}" for w, v in result["pil_by_workers"].items())
        table.add_row("PIL DataLoader", f"{result['pil']:,.0f}", f"best of {by_w}")
        table.add_row("device-resident", f"{result['resident']:,.0f}", f"upload {result['resident_upload_s']:.2f} s")
        table.add_row("speed-up", f"{result['speedup']:.1f}×", "")
        console.print(table)
        return
    if student is None:
        raise UserError("--student is required (and --teacher for distillation methods), except with --data")
    names = split_list(methods) or ["vanilla", "kd", "dkd", "fitnet", "diffkd"]
    if workers is not None:
        _speed_workers(
            task, teacher, student, names, workers, dataset, batch_size, steps or 20, warmup, device, precision,
            channels_last, compile_mode, inner, peak_tflops, sets, num_classes, as_json,
        )  # fmt: skip
        return
    payload = run_speed(
        task, teacher, student, names, dataset, batch_size, steps or 20, warmup, device,
        split_list(precision) or ["auto"], split_list(channels_last) or ["auto"], split_list(compile_mode) or ["off"],
        inner=inner, peak_tflops=peak_tflops, sets=parse_sets(sets), num_classes=num_classes,
        log=lambda msg: err_console.print(f"[dim]{msg}[/]", highlight=False) if not as_json else None,
    )  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    pair = f"{teacher}→{student}" if teacher else student
    table = Table(title=f"{task}: {pair}, batch {batch_size}, {payload['steps']} rounds × {payload['inner']} steps "
                        f"on {payload['device']} ({payload['device_name']}, torch {payload['torch']})")  # fmt: skip
    rows = [SpeedRow(**r) for r in payload["rows"]]
    keep = visible_columns(rows)  # no empty "% peak" / "peak MiB" / "compile s" columns on a CPU
    for i in keep:
        table.add_column(COLUMNS[i], justify="left" if COLUMNS[i] in ("method", "variant") else "right")
    for r in rows:
        cells = row_cells(r)
        table.add_row(*(cells[i] for i in keep))
    console.print(table)
    if not any(r.peak_tflops for r in rows):
        console.print("[dim]% peak: no dense peak known for this device; pass --peak-tflops[/]")


def _speed_workers(
    task: str, teacher: str | None, student: str, names: list[str], workers: list[str], dataset: str | None,
    batch_size: int, steps: int, warmup: int, device: str, precision: list[str] | None,
    channels_last: list[str] | None, compile_mode: list[str] | None, inner: int | None, peak_tflops: float | None,
    sets: list[str] | None, num_classes: int | None, as_json: bool,
) -> None:  # fmt: skip
    """``diffbench speed --workers``: the data-parallel scaling table (see :mod:`bench.speed.workers`)."""
    from bench import speed_workers as sw
    from bench.jobs.plugins import imported_modules

    counts = sw.parse_workers(workers)
    if peak_tflops is not None:
        raise UserError("--peak-tflops does not apply to --workers (no FLOP figures in scaling rows)")
    payload = sw.run_workers(
        task, teacher, student, names, counts, dataset, batch_size, steps, warmup, device,
        split_list(precision) or ["auto"], split_list(channels_last) or ["auto"], split_list(compile_mode) or ["off"],
        inner=inner, sets=parse_sets(sets), num_classes=num_classes, imports=imported_modules(),
        log=lambda msg: err_console.print(f"[dim]{msg}[/]", highlight=False) if not as_json else None,
    )  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    pair = f"{teacher}→{student}" if teacher else student
    rows = [sw.WorkerRow(**r) for r in payload["rows"]]
    table = Table(title=f"{task}: {pair}, data-parallel workers")
    for col in sw.COLUMNS:
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(*sw.row_cells(r))
    console.print(table)
    console.print(f"[dim]{sw.describe(payload)}[/]", highlight=False)


@app.command()
@user_errors
def run(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option("--task", help="classification | detection | segmentation")] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    pairs: Annotated[
        list[str] | None, typer.Option("--pairs", help="teacher:student,... (comma list or repeated).")
    ] = None,
    methods: Annotated[
        list[str] | None, typer.Option("--methods", help="kd,dkd,fitnet,diffkd (vanilla is always added).")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="A count (3: seeds 0,1,2) or a comma list of seeds (0,5,7).")
    ] = None,
    sets: SetOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    config: ConfigOpt = None,
    imports: ImportOpt = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="Named grid: default, smoke, cifar100, imagenet, detection, segmentation."),
    ] = None,
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="The task's recipe preset (diffbench list presets).")
    ] = None,
    teacher_checkpoint: Annotated[
        list[str] | None, typer.Option("--teacher-checkpoint", help="ARCH=PATH: use these teacher weights.")
    ] = None,
    executor: Annotated[
        str, typer.Option("--executor", help="ray | local (one job at a time, in this process)")
    ] = "ray",
    cpus_per_job: Annotated[
        float | None, typer.Option("--cpus-per-job", help="Default: the cluster's CPUs shared by the stage's jobs.")
    ] = None,
    gpus_per_job: Annotated[float, typer.Option("--gpus-per-job", help="Fractions share a GPU, e.g. 0.25.")] = 0.0,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", help="Jobs at once (default: as many as fit).")
    ] = None,
    max_failures: Annotated[
        int, typer.Option("--max-failures", min=0, help="Retries of a crashed job (from its checkpoint).")
    ] = 1,
    address: Annotated[str | None, typer.Option("--address", help="Join a Ray cluster: auto or HOST:PORT.")] = None,
    max_steps: MaxStepsOpt = None,
    precision: PrecisionOpt = None,
    channels_last: ChannelsLastOpt = None,
    compile_mode: CompileOpt = None,
    data_pipeline: DataPipelineOpt = None,
    workers_per_job: Annotated[
        int | None,
        typer.Option("--workers-per-job", help="Data-parallel workers per job (Ray Train; CPU workers unless "
                     "--gpus-per-job gives them GPUs). The batch is global."),
    ] = None,
    scale_lr: ScaleLrOpt = None,
    sync_bn: SyncBnOpt = None,
    output: OutputOpt = Path("results"),
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = "diffbench",
    device: DeviceOpt = "auto",
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Train matching jobs again from scratch; their old runs are kept, "
                           "marked superseded. (Without it, finished jobs are skipped and unfinished ones resume.)")
    ] = False,
    log_model: Annotated[
        bool, typer.Option("--log-model/--no-log-model", envvar="DIFFBENCH_LOG_MODEL",
                           help="Log each finished job's best model to MLflow (runs:/<run id>/student; a few seconds "
                           "per job).")
    ] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded grid and exit.")] = False,
) -> None:
    """Run a grid: teachers first, then vanilla and distilled students, every job recorded in MLflow.

    With no arguments: the embedded default (classification, methods vanilla, kd, dkd, fitnet, diffkd).
    Re-running the same command skips finished jobs and resumes interrupted ones. --config takes an
    experiment.yaml whose keys are these options' names (batch_size, set, teacher_checkpoint, ...);
    flags given on the command line win over it. The resolved configuration of every grid is written to
    OUTPUT/grids/<grid hash>.yaml and to the grid's MLflow run.
    Exit code: 0 when every job finished, 1 when some failed, 2 for bad input (nothing started),
    3 when the output folder or MLflow store stopped taking writes, 130 after Ctrl-C, 143 after SIGTERM.
    """
    from bench.cli.run import run_command

    p = effective(ctx, config)
    _load_plugins(p.get("imports"))
    raise typer.Exit(_grid_exit(lambda: run_command(ctx, p, console)))


def _report_filters(**given: Any) -> str:
    """The filters a user gave, for the "no runs" line (``--task detection --grid g1``)."""
    shown = [f"--{k.replace('_', '-')} {v}" for k, v in given.items() if v]
    return f" match {' '.join(shown)}" if shown else ""


@app.command()
@user_errors
def report(
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    dataset: DatasetOpt = None,
    pairs: Annotated[list[str] | None, typer.Option("--pairs", help="Only these teacher:student pairs.")] = None,
    methods: Annotated[
        list[str] | None, typer.Option("--methods", help="Only these method columns (a missing one shows as n=0).")
    ] = None,
    grid: Annotated[
        str | None, typer.Option("--grid", help="Only one grid: its parent run id, run name (latest) or grid hash.")
    ] = None,
    epoch: Annotated[str, typer.Option("--epoch", help="best | last")] = "best",
    vs: Annotated[
        str | None, typer.Option("--vs", help="Also compare every method with this one (Welch), e.g. --vs dkd.")
    ] = None,
    published: Annotated[
        str,
        typer.Option(
            "--published", help="Published numbers: match (only beside runs of the paper's recipe) | always | never"
        ),
    ] = "match",
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="markdown | csv | html | latex | json (default: from --out's suffix, else a terminal table)",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the report to this file (.md .csv .html .tex .json), not stdout."),
    ] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Also write the figure (scores from zero, gains with 95 % CIs), PNG.")
    ] = None,
    ui_url: Annotated[
        str | None, typer.Option("--ui-url", help="MLflow UI address, e.g. http://127.0.0.1:5000: link runs.")
    ] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Published numbers CSV.")] = None,
    output: Annotated[
        Path, typer.Option("--output", help="Results folder of `diffbench run` (its MLflow store is read).")
    ] = Path("results"),
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow server URI.")] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "diffbench",
) -> None:
    """Leaderboards from MLflow: mean ± std over seeds, gain over vanilla with 95 % CI and Welch test, provenance.

    Prints a terminal table, or writes --format/--out (the format follows the suffix of --out). HTML
    embeds its figure and goes to stdout without --out; nothing is written into the results folder.
    Exit code 2 with one error line when no run matches.
    """
    from bench import report as rep
    from bench.report.output import check_writable, write_text
    from bench.tracking.tracker import check_server, default_tracking_uri, fail_fast_http

    fail_fast_http()
    for path in (out, plot_path):
        if path is not None:
            check_writable(path)
    fmt = rep.format_for(out, fmt)
    if published not in rep.PUBLISHED_MODES:
        raise UserError(f"--published {published!r}: valid are {', '.join(rep.PUBLISHED_MODES)}")
    if epoch not in rep.EPOCHS:
        raise UserError(f"--epoch {epoch!r}: valid are {', '.join(rep.EPOCHS)}")
    if task is not None:
        from tasks.base import task_names

        if task not in task_names():
            raise UserError(f"unknown task {task!r}; valid: {', '.join(task_names())}")
    uri = tracking_uri or default_tracking_uri(output)
    check_server(uri)
    ref = rep.load_reference(reference) if reference else rep.load_reference()
    runs = rep.load_runs(uri, experiment, task=task, dataset=dataset, grid=grid)
    if runs.empty:
        where = _report_filters(task=task, dataset=dataset, grid=grid)
        raise UserError(f"no diffbench job runs{where} in experiment {experiment!r} of {uri}")
    lb = rep.leaderboard(
        runs,
        epoch,
        task=task,
        dataset=dataset,
        pairs=split_list(pairs) or None,
        methods=split_list(methods) or None,
        reference=ref,
        vs=vs,
        published=published,
    )
    if lb.empty:
        raise UserError(lb.empty_reason() + _report_filters(pairs=",".join(split_list(pairs)),
                                                            methods=",".join(split_list(methods))))  # fmt: skip
    if fmt is None:
        console.print(rep.to_rich(lb, ui_url=ui_url))
    else:
        text = rep.render(lb, fmt, ui_url=ui_url)
        if out is not None:
            write_text(out, text)
            err_console.print(f"wrote {out}")
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if plot_path is not None:
        try:
            rep.plot(lb, plot_path)
        except OSError as err:
            raise UserError(f"cannot write --plot {str(plot_path)!r}: {err.strerror or err}") from None
        err_console.print(f"plot: {plot_path}")


@app.command()
@user_errors
def ui(
    output: OutputOpt = Path("results"),
    host: Annotated[str, typer.Option("--host", help="Interface to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 5000,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="Backend store URI.")] = None,
    experiment: ExperimentOpt = "diffbench",
    open_browser: Annotated[bool, typer.Option("--open", help="Also open the runs page in a web browser.")] = False,
) -> None:
    """Open the MLflow UI on the same store `diffbench run` writes (bound to 127.0.0.1 by default).

    Prints the link to the experiment's runs table in diffbench's view (grid axes and scores as columns,
    grids expanded). Ctrl-C or SIGTERM stops the UI's whole process tree (exit 0 or 143).
    """
    from bench.tracking.tracker import default_tracking_uri
    from bench.tracking.ui_server import runs_link, serve, ui_command

    uri = tracking_uri or default_tracking_uri(output)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}; run `diffbench run` first or pass --output"
        )
    cmd = ui_command(uri, host, port, output)
    link = runs_link(uri, experiment, f"http://{host}:{port}")
    console.print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C stops it", highlight=False)
    if link:
        console.print(f"runs: {link}", highlight=False, soft_wrap=True)
    raise typer.Exit(serve(cmd, link if open_browser else None))


@app.command("list")
@user_errors
def list_cmd(
    what: Annotated[str, typer.Argument(help="methods | archs | datasets | presets | tasks")] = "methods",
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    imports: ImportOpt = None,
) -> None:
    """List methods, architectures, data sets, recipe presets or tasks."""
    _load_plugins(imports)
    import methods as methods_pkg
    from tasks.base import get_task, task_names

    tasks = [task] if task else task_names()
    if what == "methods":
        import re

        console.print("vanilla: the student alone (every grid's baseline)", highlight=False)
        order = ["kd", "dkd", "fitnet", "diffkd"]  # the papers' order; plugins follow alphabetically
        names = sorted(methods_pkg.METHODS.names(), key=lambda n: (order.index(n) if n in order else 99, n))
        for name in names:
            cls = methods_pkg.METHODS.get(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")  # reST roles and literals as text
            console.print(f"{name}: {doc}", highlight=False, markup=False)
    elif what == "tasks":
        for name in tasks:
            t = get_task(name)
            console.print(f"{name}: datasets {', '.join(t.datasets)}; metric {t.primary_metric}")
    elif what in ("archs", "datasets", "presets"):
        if what == "presets" and task is None:
            from bench.jobs.grid import GRID_PRESETS

            console.print(f"[bold]grids[/] (diffbench run --preset): {', '.join(GRID_PRESETS)}")
            console.print("[bold]recipes[/] (diffbench run --recipe, diffbench train --preset):")
        for name in tasks:
            t = get_task(name)
            items = {"archs": t.archs(), "datasets": list(t.datasets), "presets": list(t.presets)}[what]
            console.print(f"[bold]{name}[/]: {', '.join(items)}")
            if what == "archs" and name == "classification" and importlib.util.find_spec("timm"):
                console.print("  and timm/<model> for any timm model (timm is installed)", highlight=False)
    else:
        raise UserError(f"cannot list {what!r}; valid: methods, archs, datasets, presets, tasks")


@app.command("export")
@user_errors
def export_cmd(
    source: Annotated[
        str, typer.Argument(help="A student.pt / student_best.pt, a job folder, or a job hash in --output.")
    ],
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", help="mdistiller | state_dict | torchscript | pt2 | onnx (comma list or repeated; "
                     "default: all, ONNX where onnxscript is installed)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the files (default: here), or the file for one format.")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", help="Output folder of `diffbench run`, where a job hash is looked up.")
    ] = Path("results"),
    last: Annotated[bool, typer.Option("--last", help="The last epoch's student (student.pt), not the best.")] = False,
    input_size: Annotated[
        str | None, typer.Option("--input-size", help="H or H,W of the traced example (default: the data set's).")
    ] = None,
    imports: ImportOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Export a trained student: mdistiller's {"model": ...}, a plain state dict, TorchScript, torch.export or ONNX.

    Each file is loaded back with its own loader and its logits compared with the student's on a fixed
    batch (the max difference is printed). Traced formats (TorchScript, pt2, ONNX) output the logits for
    images at the data set's training size with any batch; detection students export as weights only.
    """
    _load_plugins(imports)
    from bench.engine.export import export_files

    rows, notes = export_files(source, split_list(formats), out, output, last, input_size)
    if as_json:
        sys.stdout.write(json.dumps({"files": rows, "notes": notes}) + "\n")
        return
    table = Table(title="exported student")
    for col in ("format", "file", "max |Δ logits|"):
        table.add_column(col, justify="right" if col.startswith("max") else "left")
    for r in rows:
        diff = "unchecked" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2g}"
        table.add_row(r["format"], r["path"], diff)
    console.print(table)
    for note in notes:
        err_console.print(f"[dim]{note}[/]", highlight=False)


def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
