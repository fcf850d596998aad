"""Names shared by every step of the report: metrics, method order, formats and the tidy columns.

Kept in one small module so the loader, the aggregation and each renderer agree on spelling without
importing each other.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from bench.jobs.compat import RECIPE_FIELD_DEFAULTS
from methods import catalog
from tasks.spec import DEFAULT_DECIMALS, task_names, task_spec

#: The primary metric of each task: it picks the summary metric and the reference rows that apply.
PRIMARY_METRIC: dict[str, str] = {name: task_spec(name).primary_metric for name in task_names()}
#: Every metric each task reports (``diffbench report --metric`` ranks on any of them).
TASK_METRICS: dict[str, tuple[str, ...]] = {name: task_spec(name).metrics for name in task_names()}


def lower_is_better(task: str, metric: str) -> bool:
    """Whether a lower ``metric`` is better on ``task`` (a loss); ``False`` for a task diffbench does not know."""
    return task in PRIMARY_METRIC and metric in task_spec(task).lower_is_better


def metric_decimals(task: str, metric: str) -> int:
    """Decimals the report prints for ``metric`` on ``task`` (2 unless the task says otherwise)."""
    return task_spec(task).decimals(metric) if task in PRIMARY_METRIC else DEFAULT_DECIMALS


#: Method columns come in this order (others follow alphabetically), as in the DiffKD tables.
METHOD_ORDER: tuple[str, ...] = (catalog.VANILLA, *catalog.BUILTIN)

#: The published numbers: package data of :mod:`bench.reference`, so an installed wheel has them too (pip unpacks
#: wheels, hence a real file path).
DEFAULT_REFERENCE = Path(str(files("bench.reference").joinpath("published.csv")))

FORMATS: tuple[str, ...] = ("markdown", "csv", "html", "latex", "json")
EPOCHS: tuple[str, ...] = ("best", "last")

#: When a published number is shown beside ours: only for runs with the paper's recipe preset, starting weights and
#: precision (``match``).
PUBLISHED_MODES: tuple[str, ...] = ("match", "always", "never")

#: File suffixes that name a format, so ``--out report.html`` needs no ``--format``.
SUFFIX_FORMATS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".html": "html",
    ".htm": "html",
    ".tex": "latex",
    ".json": "json",
}

#: Columns that identify a leaderboard row (a teacher→student pair on a data set).
PAIR_KEYS: list[str] = ["task", "dataset", "teacher", "student"]

TEACHER = "teacher"
VANILLA = catalog.VANILLA
#: The display column holding the teacher's own score.
TEACHER_COLUMN = "teacher score"

#: Significance thresholds and their marks, strictest first: against vanilla, and against ``--vs``.
SIG_VANILLA: tuple[tuple[float, str], ...] = ((0.01, "**"), (0.05, "*"))
SIG_VS: tuple[tuple[float, str], ...] = ((0.01, "††"), (0.05, "†"))
#: The test a comparison used (tidy columns ``test``, ``test_vs``): the paired t-test on per-seed differences when
#: both cells ran the same seeds (at least two), else Welch's; and the mark a paired interval carries in the tables.
PAIRED = "paired"
WELCH = "welch"
PAIRED_MARK = "ᵖ"
#: Verdicts of a published number against our seeds (:func:`bench.report.stats.verdicts`, tidy column ``verdict``):
#: inside the 95 % t-interval of our mean, above it (ours is ``below``), below it (ours is ``above``), or one seed.
REPRODUCED = "reproduced"
BELOW = "below"
ABOVE = "above"
UNDECIDED = "undecided (1 seed)"
#: The mark each decided verdict puts after the published number in the tables.
VERDICT_MARKS: dict[str, str] = {REPRODUCED: "✓", BELOW: "↓", ABOVE: "↑"}
#: Confidence level of every interval in the report.
CI_LEVEL = 0.95

#: A run's starting weights, as published numbers are matched on them: ``pretrained`` when it started from a weights
#: file (param ``student_init`` = ``sha256:<hex>``), else ``random`` (``random``, or absent: the task's default).
INIT_PRETRAINED = "pretrained"
INIT_RANDOM = "random"

#: Recipe fields every report states (param ``recipe.<field>``), with the value assumed for older runs.
RECIPE_FIELDS = RECIPE_FIELD_DEFAULTS

#: Columns of :attr:`Leaderboard.tidy` (and of the CSV export), in order.
TIDY_COLUMNS: list[str] = [
    "task", "dataset", "metric", "lower_is_better", "decimals", "teacher", "student", "epoch", "method", "base_method",
    "mean", "std", "n", "seeds", "note",
    "gain", "gain_ci_low", "gain_ci_high", "p_vs_vanilla", "sig_vs_vanilla", "test",
    "vs_method", "diff_vs", "diff_vs_ci_low", "diff_vs_ci_high", "p_vs", "sig_vs", "test_vs",
    "published", "published_recipe", "published_init", "published_precision", "source",
    "mean_ci_low", "mean_ci_high", "verdict",
    "recipe_preset", "epochs", "batch_size", "lr", "precision", "student_init", "student_init_file", "workers",
    "git_commit", "diffbench_version",
    "first_run", "last_run", "experiment_id", "run_ids",
]  # fmt: skip
