"""``diffbench doctor``: what a re-run of an output's grids would repair, found without training (:mod:`bench.execute.
doctor`). Imports neither torch nor Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench.cli.options import console, user_errors
from bench.tracking.schema import EXPERIMENT


@user_errors
def doctor(
    output: Annotated[Path, typer.Option("--output", "-o", help="Results folder of a run.")] = Path("results"),
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow server or store; default: OUTPUT/mlflow.db.")
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = EXPERIMENT,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Check every job folder of an output against its MLflow runs, without training or changing anything.

    Names each job that is damaged (an unreadable result.json, a missing or damaged student.pt), missing (a
    finished run without its folder), orphaned (a folder without a run), duplicated, failed, interrupted or stuck
    RUNNING, and what the next `diffbench run` of its grid would do: restore the files from the job's checkpoint or
    MLflow run, log it without training, resume it, or retrain it into a superseding run.
    Exit code: 0 when every job is whole, 1 when a re-run would repair something, 2 for bad input.
    """
    from bench.execute.doctor import examine

    findings = examine(output, tracking_uri, experiment)
    jobs = len({f.job_hash for f in findings})
    bad = [f for f in findings if not f.whole]
    if as_json:
        sys.stdout.write(json.dumps({"output": str(output.resolve()), "jobs": jobs,
                                     "findings": [f.to_dict() for f in findings]}) + "\n")  # fmt: skip
        raise typer.Exit(1 if bad else 0)
    for f in bad:
        console.print(f"[yellow]{escape(f.state)}[/] {f.job_hash} {escape(f.label)}: {escape(f.problem)} -> "
                      f"{escape(f.action)}", highlight=False, soft_wrap=True)  # fmt: skip
    whole = jobs - len({f.job_hash for f in bad})
    running = sum(f.state == "running" for f in findings)
    also = f", {running} running" if running else ""
    if bad:
        console.print(f"{jobs} jobs: {whole} whole{also}, {len({f.job_hash for f in bad})} to repair; the same "
                      "`diffbench run` command repairs them", highlight=False)  # fmt: skip
    else:
        console.print(f"{jobs} jobs: all whole{also}; nothing to repair", highlight=False)
    raise typer.Exit(1 if bad else 0)
