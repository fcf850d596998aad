"""The training loop: one job, in-process, resumable. Imports neither Ray nor MLflow.

Read it top to bottom like torchvision's reference ``train.py``: build the task's data and models,
the method, one SGD optimiser over the student *and* the method's extras (weight decay included, as
mdistiller does), then epochs of paired forwards. After every epoch the full state is written
atomically to ``<job dir>/checkpoint.pt``; a restarted job continues from it, so a crash loses at
most the epoch in flight. The exported ``student.pt`` holds the student's weights only.

Executors (``bench.executors``) wrap :func:`run_job` and pass a ``reporter`` callback that forwards
each epoch's metrics to Ray Tune or MLflow.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from bench.lock import check_claim, describe_os_error, is_write_error
from bench.spec import VANILLA, JobSpec, job_dir
from methods.base import Method, Progress, UserError, build_method
from tasks.base import Recipe, Task, get_task


class JobFailed(RuntimeError):
    """A job that cannot finish (NaN loss, diverged, bad data). Recorded as failed; the grid goes on.

    ``storage=True``: it could not write its files (disk full, read-only): the grid stops, since every
    other job would fail the same way.
    """

    def __init__(self, message: str, storage: bool = False) -> None:
        super().__init__(message)
        self.storage = storage


#: Called after every epoch with (epoch, metrics, checkpoint path).
Reporter = Callable[[int, dict[str, float], Path], None]


@dataclass
class JobResult:
    """What a finished job leaves behind (also written to ``result.json``)."""

    job_hash: str
    status: str
    metrics: dict[str, float]
    history: list[dict[str, float]]
    student_path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_hash": self.job_hash,
            "status": self.status,
            "metrics": self.metrics,
            "history": self.history,
            "student_path": self.student_path,
        }


def pick_device(device: str | None) -> torch.device:
    """``auto`` (or None) → CUDA when available, else CPU; a CUDA request without CUDA is a UserError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if device.startswith("cuda:") and device[5:].isdigit() and int(device[5:]) >= torch.cuda.device_count():
        raise UserError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N") from None


def lr_factor(recipe: Recipe, iteration: int, iters_per_epoch: int) -> float:
    """Multiplier of the base lr at ``iteration`` (0-based), from the recipe's schedule and warm-up.

    ``step`` decays by ``gamma`` once per milestone passed, counted in completed epochs, like
    mdistiller's ``adjust_learning_rate`` (``epoch > milestone`` with 1-based epochs).
    """
    epochs_done = iteration / iters_per_epoch
    total = recipe.epochs * iters_per_epoch
    if recipe.schedule == "step":
        factor = recipe.gamma ** sum(int(epochs_done) >= m for m in recipe.milestones)
    elif recipe.schedule == "poly":
        factor = (1 - min(iteration, total - 1) / total) ** recipe.poly_power
    elif recipe.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
    else:
        raise UserError(f"unknown lr schedule {recipe.schedule!r}; valid: step, poly, cosine")
    if recipe.warmup_epochs and epochs_done < recipe.warmup_epochs:
        alpha = epochs_done / recipe.warmup_epochs
        factor *= recipe.warmup_factor * (1 - alpha) + alpha
    return factor


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass
class Built:
    """Everything a job trains with, built from its spec."""

    task: Task
    student: nn.Module
    teacher: nn.Module | None
    method: Method | None
    train_loader: DataLoader
    val_loader: DataLoader
    num_classes: int
    info: dict[str, Any]


def build_job(spec: JobSpec, output: Path, device: torch.device, generator: torch.Generator | None = None) -> Built:
    """Data, models (teacher weights loaded, frozen) and method for ``spec``."""
    task = get_task(spec.task)
    recipe = spec.recipe_obj()
    bundle = task.build_data(spec.dataset, Path(spec.data_dir) if spec.data_dir else None, recipe)
    loader_kw = {
        "collate_fn": bundle.collate_fn,
        "num_workers": recipe.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": recipe.num_workers > 0,
    }
    train_loader = DataLoader(
        bundle.train, batch_size=recipe.batch_size, shuffle=True, drop_last=True, generator=generator, **loader_kw
    )
    if len(train_loader) == 0:
        raise UserError(
            f"{spec.dataset}: {len(bundle.train)} training images is fewer than one batch of "
            f"{recipe.batch_size}; lower --batch-size"
        )
    val_loader = DataLoader(bundle.val, batch_size=recipe.batch_size, shuffle=False, **loader_kw)

    ckpt = spec.teacher_checkpoint(output) if spec.method != VANILLA else None
    if spec.method != VANILLA and (ckpt is None or not ckpt.is_file()):
        raise UserError(f"teacher checkpoint for {spec.teacher!r} not found at {ckpt}")
    student, teacher, method = build_models(
        task,
        spec.student,
        spec.teacher,
        spec.method,
        dict(spec.hparams),
        bundle.num_classes,
        spec.dataset,
        ckpt,
        device,
    )
    return Built(task, student, teacher, method, train_loader, val_loader, bundle.num_classes, bundle.info)


def build_models(
    task: Task,
    student_arch: str,
    teacher_arch: str | None,
    method_name: str,
    hparams: dict[str, Any],
    num_classes: int,
    dataset: str,
    teacher_ckpt: Path | None,
    device: torch.device,
) -> tuple[nn.Module, nn.Module | None, Method | None]:
    """Student, frozen teacher (weights from ``teacher_ckpt`` when given) and method, taps attached."""
    student = task.build_model(student_arch, num_classes, dataset)
    teacher = method = None
    if method_name != VANILLA:
        if teacher_arch is None:
            raise UserError(f"method {method_name!r} needs a teacher")
        teacher = task.build_model(teacher_arch, num_classes, dataset)
        if teacher_ckpt is not None:
            task.load_weights(teacher, teacher_ckpt)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        task.check_pair(student, teacher)
        s_specs = task.tap_specs(student_arch, num_classes, dataset)
        t_specs = task.tap_specs(teacher_arch, num_classes, dataset)
        method = build_method(method_name, s_specs, t_specs, **hparams)
        task.attach_taps(teacher, teacher_arch, num_classes, dataset)
        teacher.to(device)
        method.to(device)
    task.attach_taps(student, student_arch, num_classes, dataset)
    student.to(device)
    return student, teacher, method


def make_optimizer(recipe: Recipe, student: nn.Module, method: Method | None) -> torch.optim.Optimizer:
    """SGD over the student and the method's extras, weight decay on all (mdistiller's choice)."""
    params = [p for p in student.parameters() if p.requires_grad]
    if method is not None:
        params += [p for p in method.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov
    )


def train_step(
    built: Built, batch: Any, device: torch.device, progress: Progress, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], int]:
    """One full training step; returns the (detached) named loss terms and ``loss``, and the batch's images."""
    out = built.task.paired_forward(built.student, built.teacher, batch, device)
    weight = built.method.task_weight if built.method is not None else 1.0
    terms = {k: weight * v for k, v in out.losses.items()}
    if built.method is not None:
        terms.update(built.method(out.student_taps, out.teacher_taps, out.target, progress))
    loss = sum(terms.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    terms = {k: v.detach() for k, v in terms.items()}
    terms["loss"] = loss.detach()
    return terms, out.batch_size


def _save_atomic(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """Write ``path`` so that a crash at any moment leaves a complete file (new or old), never a torn one.

    The bytes go to a temporary file that is synced to disk before it is renamed over ``path``. With
    ``keep_previous`` the file being replaced survives as ``<name>.prev<suffix>``: if the new one is
    later found corrupt (a disk that lied about the sync, a copy cut short), :func:`load_checkpoint`
    falls back to it and the job loses one epoch instead of all of them.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        if isinstance(obj, bytes | str):
            f.write(obj.encode() if isinstance(obj, str) else obj)
        else:
            torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)


def previous_path(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``: the copy :func:`_save_atomic` keeps."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def load_checkpoint(path: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest readable training state of a job: ``path``, else its previous copy, else ``None``.

    An unreadable file is never a dead end: it is renamed ``*.corrupt`` (kept for inspection), a warning
    naming it goes to the log, and the job continues from the previous epoch's copy or from scratch.
    """
    for candidate in (path, previous_path(path)):
        if not candidate.is_file():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "epoch" not in state or "student" not in state:
                raise ValueError("not a diffbench training checkpoint")
            if candidate != path:
                log(f"warning: resuming from {candidate.name} (epoch {state['epoch']}): {path.name} was unusable")
            return state
        except Exception as err:  # noqa: BLE001 - a torn or foreign file: fall back, never give up
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            corrupt = candidate.with_name(candidate.name + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(candidate, corrupt)
            log(f"warning: checkpoint {candidate} is unreadable ({type(err).__name__}: {first}); "
                f"moved to {corrupt.name}")
    if path.with_name(path.name + ".corrupt").exists():
        log(f"warning: no readable checkpoint left in {path.parent}; the job restarts from epoch 1")
    return None


def read_result(workdir: Path) -> dict[str, Any] | None:
    """A finished job's ``result.json``, or ``None`` when it is missing or unreadable (then it is re-made)."""
    path = Path(workdir) / "result.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict) or "history" not in data:
        return None
    return data


def _crash_hook(workdir: Path, epoch: int, method: str) -> None:
    """Test hook: ``DIFFBENCH_CRASH_ONCE_AT_EPOCH=N`` kills the job once after epoch N was checkpointed.

    ``DIFFBENCH_CRASH_METHOD=name`` limits it to jobs of that method. A marker file makes the crash
    happen only once per job folder, so a retry resumes and finishes. Used by the fault-tolerance
    tests; inert unless the variable is set.
    """
    at = os.environ.get("DIFFBENCH_CRASH_ONCE_AT_EPOCH")
    only = os.environ.get("DIFFBENCH_CRASH_METHOD")
    marker = workdir / "crashed_once"
    if at and int(at) == epoch and (not only or only == method) and not marker.exists():
        marker.write_text("simulated crash\n")
        raise RuntimeError(f"simulated crash after epoch {epoch} (DIFFBENCH_CRASH_ONCE_AT_EPOCH)")


def run_job(
    spec: JobSpec,
    output: Path | str,
    device: str | torch.device | None = "auto",
    reporter: Reporter | None = None,
    log: Callable[[str], None] = print,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_begin: Callable[[int], None] | None = None,
    claim_token: str | None = None,
) -> JobResult:
    """Train ``spec`` to completion (resuming from its checkpoint), export the student, return results.

    Args:
        spec: the job.
        output: the grid's output folder; the job works in ``output/jobs/<hash>/``.
        device: ``auto``, ``cpu``, ``cuda``...
        reporter: called after each epoch with ``(epoch, metrics, checkpoint_path)``.
        log: where progress lines go (the console, a Ray worker's stdout).
        on_step: called after every step with ``(epoch, step, steps_per_epoch, loss)`` (progress bars).
        on_begin: called once before training with the last epoch already done (0: a fresh start), so a
            driver knows whether the job resumes or restarts.
        claim_token: the token of the grid driver that claimed this job (see :mod:`bench.lock`); the job
            refuses to train when another live driver holds its claim.

    Raises:
        JobFailed: the loss became NaN/inf, or training otherwise cannot go on.
        UserError: bad input (missing data, teacher checkpoint, unknown names).
    """
    output = Path(output).resolve()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    generator = seed_everything(spec.seed)
    built = build_job(spec, output, dev, generator)  # bad input fails here, before anything is written
    workdir = job_dir(output, spec.job_hash)
    check_claim(workdir, claim_token)
    try:
        return _train(spec, built, workdir, dev, generator, reporter, log, on_step, on_begin)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError around the OSError
        if is_write_error(err):  # retrying cannot help; a re-run after freeing space resumes
            why = f"cannot write the job's files in {workdir}: {describe_os_error(err)}"
            raise JobFailed(why, storage=True) from err
        raise


def _train(
    spec: JobSpec,
    built: Built,
    workdir: Path,
    dev: torch.device,
    generator: torch.Generator,
    reporter: Reporter | None,
    log: Callable[[str], None],
    on_step: Callable[[int, int, int, float], None] | None,
    on_begin: Callable[[int], None] | None,
) -> JobResult:
    recipe = spec.recipe_obj()
    workdir.mkdir(parents=True, exist_ok=True)
    _save_atomic(json.dumps(spec.to_dict(), indent=2, default=str), workdir / "config.json")
    log = _tee(log, workdir / "train.log")
    log(f"[{spec.label}] job {spec.job_hash} on {dev} in {workdir}")
    optimizer = make_optimizer(recipe, built.student, built.method)
    iters = len(built.train_loader) if recipe.max_steps is None else min(recipe.max_steps, len(built.train_loader))

    start_epoch, history, best, extra = 1, [], {}, {}
    ckpt_path = workdir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path, log)
    if state is not None:
        built.student.load_state_dict(state["student"])
        if built.method is not None and state.get("method") is not None:
            built.method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_states(state["rng"])
        generator.set_state(state["loader_rng"])
        start_epoch, history, best, extra = state["epoch"] + 1, state["history"], state["best"], state["extra"]
        log(f"[{spec.label}] resumed from epoch {state['epoch']}")
    elif built.teacher is not None:
        extra["teacher_" + built.task.primary_metric] = built.task.evaluate(built.teacher, built.val_loader, dev)[
            built.task.primary_metric
        ]
        log(f"[{spec.label}] teacher {built.task.primary_metric} = {extra['teacher_' + built.task.primary_metric]:.2f}")

    if on_begin is not None:
        on_begin(start_epoch - 1)
    primary = built.task.primary_metric
    train_time, train_images = extra.get("train_time", 0.0), extra.get("train_images", 0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for epoch in range(start_epoch, recipe.epochs + 1):
        built.student.train()
        if built.method is not None:
            built.method.train()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        seen = 0
        for step, batch in enumerate(built.train_loader):
            if step >= iters:
                break
            it = (epoch - 1) * iters + step
            lr = recipe.lr * lr_factor(recipe, it, iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            progress = Progress(epoch=epoch, epochs=recipe.epochs, step=it, steps_per_epoch=iters)
            terms, images = train_step(built, batch, dev, progress, optimizer)
            values = dict(zip(terms, torch.stack(list(terms.values())).tolist(), strict=True))  # one device sync
            loss = values["loss"]
            if not math.isfinite(loss):
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                raise JobFailed(f"loss is {loss} at epoch {epoch}, step {step} (non-finite terms: {', '.join(bad)})")
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if on_step is not None:
                on_step(epoch, step + 1, iters, loss)
            seen += images
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = time.perf_counter() - t0
        train_time += elapsed
        train_images += seen
        metrics = {f"train/{k}": v / max(iters, 1) for k, v in sums.items()}
        metrics["lr"] = lr
        metrics["epoch_time_s"] = elapsed
        if epoch % recipe.eval_every == 0 or epoch == recipe.epochs:
            val = built.task.evaluate(built.student, built.val_loader, dev)
            metrics.update({f"val/{k}": v for k, v in val.items()})
            if val[primary] > best.get(primary, -math.inf):
                best = {**val, "epoch": epoch}
                _save_atomic(_export(spec, built), workdir / "student_best.pt")
        metrics["epoch"] = epoch
        history.append(metrics)
        extra.update(train_time=train_time, train_images=train_images)
        _save_atomic(
            {
                "student": built.student.state_dict(),
                "method": built.method.state_dict() if built.method is not None else None,
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "history": history,
                "best": best,
                "extra": extra,
                "rng": _rng_states(),
                "loader_rng": generator.get_state(),
                "spec": spec.to_dict(),
            },
            ckpt_path,
            keep_previous=True,
        )
        shown = " ".join(
            f"{k.replace('/', '_')}={v:.4g}" for k, v in metrics.items() if k == "train/loss" or k.startswith("val/")
        )
        log(f"[{spec.label}] epoch {epoch}/{recipe.epochs} {shown} ({elapsed:.1f}s)")
        if reporter is not None:
            reporter(epoch, metrics, ckpt_path)
        _crash_hook(workdir, epoch, spec.method)

    student_path = workdir / "student.pt"
    _save_atomic(_export(spec, built), student_path)
    last = {k.removeprefix("val/"): v for k, v in history[-1].items() if k.startswith("val/")}
    summary = {f"best_{k}": v for k, v in best.items() if k != "epoch"}
    summary.update({f"last_{k}": v for k, v in last.items()})
    summary["best_epoch"] = best.get("epoch", recipe.epochs)
    summary["train_time_s"] = train_time
    summary["images_per_s"] = train_images / train_time if train_time else 0.0
    if dev.type == "cuda":
        summary["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    summary.update({k: v for k, v in extra.items() if k.startswith("teacher_")})
    result = JobResult(spec.job_hash, "FINISHED", summary, history, str(student_path))
    _save_atomic(json.dumps(result.to_dict(), indent=2), workdir / "result.json")
    return result


def _rng_states() -> dict[str, Any]:
    """Every random stream a step draws from (DiffKD's noise is drawn on the GPU when training there)."""
    import numpy as np

    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _tee(log: Callable[[str], None], path: Path) -> Callable[[str], None]:
    """``log`` that also appends each line to ``path`` (the job's ``train.log`` artifact)."""

    def both(msg: str) -> None:
        log(msg)
        with path.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    return both


def _export(spec: JobSpec, built: Built) -> dict[str, Any]:
    """The student's weights only (no method extras, no optimiser), plus what it is."""
    return {
        "student": built.student.state_dict(),
        "arch": spec.student,
        "task": spec.task,
        "dataset": spec.dataset,
        "num_classes": built.num_classes,
        "job": spec.to_dict(),
    }


def evaluate_checkpoint(
    task_name: str,
    dataset: str,
    data_dir: Path | None,
    arch: str,
    checkpoint: Path,
    device: str = "auto",
    batch_size: int = 128,
) -> dict[str, Any]:
    """Evaluate a checkpoint (ours, mdistiller's or torchvision's) on the dataset's test split."""
    task = get_task(task_name)
    task.check_names(dataset, arch)
    dev = pick_device(device)
    recipe = task.recipe(dataset, arch).updated(batch_size=batch_size)
    bundle = task.build_data(dataset, data_dir, recipe)
    model = task.build_model(arch, bundle.num_classes, dataset)
    task.load_weights(model, checkpoint)
    model.to(dev)
    loader = DataLoader(
        bundle.val, batch_size=batch_size, shuffle=False, collate_fn=bundle.collate_fn, num_workers=recipe.num_workers
    )
    metrics = task.evaluate(model, loader, dev)
    return {**metrics, "images": len(bundle.val), "arch": arch, "dataset": dataset, "checkpoint": str(checkpoint)}
