"""The Ray Tune callback that makes the driver the single MLflow writer (see ``bench.execute.ray_tune``).

A module of its own so that Tune pickles the class by reference: Tune writes its run config, callbacks
included, to its experiment folder, and the driver-side state (MLflow client, console) must stay out.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from bench.execute.events import from_report
from bench.execute.state import GridRun
from bench.jobs.spec import JobSpec
from methods.errors import first_line


class PendingWatch:
    """Notices a stage whose jobs wait for resources while none runs (a request the free nodes cannot meet).

    ``check`` returns the line to show (empty when all is well); it says what each job asks and what the
    cluster has free, so a user who joined a busy cluster with ``--address auto`` knows why nothing starts.
    """

    def __init__(self, request: dict[str, float], after_s: float | None = None) -> None:
        self.request = request
        self.after_s = float(os.environ.get("DIFFBENCH_PENDING_WARN_S", 60)) if after_s is None else after_s
        self.since: float | None = None

    def check(self, trials: list[Any]) -> str:
        import ray

        statuses = [getattr(t, "status", "") for t in trials]
        pending = statuses.count("PENDING")
        if not pending or "RUNNING" in statuses:
            self.since = None
            return ""
        now = time.monotonic()
        self.since = self.since if self.since is not None else now
        waited = now - self.since
        if waited < self.after_s:
            return ""
        free, total = ray.available_resources(), ray.cluster_resources()
        parts = [
            f"{key} {free.get(key, 0):g} of {total.get(key, 0):g} free"
            for key in ("CPU", "GPU")
            if self.request.get(key.lower(), 0) > 0 or key == "CPU"
        ]
        asks = ", ".join(f"{v:g} {k.upper()}" for k, v in self.request.items() if v)
        return (
            f"{pending} job(s) waiting {waited:.0f}s for resources: each asks {asks}; the cluster has "
            f"{', '.join(parts)} (other work may hold them; see `ray status`)"
        )


def crash_reason(trial: Any) -> str:
    """Why a Tune trial crashed: ``crashed: <the last line of its error file>``, or ``crashed`` when there is none."""
    error_file = getattr(trial, "error_file", None)
    try:
        last = first_line(Path(error_file).read_text(), 500, last=True) if error_file else ""
    except OSError:  # no error file (yet)
        last = ""
    return f"crashed: {last}" if last else "crashed"


def keep_fatal(holder: str) -> Callable[[Callable], Callable]:
    """A Tune callback method decorator: what the method raises is kept on ``self.<holder>.fatal`` (the grid's
    :class:`GridRun`, a search's state) before Tune re-raises it wrapped, so the driver can raise the original."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception as err:
                getattr(self, holder).fatal = err
                raise

        return wrapper

    return decorate


_fatal_on_error = keep_fatal("grid")


#: Driver-side objects of the Tune callbacks of this process, by key (see DriverCallback).
_DRIVER_STATE: dict[int, tuple[GridRun, Callable[[], None], PendingWatch | None]] = {}


class DriverCallback(tune.Callback):
    """Forwards trial events to :class:`GridRun` (the single MLflow writer) in the driver.

    An exception raised here (an MLflow store that cannot be written, say) propagates out of
    ``Tuner.fit`` and ends the grid; ``diffbench run`` turns it into one line.
    """

    def __init__(self, grid: GridRun, on_change: Callable[[], None], watch: PendingWatch | None = None) -> None:
        self.key = id(grid)
        _DRIVER_STATE[self.key] = (grid, on_change, watch)
        self._last_notice = ""

    # Tune pickles its run config (callbacks included) to its experiment folder; the driver-side
    # state (MLflow client, console) is not picklable and stays in this process, found by key.
    def __getstate__(self) -> dict[str, Any]:
        return {"key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.key = state["key"]
        self._last_notice = ""

    @property
    def grid(self) -> GridRun:
        return _DRIVER_STATE[self.key][0]

    def on_change(self) -> None:
        _DRIVER_STATE[self.key][1]()

    def _spec(self, trial: Any) -> JobSpec:
        return JobSpec.from_dict(trial.config["job"])

    @_fatal_on_error
    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        watch = _DRIVER_STATE[self.key][2]
        if watch is None:
            return
        notice = watch.check(trials)
        if notice != self.grid.notice:
            self.grid.notice = notice
            if notice and not self._last_notice:  # once per episode of waiting, also in logs (non-TTY)
                self.grid.warn(notice)
            self._last_notice = notice
            self.on_change()

    @_fatal_on_error
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.grid.on_start(self._spec(trial))
        self.on_change()

    @_fatal_on_error
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        event = from_report(result)
        if event is not None:
            self.grid.handle(self._spec(trial), event)
        self.on_change()

    @_fatal_on_error
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = crash_reason(trial)
        self.grid.on_fail(self._spec(trial), reason)
        self.on_change()
