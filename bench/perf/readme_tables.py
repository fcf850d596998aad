"""Regenerate the README's default tables from fresh runs: each default grid run as a user runs it, timed.

    python -m bench.perf.readme_tables [--tasks classification,detection,segmentation] [--work DIR] [--reuse]
                                       [--readme README.md] [--dry-run]

For every task it runs ``diffbench run --task TASK --output DIR/TASK`` exactly as the README's first command does
(a subprocess, the default executor, a fresh output folder and a fresh teacher cache unless ``--reuse``), times
it on the wall clock, then renders ``diffbench report --task TASK --output DIR/TASK --format markdown`` (and, for
classification, the same with ``--metric excess_nll``: the default data set's calibration score). A fresh run
records its wall time, commit and cores in ``DIR/TASK/readme_tables.json``; ``--reuse`` on a folder whose every job
had finished (nothing trained again) reports those recorded figures, so a table can be re-rendered after a change
to the report without training again. The
README holds one block per task between ``<!-- default-table: TASK -->`` and ``<!-- /default-table -->``; each
is replaced by a heading (the command, the seeds, the wall time, the machine's cores, the commit) and the
report as printed. The time in the README's first command (``~N minutes on 2 CPU cores``) is updated from the
classification run when it ran on 2 cores. ``--dry-run`` prints the new blocks without writing.

Nothing here is a test: it trains the default grids (minutes to an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import json
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
#: Metrics rendered after each task's primary one (``diffbench report --metric``).
EXTRA_METRICS: dict[str, tuple[str, ...]] = {"classification": ("excess_nll",)}
#: Where a fresh run records its wall time, commit, cores and date (in the task's output folder).
FRESH_FILE = "readme_tables.json"
#: What `diffbench run` prints when every job of its grid had finished.
NOTHING_TO_DO = "nothing to do: every job of this grid has finished"
#: The README's first command's comment: "(…; ~5 minutes on 2 CPU cores)".
FIRST_TIME = re.compile(r"(# 1\. set up and run the main job[^\n]*?)~?\d+ minutes on 2 CPU cores")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, text=True, capture_output=True)


def run_default(task: str, work: Path, reuse: bool, env: dict[str, str]) -> tuple[dict, str]:
    """Run the task's default grid in ``work/task``; return (how it ran: wall seconds, commit, cores, date, fresh?,
    the markdown report)."""
    out = work / task
    if out.exists() and not reuse:
        raise SystemExit(f"{out} exists: pass another --work, remove it, or --reuse its finished jobs")
    t0 = time.monotonic()
    # classification is the default grid: `diffbench run` with no --task (3 seeds); `--task classification` alone
    # names no grid preset and runs one seed
    which = [] if task == "classification" else ["--task", task]
    print(f"[{time.strftime('%H:%M:%S')}] diffbench run {' '.join(which)} --output {out}", flush=True)
    run = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", *which, "--output", str(out)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    printed = []
    for line in run.stdout or ():  # shown as it comes, and kept
        print(line, end="", flush=True)
        printed.append(line)
    wall = time.monotonic() - t0
    if run.wait() != 0:
        raise SystemExit(f"diffbench run --task {task} exited with {run.returncode}")
    how = {"wall_s": wall, "commit": git_commit(), "cores": os.cpu_count() or 1, "date": time.strftime("%Y-%m-%d"),
           "fresh": not reuse}  # fmt: skip
    recorded = out / FRESH_FILE
    if not reuse:
        out.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(how, indent=1))
    elif recorded.is_file() and NOTHING_TO_DO in " ".join("".join(printed).split()):
        how = {**json.loads(recorded.read_text()), "fresh": True}  # nothing trained: the fresh run's figures hold
    tables = []
    for metric in (None, *EXTRA_METRICS.get(task, ())):
        extra = ["--metric", metric] if metric else []
        report = _cli("report", "--task", task, "--output", str(out), "--format", "markdown", *extra, env=env)
        if report.returncode != 0:
            raise SystemExit(f"diffbench report --task {task} {' '.join(extra)}: {report.stderr.strip()}")
        tables.append(report.stdout.strip())
    return how, "\n\n".join(tables)


def block(task: str, how: dict, report: str) -> str:
    """The README block of one task (heading line and the report as printed); ``how`` from :func:`run_default`."""
    what = "from scratch" if how["fresh"] else "resumed from earlier runs"
    cmd = (
        "diffbench run && diffbench report"
        if task == "classification"
        else (f"diffbench run --task {task} && diffbench report --task {task}")
    )
    head = (f"`{cmd}` at commit {how['commit']}: {how['wall_s'] / 60:.1f} min wall on {how['cores']} CPU cores "
            f"({what}, default executor, MLflow model logging on), {how['date']}.")  # fmt: skip
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
    ap.add_argument("--reuse", action="store_true",
                    help="resume finished jobs in --work (the time is then not fresh, unless nothing trained again: "
                    "the recorded fresh run's figures are shown)")  # fmt: skip
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
        how, report = run_default(task, work, args.reuse, env)
        new = block(task, how, report)
        print(new, flush=True)
        text = replace_block(text, task, new)
        if task == "classification" and how["cores"] == 2 and how["fresh"]:
            text = FIRST_TIME.sub(rf"\g<1>~{max(1, round(how['wall_s'] / 60))} minutes on 2 CPU cores", text)
        if not args.dry_run:
            args.readme.write_text(text)  # after every task: an hour of detection is not lost to a later failure


if __name__ == "__main__":
    main()
