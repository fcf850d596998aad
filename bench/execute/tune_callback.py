"""The driver side of one ``diffbench tune`` search: a Tune callback that records every trial in MLflow.

A module of its own so that Tune pickles the callback by reference (it writes its run config, callbacks included,
to the experiment folder, and reads it back when a killed search is restored); the driver-side state (MLflow
client, console, lock) stays in this process, found by the search's experiment name, which a restored search
has too.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from rich.console import Console
from rich.markup import escape

from bench.execute.events import KEY
from bench.execute.ray_callback import crash_reason, keep_fatal
from bench.jobs.files import StorageFull
from bench.jobs.spec import JobSpec
from bench.jobs.tuning import Search, describe_values, trial_job
from bench.tracking import schema as S
from bench.tracking.tracker import Tracker


@dataclass
class TrialRecord:
    """What the driver knows of one trial."""

    trial_id: str
    index: int
    values: dict[str, Any]
    spec: JobSpec
    run_id: str
    t_start: float = field(default_factory=time.monotonic)
    wall_before: float = 0.0
    scores: dict[int, float] = field(default_factory=dict)
    finished: dict[str, float] | None = None
    failed: str | None = None
    logged: set[int] = field(default_factory=set)

    @property
    def best(self) -> float | None:
        if self.finished is not None and S.BEST_SCORE in self.finished:
            return self.finished[S.BEST_SCORE]
        return max(self.scores.values()) if self.scores else None


@dataclass
class SearchState:
    """Driver-side state of one search (see the module docstring)."""

    search: Search
    tracker: Tracker
    tune_run: str
    output: Path
    console: Console
    primary: str
    scheduler: str
    time_budget_s: float | None
    device_share: float
    existing: dict[str, Any] = field(default_factory=dict)
    trials: dict[str, TrialRecord] = field(default_factory=dict)
    #: the trial ids Ray Tune's experiment holds (restored ones included): any other trial run of the search is a
    #: trial of a session whose Tune state was lost before it was saved.
    known: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    fatal: BaseException | None = None
    on_change: Callable[[], None] | None = None

    def next_index(self) -> int:
        taken = {int(r.data.tags.get(S.TRIAL_INDEX, -1)) for r in self.existing.values()}
        taken |= {t.index for t in self.trials.values()}
        return max(taken, default=-1) + 1

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{escape(self.search.name)}[/] {escape(text)}", highlight=False, soft_wrap=True)


#: Driver-side states of this process's searches, by experiment name (see TrialCallback).
_STATES: dict[str, SearchState] = {}


def register(name: str, state: SearchState) -> None:
    _STATES[name] = state


_fatal_on_error = keep_fatal("state")


class TrialCallback(tune.Callback):
    """Each trial of a search as an MLflow child run of the tune run: params, hold-out curve, summary, stop reason."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]

    @property
    def state(self) -> SearchState:
        return _STATES[self.name]

    def _record(self, trial: Any) -> TrialRecord:
        st = self.state
        rec = st.trials.get(trial.trial_id)
        if rec is not None:
            return rec
        config = trial.config
        values = {**{f"hp.{k}": v for k, v in config.get("hp", {}).items()},
                  **{f"recipe.{k}": v for k, v in config.get("recipe", {}).items()}}  # fmt: skip
        spec = trial_job(st.search.base, dict(config.get("hp", {})), dict(config.get("recipe", {})), trial.trial_id)
        old = st.existing.get(trial.trial_id)
        index = int(old.data.tags[S.TRIAL_INDEX]) if old is not None else st.next_index()
        run_id = st.tracker.start_trial(spec, st.tune_run, st.search.name, trial.trial_id, index, values, existing=old)
        rec = TrialRecord(trial.trial_id, index, values, spec, run_id)
        if old is not None:
            rec.wall_before = float(old.data.metrics.get("wall_s", 0.0))
            rec.logged = {m.step for m in st.tracker.client.get_metric_history(run_id, S.SCORE)}
            for m in st.tracker.client.get_metric_history(run_id, S.SCORE):
                rec.scores[m.step] = m.value
        st.trials[trial.trial_id] = rec
        return rec

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        self.state.known.update(t.trial_id for t in trials)

    @_fatal_on_error
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        st = self.state
        rec = self._record(trial)
        rec.t_start = time.monotonic()
        st.say(f"trial {rec.index} started: {describe_values(rec.values)}")

    @_fatal_on_error
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        st = self.state
        rec = self._record(trial)
        kind = result.get(KEY)
        if kind in ("epoch", "finished") and S.SCORE in result and "epoch" in result:
            self._log_epoch(rec, result)
        if kind == "finished":
            summary = json.loads(result["summary"])
            best = summary.get(f"best_{st.primary}")
            rec.finished = {S.BEST_SCORE: float(best)} if isinstance(best, int | float) else {}
            rec.finished.update({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        elif kind == "failed":
            if result.get("storage"):
                raise StorageFull(str(result.get("failure_reason")))
            rec.failed = str(result.get("failure_reason") or "failed")
        if st.on_change is not None:
            st.on_change()

    def _log_epoch(self, rec: TrialRecord, result: dict[str, Any]) -> None:
        """One epoch of a trial: its hold-out metrics (``holdout/<metric>``), the search's score, the training terms."""
        st = self.state
        epoch, score = int(result["epoch"]), float(result[S.SCORE])
        rec.scores[epoch] = score
        if epoch in rec.logged:
            return
        metrics = {f"{S.HOLDOUT_PREFIX}{k[4:]}": float(v) for k, v in result.items()
                   if k.startswith("val/") and isinstance(v, int | float)}  # fmt: skip
        metrics.update(
            {
                k: float(v)
                for k, v in result.items()
                if (k.startswith("train/") or k in ("lr", "epoch_time_s")) and isinstance(v, int | float)
            }
        )
        metrics[S.SCORE] = score
        st.tracker.log_epoch(rec.run_id, epoch, metrics)
        rec.logged.add(epoch)
        current = metrics.get(f"{S.HOLDOUT_PREFIX}{st.primary}")
        shown = f"hold-out {st.primary} {current:.2f}" if current is not None else "no evaluation"
        st.say(f"trial {rec.index} epoch {epoch}: {shown} (best {score:.2f})")

    def _end(self, trial: Any, crashed: str | None = None) -> None:
        st = self.state
        rec = self._record(trial)
        if crashed is not None and rec.failed is None:
            rec.failed = crashed
        if rec.finished is not None:
            reason = "completed"
        elif rec.failed is not None:
            reason = f"failed: {rec.failed}"
        elif st.time_budget_s is not None and time.monotonic() - st.started >= st.time_budget_s:
            reason = "stopped: time budget"
        else:
            last = max(rec.scores, default=0)
            reason = f"stopped early by {st.scheduler} after epoch {last}"
        wall = rec.wall_before + (time.monotonic() - rec.t_start)
        metrics = {
            "wall_s": wall,
            "device_hours": wall / 3600 * st.device_share,
            "epochs_run": max(rec.scores, default=0),
        }
        best = rec.best
        if best is not None and math.isfinite(best):
            metrics[S.BEST_SCORE] = best
        for k, v in (rec.finished or {}).items():
            if k != S.BEST_SCORE and k.startswith(("best_", "last_")):
                metrics[f"{S.HOLDOUT_PREFIX}{k}"] = v
        st.tracker.end_trial(rec.run_id, metrics, reason, failed=rec.failed is not None)
        shown = f", best hold-out {st.primary} {best:.2f}" if best is not None else ""
        st.say(f"trial {rec.index} {reason}{shown}")
        if st.on_change is not None:
            st.on_change()

    @_fatal_on_error
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    @_fatal_on_error
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = crash_reason(trial)
        self._end(trial, crashed=reason)
