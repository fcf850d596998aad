"""``diffbench run`` after expansion: check everything, lock the output, plan, execute, summarise.

The order is what makes a grid safe to start, stop and start again:

1. **Refuse bad input up front** (:mod:`bench.execute.preflight`): resources, device, data folders, batch vs
   data size, teacher checkpoints; nothing is written and Ray never starts.
2. **Own the output folder**: prove it writable, take its lock (:mod:`bench.execute.lock`) — one driver per
   folder — and close what a dead driver left ``RUNNING`` in its MLflow store.
3. **Plan without Ray**: finished jobs are skipped; a finished grid says "nothing to do" in a second.
4. **Run** on Ray (or in-process), with Ctrl-C and SIGTERM alike: running jobs are marked ``KILLED``
   and resume from their checkpoints when the same command runs again (exit 130 / 143). A store or
   disk that cannot be written stops the grid with one line (exit 3); a re-run after freeing space resumes.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from bench.execute.state import GridRun
from bench.execute.lock import OutputLock, StorageFull, check_writable, describe_os_error, is_write_error
from bench.jobs.spec import JobSpec
from bench.tracking.tracker import Tracker, check_tracking_uri
from methods.base import UserError

#: ``diffbench run``'s exit code when the output folder or MLflow store stopped taking writes mid-grid.
EXIT_STORAGE = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, Kubernetes), handled exactly like Ctrl-C; exit code 143."""

    exit_code = 143


#: Set once SIGTERM arrived: Tune re-raises interrupts as plain KeyboardInterrupts, losing the subclass.
_SIGNALLED = threading.Event()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread for the duration of the block.

    Ray's ``ray.init`` installs a SIGTERM handler that calls ``sys.exit`` from whatever the driver is
    doing (and the process then dies in Ray's C++ teardown, rc 134, runs left ``RUNNING``); this one is
    installed after it and restores the previous handler on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        _SIGNALLED.set()
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _status(console: Console) -> Callable[[str], None]:
    """Say what the driver is doing before the first job starts (the first lines come within seconds)."""

    def say(text: str) -> None:
        console.print(f"[dim]{text}…[/]", highlight=False)

    return say


def grid_name(command: str, jobs: int) -> str:
    """A parent run's name built from its command: ``run --task detection --methods diffkd,fitnet (7 jobs)``.

    The MLflow UI lists grids by name; "grid 2026-12-01 10:00:00" said nothing about what ran.
    """
    words = command.removeprefix("diffbench ").split()
    kept = [w for i, w in enumerate(words) if w not in ("--output", "-o") and (i == 0 or words[i - 1] not in
                                                                               ("--output", "-o"))]  # fmt: skip
    return f"{' '.join(kept)[:200]} ({jobs} jobs)"


def run_grid(
    jobs: list[JobSpec],
    output: Path,
    executor: str = "ray",
    tracking_uri: str | None = None,
    experiment: str = "diffbench",
    device: str = "auto",
    cpus_per_job: float | None = None,
    gpus_per_job: float = 0.0,
    max_concurrent: int | None = None,
    max_failures: int = 1,
    address: str | None = None,
    console: Console | None = None,
    workers_per_job: int | None = None,
    config_text: str | None = None,
    rerun: bool = False,
    step_progress: bool = False,
    command: str | None = None,
    log_models: bool = False,
) -> int:
    """Run ``jobs`` and return how many failed. Finished jobs (by hash) are skipped, never re-trained.

    Raises:
        UserError: bad input, found before anything is written or started.
        KeyboardInterrupt: Ctrl-C (:class:`Terminated` for SIGTERM), after marking running jobs KILLED.
        StorageFull: the disk or store stopped taking writes; what could be marked is marked.
    """
    from bench.execute.ray_tune import validate_request
    from bench.execute.preflight import check_device, preflight

    console = console or Console()
    if executor not in ("ray", "local"):
        raise UserError(f"unknown executor {executor!r}; valid: ray, local")
    if max_failures < 0:
        raise UserError(f"--max-failures must be >= 0, got {max_failures}")
    from bench.execute.ray_train import Workers

    validate_request(cpus_per_job, gpus_per_job, max_concurrent)
    workers = Workers.plan(workers_per_job, gpus_per_job, cpus_per_job)
    if workers.distributed and executor != "ray":
        raise UserError("jobs of several workers run on Ray Train: use the ray executor (not --executor local)")
    for job in jobs:
        if job.recipe["batch_size"] % workers.count:
            raise UserError(
                f"batch size {job.recipe['batch_size']} ({job.label}) does not divide over {workers.count} workers: "
                "the recipe's batch is the global batch; pick a multiple of the worker count"
            )
    device_tag = check_device(device, executor, gpus_per_job, address)
    if executor == "ray" and device_tag == "cuda" and gpus_per_job == 0:
        gpus_per_job = 1.0
    if executor == "ray" and address and address != "auto":
        from bench.execute.ray_tune import check_reachable

        check_reachable(address)
    check_tracking_uri(tracking_uri)
    say = _status(console)
    say(f"checking the data and teacher checkpoints of {len(jobs)} jobs")
    preflight(jobs, Path(output), console)
    output = check_writable(output)
    with OutputLock(output) as lock, sigterm_as_interrupt():
        say(f"opening the MLflow store in {output}")
        tracker = Tracker(output, tracking_uri, experiment)
        tracker.log_models = log_models
        tracker.warn = lambda line: (console or Console(stderr=True)).print(f"warning: {escape(line)}", highlight=False)
        grid = GridRun(jobs, output, tracker, device_tag, console, lock=lock, config_text=config_text,
                       command=command or shlex.join(["diffbench", *sys.argv[1:]]),
                       gpus_per_job=gpus_per_job if executor == "ray" else 0.0)  # fmt: skip
        hashes = [j.job_hash for j in jobs]
        adopt = tracker.close_stale(hashes)
        todo = grid.plan(rerun=rerun)
        skipped = len(jobs) - len(todo)
        console.print(
            f"{len(jobs)} jobs, {skipped} already finished, {len(todo)} to run "
            f"({executor}, {device_tag}); MLflow: {tracker.uri}",
            highlight=False,
        )
        if not todo and not grid.to_recover:
            if adopt is not None:  # the dead driver's grid had in fact finished every job
                tracker.end_grid(adopt, 0, 0)
            console.print("[green]nothing to do[/]: every job of this grid has finished")
            return 0
        if executor == "ray":
            from bench.execute.ray_tune import check_resources, init_ray

            say("starting Ray" if not address else f"joining the Ray cluster at {address}")
            console.print(init_ray(address), highlight=False)
            if workers.distributed:
                from bench.execute.ray_train import check_cluster

                check_cluster(workers)
            else:
                check_resources(cpus_per_job, gpus_per_job)
        with sigterm_as_interrupt():  # again: ray.init replaced the handler
            return _execute(grid, todo, adopt, executor, cpus_per_job, gpus_per_job, max_concurrent, max_failures,
                            workers)  # fmt: skip


def _execute(
    grid: GridRun,
    todo: list[JobSpec],
    adopt: str | None,
    executor: str,
    cpus_per_job: float | None,
    gpus_per_job: float,
    max_concurrent: int | None,
    max_failures: int,
    workers: Any,
) -> int:
    from bench.execute.ray_tune import run_local, run_ray

    console, tracker = grid.console, grid.tracker
    started = time.perf_counter()
    try:
        grid.parent_id = tracker.start_grid(
            grid_name(grid.command, len(grid.jobs)),
            {"command": f"diffbench {grid.command}"[:5000], "jobs": str(len(grid.jobs)), "executor": executor},
            [j.job_hash for j in grid.jobs],
            adopt=adopt,
            config_text=grid.config_text,
        )
        todo = grid.claim(todo)
        grid.recover()
        # A terminal gets a live table (refreshed from the grid's state twice a second, whatever the executor
        # is doing); a log gets event lines only (bench.execute.progress).
        live_view = Live(get_renderable=grid.view, console=console, refresh_per_second=2, transient=False) \
            if console.is_terminal else nullcontext(None)
        try:
            with live_view as live:
                try:
                    if executor == "local":
                        run_local(grid, todo, max_failures=max_failures, live=live)
                    else:
                        run_ray(grid, todo, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job,
                                max_concurrent=max_concurrent, max_failures=max_failures, live=live,
                                workers=workers)
                finally:
                    if live is not None:
                        live.refresh()
        finally:
            if not console.is_terminal:  # end the last event line
                console.print()
    except KeyboardInterrupt:
        # Finished jobs stay finished; running ones keep their last checkpoint and resume on a re-run.
        with contextlib.suppress(Exception):
            grid.kill_running()
            tracker.kill(grid.parent_id)
        console.print("[yellow]interrupted[/]: finished jobs are kept; run the same command again to resume")
        if _SIGNALLED.is_set():
            raise Terminated() from None
        raise
    except Exception as err:
        cause = grid.fatal or err  # what a Tune callback raised reaches us wrapped in a TuneError
        if not (isinstance(cause, StorageFull) or is_write_error(cause)):
            raise
        # Mark what can still be marked; the same command resumes once there is space again.
        with contextlib.suppress(Exception):
            grid.kill_running()
            tracker.kill(grid.parent_id)
        why = str(cause) if isinstance(cause, StorageFull) else describe_os_error(cause)
        raise StorageFull(
            f"cannot write to {grid.output} or its MLflow store ({why}); finished jobs are "
            "kept: free space (or make it writable) and run the same command again to resume"
        ) from None
    counts = grid.counts()
    tracker.end_grid(grid.parent_id, counts["failed"], counts["finished"])
    wall = time.perf_counter() - started
    console.print(
        f"finished {counts['finished']}, failed {counts['failed']}, skipped {counts['skipped']} "
        f"in {wall:.0f}s; results in {grid.output}",
        highlight=False,
    )
    for st in grid.states.values():
        if st.status == "failed":
            console.print(f"[red]failed[/] {escape(st.spec.label)} ({st.spec.job_hash}): {escape(st.reason)}",
                          highlight=False)  # fmt: skip
    if counts["failed"] == 0:
        console.print(
            "next: [bold]diffbench report[/] "
            + (f"--output {grid.output}" if grid.output != Path("results").resolve() else ""),
            highlight=False,
        )
    return counts["failed"]
