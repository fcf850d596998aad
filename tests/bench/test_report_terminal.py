"""The terminal report at the widths people print it at: CI logs and pipes (80 columns), wide terminals (160).

Whatever the width, no interval ``[low, high]``, no number and no model name may be split across lines, and no
line may be wider than the console: the table chooses a layout that fits instead of letting rich fold its cells.
The leaderboard is built from an in-memory frame of runs (the columns ``mlflow.search_runs`` returns), so no
MLflow store is needed: five CIFAR-100 pairs of the paper tables, the four methods and vanilla over three seeds,
one two-digit gain (the widest interval), published numbers from the shipped reference and ``--vs dkd``.
"""

from __future__ import annotations

import random
import re

import pandas as pd
import pytest
from rich.cells import cell_len
from rich.console import Console

from bench import report

PAIRS = [("resnet56", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"),
         ("vgg13", "vgg8")]  # fmt: skip
METHODS = ["kd", "dkd", "fitnet", "diffkd"]
GAINS = {"kd": 1.5, "dkd": 2.5, "fitnet": 0.3, "diffkd": 2.8}


def runs_frame(pairs=PAIRS, methods=METHODS, seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """Finished job runs as ``load_runs`` returns them: tags, recipe params and ``best_top1``."""
    rng = random.Random(seed)
    rows: list[dict] = []

    def run(student: str, method: str, k: int, value: float, teacher: str = "", role: str = "student") -> None:
        rows.append({
            "run_id": f"{len(rows):032x}", "experiment_id": "1", "status": "FINISHED",
            "start_time": pd.Timestamp("2023-11-14", tz="UTC"), "end_time": pd.Timestamp("2023-11-14 01:00", tz="UTC"),
            "tags.diffbench.kind": "job", "tags.task": "classification", "tags.dataset": "cifar100",
            "tags.teacher": teacher, "tags.student": student, "tags.method": method, "tags.seed": str(k),
            "tags.role": role, "tags.job_hash": f"{teacher}-{student}-{method}-{k}", "tags.git_commit": "abc123",
            "tags.recipe_preset": "cifar100", "tags.diffbench_version": "0.1.0",
            "params.recipe.epochs": "240", "params.recipe.lr": "0.05", "params.recipe.batch_size": "64",
            "params.recipe.precision": "fp32", "metrics.best_top1": value,
        })  # fmt: skip

    for teacher, student in pairs:
        run(teacher, "vanilla", 0, 75.0 + rng.gauss(0, 1), role="teacher")
        for k in range(seeds):
            base = 70.0 + rng.gauss(0, 0.3)
            run(student, "vanilla", k, base)
            for m in methods:
                gain = 14.0 + rng.gauss(0, 0.5) if (student, m) == ("resnet8x4", "fitnet") else GAINS[m]
                run(student, m, k, base + gain + rng.gauss(0, 0.4), teacher=teacher)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def lb() -> report.Leaderboard:
    return report.leaderboard(runs_frame(), "best", reference=report.load_reference(), vs="dkd")


def printed(lb: report.Leaderboard, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(report.to_rich(lb))
    return console.export_text().splitlines()


def _count(lines: list[str], token: str) -> int:
    return sum(line.count(token) for line in lines)


@pytest.mark.parametrize("width", [80, 160])
def test_no_token_splits_and_no_line_overflows(lb, width):
    lines = printed(lb, width)
    assert max(cell_len(line) for line in lines) <= width
    shown = lb.tidy[lb.tidy["n"] > 0]
    # Every interval, whole, once per cell that has one (a split one is not found, a cropped one neither).
    ci = shown.dropna(subset=["gain_ci_low"])
    intervals = [f"[{lo:+.2f}, {hi:+.2f}]" for lo, hi in zip(ci["gain_ci_low"], ci["gain_ci_high"], strict=True)]
    for interval in set(intervals):
        assert _count(lines, interval) == intervals.count(interval), (interval, width)
    # Every mean, std and gain at least as often as cells show it (a number may also appear in the legend).
    numbers = [f"{x:.2f}" for x in shown["mean"]] + [f"± {x:.2f}" for x in shown["std"].dropna()]
    numbers += [f"{x:+.2f}" for x in shown["gain"].dropna() if x != 0]
    for number in set(numbers):
        assert _count(lines, number) >= numbers.count(number), (number, width)
    # Every model name whole (as a word: "resnet2" + "0" on the next line would not count).
    for name in {m for pair in PAIRS for m in pair}:
        assert any(re.search(rf"(?<![\w]){name}(?![\w])", line) for line in lines), (name, width)


@pytest.mark.parametrize("width", [80, 100, 160, 240])
def test_every_cell_shows_its_parts(lb, width):
    """Whatever the layout, the table says what every format says: the published numbers, the --vs differences."""
    text = "\n".join(printed(lb, width))
    for r in lb.tidy.itertuples():
        if pd.notna(r.published):
            assert f"{r.published:.2f}" in text
        if pd.notna(r.diff_vs) and r.method != "dkd":
            assert f"vs dkd {r.diff_vs:+.2f}" in text


def test_wide_consoles_get_one_column_per_method(lb):
    """At 240 columns the paper's layout (methods as columns) fits; at 80 one row per pair and method does."""

    assert any(all(m in line for m in ["vanilla", *METHODS]) for line in printed(lb, 240))
    assert any("method" in line and "mean ± std (n)" in line for line in printed(lb, 80))
    (table,) = report.to_rich(lb).tables()
    wide = Console(width=240)
    assert table.choose(wide, wide.options)[0] == "wide"


def test_long_names_get_a_key(lb):
    """Names too long for any layout at 80 columns are abbreviated and listed under the table, whole."""
    long = [("deeplabv3_r101_cirkd_teacher_long", "deeplabv3_r18_cirkd_student_long")]
    lines = printed(report.leaderboard(runs_frame(long, seeds=2), "best"), 80)
    assert max(cell_len(line) for line in lines) <= 80
    assert any(line.startswith("P1") for line in lines)
    assert "P1 = deeplabv3_r101_cirkd_teacher_long → deeplabv3_r18_cirkd_student_long" in lines


def test_no_published_number_no_paper_column_or_legend():
    lb = report.leaderboard(runs_frame(PAIRS[:2], seeds=2), "best", published="never")
    text = "\n".join(printed(lb, 80))
    assert "paper" not in text.split("Cells:")[0] and "'paper'" not in text


@pytest.mark.parametrize("width", [80, 160])
def test_reproduction_table_fits_without_splitting_a_number(lb, width):
    from bench.report.reproduction import misses

    console = Console(record=True, width=width, color_system=None)
    console.print(report.to_rich(lb, reproduction=True))
    lines = console.export_text().splitlines()
    assert max(cell_len(line) for line in lines) <= width
    shown = misses(lb).head(3)
    assert len(shown), "the fixture has published numbers our seeds miss"
    for r in shown.itertuples(index=False):
        for token in (f"[{r.mean_ci_low:.2f}, {r.mean_ci_high:.2f}]", f"{r.published:.2f}", f"{r.diff:+.2f}"):
            assert any(token in line for line in lines), (token, width)
