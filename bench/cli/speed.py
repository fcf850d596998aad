"""``diffbench speed``: training steps per method and speed variant, the data pipeline, or data-parallel scaling
(the library is :mod:`bench.speed`; ``python -m bench.speed`` is the same without typer/rich)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from bench.cli.options import (
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ImportOpt,
    console,
    err_console,
    load_plugins,
    user_errors,
)
from bench.cli.tables import fitted_table
from bench.jobs.overrides import parse_sets, split_list
from methods.errors import UserError


@user_errors
def speed(
    teacher: Annotated[str | None, typer.Option("--teacher", help="Teacher architecture (not with --data).")] = None,
    student: Annotated[str | None, typer.Option("--student", help="Student architecture (not with --data).")] = None,
    task: Annotated[str, typer.Option("--task", help="classification | detection | segmentation")] = "classification",
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
    load_plugins(imports)
    from bench.speed.data import data_benchmark
    from bench.speed.steps import SpeedRow
    from bench.speed.steps import run as run_speed
    from bench.speed.table import COLUMNS, row_cells, visible_columns
    from methods import catalog

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
    names = split_list(methods) or [catalog.VANILLA, *catalog.BUILTIN]
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
    title = (f"{task}: {pair}, batch {batch_size}, {payload['steps']} rounds × {payload['inner']} steps "
             f"on {payload['device']} ({payload['device_name']}, torch {payload['torch']})")  # fmt: skip
    rows = [SpeedRow(**r) for r in payload["rows"]]
    keep = visible_columns(rows)  # no empty "% peak" / "peak MiB" / "compile s" columns on a CPU
    table, dropped = fitted_table(console, title, [COLUMNS[i] for i in keep], [[row_cells(r)[i] for i in keep]
                                  for r in rows], droppable=SPEED_DROPPABLE, left=("method", "variant"))  # fmt: skip
    console.print(table)
    _dropped_note(dropped)
    if not any(r.peak_tflops for r in rows):
        console.print("[dim]% peak: no dense peak known for this device; pass --peak-tflops[/]")


#: The step table's columns left out first when the terminal is too narrow for every value whole.
SPEED_DROPPABLE = ("compile s", "IQR ms", "% peak", "GFLOP/img", "TFLOP/s", "peak MiB", "× kd")


def _dropped_note(dropped: list[str]) -> None:
    if dropped:
        console.print(f"[dim]left out at this terminal width: {', '.join(dropped)} (a wider terminal or --json has "
                      "them)[/]", highlight=False)  # fmt: skip


def _speed_workers(
    task: str, teacher: str | None, student: str, names: list[str], workers: list[str], dataset: str | None,
    batch_size: int, steps: int, warmup: int, device: str, precision: list[str] | None,
    channels_last: list[str] | None, compile_mode: list[str] | None, inner: int | None, peak_tflops: float | None,
    sets: list[str] | None, num_classes: int | None, as_json: bool,
) -> None:  # fmt: skip
    """``diffbench speed --workers``: the data-parallel scaling table (see :mod:`bench.speed.workers`)."""
    from bench.jobs.plugins import imported_modules
    from bench.speed import workers as sw

    counts = sw.parse_workers(workers)
    payload = sw.run_workers(
        task, teacher, student, names, counts, dataset, batch_size, steps, warmup, device,
        split_list(precision) or ["auto"], split_list(channels_last) or ["auto"], split_list(compile_mode) or ["off"],
        inner=inner, sets=parse_sets(sets), num_classes=num_classes, imports=imported_modules(),
        peak_tflops=peak_tflops,
        log=lambda msg: err_console.print(f"[dim]{msg}[/]", highlight=False) if not as_json else None,
    )  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    pair = f"{teacher}→{student}" if teacher else student
    rows = [sw.WorkerRow(**r) for r in payload["rows"]]
    table, dropped = fitted_table(console, f"{task}: {pair}, data-parallel workers", sw.COLUMNS,
                                  [sw.row_cells(r) for r in rows], droppable=("IQR ms", "batch per worker"),
                                  left=("method",))  # fmt: skip
    console.print(table)
    _dropped_note(dropped)
    console.print(f"[dim]{sw.describe(payload)}[/]", highlight=False)
