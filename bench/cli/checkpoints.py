"""``diffbench eval`` (a checkpoint on a data set's test split) and ``diffbench export`` (a trained student in the
formats people load)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
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
    refuse_file_as_output,
    user_errors,
)
from bench.jobs.overrides import split_list
from methods.errors import UserError

#: The suffixes of the files ``export`` writes (:data:`bench.engine.export.FORMATS`, which imports torch): such an
#: ``-o/--output`` value is the old spelling of ``--out``.
EXPORT_SUFFIXES = (".pth", ".pt", ".pt2", ".onnx")


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
    from bench.engine.evaluate import evaluate_checkpoint, recorded_job

    rec = recorded_job(checkpoint)
    for name, given in (("arch", arch), ("task", task), ("dataset", dataset)):
        if given is not None and rec.get(name) not in (None, given):
            raise UserError(f"--{name} {given!r} contradicts the checkpoint, which records {rec[name]!r}")
    arch, task = arch or rec.get("arch"), task or rec.get("task") or "classification"
    if arch is None:
        raise UserError("--arch is needed: the checkpoint does not record its architecture (not a diffbench student)")
    from tasks.spec import task_spec

    dataset = dataset or rec.get("dataset") or task_spec(task).default_dataset
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


@user_errors
def export_cmd(
    source: Annotated[
        str, typer.Argument(help="A student.pt / student_best.pt, a job folder, or a job hash in --output.")
    ],
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help="mdistiller | state_dict | torchscript | pt2 | onnx (comma list or repeated; "
            "default: all, ONNX where onnxscript is installed).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the files (default: here), or the file for one format.")
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Results folder of `diffbench run`, where a job hash is looked up.")
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
    A job hash is looked up in the results folder -o/--output; the files go to --out.
    """
    refuse_file_as_output("export", output, EXPORT_SUFFIXES, "the exported file(s)")
    load_plugins(imports)
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
