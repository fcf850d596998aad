"""What a grid shows while it runs: one line per event, and in a terminal a live table with times and ETAs.

Two audiences, one source (the :class:`~bench.execute.job_state.JobState` of each job):

* **logs** (piped output, a scheduler's log file): a line when a job starts (with its ``train.log``), at
  every epoch (metric, elapsed, ETA), when it resumes, finishes or fails, and a grid line after each
  finished job — so ``tail -f`` on a 5-minute detection grid is never silent;
* **a terminal**: the same start/finish/failure lines scroll above a live table of the running jobs (epoch,
  progress inside the epoch when the job runs in this process, metric, elapsed, ETA), the finished ones
  collapsed into one line each, and the grid's elapsed time and ETA in the header.

ETAs are estimates from epoch times measured in this run: a job's remaining epochs at its mean epoch time,
the grid's remaining jobs at the mean finished-job time shared by the jobs running at once.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from bench.execute.job_state import JobState


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


class GridProgress:
    """Event lines and the live table of one grid (see the module docstring)."""

    def __init__(self, grid: Grid, console: Console) -> None:
        self.grid = grid
        self.console = console
        self.tty = console.is_terminal
        self.started = time.monotonic()

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
                   f"(elapsed {clock(self.job_elapsed(st))}, ETA {clock(self.job_eta(st))})")  # fmt: skip

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
        return (st.t_end or time.monotonic()) - st.t_start

    @staticmethod
    def job_eta(st: JobState) -> float | None:
        """Remaining epochs at the mean epoch time of this attempt."""
        total = int(st.spec.recipe.get("epochs", 0) or 0)
        if not st.epoch_times or not total:
            return None
        return max(0, total - st.epoch) * statistics.mean(st.epoch_times)

    def grid_eta(self) -> float | None:
        states = list(self.grid.states.values())
        done = [s for s in states if s.status == "finished" and s.t_start is not None and s.t_end is not None]
        running = [s for s in states if s.status == "running"]
        queued = sum(s.status == "queued" for s in states)
        per_job = statistics.mean(s.t_end - s.t_start for s in done) if done else None
        if per_job is None:
            projected = [self.job_elapsed(s) + e for s in running if (e := self.job_eta(s)) is not None]
            per_job = statistics.mean(projected) if projected else None
        if per_job is None:
            return None
        left = sum(e for s in running if (e := self.job_eta(s)) is not None) + queued * per_job
        return left / max(len(running), 1)

    def summary(self) -> str:
        c = self.grid.counts()
        finished = c["finished"] + c["skipped"]
        return (f"{finished}/{len(self.grid.states)} done, {c['running']} running, {c['failed']} failed; "
                f"elapsed {clock(time.monotonic() - self.started)}, ETA ≈ {clock(self.grid_eta())}")  # fmt: skip

    # -- the live table ----------------------------------------------------------------------
    def render(self) -> Group:
        c = self.grid.counts()
        head = (
            f"[bold]{len(self.grid.states)} jobs[/]: [green]{c['finished']} done[/], {c['skipped']} already done, "
            f"[cyan]{c['running']} running[/], [red]{c['failed']} failed[/], {c['queued']} queued — "
            f"elapsed {clock(time.monotonic() - self.started)}, ETA ≈ {clock(self.grid_eta())}"
        )
        parts: list[Any] = [head]
        running = [s for s in self.grid.states.values() if s.status == "running"]
        if running:
            table = Table(box=None, pad_edge=False, show_header=True)
            for col in ("job", "hash", "epoch", "step", "metric", "elapsed", "ETA", ""):
                table.add_column(col)
            for st in running[:20]:
                total = st.spec.recipe.get("epochs", "?")
                step = f"{st.step}/{st.steps}" if st.steps else ""
                metric = f"{self.grid.primary[st.spec.task]} {st.metric:.2f}" if st.metric is not None else ""
                flag = f"[yellow]resumed@{st.resumed_from}[/]" if st.resumed_from else ""
                table.add_row(st.spec.label, st.spec.job_hash, f"{st.epoch}/{total}", step, metric,
                              clock(self.job_elapsed(st)), clock(self.job_eta(st)), flag)  # fmt: skip
            parts.append(table)
        finished = [s for s in self.grid.states.values() if s.status in ("finished", "failed")]
        for st in finished[-8:]:
            if st.status == "failed":
                parts.append(f"[red]✗ {escape(st.spec.label)}[/]: {escape(st.reason[:100])}")
            else:
                metric = f" {st.metric:.2f}" if st.metric is not None else ""
                parts.append(f"[dim]✓ {st.spec.label}{metric} ({clock(self.job_elapsed(st))})[/]")
        if len(finished) > 8:
            parts.append(f"[dim]… and {len(finished) - 8} more finished[/]")
        if self.grid.notice:
            parts.append(f"[yellow]{self.grid.notice}[/]")
        return Group(*parts)
