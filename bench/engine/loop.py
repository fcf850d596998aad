"""The training loop: one job, in-process, resumable. Imports neither Ray nor MLflow.

Read it top to bottom like torchvision's reference ``train.py``: :func:`run_job` builds the task's data and
models, the method and one SGD optimiser over the student *and* the method's extras (:mod:`.build`), then
:func:`_train` runs epochs of paired forwards (:mod:`.step`: precision, compilation, loss terms kept on the
device). After every epoch the full state is written atomically to ``<job dir>/checkpoint.pt``
(:mod:`.checkpoint`); a restarted job continues from it, so a crash loses at most the epoch in flight. The
exported ``student.pt`` holds the student's weights only.

The loop tells its caller what happens through callbacks (``on_begin``, ``reporter``, ``on_step``); the
executors turn them into the driver's events (:mod:`bench.execute.events`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.engine.build import Built, build_job, make_optimizer, seed_everything, set_lr
from bench.engine.checkpoint import load_checkpoint, save_atomic, student_record
from bench.engine.device import pick_device
from bench.engine.distributed import Dist
from bench.engine.step import NonFinite, Stepper
from bench.jobs.compat import needs_device_resolution
from bench.jobs.files import CHECKPOINT, LOG, RESULT, STUDENT, STUDENT_BEST, describe_os_error, is_write_error, job_dir
from bench.jobs.spec import JobSpec
from methods.errors import unknown
from methods.taps import Progress
from tasks.recipe import Recipe


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
    #: data-parallel workers and torch threads of the run that finished it (not part of the job's identity; on one
    #: machine the same identity and thread count give the same numbers bit for bit).
    workers: int = 1
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_hash": self.job_hash,
            "status": self.status,
            "metrics": self.metrics,
            "history": self.history,
            "student_path": self.student_path,
            "workers": self.workers,
            "threads": self.threads,
        }


def lr_factor(recipe: Recipe, iteration: int, iters_per_epoch: int) -> float:
    """Multiplier of the base lr at ``iteration`` (0-based), from the recipe's schedule and warm-up.

    ``step`` decays by ``gamma`` once per milestone passed, counted in completed epochs, like
    mdistiller's ``adjust_learning_rate`` (``epoch > milestone`` with 1-based epochs), or, with
    ``iter_milestones``, once per iteration milestone reached (detectron2's ``WarmupMultiStepLR``). ``poly`` and
    ``cosine`` run over all iterations: ``epochs x iters_per_epoch``, or ``max_iters`` when the recipe gives it.
    """
    epochs_done = iteration / iters_per_epoch
    total = recipe.max_iters or recipe.epochs * iters_per_epoch
    if recipe.schedule == "step":
        passed = sum(iteration >= m for m in recipe.iter_milestones) if recipe.iter_milestones else \
            sum(int(epochs_done) >= m for m in recipe.milestones)  # fmt: skip
        factor = recipe.gamma**passed
    elif recipe.schedule == "poly":
        factor = (1 - min(iteration, total - 1) / total) ** recipe.poly_power
    elif recipe.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
    else:
        raise unknown("lr schedule", recipe.schedule, ("step", "poly", "cosine"))
    if recipe.warmup_epochs and epochs_done < recipe.warmup_epochs:
        alpha = epochs_done / recipe.warmup_epochs
        factor *= recipe.warmup_factor * (1 - alpha) + alpha
    return factor


def training_epochs(recipe: Recipe, iters_per_epoch: int) -> int:
    """How many epochs the job trains: the recipe's, or as many as ``max_iters`` needs (the last one cut short)."""
    if recipe.max_iters is None:
        return recipe.epochs
    return min(recipe.epochs, math.ceil(recipe.max_iters / iters_per_epoch))


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
        cpus: CPUs the job was given (Ray's allocation); DataLoader workers are sized to them.
        dist: this process's rank in a data-parallel job (:mod:`.distributed`); every rank calls
            ``run_job`` with the same spec, rank 0 writes the files, every rank gets the same result.

    Raises:
        JobFailed: the loss became NaN/inf, the job's files cannot be written, or training otherwise
            cannot go on.
        UserError: bad input (missing data, teacher checkpoint, unknown names).
    """
    output = Path(output).resolve()
    dist = dist or Dist()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    deterministic(dev)
    generator = seed_everything(spec.seed)  # the models' initial weights: the same on every rank
    if not dist.main:
        log = _silent
    # Bad input fails here, before anything is written.
    built = build_job(spec, output, dev, generator, cpus, dist, log)
    workdir = job_dir(output, spec.job_hash)
    try:
        return _train(spec, built, workdir, dev, reporter, log, on_step, on_begin)
    except NonFinite as err:
        raise JobFailed(str(err)) from None
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError around the OSError
        if is_write_error(err):  # retrying cannot help; a re-run after freeing space resumes
            why = f"cannot write the job's files in {workdir}: {describe_os_error(err)}"
            raise JobFailed(why, storage=True) from err
        raise


def deterministic(device: torch.device) -> None:
    """Deterministic algorithms where torch has them, on the CPU: with a fixed thread count (the executors set one
    that depends only on the grid), a job's result then depends only on its identity and the machine.

    CUDA keeps cuDNN's autotuned kernels (``cudnn.benchmark``), which are not bitwise reproducible; the README says
    so and how large the spread is.
    """
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def _silent(_message: str) -> None:
    """The log of ranks other than 0 (rank 0 speaks for the job)."""


@dataclass
class _State:
    """What a checkpoint carries besides the modules: where training is and what it measured so far."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


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
    if needs_device_resolution(spec.recipe):
        recipe = recipe.resolved(dev.type, spec.dataset in built.task.resident_datasets)
    main = built.dist.main
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        save_atomic(json.dumps(spec.to_dict(), indent=2, default=str), workdir / "config.json")
        log = _tee(log, workdir / LOG)
    workers = f", {built.dist.world_size} workers" if built.dist.parallel else ""
    threads = f", {torch.get_num_threads()} threads" if dev.type == "cpu" else ""
    log(f"[{spec.label}] job {spec.job_hash} on {dev}{workers}{threads} in {workdir} ({recipe.precision}, "
        f"data {recipe.data_pipeline})")  # fmt: skip
    optimizer = make_optimizer(recipe, built.student, built.method, dev)
    stepper = Stepper(built, optimizer, dev, recipe.precision, recipe.compile, log, built.dist)
    iters = len(built.train_loader) if recipe.max_steps is None else min(recipe.max_steps, len(built.train_loader))

    epochs = training_epochs(recipe, iters)

    state = _resume(spec, built, workdir / CHECKPOINT, optimizer, stepper, dev, log)
    if on_begin is not None:
        on_begin(state.epoch)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for epoch in range(state.epoch + 1, epochs + 1):
        metrics = _train_epoch(built, stepper, optimizer, recipe, epoch, epochs, iters, dev, on_step)
        state.extra["train_time"] = state.extra.get("train_time", 0.0) + metrics["epoch_time_s"]
        state.extra["train_images"] = state.extra.get("train_images", 0) + metrics.pop("images")
        if stepper.compile_time_s:
            state.extra["compile_time_s"] = state.extra.get("compile_time_s", 0.0) + stepper.compile_time_s
            stepper.compile_time_s = 0.0
        if epoch % recipe.eval_every == 0 or epoch == epochs:
            _validate(spec, built, stepper, state, metrics, epoch, workdir, main)
        metrics["epoch"] = epoch
        state.epoch = epoch
        state.history.append(metrics)
        if main:  # every rank holds the same state; rank 0 writes it
            _save_checkpoint(spec, built, optimizer, stepper, state, workdir / CHECKPOINT)
        shown = " ".join(
            f"{k.replace('/', '_')}={v:.4g}" for k, v in metrics.items() if k == "train/loss" or k.startswith("val/")
        )
        log(f"[{spec.label}] epoch {epoch}/{epochs} {shown} ({metrics['epoch_time_s']:.1f}s)")
        if reporter is not None:
            reporter(epoch, metrics, workdir / CHECKPOINT)
        if main:
            _crash_hook(workdir, epoch, spec.method)
    return _finish(spec, built, state, epochs, workdir, dev)


def _resume(
    spec: JobSpec, built: Built, path: Path, optimizer: torch.optim.Optimizer, stepper: Stepper, dev: torch.device,
    log: Callable[[str], None],
) -> _State:  # fmt: skip
    """The job's checkpointed state loaded into its modules, or a fresh state (with the teacher's score)."""
    saved = load_checkpoint(path, log)
    if saved is None:
        state = _State()
        if built.teacher is not None:
            primary = built.task.primary_metric
            state.extra["teacher_" + primary] = stepper.evaluate(built.teacher, built.val_loader)[primary]
            log(f"[{spec.label}] teacher {primary} = {state.extra['teacher_' + primary]:.2f}")
        return state
    built.student.load_state_dict(saved["student"])
    if built.method is not None and saved.get("method") is not None:
        built.method.load_state_dict(saved["method"])
    optimizer.load_state_dict(saved["optimizer"])
    _lr_on_device(optimizer, dev)
    stepper.load_state_dict(saved.get("step"))
    log(f"[{spec.label}] resumed from epoch {saved['epoch']}")
    return _State(saved["epoch"], saved["history"], saved["best"], saved["extra"])


def _train_epoch(
    built: Built, stepper: Stepper, optimizer: torch.optim.Optimizer, recipe: Recipe, epoch: int, epochs: int,
    iters: int, dev: torch.device, on_step: Callable[[int, int, int, float], None] | None,
) -> dict[str, float]:  # fmt: skip
    """One epoch of steps (fewer in the last epoch of a ``max_iters`` recipe); the epoch's mean loss terms, last
    lr, wall time and images seen."""
    built.start_epoch(epoch)
    built.student.train()
    if built.method is not None:
        built.method.train()
    stepper.reset()
    t0 = time.perf_counter()
    seen, lr = 0, recipe.lr
    steps = iters if recipe.max_iters is None else min(iters, recipe.max_iters - (epoch - 1) * iters)
    for step, batch in enumerate(built.train_loader):
        if step >= steps:
            break
        it = (epoch - 1) * iters + step
        lr = recipe.lr * lr_factor(recipe, it, iters)
        set_lr(optimizer, lr)
        seen += stepper.step(batch, Progress(epoch=epoch, epochs=epochs, step=it, steps_per_epoch=iters))
        stepper.check(epoch, step, force=step + 1 == steps)
        if on_step is not None:
            on_step(epoch, step + 1, steps, stepper.last_loss)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    metrics = {**stepper.means(), "lr": lr, "epoch_time_s": time.perf_counter() - t0, "images": seen}
    if dev.type == "cuda":  # what the driver checks packed jobs against (see GridRun.check_packing)
        metrics["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        metrics["device_mem_mb"] = torch.cuda.get_device_properties(dev).total_memory / 2**20
    return metrics


def _validate(
    spec: JobSpec, built: Built, stepper: Stepper, state: _State, metrics: dict[str, float], epoch: int,
    workdir: Path, main: bool,
) -> None:  # fmt: skip
    """Evaluate the student into ``metrics``; a new best is kept in ``state`` and exported as ``student_best.pt``."""
    primary = built.task.primary_metric
    val = stepper.evaluate(built.student, built.val_loader)
    metrics.update({f"val/{k}": v for k, v in val.items()})
    if val[primary] > state.best.get(primary, -math.inf):
        state.best = {**val, "epoch": epoch}
        if main:
            save_atomic(_export(spec, built), workdir / STUDENT_BEST)


def _save_checkpoint(
    spec: JobSpec, built: Built, optimizer: torch.optim.Optimizer, stepper: Stepper, state: _State, path: Path
) -> None:
    save_atomic(
        {
            "student": _unwrapped_state(built.student),
            "method": _unwrapped_state(built.method) if built.method is not None else None,
            "optimizer": optimizer.state_dict(),
            "step": stepper.state_dict(),
            "epoch": state.epoch,
            "history": state.history,
            "best": state.best,
            "extra": state.extra,
            "spec": spec.to_dict(),
            "num_classes": built.num_classes,  # so the student file can be made again from it alone
        },
        path,
        keep_previous=True,
    )


def _finish(spec: JobSpec, built: Built, state: _State, epochs: int, workdir: Path, dev: torch.device) -> JobResult:
    """Export the last student and write ``result.json``: best and last metrics, time, throughput."""
    student_path = workdir / STUDENT
    if built.dist.main:
        save_atomic(_export(spec, built), student_path)
    last = {k.removeprefix("val/"): v for k, v in state.history[-1].items() if k.startswith("val/")}
    summary = {f"best_{k}": v for k, v in state.best.items() if k != "epoch"}
    summary.update({f"last_{k}": v for k, v in last.items()})
    summary["best_epoch"] = state.best.get("epoch", epochs)
    train_time = state.extra.get("train_time", 0.0)
    summary["train_time_s"] = train_time
    summary["images_per_s"] = state.extra.get("train_images", 0) / train_time if train_time else 0.0
    if dev.type == "cuda":
        summary["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    summary.update({k: v for k, v in state.extra.items() if k.startswith("teacher_") or k == "compile_time_s"})
    result = JobResult(spec.job_hash, "FINISHED", summary, state.history, str(student_path), built.dist.world_size,
                       torch.get_num_threads())
    if built.dist.main:
        save_atomic(json.dumps(result.to_dict(), indent=2), workdir / RESULT)
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
    """The student's weights only (no method extras, no optimiser), plus what it is (:func:`student_record`)."""
    return student_record(spec, _unwrapped_state(built.student), built.num_classes)
