"""Benchmark: Ray's overhead per job against the in-process executor, on a grid of tiny jobs.

    python -m bench.perf.executor_overhead --seeds 4

Runs the same grid of tiny jobs (digits, 1 epoch, 1 step each: almost all of a job's time is then
fixed cost) three times into fresh output folders: the local executor, Ray one job at a time
(``--max-concurrent 1``, the per-job overhead), and Ray with its default concurrency. Prints wall
times and the overhead per job. Ray's start-up (``ray.init``) is timed separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench.execute.driver import run_grid
from bench.execute.options import RunOptions
from bench.jobs.grid import GridSpec, expand


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4, help="seeds per method (jobs = 1 teacher + 5 x seeds)")
    args = ap.parse_args()
    grid = GridSpec(
        task="classification",
        dataset="digits",
        pairs=(("resnet8", "resnet8"),),
        seeds=args.seeds,
        recipe={"epochs": 1, "batch_size": 16, "max_steps": 1},
    )
    jobs = expand(grid)
    quiet = Console(quiet=True)
    console = Console()
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    console.print(f"ray.init: {time.perf_counter() - t0:.1f}s; {len(jobs)} jobs of 1 step each")
    walls = {}
    for name, kw in (
        ("local", {"executor": "local"}),
        ("ray, 1 at a time", {"executor": "ray", "max_concurrent": 1}),
        ("ray, 2 CPUs", {"executor": "ray"}),
    ):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            failed = run_grid(jobs, RunOptions(output=Path(d), device="cpu", **kw), console=quiet)
            walls[name] = time.perf_counter() - t0
            assert failed == 0, f"{failed} jobs failed"
        console.print(f"{name:>18}: {walls[name]:6.1f}s  ({walls[name] / len(jobs):.2f}s per job)")
    per_job = (walls["ray, 1 at a time"] - walls["local"]) / len(jobs)
    console.print(f"Ray overhead per job (serial): {per_job:.2f}s")
    ray.shutdown()


if __name__ == "__main__":
    main()
