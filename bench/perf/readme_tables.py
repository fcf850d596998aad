"""Regenerate the README's default tables from fresh runs: each default grid run as a user runs it, timed.

    python -m bench.perf.readme_tables [--tasks classification,detection,segmentation] [--work DIR] [--reuse]
                                       [--readme README.md] [--dry-run]

For every task it runs ``diffbench run --task TASK --output DIR/TASK`` exactly as the README's first command does
(a subprocess, the default executor, a fresh output folder and a fresh teacher cache unless ``--reuse``), times
it on the wall clock, then renders ``diffbench report --task TASK --output DIR/TASK --format markdown``. The
README holds one block per task between ``<!-- default-table: TASK -->`` and ``<!-- /default-table -->``; each
is replaced by a heading (the command, the seeds, the wall time, the machine's cores, the commit) and the
report as printed. The time in the README's first command (``~N minutes on 2 CPU cores``) is updated from the
classification run when it ran on 2 cores. ``--dry-run`` prints the new blocks without writing.

Nothing here is a test: it trains the default grids (minutes to an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.tracking.version import git_commit

TASKS = ("classification", "detection", "segmentation")
BEGIN = "<!-- default-table: {task} -->"
END = "<!-- /default-table -->"
#: The README's first command's comment: "(…; ~5 minutes on 2 CPU cores)".
FIRST_TIME = re.compile(r"(# 1\. set up and run the main job[^\n]*?)~?\d+ minutes on 2 CPU cores")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, text=True, capture_output=True)


def run_default(task: str, work: Path, reuse: bool, env: dict[str, str]) -> tuple[float, str]:
    """Run the task's default grid in ``work/task``; return (wall seconds, the markdown report)."""
    out = work / task
    if out.exists() and not reuse:
        raise SystemExit(f"{out} exists: pass another --work, remove it, or --reuse its finished jobs")
    t0 = time.monotonic()
    # classification is the default grid: `diffbench run` with no --task (3 seeds); `--task classification` alone
    # names no grid preset and runs one seed
    which = [] if task == "classification" else ["--task", task]
    print(f"[{time.strftime('%H:%M:%S')}] diffbench run {' '.join(which)} --output {out}", flush=True)
    run = subprocess.run([sys.executable, "-m", "bench.cli", "run", *which, "--output", str(out)], env=env)
    wall = time.monotonic() - t0
    if run.returncode != 0:
        raise SystemExit(f"diffbench run --task {task} exited with {run.returncode}")
    report = _cli("report", "--task", task, "--output", str(out), "--format", "markdown", env=env)
    if report.returncode != 0:
        raise SystemExit(f"diffbench report --task {task}: {report.stderr.strip()}")
    return wall, report.stdout.strip()


def block(task: str, wall: float, report: str, reused: bool) -> str:
    """The README block of one task (heading line and the report as printed)."""
    cores = os.cpu_count() or 1
    how = "resumed from earlier runs" if reused else "from scratch"
    cmd = (
        "diffbench run && diffbench report"
        if task == "classification"
        else (f"diffbench run --task {task} && diffbench report --task {task}")
    )
    head = (f"`{cmd}` at commit {git_commit()}: {wall / 60:.1f} min wall on {cores} CPU cores ({how}, "
            f"default executor, MLflow model logging on), {time.strftime('%Y-%m-%d')}.")  # fmt: skip
    return f"{BEGIN.format(task=task)}\n{head}\n\n{report}\n{END}"


def replace_block(text: str, task: str, new: str) -> str:
    start = text.find(BEGIN.format(task=task))
    if start < 0:
        raise SystemExit(f"the README has no '{BEGIN.format(task=task)}' block")
    end = text.find(END, start)
    if end < 0:
        raise SystemExit(f"the README's {task} block has no '{END}'")
    return text[:start] + new + text[end + len(END) :]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--work", type=Path, default=Path("results-readme"))
    ap.add_argument("--reuse", action="store_true", help="resume finished jobs in --work (the time is then not fresh)")
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(TASKS)}")
    work = args.work.resolve()
    env = dict(os.environ)
    if not args.reuse:  # a fresh teacher cache: every teacher trains, as on a new machine
        env["DIFFBENCH_CACHE"] = str(work / "cache")
    text = args.readme.read_text()
    for task in tasks:
        wall, report = run_default(task, work, args.reuse, env)
        new = block(task, wall, report, args.reuse)
        print(new, flush=True)
        text = replace_block(text, task, new)
        if task == "classification" and (os.cpu_count() or 1) == 2 and not args.reuse:
            text = FIRST_TIME.sub(rf"\g<1>~{max(1, round(wall / 60))} minutes on 2 CPU cores", text)
        if not args.dry_run:
            args.readme.write_text(text)  # after every task: an hour of detection is not lost to a later failure


if __name__ == "__main__":
    main()
