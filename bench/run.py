"""``diffbench run`` after expansion: open tracking, plan (skip finished jobs), execute, summarise."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from bench.executors import GridRun, check_resources, init_ray, run_local, run_ray
from bench.spec import JobSpec
from bench.tracking import Tracker
from methods.base import UserError


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
) -> int:
    """Run ``jobs`` and return how many failed. Finished jobs (by hash) are skipped, never re-trained."""
    import torch

    console = console or Console()
    output = Path(output).resolve()
    if executor == "ray":
        if device in ("auto", "cuda") and gpus_per_job == 0 and torch.cuda.is_available():
            gpus_per_job = 1.0
        if device.startswith("cuda") and gpus_per_job == 0:
            raise UserError("--device cuda with the Ray executor needs --gpus-per-job > 0 (e.g. 1 or 0.25)")
        device_tag = "cuda" if gpus_per_job > 0 else "cpu"
    else:
        from bench.train import pick_device

        device_tag = str(pick_device(device))
    if executor == "ray":
        init_ray(address)  # an unreachable cluster or an impossible request fails here, before anything is recorded
        check_resources(cpus_per_job, gpus_per_job)
    tracker = Tracker(output, tracking_uri, experiment)
    grid = GridRun(jobs, output, tracker, device_tag, console)
    todo = grid.plan()
    skipped = len(jobs) - len(todo)
    console.print(
        f"{len(jobs)} jobs, {skipped} already finished, {len(todo)} to run "
        f"({executor}, {device_tag}); MLflow: {tracker.uri}"
    )
    if not todo and not grid.to_recover:
        console.print("[green]nothing to do[/]: every job of this grid has finished")
        return 0
    grid.parent_id = tracker.start_grid(
        f"grid {time.strftime('%Y-%m-%d %H:%M:%S')}",
        {"command": shlex.join(["diffbench", *sys.argv[1:]])[:5000], "jobs": str(len(jobs)), "executor": executor},
    )
    grid.recover()
    started = time.perf_counter()
    with Live(grid.view(), console=console, refresh_per_second=2, transient=False) as live:
        try:
            if executor == "local":
                run_local(grid, todo, max_failures=max_failures, live=live)
            else:
                run_ray(
                    grid,
                    todo,
                    cpus_per_job=cpus_per_job,
                    gpus_per_job=gpus_per_job,
                    max_concurrent=max_concurrent,
                    max_failures=max_failures,
                    address=address,
                    live=live,
                )
        except KeyboardInterrupt:
            # Finished jobs stay finished; running ones keep their last checkpoint and resume on a re-run.
            for st in grid.states.values():
                if st.status == "running" and st.run_id:
                    tracker.kill(st.run_id)
            tracker.kill(grid.parent_id)
            console.print("[yellow]interrupted[/]: finished jobs are kept; run the same command again to resume")
            raise
        finally:
            live.update(grid.view())
    if not console.is_terminal:
        console.print()
    counts = grid.counts()
    tracker.end_grid(grid.parent_id, counts["failed"], counts["finished"])
    wall = time.perf_counter() - started
    console.print(
        f"finished {counts['finished']}, failed {counts['failed']}, skipped {counts['skipped']} "
        f"in {wall:.0f}s; results in {output}"
    )
    for st in grid.states.values():
        if st.status == "failed":
            console.print(f"[red]failed[/] {st.spec.label} ({st.spec.job_hash}): {st.reason}", highlight=False)
    if counts["failed"] == 0:
        console.print(
            "next: [bold]diffbench report[/] " + (f"--output {output}" if output != Path("results").resolve() else "")
        )
    return counts["failed"]
