"""The training loop: one job, in-process, resumable. Imports neither Ray nor MLflow.

Read it top to bottom like torchvision's reference ``train.py``: build the task's data and models,
the method, one SGD optimiser over the student *and* the method's extras (``bench.engine.build``), then epochs
of paired forwards (``bench.engine.step``: precision, compilation, loss terms kept on the device). After every
epoch the full state is written atomically to ``<job dir>/checkpoint.pt`` (``bench.engine.checkpoint``); a
restarted job continues from it, so a crash loses at most the epoch in flight. The exported
``student.pt`` holds the student's weights only.

Executors (``bench.execute.ray_tune``) wrap :func:`run_job` and pass a ``reporter`` callback that forwards
each epoch's metrics to Ray Tune or MLflow.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from bench.engine.build import Built, build_job, build_models, make_optimizer, pick_device, seed_everything, set_lr
from bench.engine.checkpoint import load_checkpoint, previous_path, read_result, save_atomic
from bench.engine.distributed import Dist
from bench.execute.lock import check_claim, describe_os_error, is_write_error
from bench.jobs.spec import JobSpec, job_dir
from bench.engine.step import NonFinite, Stepper, autocast
from methods.base import Progress, UserError
from tasks.base import Recipe, get_task

__all__ = [
    "Built",
    "JobFailed",
    "JobResult",
    "build_models",
    "evaluate_checkpoint",
    "lr_factor",
    "make_optimizer",
    "pick_device",
    "previous_path",
    "read_result",
    "run_job",
    "train_step",
]


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


def train_step(
    built: Built, batch: Any, device: torch.device, progress: Progress, optimizer: torch.optim.Optimizer,
    precision: str = "fp32",
) -> tuple[dict[str, torch.Tensor], int]:  # fmt: skip
    """One full training step; returns the (detached) named loss terms and ``loss``, and the batch's images.

    A convenience over :class:`bench.engine.step.Stepper` for callers that want the terms of one step.
    """
    stepper = Stepper(built, optimizer, device, precision)
    images = stepper.step(batch, progress)
    values = stepper._last.to(torch.float32)  # noqa: SLF001 - this step's terms, in order
    names = [*(stepper.names or []), "loss"]
    return dict(zip(names, values.unbind(0), strict=True)), images


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
    cpus: int | None = None,
    dist: Dist | None = None,
) -> JobResult:
    """Train ``spec`` to completion (resuming from its checkpoint), export the student, return results.

    Args:
        spec: the job.
        output: the grid's output folder; the job works in ``output/jobs/<hash>/``.
        device: ``auto``, ``cpu``, ``cuda``...
        reporter: called after each epoch with ``(epoch, metrics, checkpoint_path)``.
        log: where progress lines go (the console, a Ray worker's stdout).
        on_step: called after every step with ``(epoch, step, steps_per_epoch, loss)`` (progress bars; the
            loss is the last one read from the device).
        on_begin: called once before training with the last epoch already done (0: a fresh start), so a
            driver knows whether the job resumes or restarts.
        claim_token: the token of the grid driver that claimed this job (see :mod:`bench.execute.lock`); the job
            refuses to train when another live driver holds its claim.
        cpus: CPUs the job was given (Ray's allocation); DataLoader workers are sized to them.
        dist: this process's rank in a data-parallel job (:mod:`bench.engine.distributed`); every rank calls
            ``run_job`` with the same spec, rank 0 writes the files, every rank gets the same result.

    Raises:
        JobFailed: the loss became NaN/inf, the job's files cannot be written, or training otherwise
            cannot go on.
        UserError: bad input (missing data, teacher checkpoint, unknown names).
    """
    output = Path(output).resolve()
    dist = dist or Dist()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    generator = seed_everything(spec.seed)  # the models' initial weights: the same on every rank
    if not dist.main:
        log = _silent
    # Bad input fails here, before anything is written.
    built = build_job(spec, output, dev, generator, cpus, dist, log)
    workdir = job_dir(output, spec.job_hash)
    check_claim(workdir, claim_token)
    try:
        return _train(spec, built, workdir, dev, reporter, log, on_step, on_begin)
    except NonFinite as err:
        raise JobFailed(str(err)) from None
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError around the OSError
        if is_write_error(err):  # retrying cannot help; a re-run after freeing space resumes
            why = f"cannot write the job's files in {workdir}: {describe_os_error(err)}"
            raise JobFailed(why, storage=True) from err
        raise


def _silent(_message: str) -> None:
    """The log of ranks other than 0 (rank 0 speaks for the job)."""


def _train(
    spec: JobSpec,
    built: Built,
    workdir: Path,
    dev: torch.device,
    reporter: Reporter | None,
    log: Callable[[str], None],
    on_step: Callable[[int, int, int, float], None] | None,
    on_begin: Callable[[int], None] | None,
) -> JobResult:
    recipe = spec.recipe_obj()
    if recipe.precision == "auto":  # a spec written before recipes were resolved at planning time
        recipe = recipe.resolved(dev.type, spec.dataset in built.task.resident_datasets)
    main = built.dist.main
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        save_atomic(json.dumps(spec.to_dict(), indent=2, default=str), workdir / "config.json")
        log = _tee(log, workdir / "train.log")
    workers = f", {built.dist.world_size} workers" if built.dist.parallel else ""
    log(f"[{spec.label}] job {spec.job_hash} on {dev}{workers} in {workdir} ({recipe.precision}, "
        f"data {recipe.data_pipeline})")  # fmt: skip
    optimizer = make_optimizer(recipe, built.student, built.method, dev)
    stepper = Stepper(built, optimizer, dev, recipe.precision, recipe.compile, log, built.dist)
    iters = len(built.train_loader) if recipe.max_steps is None else min(recipe.max_steps, len(built.train_loader))

    start_epoch, history, best, extra = 1, [], {}, {}
    ckpt_path = workdir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path, log)
    if state is not None:
        built.student.load_state_dict(state["student"])
        if built.method is not None and state.get("method") is not None:
            built.method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        _lr_on_device(optimizer, dev)
        stepper.load_state_dict(state.get("step"))
        start_epoch, history, best, extra = state["epoch"] + 1, state["history"], state["best"], state["extra"]
        log(f"[{spec.label}] resumed from epoch {state['epoch']}")
    elif built.teacher is not None:
        primary = built.task.primary_metric
        extra["teacher_" + primary] = stepper.evaluate(built.teacher, built.val_loader)[primary]
        log(f"[{spec.label}] teacher {primary} = {extra['teacher_' + primary]:.2f}")

    if on_begin is not None:
        on_begin(start_epoch - 1)
    primary = built.task.primary_metric
    train_time, train_images = extra.get("train_time", 0.0), extra.get("train_images", 0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    lr = recipe.lr
    for epoch in range(start_epoch, recipe.epochs + 1):
        built.start_epoch(epoch)
        built.student.train()
        if built.method is not None:
            built.method.train()
        stepper.reset()
        t0 = time.perf_counter()
        seen = 0
        for step, batch in enumerate(built.train_loader):
            if step >= iters:
                break
            it = (epoch - 1) * iters + step
            lr = recipe.lr * lr_factor(recipe, it, iters)
            set_lr(optimizer, lr)
            progress = Progress(epoch=epoch, epochs=recipe.epochs, step=it, steps_per_epoch=iters)
            seen += stepper.step(batch, progress)
            stepper.check(epoch, step, force=step + 1 == iters)
            if on_step is not None:
                on_step(epoch, step + 1, iters, stepper.last_loss)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = time.perf_counter() - t0
        train_time += elapsed
        train_images += seen
        metrics = stepper.means()
        metrics["lr"] = lr
        metrics["epoch_time_s"] = elapsed
        if dev.type == "cuda":  # what the driver checks packed jobs against (see GridRun.check_packing)
            metrics["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
            metrics["device_mem_mb"] = torch.cuda.get_device_properties(dev).total_memory / 2**20
        if epoch % recipe.eval_every == 0 or epoch == recipe.epochs:
            val = stepper.evaluate(built.student, built.val_loader)
            metrics.update({f"val/{k}": v for k, v in val.items()})
            if val[primary] > best.get(primary, -math.inf):
                best = {**val, "epoch": epoch}
                if main:
                    save_atomic(_export(spec, built), workdir / "student_best.pt")
        metrics["epoch"] = epoch
        history.append(metrics)
        extra.update(train_time=train_time, train_images=train_images)
        if stepper.compile_time_s:
            extra["compile_time_s"] = extra.get("compile_time_s", 0.0) + stepper.compile_time_s
            stepper.compile_time_s = 0.0
        if main:  # every rank holds the same state; rank 0 writes it
            save_atomic(
                {
                    "student": _unwrapped_state(built.student),
                    "method": _unwrapped_state(built.method) if built.method is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "step": stepper.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "best": best,
                    "extra": extra,
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
        if main:
            _crash_hook(workdir, epoch, spec.method)

    student_path = workdir / "student.pt"
    if main:
        save_atomic(_export(spec, built), student_path)
    last = {k.removeprefix("val/"): v for k, v in history[-1].items() if k.startswith("val/")}
    summary = {f"best_{k}": v for k, v in best.items() if k != "epoch"}
    summary.update({f"last_{k}": v for k, v in last.items()})
    summary["best_epoch"] = best.get("epoch", recipe.epochs)
    summary["train_time_s"] = train_time
    summary["images_per_s"] = train_images / train_time if train_time else 0.0
    if dev.type == "cuda":
        summary["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    summary.update({k: v for k, v in extra.items() if k.startswith("teacher_") or k == "compile_time_s"})
    result = JobResult(spec.job_hash, "FINISHED", summary, history, str(student_path))
    if main:
        save_atomic(json.dumps(result.to_dict(), indent=2), workdir / "result.json")
    built.dist.barrier()  # the files exist for every rank (and the driver) once any rank returns
    return result


def _unwrapped_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict whose keys do not depend on SyncBN conversion (same keys) or wrappers (``module.``)."""
    return {k.removeprefix("module."): v for k, v in module.state_dict().items()}


def _lr_on_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """A checkpoint's tensor learning rates come back on the CPU; the fused CUDA step wants them on the device."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor) and group["lr"].device != device:
            group["lr"] = group["lr"].to(device)


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
        "student": _unwrapped_state(built.student),
        "arch": spec.student,
        "task": spec.task,
        "dataset": spec.dataset,
        "num_classes": built.num_classes,
        "job": spec.to_dict(),
    }


def recorded_job(checkpoint: Path) -> dict[str, Any]:
    """What a diffbench ``student.pt`` says it is (arch, task, dataset, data_dir); ``{}`` for other files."""
    try:
        obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the strict loader
        return {}
    if not isinstance(obj, dict) or "arch" not in obj or "student" not in obj:
        return {}
    job = obj.get("job") or {}
    return {"arch": obj.get("arch"), "task": obj.get("task"), "dataset": obj.get("dataset"),
            "data_dir": job.get("data_dir")}  # fmt: skip


def evaluate_checkpoint(
    task_name: str,
    dataset: str,
    data_dir: Path | None,
    arch: str,
    checkpoint: Path,
    device: str = "auto",
    batch_size: int = 128,
    precision: str = "fp32",
    num_workers: int = 2,
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
    from bench.engine.build import available_cpus

    workers = min(num_workers, max(0, available_cpus() - 1))
    loader = DataLoader(bundle.val, batch_size=batch_size, shuffle=False, collate_fn=bundle.collate_fn,
                        num_workers=workers)  # fmt: skip
    ctx = autocast(dev, precision) if task.eval_autocast else torch.autocast(dev.type, enabled=False)
    with torch.inference_mode(), ctx:
        metrics = task.evaluate(model, loader, dev)
    return {**metrics, "images": len(bundle.val), "arch": arch, "dataset": dataset, "checkpoint": str(checkpoint)}
