"""``diffbench export``: a trained student as mdistiller's checkpoint, a plain state dict, TorchScript or ONNX.

The source is one of our own student files (``student.pt`` / ``student_best.pt``, which record the
architecture, task, data set and class count beside the weights), a job folder, or a job hash in an output
folder. The student is rebuilt from its task's zoo and loaded strictly, then written as:

* ``mdistiller`` — ``{"model": state_dict}``, what mdistiller's ``load_checkpoint(path)["model"]`` reads
  (our CIFAR zoo uses mdistiller's module names, so its keys are mdistiller's);
* ``state_dict`` — the bare ``state_dict`` (torchvision's and timm's weight files);
* ``torchscript`` — ``torch.jit.trace`` of the student in eval mode on an example batch of the data set's
  image size: runs without diffbench or Python model code (``torch.jit.load``; torch 2.15 marks TorchScript
  deprecated in favour of ``torch.export``, hence also:)
* ``pt2`` — ``torch.export`` of the same, with a dynamic batch (``torch.export.load(path).module()``);
* ``onnx`` — ``torch.onnx.export`` (torch's ``torch.export``-based exporter, which needs ``onnxscript``:
  ``pip install 'diffbench[onnx]'``), input ``images`` ``[batch, 3, H, W]`` with a dynamic batch, output
  ``logits``.

Traced formats output the logits tensor only (a segmentation model's main ``out`` map, at its output
stride); detection students, whose forward takes lists of images and returns boxes, export as weights only.
Method extras (FitNet's regressor, DiffKD's diffusion model) are never part of a student file.

Imports torch only (no Ray, no MLflow); the ONNX exporter is imported on use.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.engine.build import init_kind
from methods.errors import UserError, first_line, unknown

#: Export formats and the suffix each file gets when ``--out`` is a folder.
FORMATS: dict[str, str] = {
    "mdistiller": ".mdistiller.pth",
    "state_dict": ".state_dict.pt",
    "torchscript": ".torchscript.pt",
    "pt2": ".pt2",
    "onnx": ".onnx",
}
#: Formats that trace the model (they need an example input and a tensor output).
TRACED = ("torchscript", "pt2", "onnx")
#: Keys our student files record beside the weights (``bench.engine.loop._export``).
_RECORD = ("arch", "task", "dataset", "num_classes")
_JOB_HASH = re.compile(r"^[0-9a-f]{12}$")


@dataclass
class Student:
    """A student rebuilt from its file, in eval mode on the CPU, and what it is."""

    model: nn.Module
    arch: str
    task: str
    dataset: str
    num_classes: int
    path: Path
    job_hash: str | None = None
    #: the model setup it was trained in (``random`` builds detectors with trainable BatchNorm), see
    #: :meth:`tasks.base.Task.build_model`.
    init: str | None = None


def find_student_file(source: str | Path, output: Path | str = "results", last: bool = False) -> Path:
    """The student file ``source`` names: a file, a job folder or a job hash under ``output/jobs``.

    In a job folder the best epoch's weights (``student_best.pt``) are taken unless ``last`` (``student.pt``,
    the final epoch); a folder without the best file (a job that never evaluated) gives ``student.pt``.
    """
    path = Path(source).expanduser()
    if not path.exists() and _JOB_HASH.match(str(source)):
        path = Path(output) / "jobs" / str(source)
        if not path.is_dir():
            raise UserError(f"no job {source} in {Path(output) / 'jobs'} (is --output the grid's output folder?)")
    if path.is_dir():
        names = ("student.pt",) if last else ("student_best.pt", "student.pt")
        found = next((path / n for n in names if (path / n).is_file()), None)
        if found is None:
            raise UserError(f"{path} holds no {' or '.join(names)} (has the job finished an epoch?)")
        return found
    if not path.is_file():
        raise UserError(f"{source}: no such student file, job folder or job hash")
    return path


def load_student(path: Path | str) -> Student:
    """Rebuild the student a diffbench student file describes and load its weights strictly."""
    from tasks.base import get_task, load_state_dict_file

    path = Path(path)
    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        first = first_line(err, 200)
        raise UserError(f"{path} cannot be read: {first}") from None
    if not isinstance(record, dict) or not all(k in record for k in _RECORD) or "student" not in record:
        raise UserError(f"{path} is not a diffbench student file (it records no {'/'.join(_RECORD)}); export takes "
                        "the student.pt or student_best.pt of a job")  # fmt: skip
    task = get_task(record["task"])
    job = record.get("job") or {}
    init = init_kind(job.get("student_init")) if isinstance(job, dict) else None  # the model setup it trained in
    model = task.build_model(record["arch"], int(record["num_classes"]), record["dataset"], init=init)
    load_state_dict_file(model, path)
    job_hash = path.parent.name if _JOB_HASH.match(path.parent.name) else None
    return Student(model.eval(), record["arch"], record["task"], record["dataset"], int(record["num_classes"]), path,
                   job_hash or (job.get("job_hash") if isinstance(job, dict) else None), init)  # fmt: skip


def example_input(student: Student, batch: int = 2, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A fixed example batch (seeded) at the data set's training image size, or ``size`` (H, W).

    Batch 2, not 1: tracers specialise dimensions of size 1, and the exported batch must stay dynamic.
    """
    if student.task == "detection":
        raise UserError("detection students export as weights only (mdistiller, state_dict): their forward takes "
                        "lists of images and returns boxes, which tracing to TorchScript or ONNX cannot hold")
    from tasks.base import get_task

    if size is None:
        images = get_task(student.task).synthetic_batch(batch, student.num_classes, torch.device("cpu"),
                                                        dataset=student.dataset)  # fmt: skip
        images = images[0] if isinstance(images, tuple | list) else images
        size = (int(images.shape[-2]), int(images.shape[-1]))
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *size, generator=g)


class LogitsOnly(nn.Module):
    """The student with its output reduced to the logits tensor (``out`` of a dict output), for tracing."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        return out["out"] if isinstance(out, dict) else out


def traceable(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` itself when it returns a tensor, else wrapped in :class:`LogitsOnly`."""
    with torch.no_grad():
        out = model(example)
    return model if isinstance(out, torch.Tensor) else LogitsOnly(model).eval()


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The logits tensor of ``model`` on ``images`` (eval mode, no grad), whatever its output container."""
    with torch.no_grad():
        return LogitsOnly(model.eval())(images)


def export(student: Student, fmt: str, out: Path, example: torch.Tensor | None = None) -> Path:
    """Write ``student`` to ``out`` in ``fmt`` (see :data:`FORMATS`); returns ``out``."""
    if fmt not in FORMATS:
        raise unknown("export format", fmt, FORMATS)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {out.parent}: {err.strerror or err}") from None
    state = {k: v.detach().clone() for k, v in student.model.state_dict().items()}
    try:
        if fmt == "mdistiller":
            torch.save({"model": state}, out)
        elif fmt == "state_dict":
            torch.save(state, out)
        else:
            example = example if example is not None else example_input(student)
            model = traceable(student.model.eval(), example)
            if fmt == "torchscript":
                with torch.no_grad(), _quiet():
                    torch.jit.save(torch.jit.trace(model, example), str(out))
            elif fmt == "pt2":
                with torch.no_grad():
                    program = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},))
                torch.export.save(program, str(out))
            else:
                _onnx(model, example, out)
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror or err}") from None
    return out


def onnx_available() -> bool:
    """Whether torch's ONNX exporter can run here (it needs ``onnxscript``)."""
    import importlib.util

    return importlib.util.find_spec("onnxscript") is not None and importlib.util.find_spec("onnx") is not None


def _onnx(model: nn.Module, example: torch.Tensor, out: Path) -> None:
    if not onnx_available():
        raise UserError("ONNX export needs onnxscript and onnx: pip install 'diffbench[onnx]'")
    with _quiet():
        torch.onnx.export(model, (example,), str(out), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: _batch_dim()},), dynamo=True, external_data=False)  # fmt: skip


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No exporter progress lines on stdout, no deprecation warnings (TorchScript's FutureWarnings)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def check_export(student: Student, fmt: str, path: Path, example: torch.Tensor | None) -> float | None:
    """Max |logits difference| between ``student`` and the exported file reloaded on ``example``.

    Without an example (detection, weights only) the reloaded weights are compared instead. ``None`` for
    ONNX when onnxruntime is not installed (the file is then written but unchecked).
    """
    from tasks.base import get_task, load_state_dict_file

    if fmt in ("mdistiller", "state_dict"):
        task = get_task(student.task)
        fresh = task.build_model(student.arch, student.num_classes, student.dataset, init=student.init)
        load_state_dict_file(fresh, path)
        if example is None:  # detection: no plain forward to compare; the weights themselves then
            mine, theirs = student.model.state_dict(), fresh.state_dict()
            return max((float((mine[k].double() - theirs[k].double()).abs().max()) for k in mine if mine[k].numel()),
                       default=0.0)  # fmt: skip
        return float((logits(fresh, example) - logits(student.model, example)).abs().max())
    want = logits(student.model, example)
    if fmt == "torchscript":
        with torch.no_grad(), _quiet():
            got = torch.jit.load(str(path))(example)
    elif fmt == "pt2":
        with torch.no_grad():
            got = torch.export.load(str(path)).module()(example)
    else:
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["logits"], {"images": example.numpy()})[0])
    return float((got.float() - want.float()).abs().max())


def export_files(
    source: str | Path,
    formats: list[str] | None = None,
    out: Path | None = None,
    output: Path | str = "results",
    last: bool = False,
    input_size: str | None = None,
) -> tuple[list[dict], list[str]]:
    """``diffbench export``: write ``source``'s student in each format, reload each file and compare logits.

    Args:
        source: a student file, a job folder, or a job hash under ``output/jobs``.
        formats: some of :data:`FORMATS`; default all (ONNX left out, with a note, where onnxscript is missing).
        out: a folder (created; default the current one), or the file itself when one format is asked.
        output: the grid's output folder, to find a job hash.
        last: the last epoch's student instead of the best one.
        input_size: ``H`` or ``H,W`` of the traced example (default: the data set's training size).

    Returns:
        One ``{"format", "path", "max_abs_diff"}`` per file (``max_abs_diff`` ``None`` when unchecked: ONNX
        without onnxruntime), and notes for the user.
    """
    notes: list[str] = []
    bad = [f for f in formats or [] if f not in FORMATS]
    if bad:
        raise unknown("export format", bad[0], FORMATS)
    student = load_student(find_student_file(source, output, last))
    if not formats:
        formats = list(FORMATS)
        if not onnx_available():
            formats.remove("onnx")
            notes.append("onnx skipped: torch's ONNX exporter needs onnxscript (pip install 'diffbench[onnx]')")
        if student.task == "detection":
            formats = [f for f in formats if f not in TRACED]
            notes.append("detection: traced formats left out (a detection student exports as weights only)")
    traced = any(f in TRACED for f in formats)
    example = example_input(student, size=_parse_size(input_size)) if traced or student.task != "detection" else None
    stem = student.arch.replace("/", "-") + (f"_{student.job_hash}" if student.job_hash else "")
    single = out is not None and len(formats) == 1 and not Path(out).is_dir() and Path(out).suffix != ""
    rows = []
    for fmt in formats:
        path = Path(out) if single else Path(out or ".") / f"{stem}{FORMATS[fmt]}"
        export(student, fmt, path, example)
        diff = check_export(student, fmt, path, example)
        if diff is None:
            notes.append(f"{path}: not checked (onnxruntime is not installed)")
        rows.append({"format": fmt, "path": str(path), "max_abs_diff": diff})
    return rows, notes


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise UserError(f"--input-size {text!r}: expected H or H,W (positive integers), e.g. 32 or 512,1024")
    return (parts[0], parts[-1])
