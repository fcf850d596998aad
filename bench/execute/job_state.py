"""What the driver knows of one job of a running grid (its status, run, timings), shared by the grid's state
(:mod:`.state`) and what a person sees of it (:mod:`.progress`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench import clock
from bench.jobs.spec import JobSpec


@dataclass
class JobState:
    spec: JobSpec
    status: str = "queued"  # queued | running | finished | failed | skipped
    epoch: int = 0
    metric: float | None = None
    run_id: str | None = None
    reason: str = ""
    attempts: int = 0
    #: epochs the job's MLflow run already holds (a retry on another node re-reports them: log each once).
    logged: set[int] = field(default_factory=set)
    #: the existing run this job continues in, or the one it replaces (see the module docstring).
    reuse: Any | None = None
    supersede: Any | None = None
    #: when it last changed state, for the view.
    since: float = field(default_factory=clock.now)
    # timing and progress for the view (bench.execute.progress)
    t_start: float | None = None
    t_end: float | None = None
    t_epoch: float | None = None
    epoch_times: list[float] = field(default_factory=list)
    step: int = 0
    steps: int = 0
    loss: float | None = None
    resumed_from: int = 0
    #: the teacher cache folder a teacher's files were copied from (it did not train here).
    cached_from: Any | None = None
