"""Tables at 80 columns: every job hash whole (it is what `diffbench export <hash>` takes), no value cut to "…"."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from bench.cli.tables import fitted_table


def _render(renderable) -> str:
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(renderable)
    return buf.getvalue()


@pytest.mark.parametrize("preset", ["default", "smoke"])
def test_the_dry_run_table_shows_every_hash_whole_at_80_columns(preset):
    from bench.cli.run import dry_run_table
    from bench.jobs.grid import expand, grid_from_preset

    jobs = expand(grid_from_preset(preset), device="cpu")
    text = _render(dry_run_table(jobs))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    hashes = re.findall(r"\b[0-9a-f]{12}\b", text)
    assert hashes == [j.job_hash for j in jobs]  # one per row, in order, none wrapped or cut
    for j in jobs:  # the job's label, perhaps wrapped at its spaces, never cut
        assert all(word in text for word in j.label.split())


def test_a_gpu_speed_table_leaves_out_columns_rather_than_cutting_values():
    from bench.cli.speed import SPEED_DROPPABLE
    from bench.speed.table import COLUMNS

    row = ["diffkd", "bf16+channels_last", "123.45", "12.34", "12,345", "2.34", "234.5", "45.6", "54,321",
           "321.9", "1.23×", "1.05×"]  # fmt: skip
    console = Console(file=io.StringIO(), width=80, color_system=None)
    table, dropped = fitted_table(console, "t", COLUMNS, [row, row], droppable=SPEED_DROPPABLE,
                                  left=("method", "variant"))  # fmt: skip
    text = _render(table)
    assert dropped and dropped == list(SPEED_DROPPABLE[: len(dropped)])  # in the stated order, only as needed
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for col, value in zip(COLUMNS, row, strict=True):
        assert (value in text) == (col not in dropped)
    wide = Console(file=io.StringIO(), width=200, color_system=None)
    assert fitted_table(wide, "t", COLUMNS, [row], droppable=SPEED_DROPPABLE)[1] == []  # room for all


def test_the_workers_table_fits_80_columns():
    from bench.speed.workers import COLUMNS

    row = ["diffkd", "4", "32", "128", "123.45", "12.34", "12,345", "87.5"]
    console = Console(file=io.StringIO(), width=80, color_system=None)
    table, _dropped = fitted_table(console, "t", COLUMNS, [row], droppable=("IQR ms", "batch per worker"),
                                   left=("method",))  # fmt: skip
    text = _render(table)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("what", ["methods", "archs", "datasets", "presets", "tasks"])
def test_list_cuts_nothing_at_80_columns(what):
    from typer.testing import CliRunner

    from bench.cli.app import app

    result = CliRunner().invoke(app, ["list", what], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "…" not in result.output, result.output
