"""The job → driver protocol: what a running job tells the grid's driver, the same for every executor.

A job (in this process, in a Ray Tune trial, or rank 0 of a Ray Train run) emits these events:

* :class:`Begin` once, before its first epoch, with the last epoch already done (0: a fresh start);
* :class:`Step` while an epoch runs, for the live view (every step in this process; from a Ray Tune trial at
  most every :data:`STEP_EVERY_S` seconds, :func:`throttled_steps`; not from Ray Train workers, whose reports
  are collective);
* :class:`Epoch` after every epoch, with that epoch's metrics;
* :class:`Finished` with the job's summary, or :class:`Failed` with the reason (``storage``: it could not write
  its files, which stops the grid).

The in-process executor hands them to the driver directly; the Ray executors carry them through
``tune.report`` / ``ray.train.report`` as flat dicts (:func:`to_report`, read back by :func:`from_report` in the
driver's Tune callback). :func:`run_reporting` runs one job and emits its events, so all executors share the
one place that maps the training loop's callbacks and outcomes to events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The report key that names the event (``done`` is reserved by Tune).
KEY = "event"


@dataclass(frozen=True)
class Begin:
    resumed_after: int


#: Seconds between two :class:`Step` events a Ray trial reports.
STEP_EVERY_S = 2.0


@dataclass(frozen=True)
class Step:
    epoch: int
    step: int
    steps: int
    loss: float = float("nan")


@dataclass(frozen=True)
class Epoch:
    epoch: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    summary: dict[str, float]


@dataclass(frozen=True)
class Failed:
    reason: str
    storage: bool = False


Event = Begin | Step | Epoch | Finished | Failed


def to_report(event: Event) -> dict[str, Any]:
    """The flat dict a Ray report carries (an epoch's metrics at the top level, so Tune shows them)."""
    if isinstance(event, Begin):
        return {KEY: "begin", "resumed_after": event.resumed_after}
    if isinstance(event, Step):
        return {KEY: "step", "epoch": event.epoch, "step": event.step, "steps": event.steps, "loss": event.loss}
    if isinstance(event, Epoch):
        return {**event.metrics, "epoch": event.epoch, KEY: "epoch"}
    if isinstance(event, Finished):
        return {KEY: "finished", "summary": json.dumps(event.summary)}
    return {KEY: "failed", "failure_reason": event.reason, "storage": event.storage}


def from_report(result: dict[str, Any]) -> Event | None:
    """The event a Ray report carries; ``None`` for a report that is not one of ours (Tune's own results)."""
    kind = result.get(KEY)
    if kind == "begin":
        return Begin(int(result["resumed_after"]))
    if kind == "step":
        return Step(int(result["epoch"]), int(result["step"]), int(result["steps"]), float(result["loss"]))
    if kind == "epoch":
        return Epoch(int(result["epoch"]), dict(result))
    if kind == "finished":
        return Finished(json.loads(result["summary"]))
    if kind == "failed":
        return Failed(str(result.get("failure_reason", "failed")), bool(result.get("storage")))
    return None


def throttled_steps(
    emit: Callable[[Event], None], every_s: float = STEP_EVERY_S, now: Callable[[], float] = time.monotonic
) -> Callable[[int, int, int, float], None]:
    """An ``on_step(epoch, step, steps, loss)`` for the training loop that emits a :class:`Step` at most every
    ``every_s`` seconds (the first step at once)."""
    last = [-float("inf")]

    def on_step(epoch: int, step: int, steps: int, loss: float) -> None:
        t = now()
        if t - last[0] >= every_s:
            last[0] = t
            emit(Step(epoch, step, steps, float(loss)))

    return on_step


def run_reporting(
    spec: Any, output: Path | str, emit: Callable[[Event], None], *, claim_token: str | None = None, **run_kw: Any
) -> bool:
    """Run ``spec`` with :func:`bench.engine.loop.run_job` and emit its events; whether it finished.

    A deterministic failure (:class:`~bench.engine.loop.JobFailed`, a :class:`~methods.errors.UserError` such as
    missing data, or a live claim of another driver) is emitted as :class:`Failed` and not retried; any other
    exception (a crash) propagates, for the executor to retry from the job's checkpoint.

    Args:
        spec: the job.
        output: the grid's output folder.
        emit: where the events go.
        claim_token: the token of the driver that claimed the job (:mod:`bench.execute.lock`): the job refuses
            to train when another live driver holds its claim.
        run_kw: further arguments of ``run_job`` (device, log, on_step, cpus, dist).
    """
    from bench.engine.loop import JobFailed, run_job
    from bench.execute.lock import check_claim
    from bench.jobs.files import job_dir
    from methods.errors import UserError

    try:
        check_claim(job_dir(Path(output).resolve(), spec.job_hash), claim_token)
        result = run_job(
            spec,
            output,
            reporter=lambda epoch, metrics, _path: emit(Epoch(epoch, metrics)),
            on_begin=lambda done: emit(Begin(done)),
            **run_kw,
        )
    except (JobFailed, UserError) as err:
        emit(Failed(f"{type(err).__name__}: {err}", bool(getattr(err, "storage", False))))
        return False
    emit(Finished(result.metrics))
    return True
