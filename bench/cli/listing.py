"""``diffbench list``: methods, architectures, data sets, recipe presets and tasks, without importing torch
(unless a plugin does)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from typing import Annotated

import typer

from bench.cli.options import ImportOpt, console, load_plugins, user_errors
from methods.errors import unknown

WHAT = ("methods", "archs", "datasets", "presets", "tasks")


@user_errors
def list_cmd(
    what: Annotated[str, typer.Argument(help="methods | archs | datasets | presets | tasks")] = "methods",
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    imports: ImportOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object on stdout (presets: every recipe resolved, every grid expanded, with their sources).",
        ),
    ] = False,
) -> None:
    """List methods, architectures, data sets, presets or tasks.

    Presets are of two kinds: grid presets (`diffbench run --preset NAME`) and each task's recipe presets
    (`diffbench run --recipe NAME`, `diffbench train --preset NAME`).
    """
    if what not in WHAT:
        raise unknown("thing to list", what, WHAT)
    load_plugins(imports)
    from methods import catalog
    from tasks.spec import task_names, task_spec

    tasks = [task_spec(task).name] if task else task_names()
    if as_json:
        sys.stdout.write(json.dumps(_as_json(what, tasks), indent=1, default=str) + "\n")
        return
    if what == "methods":
        console.print(f"{catalog.VANILLA}: the student alone (every grid's baseline)", highlight=False)
        for name in catalog.method_names():  # the papers' order; plugins follow alphabetically
            doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", catalog.method_info(name).summary).replace("``", "")
            console.print(f"{name}: {doc}", highlight=False, markup=False)  # reST roles and literals as text
    elif what == "tasks":
        for name in tasks:
            t = task_spec(name)
            console.print(f"{name}: datasets {', '.join(t.datasets)}; metric {t.primary_metric}")
    else:
        if what == "presets":
            _grid_presets(tasks)
            console.print("[bold]recipe presets[/]: one job's training recipe (epochs, batch, lr, schedule), for "
                          "[bold]diffbench run --recipe NAME[/] and [bold]diffbench train --preset NAME[/]; per task:",
                          highlight=False)  # fmt: skip
        for name in tasks:
            t = task_spec(name)
            items = {"archs": t.archs(), "datasets": list(t.datasets), "presets": list(t.presets)}[what]
            console.print(f"{'  ' if what == 'presets' else ''}[bold]{name}[/]: {', '.join(items)}")
            if what == "archs" and name == "classification" and importlib.util.find_spec("timm"):
                console.print("  and timm/<model> for any timm model (timm is installed)", highlight=False)


def _grid_presets(tasks: list[str]) -> None:
    """The grid presets of ``tasks`` (``run --preset``): diffbench's own, then the papers' tables."""
    from bench.jobs.presets import GRID_PRESETS, PAPER_PREFIX, PAPER_PRESETS

    console.print("[bold]grid presets[/]: a whole grid (task, data set, pairs, methods, seeds, recipe), for "
                  "[bold]diffbench run --preset NAME[/] only:", highlight=False)  # fmt: skip
    ours = [n for n, g in GRID_PRESETS.items() if g["task"] in tasks]
    papers = [f"{PAPER_PREFIX}{n}" for n, p in PAPER_PRESETS.items() if p.grid["task"] in tasks]
    if ours:
        console.print(f"  [bold]diffbench[/]: {', '.join(ours)}", highlight=False)
    if papers:
        console.print(f"  [bold]papers[/] (each needs the paper's weights files): {', '.join(papers)}", highlight=False)


def _as_json(what: str, tasks: list[str]) -> dict:
    """What ``list WHAT --json`` prints."""
    from methods import catalog
    from tasks.spec import task_spec

    if what == "methods":
        return {n: {"summary": catalog.method_info(n).summary, "consumes": list(catalog.method_info(n).consumes),
                    "hparams": catalog.default_hparams(n)} for n in catalog.method_names()}  # fmt: skip
    if what == "presets":
        from bench.jobs.plan import presets_json

        out = presets_json()
        out["recipes"] = {t: r for t, r in out["recipes"].items() if t in tasks}
        return out
    specs = {t: task_spec(t) for t in tasks}
    if what == "tasks":
        return {t: {"datasets": list(s.datasets), "metric": s.primary_metric, "presets": list(s.presets)}
                for t, s in specs.items()}  # fmt: skip
    return {t: (s.archs() if what == "archs" else list(s.datasets)) for t, s in specs.items()}
