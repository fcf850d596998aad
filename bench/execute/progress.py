"""What a grid shows while it runs: one line per event, and in a terminal a live table with times and ETAs.

Two audiences, one source (the :class:`~bench.execute.job_state.JobState` of each job):

* **logs** (piped output, a scheduler's log file): a line when a job starts (with its ``train.log``), at
  every epoch (metric, elapsed, ETA), when it resumes, finishes or fails, and a grid line after each
  finished job — so ``tail -f`` on a 5-minute detection grid is never silent;
* **a terminal**: the same start/finish/failure lines (once each) scroll above a live table of the running
  jobs (epoch, step inside the epoch, metric, elapsed, ETA) under a header with the grid's counts, elapsed
  time and ETA.

All times come from one clock (:mod:`bench.clock`): the grid's elapsed time is the process's. ETAs are
estimates from times measured in this run: a job's remaining epochs at its mean epoch time (in its first epoch:
the epoch's steps at the mean step time so far), less the time already spent in the current epoch; the grid's
remaining jobs at the mean finished-job time shared by the jobs running at once. An ETA is never ``0:00`` for
work still running: unknown or overdue is ``—``, under a minute is ``<1 min``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from bench import clock as _clock
from bench.execute.job_state import JobState

#: What an ETA shows when it is unknown or overdue.
UNKNOWN = "—"


class Grid(Protocol):
    """What the view reads of the grid's state (:class:`bench.execute.state.GridRun`)."""

    states: dict[str, JobState]
    primary: dict[str, str]
    output: Path
    notice: str

    def counts(self) -> dict[str, int]: ...


def clock(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta_text(seconds: float | None) -> str:
    """An ETA of work still running: ``—`` when unknown or overdue (``<= 0``), ``<1 min``, else ``2:03``."""
    if seconds is None or seconds != seconds or seconds <= 0:
        return UNKNOWN
    if seconds < 60:
        return "<1 min"
    return clock(seconds)


class GridProgress:
    """Event lines and the live table of one grid (see the module docstring).

    ``started``: the clock reading elapsed times count from (the process's start, :mod:`bench.clock`).
    """

    def __init__(self, grid: Grid, console: Console, started: float | None = None) -> None:
        self.grid = grid
        self.console = console
        self.tty = console.is_terminal
        self.started = _clock.PROCESS_START if started is None else started

    def elapsed(self) -> float:
        """Seconds since :attr:`started` (the process's wall time so far)."""
        return _clock.now() - self.started

    # -- events ------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=True, soft_wrap=True)

    def job_started(self, st: JobState) -> None:
        log = self.grid.output / "jobs" / st.spec.job_hash / "train.log"
        word = "start " if st.attempts <= 1 else f"retry {st.attempts - 1}"
        self._line(f"[cyan]{word}[/] {escape(st.spec.label)} \\[{st.spec.job_hash}] log: {escape(str(log))}")

    def job_resumed(self, st: JobState) -> None:
        self._line(f"[cyan]resume[/] {st.spec.label} from epoch {st.resumed_from} (its checkpoint)")

    def job_epoch(self, st: JobState) -> None:
        if self.tty:
            return  # the live table shows it
        total = st.spec.recipe.get("epochs", "?")
        metric = f" {self.grid.primary[st.spec.task]} {st.metric:.2f}" if st.metric is not None else ""
        loss = f" loss {st.loss:.4g}" if st.loss is not None else ""
        self._line(f"epoch  {st.spec.label} {st.epoch}/{total}{metric}{loss} "
                   f"(elapsed {clock(self.job_elapsed(st))}, ETA {eta_text(self.job_eta(st))})")  # fmt: skip

    def job_finished(self, st: JobState) -> None:
        metric = f" {self.grid.primary[st.spec.task]} {st.metric:.2f}" if st.metric is not None else ""
        self._line(f"[green]done  [/] {st.spec.label}{metric} in {clock(self.job_elapsed(st))}; {self.summary()}")

    def job_failed(self, st: JobState) -> None:
        self._line(f"[red]FAILED[/] {escape(st.spec.label)} \\[{st.spec.job_hash}]: {escape(st.reason)}; "
                   f"{self.summary()}")  # fmt: skip

    def waiting(self, notice: str) -> None:
        self._line(f"[yellow]waiting[/] {escape(notice)}")

    # -- estimates ---------------------------------------------------------------------------
    @staticmethod
    def job_elapsed(st: JobState) -> float | None:
        if st.t_start is None:
            return None
        return (st.t_end or _clock.now()) - st.t_start

    @staticmethod
    def epoch_time(st: JobState) -> float | None:
        """The job's mean epoch time in this attempt; in its first epoch, the steps so far extrapolated."""
        if st.epoch_times:
            return statistics.mean(st.epoch_times)
        if st.steps and st.step and st.t_epoch is not None:
            return (_clock.now() - st.t_epoch) * st.steps / st.step
        return None

    @classmethod
    def job_eta(cls, st: JobState) -> float | None:
        """Seconds left: the epochs not done at the mean epoch time, less the time spent in the current one.

        ``None`` when unknown; ``0`` or less when the job runs past its estimate (or has no epoch left: it is
        writing its results).
        """
        total = int(st.spec.recipe.get("epochs", 0) or 0)
        per_epoch = cls.epoch_time(st)
        if per_epoch is None or not total:
            return None
        in_epoch = _clock.now() - st.t_epoch if st.t_epoch is not None and st.t_end is None else 0.0
        return max(0, total - st.epoch) * per_epoch - in_epoch

    def grid_eta(self) -> float | None:
        states = list(self.grid.states.values())
        done = [s for s in states if s.status == "finished" and s.t_start is not None and s.t_end is not None]
        running = [s for s in states if s.status == "running"]
        queued = sum(s.status == "queued" for s in states)
        per_job = statistics.mean(s.t_end - s.t_start for s in done) if done else None
        if per_job is None:
            projected = [self.job_elapsed(s) + max(e, 0) for s in running if (e := self.job_eta(s)) is not None]
            per_job = statistics.mean(projected) if projected else None
        if per_job is None:
            return None
        left = sum(max(e, 0) for s in running if (e := self.job_eta(s)) is not None) + queued * per_job
        return left / max(len(running), 1)

    def _times(self) -> str:
        """``elapsed 1:14, ETA ≈ 2:03`` (no ETA once nothing runs or waits)."""
        c = self.grid.counts()
        text = f"elapsed {clock(self.elapsed())}"
        if c["running"] or c["queued"]:
            text += f", ETA ≈ {eta_text(self.grid_eta())}"
        return text

    def summary(self) -> str:
        c = self.grid.counts()
        finished = c["finished"] + c["skipped"]
        return (f"{finished}/{len(self.grid.states)} done, {c['running']} running, {c['failed']} failed; "
                f"{self._times()}")  # fmt: skip

    # -- the live table ----------------------------------------------------------------------
    def render(self) -> Group:
        """The header and the running jobs; finished and failed jobs are the event lines above it (once each)."""
        c = self.grid.counts()
        head = (
            f"[bold]{len(self.grid.states)} jobs[/]: [green]{c['finished']} done[/], {c['skipped']} already done, "
            f"[cyan]{c['running']} running[/], [red]{c['failed']} failed[/], {c['queued']} queued — {self._times()}"
        )
        parts: list[Any] = [head]
        running = [s for s in self.grid.states.values() if s.status == "running"]
        if running:
            table = Table(box=None, pad_edge=False, show_header=True)
            for col in ("job", "hash", "epoch", "step", "metric", "elapsed", "ETA", ""):
                table.add_column(col, no_wrap=col in ("hash", "epoch", "step", "elapsed", "ETA"))
            for st in running[:20]:
                total = int(st.spec.recipe.get("epochs", 0) or 0)
                current = min(st.epoch + 1, total) if total else st.epoch + 1
                step = f"{st.step}/{st.steps}" if st.steps and st.step else UNKNOWN
                metric = f"{self.grid.primary[st.spec.task]} {st.metric:.2f}" if st.metric is not None else ""
                flag = f"[yellow]resumed@{st.resumed_from}[/]" if st.resumed_from else ""
                table.add_row(escape(st.spec.label), st.spec.job_hash, f"{current}/{total or '?'}", step, metric,
                              clock(self.job_elapsed(st)), eta_text(self.job_eta(st)), flag)  # fmt: skip
            if len(running) > 20:
                table.add_row(f"… and {len(running) - 20} more running", "", "", "", "", "", "", "")
            parts.append(table)
        if self.grid.notice:
            parts.append(f"[yellow]{self.grid.notice}[/]")
        return Group(*parts)
