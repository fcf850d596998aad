"""The driver of ``diffbench run`` after expansion: check everything, lock the output, plan, execute, summarise.

The order is what makes a grid safe to start, stop and start again:

1. **Refuse bad input up front** (:mod:`.preflight`): resources, device, data folders, batch vs
   data size, teacher checkpoints; nothing is written and Ray never starts.
2. **Own the output folder**: prove it writable, take its lock (:mod:`.lock`) — one driver per
   folder — and close what a dead driver left ``RUNNING`` in its MLflow store.
3. **Plan without Ray**: finished jobs are skipped; a finished grid says "nothing to do" in a second.
4. **Run** on Ray (:mod:`.ray_tune`) or in-process (:mod:`.local`), with Ctrl-C and SIGTERM alike
   (:mod:`.signals`): running jobs are marked ``KILLED`` and resume from their checkpoints when the same
   command runs again (exit 130 / 143). A store or disk that cannot be written stops the grid with one line
   (exit 3); a re-run after freeing space resumes.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from bench.execute.lock import OutputLock, prepare_output
from bench.execute.options import RunOptions
from bench.execute.progress import clock
from bench.execute.signals import SIGNALLED, Terminated, cleanup, raise_pending
from bench.execute.state import GridRun
from bench.jobs.files import StorageFull, describe_os_error, is_write_error
from bench.jobs.spec import JobSpec
from bench.tracking.store import check_tracking_uri
from methods.errors import UserError


def _status(console: Console, text: str) -> None:
    """Say what the driver is doing before the first job starts (the first lines come within seconds)."""
    console.print(f"[dim]{text}…[/]", highlight=False)


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
    options: RunOptions,
    console: Console | None = None,
    config_text: str | None = None,
    command: str | None = None,
    lock: OutputLock | None = None,
    grid_tags: dict[str, str] | None = None,
) -> int:
    """Run ``jobs`` and return how many failed. Finished jobs (by hash) are skipped, never re-trained.

    Args:
        jobs: the expanded grid (teachers first).
        options: how to run it (validated when it was built).
        console: where progress goes (a terminal gets a live table).
        config_text: the grid's resolved configuration (YAML), written beside its jobs and to its parent run.
        command: the command as the user gave it, for the parent run's name.
        lock: the output folder's lock when the caller holds it already (``diffbench tune`` runs several grids
            under one lock); by default the grid takes it.
        grid_tags: further tags of the grid's parent run.

    Raises:
        UserError: bad input, found before anything is written or started.
        KeyboardInterrupt: Ctrl-C (:class:`~.signals.Terminated` for SIGTERM), after marking running jobs KILLED.
        StorageFull: the disk or store stopped taking writes; what could be marked is marked.
    """
    from bench.execute.preflight import check_device, check_machine, preflight

    console = console or Console()
    workers = options.workers
    for job in jobs:
        if job.recipe["batch_size"] % workers.count:
            raise UserError(
                f"batch size {job.recipe['batch_size']} ({job.label}) does not divide over {workers.count} workers: "
                "the recipe's batch is the global batch; pick a multiple of the worker count"
            )
    device_tag = check_device(options)
    ray = options.executor == "ray"
    gpus_per_job = 1.0 if ray and device_tag == "cuda" and options.gpus_per_job == 0 else options.gpus_per_job
    if ray and not options.address:
        check_machine(options, gpus_per_job)  # a local Ray instance has this machine's CPUs and GPUs, no more
    if ray and options.address and options.address != "auto":
        from bench.execute.ray_tune import check_reachable

        check_reachable(options.address)
    check_tracking_uri(options.tracking_uri)
    _status(console, f"checking the data and teacher checkpoints of {len(jobs)} jobs")
    preflight(jobs, options.output, console)
    output = prepare_output(options.output)
    if lock is not None:  # the caller holds it (diffbench tune) and releases it
        return _locked(jobs, options, console, config_text, command, lock, device_tag, gpus_per_job, grid_tags)
    lock = OutputLock(output)
    try:
        lock.acquire()
        return _locked(jobs, options, console, config_text, command, lock, device_tag, gpus_per_job, grid_tags)
    except KeyboardInterrupt:
        with cleanup():  # a second interrupt waits for the lock to be released, then exits
            lock.release()
        raise
    finally:
        lock.release()


def _locked(jobs: list[JobSpec], options: RunOptions, console: Console, config_text: str | None, command: str | None,
            lock: OutputLock, device_tag: str, gpus_per_job: float,
            grid_tags: dict[str, str] | None = None) -> int:  # fmt: skip
    """:func:`run_grid` once the output is ours: open the store, plan, start Ray if needed, execute."""
    output, workers, ray = lock.output, options.workers, options.executor == "ray"
    _status(console, f"opening the MLflow store in {output}")
    from bench.tracking.tracker import Tracker

    tracker = Tracker(output, options.tracking_uri, options.experiment)
    raise_pending()  # a signal that arrived while the store opened may have been swallowed by a finaliser
    grid = GridRun(jobs, output, tracker, device_tag, console, lock=lock, config_text=config_text,
                   command=command or shlex.join(["diffbench", *sys.argv[1:]]),
                   gpus_per_job=gpus_per_job if ray else 0.0, log_models=options.log_models,
                   workers=workers.count, teacher_cache=options.teacher_cache)  # fmt: skip
    adopt = tracker.close_stale([j.job_hash for j in jobs])
    todo = grid.plan(rerun=options.rerun)
    raise_pending()
    console.print(
        f"{len(jobs)} jobs, {len(jobs) - len(todo)} already finished, {len(todo)} to run "
        f"({options.executor}, {device_tag}); MLflow: {tracker.uri}",
        highlight=False,
    )
    if not todo and not grid.to_recover:
        if adopt is not None:  # the dead driver's grid had in fact finished every job
            tracker.end_grid(adopt, 0, 0)
        console.print("[green]nothing to do[/]: every job of this grid has finished")
        return 0
    if ray:
        from bench.execute.ray_tune import check_resources, init_ray

        _status(console, "starting Ray" if not options.address else f"joining the Ray cluster at {options.address}")
        console.print(init_ray(options.address), highlight=False)
        if workers.distributed:
            from bench.execute.ray_train import check_cluster

            check_cluster(workers)
        else:
            check_resources(options.cpus_per_job, gpus_per_job)
        raise_pending()
    return _execute(grid, todo, adopt, options, gpus_per_job, grid_tags or {})


def _execute(grid: GridRun, todo: list[JobSpec], adopt: str | None, options: RunOptions, gpus_per_job: float,
             grid_tags: dict[str, str]) -> int:  # fmt: skip
    console, tracker = grid.console, grid.tracker
    try:
        grid.parent_id = tracker.start_grid(
            grid_name(grid.command, len(grid.jobs)),
            {
                "command": f"diffbench {grid.command}"[:5000],
                "jobs": str(len(grid.jobs)),
                "executor": options.executor,
                **grid_tags,
            },
            [j.job_hash for j in grid.jobs],
            adopt=adopt,
            config_text=grid.config_text,
        )
        todo = grid.claim(todo)
        grid.recover()
        # A terminal gets a live table (refreshed from the grid's state twice a second, whatever the executor
        # is doing); a log gets event lines only (.progress).
        live_view = (
            Live(get_renderable=grid.view, console=console, refresh_per_second=2, transient=False)
            if console.is_terminal
            else nullcontext(None)
        )
        try:
            with live_view as live:
                try:
                    if options.executor == "local":
                        from bench.execute.local import run_local

                        run_local(grid, todo, max_failures=options.max_failures, live=live)
                    else:
                        from bench.execute.ray_tune import run_ray

                        run_ray(grid, todo, options, gpus_per_job, live=live)
                finally:
                    if live is not None:
                        live.refresh()
        finally:
            if not console.is_terminal:  # end the last event line
                console.print()
    except KeyboardInterrupt:
        # Finished jobs stay finished; running ones keep their last checkpoint and resume on a re-run. A second
        # interrupt waits for the runs to be marked and the lock released (see .signals), then exits at once.
        with cleanup():
            with contextlib.suppress(Exception):
                grid.kill_running()
                tracker.kill(grid.parent_id)
            if grid.lock is not None:
                grid.lock.release()
        if SIGNALLED.is_set():
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
    console.print(  # the time since the process started: what `time diffbench run ...` says, as the view's elapsed
        f"finished {counts['finished']}, failed {counts['failed']}, skipped {counts['skipped']} "
        f"in {clock(grid.progress.elapsed())}; results in {grid.output}",
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
