"""Reading the inputs of a report: job runs from MLflow (optionally one grid's) and the published numbers.

The tracking URI is always given to an ``MlflowClient``, never set globally, so a report cannot
redirect the caller's own logging. A SQLite store is checked before MLflow opens it: MLflow creates
its tables in any database that lacks them, so pointing ``report`` at another program's SQLite file
would otherwise write into that file.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.errors import user_error
from bench.report.schema import DEFAULT_REFERENCE

#: Tag columns the report reads; they always exist in :func:`load_runs`' frame (empty when not logged).
RUN_TAGS: tuple[str, ...] = (
    "task", "dataset", "teacher", "student", "method", "seed", "role", "job_hash", "failure_reason",
    "git_commit", "diffbench_version", "recipe_preset", "mlflow.parentRunId",
)  # fmt: skip
REFERENCE_COLUMNS: tuple[str, ...] = ("task", "dataset", "teacher", "student", "method", "metric", "value", "source")
#: Optional reference column: the recipe preset a published number was obtained with.
REFERENCE_RECIPE = "recipe_preset"
#: Tables every MLflow SQL store has; a SQLite file lacking one is not (or not yet) an MLflow store.
_MLFLOW_TABLES = frozenset({"experiments", "runs", "tags", "params", "metrics", "latest_metrics", "alembic_version"})
#: The artifact of a grid's parent run listing the job hashes the grid consists of.
GRID_JOBS_ARTIFACT = "grid_jobs.json"
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def _check_sqlite_store(db: Path) -> None:
    """Refuse a missing file, a non-database file or another program's database, without writing to it."""
    if not db.is_file():
        raise user_error(f"no MLflow store at {db} (run `diffbench run` first, or pass the right --output)")
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as err:
        raise user_error(f"{db} is not an MLflow store: {err}") from None
    if not tables:
        raise user_error(f"{db} is not an MLflow store: the database is empty")
    missing = _MLFLOW_TABLES - tables
    if missing:
        shown = ", ".join(sorted(tables)[:6]) + (", …" if len(tables) > 6 else "")
        lacks = ", ".join(sorted(missing))
        raise user_error(f"{db} is not an MLflow store: it lacks table(s) {lacks} (it has {shown})")


def tracking_uri_for(tracking_uri: str | Path) -> str:
    """A Path means a SQLite file; SQLite stores are checked (see :func:`_check_sqlite_store`)."""
    if isinstance(tracking_uri, Path):
        tracking_uri = f"sqlite:///{tracking_uri.resolve()}"
    uri = str(tracking_uri)
    if uri.startswith("sqlite:///"):
        _check_sqlite_store(Path(uri[len("sqlite:///") :]))
    return uri


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while MLflow builds ORM objects.

    The SQL store materialises one SQLAlchemy object per tag, param and metric (~35 per run); the
    allocation burst keeps triggering full collections, which made 2,000 runs take ~4.5 s instead of
    ~1.7 s (bench/bench_report.py). Nothing cyclic is freed late: collection resumes right after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _quote(value: str, what: str) -> str:
    if "'" in value or "\\" in value or "`" in value:
        raise user_error(f"{what} {value!r} contains a quote or backslash; use a plain name")
    return f"'{value}'"


def _store_error(uri: str, err: Exception) -> Exception:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return user_error(f"cannot read the MLflow store {uri}: {first[:300]}")


def load_runs(
    tracking_uri: str | Path,
    experiment: str = "diffbench",
    *,
    task: str | None = None,
    dataset: str | None = None,
    grid: str | None = None,
    page_size: int = 10000,
) -> pd.DataFrame:
    """All job runs of an experiment (any status) as one flat frame.

    One ``MlflowClient.search_runs`` query, paged, with the task/dataset filters pushed into the
    store: the SQL store eager-loads tags, params and latest metrics per page, so 2,000 runs cost a
    handful of queries instead of one round trip per run.

    Args:
        tracking_uri: an MLflow URI (``sqlite:////abs/mlflow.db``, ``http://host:5000``) or a Path to
            a SQLite file.
        experiment: the experiment name the runs were logged under.
        task / dataset: keep only runs with these tags (done by the store).
        grid: keep only one grid's jobs: the parent run's id or name (see :func:`select_grid`).
        page_size: runs per page (the SQL store accepts up to 50,000).

    Returns:
        One row per run: ``run_id``, ``experiment_id``, ``status``, ``start_time``, ``end_time`` (UTC
        timestamps) and ``tags.<k>``, ``params.<k>``, ``metrics.<k>`` (latest value) columns, as
        :func:`mlflow.search_runs` names them. The :data:`RUN_TAGS` columns always exist. With
        ``grid``, ``frame.attrs["grid"]`` describes the grid (id, name, counts).

    Raises:
        UserError: the store is missing or not an MLflow store, the experiment or the grid does not exist.
    """
    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    uri = tracking_uri_for(tracking_uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise user_error(f"no MLflow experiment {experiment!r}; the store has: {', '.join(names) or 'none'}")
        clauses = ["tags.`diffbench.kind` = 'job'"]
        if task:
            clauses.append(f"tags.task = {_quote(task, 'task')}")
        if dataset:
            clauses.append(f"tags.dataset = {_quote(dataset, 'dataset')}")
        selection = select_grid(client, exp.experiment_id, grid) if grid else None
        records: list[dict[str, Any]] = []
        token: str | None = None
        with _gc_paused():
            while True:
                page = client.search_runs(
                    [exp.experiment_id],
                    filter_string=" and ".join(clauses),
                    run_view_type=ViewType.ACTIVE_ONLY,
                    max_results=page_size,
                    page_token=token,
                )
                for run in page:
                    info, data = run.info, run.data
                    rec: dict[str, Any] = {
                        "run_id": info.run_id,
                        "experiment_id": info.experiment_id,
                        "status": info.status,
                        "start_time": info.start_time,
                        "end_time": info.end_time,
                    }
                    rec.update({f"tags.{k}": v for k, v in data.tags.items()})
                    rec.update({f"params.{k}": v for k, v in data.params.items()})
                    rec.update({f"metrics.{k}": v for k, v in data.metrics.items()})
                    records.append(rec)
                token = page.token
                if not token:
                    break
    except (MlflowException, SQLAlchemyError, OSError) as err:
        raise _store_error(uri, err) from None
    df = pd.DataFrame.from_records(records)
    for col in ("run_id", "experiment_id", "status", "start_time", "end_time", *(f"tags.{t}" for t in RUN_TAGS)):
        if col not in df:
            df[col] = pd.Series(dtype="object")
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
    if selection is not None:
        df = selection.filter(df)
    return df


class GridSelection:
    """One grid's jobs: the parent run's children plus the job hashes its ``grid_jobs.json`` lists.

    A re-run of a grid skips jobs that finished under an earlier parent run, so their runs are not
    children of the new parent; the list the driver writes is the authority for them.
    """

    def __init__(self, run_id: str, name: str, hashes: set[str] | None, notes: list[str]) -> None:
        self.run_id = run_id
        self.name = name
        self.hashes = hashes
        self.notes = notes

    def filter(self, runs: pd.DataFrame) -> pd.DataFrame:
        keep = runs["tags.mlflow.parentRunId"].fillna("") == self.run_id
        children = int(keep.sum())
        if self.hashes:
            keep |= runs["tags.job_hash"].isin(self.hashes)
        out = runs[keep].reset_index(drop=True)
        listed = "" if self.hashes is None else f", {len(self.hashes)} job(s) listed in {GRID_JOBS_ARTIFACT}"
        out.attrs["grid"] = {
            "run_id": self.run_id,
            "name": self.name,
            "line": f"grid {self.name or self.run_id} (run {self.run_id}): {children} child run(s){listed}",
            "notes": list(self.notes),
        }
        return out


def select_grid(client: Any, experiment_id: str, grid: str) -> GridSelection:
    """Find a grid's parent run by run id, name or ``grid_hash`` tag (the latest one) and read its job list.

    Raises:
        UserError: no grid run has that id or name.
    """
    from mlflow.exceptions import MlflowException

    notes: list[str] = []
    parent = None
    if _RUN_ID.fullmatch(grid):
        with contextlib.suppress(MlflowException):
            run = client.get_run(grid)
            if run.info.experiment_id == experiment_id:
                parent = run
    if parent is None:
        found = []
        for tag in ("mlflow.runName", "grid_hash"):  # the grid's name, else its hash (12 hex digits)
            found = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`diffbench.kind` = 'grid' and tags.`{tag}` = {_quote(grid, 'grid')}",
                order_by=["attributes.start_time DESC"],
                max_results=100,
            )
            if found:
                break
        if not found:
            latest = client.search_runs(
                [experiment_id], filter_string="tags.`diffbench.kind` = 'grid'",
                order_by=["attributes.start_time DESC"], max_results=5,
            )  # fmt: skip
            shown = ", ".join(f"{r.info.run_name} ({r.info.run_id})" for r in latest) or "none"
            raise user_error(f"no grid run with id, name or grid hash {grid!r}; latest grids: {shown}")
        parent = found[0]
        if len(found) > 1:
            notes.append(
                f"{len(found)} grid runs are named {grid!r}; this report uses the latest, {parent.info.run_id}"
            )
    hashes = _grid_jobs(client, parent.info.run_id, notes)
    return GridSelection(parent.info.run_id, parent.info.run_name or "", hashes, notes)


def _grid_jobs(client: Any, run_id: str, notes: list[str]) -> set[str] | None:
    """The job hashes in the parent run's ``grid_jobs.json``; None when the grid did not write one."""
    from mlflow.exceptions import MlflowException

    try:
        names = {a.path for a in client.list_artifacts(run_id)}
    except (MlflowException, OSError):
        return None
    if GRID_JOBS_ARTIFACT not in names:
        return None
    # MLflow draws a tqdm bar for every download (on stderr, even when piped); a report prints none.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, GRID_JOBS_ARTIFACT, tmp)
            doc = json.loads(Path(path).read_text())
    except (MlflowException, OSError, ValueError) as err:
        notes.append(f"{GRID_JOBS_ARTIFACT} of grid run {run_id} is unreadable ({err}); using its child runs only")
        return None
    items = doc if isinstance(doc, list) else []
    hashes = {x if isinstance(x, str) else str(x.get("job_hash", "")) for x in items if isinstance(x, str | dict)}
    hashes.discard("")
    if not hashes and doc:
        notes.append(f"{GRID_JOBS_ARTIFACT} of grid run {run_id} is not a list of job hashes; using its children only")
        return None
    return hashes


def load_reference(path: str | Path = DEFAULT_REFERENCE) -> pd.DataFrame:
    """Read a published-numbers CSV.

    Columns ``task,dataset,teacher,student,method,metric,value,source`` and, optionally,
    ``recipe_preset``: the diffbench recipe preset the published number was obtained with (a file
    without it gets an empty column, and its numbers are shown only with ``--published always``).

    Raises:
        UserError: the file is missing, lacks a column, or has a non-numeric value.
    """
    path = Path(path)
    if not path.is_file():
        raise user_error(f"reference file {path} does not exist")
    try:
        ref = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as err:
        raise user_error(f"reference file {path} is not a CSV file: {err}") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in ref]
    if missing:
        need = ",".join(REFERENCE_COLUMNS)
        raise user_error(f"reference file {path} lacks column(s) {', '.join(missing)}; it needs {need}")
    values = pd.to_numeric(ref["value"], errors="coerce")
    if values.isna().any():
        bad = ref.loc[values.isna(), "value"].iloc[0]
        raise user_error(f"reference file {path}: value {bad!r} is not a number")
    ref["value"] = values
    if REFERENCE_RECIPE not in ref:
        ref[REFERENCE_RECIPE] = ""
    return ref
