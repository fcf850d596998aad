"""How a grid runs, as one validated object: executor, resources, output, tracking, device, retries.

``diffbench run`` / ``train`` build one :class:`RunOptions` from their flags and ``--config`` (``bench.cli``),
once; everything a user can get wrong here is refused when it is built, in one line, before anything starts
(Ray never starts for an impossible request). :func:`bench.execute.driver.run_grid` takes it whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.tracking.schema import EXPERIMENT
from methods.errors import UserError, unknown

EXECUTORS = ("ray", "local")
DEVICES = "auto, cpu, cuda, cuda:N"


@dataclass(frozen=True)
class Workers:
    """How one job is spread: ``count`` workers with ``cpus`` CPUs and ``gpus`` GPUs each."""

    count: int
    cpus: float
    gpus: float

    @property
    def distributed(self) -> bool:
        return self.count > 1

    @classmethod
    def plan(cls, workers_per_job: int | None, gpus_per_job: float, cpus_per_job: float | None) -> Workers:
        """``--workers-per-job`` / ``--gpus-per-job`` / ``--cpus-per-job`` as one shape, validated.

        ``--gpus-per-job N`` (N > 1) means N workers of one GPU each; ``--workers-per-job N`` alone, N CPU
        workers; with both, the GPUs are split evenly (each worker at most one GPU).
        """
        if workers_per_job is not None and workers_per_job < 1:
            raise UserError(f"--workers-per-job must be at least 1, got {workers_per_job}")
        count = workers_per_job or (int(gpus_per_job) if gpus_per_job > 1 else 1)
        gpus = gpus_per_job / count if gpus_per_job else 0.0
        if gpus > 1:
            raise UserError(
                f"--gpus-per-job {gpus_per_job:g} over {count} workers is {gpus:g} GPUs per worker; a worker uses "
                "one GPU: give --workers-per-job equal to the GPU count"
            )
        if count > 1 and 0 < gpus < 1:
            raise UserError("data-parallel workers take whole GPUs; drop the fraction or use one worker per job")
        cpus = (cpus_per_job / count) if cpus_per_job else 1.0
        return cls(count, cpus, gpus)


@dataclass(frozen=True)
class RunOptions:
    """Everything about *how* a grid runs (what it trains is the jobs' business).

    Attributes:
        output: the results folder (jobs, MLflow store, lock).
        executor: ``ray`` (Ray Tune, jobs at once) or ``local`` (one job at a time, in this process).
        tracking_uri: an MLflow server or store URI; ``None``: ``OUTPUT/mlflow.db``.
        experiment: the MLflow experiment.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``cuda:N`` only in-process).
        cpus_per_job / gpus_per_job: Ray resources of each job (fractions share a GPU).
        max_concurrent: jobs at once (``None``: as many as fit).
        max_failures: retries of a crashed job, each from its checkpoint.
        address: a Ray cluster to join (``auto`` or ``HOST:PORT``).
        workers_per_job: data-parallel workers per job (Ray Train).
        rerun: train every job again from scratch (old runs are kept, marked superseded).
        log_models: log each finished job's best model to MLflow.
        teacher_cache: reuse teachers another output folder trained with the same hash, and keep finished
            teachers for others (``$DIFFBENCH_CACHE/teachers``; :mod:`bench.execute.teacher_cache`).
    """

    output: Path = field(default_factory=lambda: Path("results"))
    executor: str = "ray"
    tracking_uri: str | None = None
    experiment: str = EXPERIMENT
    device: str = "auto"
    cpus_per_job: float | None = None
    gpus_per_job: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 1
    address: str | None = None
    workers_per_job: int | None = None
    rerun: bool = False
    log_models: bool = False
    teacher_cache: bool = False

    def __post_init__(self) -> None:
        from bench.jobs.files import path_problem

        problem = path_problem(self.output)
        if problem:
            raise UserError(f"--output {str(self.output)[:60]!r} {problem}")
        object.__setattr__(self, "output", Path(self.output))
        if self.executor not in EXECUTORS:
            raise unknown("executor", self.executor, EXECUTORS)
        if self.max_failures < 0:
            raise UserError(f"--max-failures must be >= 0, got {self.max_failures}")
        d = self.device
        if d not in ("auto", "cpu", "cuda") and not (d.startswith("cuda:") and d[5:].isdigit()):
            raise UserError(f"unknown device {d!r}; valid: {DEVICES}")
        if self.cpus_per_job is not None and (not math.isfinite(self.cpus_per_job) or self.cpus_per_job <= 0):
            raise UserError(f"--cpus-per-job must be > 0, got {self.cpus_per_job:g}")
        if not math.isfinite(self.gpus_per_job) or self.gpus_per_job < 0:
            raise UserError(f"--gpus-per-job must be >= 0, got {self.gpus_per_job:g}")
        if self.gpus_per_job > 1 and not float(self.gpus_per_job).is_integer():
            raise UserError(
                f"--gpus-per-job {self.gpus_per_job:g}: a fraction must be below 1 (jobs share a GPU), else whole GPUs"
            )
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserError(f"--max-concurrent must be at least 1, got {self.max_concurrent}")
        if self.workers.distributed and self.executor != "ray":
            raise UserError("jobs of several workers run on Ray Train: use the ray executor (not --executor local)")
        if self.executor == "ray" and self.device.startswith("cuda:"):
            raise UserError(
                "--device cuda:N picks a GPU for `diffbench train`; on Ray use --gpus-per-job (Ray assigns GPUs)"
            )
        if self.device == "cpu" and self.gpus_per_job > 0:
            raise UserError(f"--device cpu contradicts --gpus-per-job {self.gpus_per_job:g}")

    @property
    def workers(self) -> Workers:
        """The shape of each job (one worker unless ``workers_per_job`` or several GPUs per job)."""
        return Workers.plan(self.workers_per_job, self.gpus_per_job, self.cpus_per_job)
