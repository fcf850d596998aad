"""Reading the inputs of a report: job runs from MLflow (optionally one grid's) and the published numbers.

A SQLite store (the default, ``<output>/mlflow.db``) is read directly, read-only, with the standard
library: MLflow's tables (``experiments``, ``runs``, ``tags``, ``params``, ``latest_metrics``) give the
same frame ``MlflowClient.search_runs`` would (tests/bench/test_report_load_sqlite.py compares the two),
without importing MLflow and SQLAlchemy (about 3 s of CPU before the first run was read) or building one
ORM object per tag, param and metric. The store is checked first (:func:`_check_sqlite_store`): another
program's SQLite file is refused, never read as runs. Nothing imports MLflow on this path, ``--grid``
included, unless a grid's artifacts live elsewhere than on this machine.

Any other tracking URI (an MLflow server, PostgreSQL, ...) goes through an ``MlflowClient`` given the
URI, never set globally, so a report cannot redirect the caller's own logging.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from bench.report.schema import DEFAULT_REFERENCE
from bench.tracking import schema as S
from methods.errors import UserError, first_line
from tasks.recipe import PRECISIONS

#: Tag columns the report reads; they always exist in :func:`load_runs`' frame (empty when not logged).
RUN_TAGS: tuple[str, ...] = S.REPORT_TAGS
REFERENCE_COLUMNS: tuple[str, ...] = ("task", "dataset", "teacher", "student", "method", "metric", "value", "source")
#: Optional reference column: the recipe preset a published number was obtained with.
REFERENCE_RECIPE = "recipe_preset"
#: Optional reference column: how the paper's trained model started, ``pretrained`` or ``random`` (empty: not stated).
REFERENCE_INIT = "student_init"
#: Optional reference column: the precision the paper trained in, ``fp32``, ``bf16`` or ``fp16`` (empty: not stated).
REFERENCE_PRECISION = "precision"
#: The values each optional setting column accepts ("" = the source does not state it).
REFERENCE_SETTINGS: dict[str, tuple[str, ...]] = {
    REFERENCE_INIT: ("pretrained", "random"),
    REFERENCE_PRECISION: tuple(p for p in PRECISIONS if p != "auto"),
}
#: Tables every MLflow SQL store has; a SQLite file lacking one is not (or not yet) an MLflow store.
_MLFLOW_TABLES = frozenset({"experiments", "runs", "tags", "params", "metrics", "latest_metrics", "alembic_version"})
GRID_JOBS_ARTIFACT = S.GRID_JOBS_ARTIFACT
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_SQLITE = "sqlite:///"
#: MLflow's own tag holding a run's name (``runs.name`` is empty on runs of old MLflow versions).
_RUN_NAME_TAG = "mlflow.runName"


def _check_sqlite_store(db: Path) -> None:
    """Refuse a missing file, a non-database file or another program's database, without writing to it."""
    if not db.is_file():
        raise UserError(f"no MLflow store at {db} (run `diffbench run` first, or pass the right --output)")
    try:
        con = _connect_ro(db)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as err:
        raise UserError(f"{db} is not an MLflow store: {err}") from None
    if not tables:
        raise UserError(f"{db} is not an MLflow store: the database is empty")
    missing = _MLFLOW_TABLES - tables
    if missing:
        shown = ", ".join(sorted(tables)[:6]) + (", …" if len(tables) > 6 else "")
        lacks = ", ".join(sorted(missing))
        raise UserError(f"{db} is not an MLflow store: it lacks table(s) {lacks} (it has {shown})")


def _connect_ro(db: Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``: nothing, not even a journal, is written to the store)."""
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len(_SQLITE) :]) if uri.startswith(_SQLITE) else None


def tracking_uri_for(tracking_uri: str | Path) -> str:
    """A Path means a SQLite file; SQLite stores are checked (see :func:`_check_sqlite_store`)."""
    if isinstance(tracking_uri, Path):
        tracking_uri = f"{_SQLITE}{tracking_uri.resolve()}"
    uri = str(tracking_uri)
    db = _sqlite_path(uri)
    if db is not None:
        _check_sqlite_store(db)
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
        raise UserError(f"{what} {value!r} contains a quote or backslash; use a plain name")
    return f"'{value}'"


def _store_error(uri: str, err: Exception) -> Exception:
    first = first_line(err)
    return UserError(f"cannot read the MLflow store {uri}: {first[:300]}")


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

    A SQLite store is read directly (:func:`_load_runs_sqlite`, no MLflow import); any other store
    through one paged ``MlflowClient.search_runs`` query (:func:`_load_runs_client`). Both push the
    task/dataset filters into the store and build the same frame.

    Args:
        tracking_uri: an MLflow URI (``sqlite:////abs/mlflow.db``, ``http://host:5000``) or a Path to
            a SQLite file.
        experiment: the experiment name the runs were logged under.
        task / dataset: keep only runs with these tags (done by the store).
        grid: keep only one grid's jobs: the parent run's id or name (see :func:`select_grid`).
        page_size: runs per ``search_runs`` page (the SQL store accepts up to 50,000); not used on SQLite.

    Returns:
        One row per run, newest first: ``run_id``, ``experiment_id``, ``status``, ``start_time``,
        ``end_time`` (UTC timestamps) and ``tags.<k>``, ``params.<k>``, ``metrics.<k>`` (latest value)
        columns, as :func:`mlflow.search_runs` names them. The :data:`RUN_TAGS` columns always exist.
        With ``grid``, ``frame.attrs["grid"]`` describes the grid (id, name, counts).

    Raises:
        UserError: the store is missing or not an MLflow store, the experiment or the grid does not exist.
    """
    return _load_runs(tracking_uri, experiment, task=task, dataset=dataset, grid=grid, page_size=page_size)


def _load_runs(
    tracking_uri: str | Path,
    experiment: str = "diffbench",
    *,
    task: str | None = None,
    dataset: str | None = None,
    grid: str | None = None,
    page_size: int = 10000,
    read_sqlite: bool = True,
) -> pd.DataFrame:
    """:func:`load_runs`; ``read_sqlite=False`` reads a SQLite store through MLflow too (the equivalence test)."""
    uri = tracking_uri_for(tracking_uri)
    db = _sqlite_path(uri)
    if db is not None and read_sqlite:
        df, selection = _load_runs_sqlite(db, uri, experiment, task, dataset, grid)
    else:
        df, selection = _load_runs_client(uri, experiment, task, dataset, grid, page_size)
    return _finish(df, selection)


def _finish(df: pd.DataFrame, selection: GridSelection | None) -> pd.DataFrame:
    """The columns every frame has, UTC times, and the grid restriction."""
    for col in ("run_id", "experiment_id", "status", "start_time", "end_time", *(f"tags.{t}" for t in RUN_TAGS)):
        if col not in df:
            df[col] = pd.Series(dtype="object")
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
    if selection is not None:
        df = selection.filter(df)
    from bench.report.tuning import mark_tuned

    return mark_tuned(df)  # a search's winners are columns of their own, never averaged with untuned runs


def _filters(task: str | None, dataset: str | None) -> list[tuple[str, str]]:
    """The tag filters of a query: job runs, and the task/dataset asked for (``(key, value)`` pairs)."""
    tags = [(S.KIND, S.KIND_JOB)]
    if task:
        tags.append(("task", task))
    if dataset:
        tags.append(("dataset", dataset))
    return tags


def _load_runs_client(
    uri: str, experiment: str, task: str | None, dataset: str | None, grid: str | None, page_size: int = 10000
) -> tuple[pd.DataFrame, GridSelection | None]:
    """The frame of :func:`load_runs` through ``MlflowClient.search_runs`` (a non-SQLite store, or a test)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise UserError(f"no MLflow experiment {experiment!r}; the store has: {', '.join(names) or 'none'}")
        clauses = [S.job_filter()]
        clauses += [f"tags.{key} = {_quote(value, key)}" for key, value in _filters(task, dataset)[1:]]
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
    return pd.DataFrame.from_records(records), selection


# ---------------------------------------------------------------------------------------------------
# SQLite, read directly. MLflow's SQL store keeps one row per run (``runs``), per tag (``tags``), per
# param (``params``) and, per metric, the value ``run.data.metrics`` returns (``latest_metrics``: the
# value of the latest step, then timestamp; a NaN is stored as 0 with ``is_nan`` set). ``search_runs``
# orders runs by start time (newest first), then run id; so does this.
# ---------------------------------------------------------------------------------------------------
#: Whether to let SQLite collect text pairs as JSON (False: the fallback for a SQLite without JSON functions).
_SQLITE_JSON = True
_HAS_TAG = "EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ?)"
_NEWEST_FIRST = "ORDER BY r.start_time IS NULL, r.start_time DESC, r.run_uuid"


def _run_filter(experiment_id: int, tags: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """``WHERE`` clause (over ``runs r``) and its arguments: the experiment's active runs with these tags."""
    where = ["r.experiment_id = ?", "r.lifecycle_stage = 'active'", *(_HAS_TAG for _ in tags)]
    args: list[Any] = [experiment_id]
    for key, value in tags:
        args += [key, value]
    return " AND ".join(where), args


def _load_runs_sqlite(
    db: Path, uri: str, experiment: str, task: str | None, dataset: str | None, grid: str | None
) -> tuple[pd.DataFrame, GridSelection | None]:
    """The frame of :func:`load_runs` from a SQLite store, read-only and in one read transaction."""
    try:
        con = _connect_ro(db)
        try:
            con.execute("BEGIN")  # one snapshot: a driver writing runs meanwhile cannot tear the frame
            exp_id = _sqlite_experiment(con, experiment)
            tags = _filters(task, dataset)
            for key, value in tags[1:]:
                _quote(value, key)  # the same refusal as on an MLflow server
            selection = _select_grid_sqlite(con, uri, exp_id, grid) if grid else None
            df = _sqlite_frame(con, *_run_filter(exp_id, tags))
        finally:
            con.close()
    except sqlite3.Error as err:
        raise _store_error(uri, err) from None
    return df, selection


def _sqlite_experiment(con: sqlite3.Connection, name: str) -> int:
    """The experiment's id, as ``get_experiment_by_name`` finds it (also a deleted one: it then has no runs)."""
    rows = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchall()
    if len(rows) == 1:
        return int(rows[0][0])
    if rows:  # the same name in several workspaces: MLflow's single-tenant store refuses it too
        raise sqlite3.DatabaseError(f"{len(rows)} experiments are named {name!r}")
    names = sorted(r[0] for r in con.execute("SELECT name FROM experiments WHERE lifecycle_stage = 'active'"))
    raise UserError(f"no MLflow experiment {name!r}; the store has: {', '.join(names) or 'none'}")


def _sqlite_frame(con: sqlite3.Connection, where: str, args: list[Any]) -> pd.DataFrame:
    """The selected runs, one row each, with their tags, params and latest metrics pivoted into columns."""
    base = pd.DataFrame.from_records(
        con.execute(
            "SELECT r.run_uuid, CAST(r.experiment_id AS TEXT), r.status, r.start_time, r.end_time "
            f"FROM runs r WHERE {where} {_NEWEST_FIRST}",
            args,
        ).fetchall(),
        columns=["run_id", "experiment_id", "status", "start_time", "end_time"],
    )
    if base.empty:
        return pd.DataFrame.from_records([])  # what search_runs' empty answer gives
    selected = f"SELECT r.run_uuid FROM runs r WHERE {where}"
    position = {run_id: i for i, run_id in enumerate(base["run_id"].tolist())}
    parts = [
        base,
        _text_columns(con, "tags", selected, args, position),
        _text_columns(con, "params", selected, args, position),
    ]
    rows = con.execute(
        "SELECT run_uuid, key, CASE WHEN is_nan THEN NULL ELSE value END FROM latest_metrics "
        f"WHERE run_uuid IN ({selected})",
        args,
    ).fetchall()
    parts.append(pd.DataFrame(_pivot(rows, position, "metrics.", numeric=True), index=base.index))
    return pd.concat(parts, axis=1)


def _text_columns(
    con: sqlite3.Connection, table: str, selected: str, args: list[Any], position: dict[str, int]
) -> pd.DataFrame:
    """The ``tags`` or ``params`` of the selected runs, one column per key (``tags.<key>``), rows as ``position``.

    SQLite collects each run's pairs into one JSON object (text round-trips exactly through JSON), so
    10,000 runs are 10,000 rows to Python, not 200,000; the records are typed by pandas as
    ``DataFrame.from_records`` types ``search_runs``' records. A SQLite without JSON functions gets
    the pairs one by one.
    """
    where = f"WHERE run_uuid IN ({selected})"
    try:
        if not _SQLITE_JSON:
            raise sqlite3.OperationalError("no such function: json_group_object")
        rows = con.execute(
            f"SELECT run_uuid, json_group_object(key, value) FROM {table} {where} GROUP BY run_uuid", args
        )
        records: list[dict[str, Any]] = [{}] * len(position)
        for run_id, pairs in rows:
            records[position[run_id]] = json.loads(pairs)
        frame = pd.DataFrame.from_records(records)
        frame = frame[sorted(frame.columns)]
    except sqlite3.OperationalError:  # no JSON1 (SQLite before 3.38 built without it)
        rows = con.execute(f"SELECT run_uuid, key, value FROM {table} {where}", args).fetchall()
        frame = pd.DataFrame(_pivot(rows, position, "", numeric=False), index=pd.RangeIndex(len(position)))
    frame.columns = [f"{table}.{k}" for k in frame.columns]
    return frame


def _pivot(rows: list[tuple[str, str, Any]], position: dict[str, int], prefix: str, numeric: bool) -> dict[str, Any]:
    """``(run id, key, value)`` rows as one column per key (sorted), a value per run position (NaN: none).

    A 2-D array filled by one indexed assignment: with 10,000 runs (~200,000 rows), pandas' ``pivot``
    and ``DataFrame.from_records`` of the rows cost more than reading them. Text columns are left to
    pandas to type, as ``DataFrame.from_records`` types ``search_runs``' values (``str`` with NaN gaps).
    """
    if not rows:
        return {}
    run_ids, keys, values = zip(*rows, strict=True)
    at = np.fromiter(map(position.__getitem__, run_ids), dtype=np.intp, count=len(run_ids))
    codes, names = pd.factorize(np.array(keys, dtype=object), sort=True)
    if numeric:
        grid = np.full((len(names), len(position)), np.nan)
        grid[codes, at] = np.array(values, dtype=float)  # NULL (a NaN metric) -> NaN
    else:
        grid = np.full((len(names), len(position)), np.nan, dtype=object)
        grid[codes, at] = np.array(values, dtype=object)
    out: dict[str, Any] = {}
    for name, column in zip(names, grid, strict=True):
        if not numeric and pd.isna(column).all():  # only NULL values: from_records makes that a float column
            column = np.full(len(column), np.nan)
        out[f"{prefix}{name}"] = column
    return out


def _run_name(con: sqlite3.Connection, run_id: str, name: str | None) -> str | None:
    """``run.info.run_name``: the ``runs.name`` column, else the ``mlflow.runName`` tag (older runs)."""
    if name:
        return name
    row = con.execute("SELECT value FROM tags WHERE run_uuid = ? AND key = ?", (run_id, _RUN_NAME_TAG)).fetchone()
    return row[0] if row is not None and row[0] else name


def _grid_runs(
    con: sqlite3.Connection, experiment_id: int, tag: tuple[str, str] | None, limit: int
) -> list[tuple[str, str | None, str | None]]:
    """Active grid runs (with ``tag`` = value), newest first: ``(run id, run name, artifact URI)``."""
    where, args = _run_filter(experiment_id, [(S.KIND, S.KIND_GRID), *([tag] if tag else [])])
    rows = con.execute(
        f"SELECT r.run_uuid, r.name, r.artifact_uri FROM runs r WHERE {where} {_NEWEST_FIRST} LIMIT ?", [*args, limit]
    ).fetchall()
    return [(run_id, _run_name(con, run_id, name), art) for run_id, name, art in rows]


def _select_grid_sqlite(con: sqlite3.Connection, uri: str, experiment_id: int, grid: str) -> GridSelection:
    """:func:`select_grid` on a SQLite store, read directly (the same lookups, notes and errors)."""
    notes: list[str] = []
    parent = None
    if _RUN_ID.fullmatch(grid):  # ``get_run``: any run with that id (even a deleted one) of this experiment
        row = con.execute("SELECT run_uuid, experiment_id, name, artifact_uri FROM runs WHERE run_uuid = ?", (grid,))
        hit = row.fetchone()
        if hit is not None and str(hit[1]) == str(experiment_id):
            parent = (hit[0], _run_name(con, hit[0], hit[2]), hit[3])
    if parent is None:
        _quote(grid, "grid")  # the same refusal as on an MLflow server
        found: list[tuple[str, str | None, str | None]] = []
        for tag in (_RUN_NAME_TAG, S.GRID_HASH):  # the grid's name, else its hash (12 hex digits)
            found = _grid_runs(con, experiment_id, (tag, grid), 100)
            if found:
                break
        if not found:
            shown = ", ".join(f"{name} ({run_id})" for run_id, name, _ in _grid_runs(con, experiment_id, None, 5))
            raise UserError(f"no grid run with id, name or grid hash {grid!r}; latest grids: {shown or 'none'}")
        parent = found[0]
        if len(found) > 1:
            notes.append(f"{len(found)} grid runs are named {grid!r}; this report uses the latest, {parent[0]}")
    run_id, name, artifact_uri = parent
    folder = _local_folder(artifact_uri)
    if folder is None:  # artifacts elsewhere (a server, S3, ...): MLflow downloads them
        from mlflow import MlflowClient

        hashes = _grid_jobs(MlflowClient(tracking_uri=uri), run_id, notes)
    else:
        hashes = _grid_jobs_file(folder / GRID_JOBS_ARTIFACT, run_id, notes)
    return GridSelection(run_id, name or "", hashes, notes)


def _local_folder(artifact_uri: str | None) -> Path | None:
    """The folder of a local artifact URI (``file:///abs/...`` or an absolute path); None for any other."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        if os.name == "nt":  # pragma: no cover - drive letters
            from urllib.request import url2pathname

            return Path(url2pathname(parsed.path))
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and Path(artifact_uri).is_absolute():
        return Path(artifact_uri)
    return None


def _grid_jobs_file(path: Path, run_id: str, notes: list[str]) -> set[str] | None:
    """:func:`_grid_jobs` for an artifact folder on this machine: the file is read where it lies."""
    try:
        if not path.exists():
            return None
    except OSError:
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        notes.append(f"{GRID_JOBS_ARTIFACT} of grid run {run_id} is unreadable ({err}); using its child runs only")
        return None
    return _job_hashes(doc, run_id, notes)


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
        keep = runs[f"tags.{S.PARENT}"].fillna("") == self.run_id
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

    Through an ``MlflowClient``; a SQLite store is read directly by :func:`_select_grid_sqlite`.

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
        for tag in (_RUN_NAME_TAG, S.GRID_HASH):  # the grid's name, else its hash (12 hex digits)
            found = client.search_runs(
                [experiment_id],
                filter_string=f"{S.grid_filter()} and tags.`{tag}` = {_quote(grid, 'grid')}",
                order_by=["attributes.start_time DESC"],
                max_results=100,
            )
            if found:
                break
        if not found:
            latest = client.search_runs(
                [experiment_id], filter_string=S.grid_filter(),
                order_by=["attributes.start_time DESC"], max_results=5,
            )  # fmt: skip
            shown = ", ".join(f"{r.info.run_name} ({r.info.run_id})" for r in latest) or "none"
            raise UserError(f"no grid run with id, name or grid hash {grid!r}; latest grids: {shown}")
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
    return _job_hashes(doc, run_id, notes)


def _job_hashes(doc: Any, run_id: str, notes: list[str]) -> set[str] | None:
    """The job hashes of a parsed ``grid_jobs.json`` (strings, or records with a ``job_hash``)."""
    items = doc if isinstance(doc, list) else []
    hashes = {x if isinstance(x, str) else str(x.get("job_hash", "")) for x in items if isinstance(x, str | dict)}
    hashes.discard("")
    if not hashes and doc:
        notes.append(f"{GRID_JOBS_ARTIFACT} of grid run {run_id} is not a list of job hashes; using its children only")
        return None
    return hashes


def load_reference(path: str | Path = DEFAULT_REFERENCE) -> pd.DataFrame:
    """Read a published-numbers CSV.

    Columns ``task,dataset,teacher,student,method,metric,value,source`` and, optionally, the setting the
    paper's number was obtained with, which ``--published match`` compares with our runs':

    * ``recipe_preset``: the diffbench recipe preset (a file without it gets an empty column, and its
      numbers are shown only with ``--published always``);
    * ``student_init``: ``pretrained`` (the trained model started from a weights file, e.g. an
      ImageNet-pretrained backbone) or ``random``;
    * ``precision``: ``fp32``, ``bf16`` or ``fp16``.

    An empty ``student_init`` or ``precision`` (or a file without the column) means the source does not
    state it: that criterion is not checked, and the report says so.

    Raises:
        UserError: the file is missing, lacks a column, has a non-numeric value or an unknown setting.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference file {path} does not exist")
    try:
        ref = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"reference file {path} is not a CSV file: {err}") from None
    missing = [c for c in REFERENCE_COLUMNS if c not in ref]
    if missing:
        need = ",".join(REFERENCE_COLUMNS)
        raise UserError(f"reference file {path} lacks column(s) {', '.join(missing)}; it needs {need}")
    values = pd.to_numeric(ref["value"], errors="coerce")
    if values.isna().any():
        bad = ref.loc[values.isna(), "value"].iloc[0]
        raise UserError(f"reference file {path}: value {bad!r} is not a number")
    ref["value"] = values
    for col in (REFERENCE_RECIPE, *REFERENCE_SETTINGS):
        ref[col] = ref[col].str.strip() if col in ref else ""
    for col, valid in REFERENCE_SETTINGS.items():
        ref[col] = ref[col].str.lower()
        bad = ref.loc[~ref[col].isin(("", *valid)), col]
        if len(bad):
            raise UserError(
                f"reference file {path}: {col} {bad.iloc[0]!r} is not one of {', '.join(valid)} (or empty: not stated)"
            )
    return ref


def load_kind(tracking_uri: str | Path, experiment: str, kind: str) -> pd.DataFrame:
    """Every active run of one kind (``tune``, ``trial``; tag :data:`~bench.tracking.schema.KIND`), as
    :func:`load_runs` frames them (newest first, UTC times); empty when there is none."""
    uri = tracking_uri_for(tracking_uri)
    db = _sqlite_path(uri)
    if db is not None:
        try:
            con = _connect_ro(db)
            try:
                con.execute("BEGIN")
                df = _sqlite_frame(con, *_run_filter(_sqlite_experiment(con, experiment), [(S.KIND, kind)]))
            finally:
                con.close()
        except sqlite3.Error as err:
            raise _store_error(uri, err) from None
    else:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise UserError(f"no MLflow experiment {experiment!r} in {uri}")
        records = []
        for run in client.search_runs([exp.experiment_id], f"tags.`{S.KIND}` = '{kind}'", max_results=50000):
            rec: dict[str, Any] = {"run_id": run.info.run_id, "status": run.info.status,
                                   "start_time": run.info.start_time, "end_time": run.info.end_time}  # fmt: skip
            rec.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            rec.update({f"params.{k}": v for k, v in run.data.params.items()})
            rec.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            records.append(rec)
        df = pd.DataFrame.from_records(records)
    for col in ("run_id", "status", "start_time", "end_time"):
        if col not in df:
            df[col] = pd.Series(dtype="object")
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
    return df
