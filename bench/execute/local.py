"""The in-process executor (``--executor local``): jobs one by one in this process, teachers first.

It runs the same job function as the Ray executors (:func:`bench.execute.events.run_reporting`) and hands its
events to the grid's driver directly, with the same retry rule: a crash is retried up to ``max_failures``
times, each retry resuming from the job's last checkpoint; a deterministic failure is recorded at once. Useful
for debugging and profiling (no Ray start-up, one process, breakpoints work).
"""

from __future__ import annotations

from rich.live import Live

from bench.execute.events import run_reporting
from bench.execute.state import GridRun, stages
from bench.jobs.files import StorageFull, is_write_error
from bench.jobs.spec import JobSpec


def run_local(grid: GridRun, jobs: list[JobSpec], max_failures: int = 1, live: Live | None = None) -> None:
    """Run ``jobs`` one by one in this process (teachers first), with the same retry semantics as Ray."""
    import torch

    from bench.engine.device import available_cpus

    torch.set_num_threads(available_cpus())  # one fixed thread count per machine: see bench.engine.loop.deterministic
    for stage in stages(jobs):
        for spec in stage:
            reason = grid.teacher_failed(spec)
            if reason:
                grid.on_fail(spec, reason)
                continue
            grid.on_start(spec)
            for attempt in range(max_failures + 1):
                try:
                    run_reporting(
                        spec,
                        grid.output,
                        lambda event, s=spec: grid.handle(s, event),
                        claim_token=grid.lock.token if grid.lock is not None else None,
                        device=grid.device,
                        log=lambda _m: None,
                        on_step=lambda e, i, n, loss, s=spec: grid.on_step(s, e, i, n, loss),
                    )
                    break
                except StorageFull:
                    raise  # the job could not write its files: every other job would fail the same way
                except Exception as err:  # noqa: BLE001 - a crash: retry from the checkpoint, then give up
                    if grid.fatal is not None or is_write_error(err):
                        raise  # the driver could not write (the store is full): not the job's fault
                    if attempt == max_failures:
                        grid.on_fail(spec, f"crashed {attempt + 1}x; last: {type(err).__name__}: {err}")
                    else:
                        grid.console.print(f"[yellow]{spec.label} crashed ({err}); retrying from its checkpoint[/]")
            if live is not None:
                live.refresh()
