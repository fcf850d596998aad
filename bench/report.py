"""Leaderboards from MLflow runs: the engine behind ``diffbench report``.

The training loop records one MLflow child run per job (tag ``diffbench.kind=job``) with the grid
axes as tags and summary metrics ``best_<metric>`` / ``last_<metric>``. This module turns those runs
into the table a distillation paper prints: one row per teacher→student pair, one column per method,
mean ± std over seeds, the gain over the vanilla student and the published number beside ours.

The pipeline is three pure steps so each can be tested and reused on its own:

* :func:`load_runs` — one paged ``search_runs`` query → a flat :class:`pandas.DataFrame` whose column
  names follow :func:`mlflow.search_runs` (``tags.*``, ``params.*``, ``metrics.*``), so a frame from
  ``mlflow.search_runs`` works too;
* :func:`leaderboard` — dedupe, filter, aggregate → a :class:`Leaderboard` (tidy numbers + display text);
* renderers — :func:`to_rich`, :func:`render` (markdown, csv, html, latex, json), :func:`plot`,
  :func:`html_report`.

Nothing here imports torch; MLflow and matplotlib are imported lazily so ``import bench.report`` is cheap.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from methods.base import UserError

if TYPE_CHECKING:
    from rich.table import Table

#: The primary metric of each task: it picks the summary metric and the reference rows that apply.
PRIMARY_METRIC: dict[str, str] = {"classification": "top1", "detection": "bbox_AP", "segmentation": "mIoU"}

#: Method columns come in this order (others follow alphabetically), as in the DiffKD tables.
METHOD_ORDER: tuple[str, ...] = ("vanilla", "kd", "dkd", "fitnet", "diffkd")

#: Where the published numbers live in a source checkout.
DEFAULT_REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "published.csv"

FORMATS: tuple[str, ...] = ("markdown", "csv", "html", "latex", "json")
EPOCHS: tuple[str, ...] = ("best", "last")

#: Columns that identify a leaderboard row (a teacher→student pair on a data set).
PAIR_KEYS: list[str] = ["task", "dataset", "teacher", "student"]

_TAGS = ("task", "dataset", "teacher", "student", "method", "seed", "role", "job_hash", "failure_reason")
_REFERENCE_COLUMNS = ("task", "dataset", "teacher", "student", "method", "metric", "value", "source")
# Recipe fields that do not change a result: runs differing only in these are seeds of one configuration.
_IGNORED_CONFIG = {"params.recipe.num_workers"}
_TEACHER = "teacher"
#: The display column holding the teacher's own score.
TEACHER_COLUMN = "teacher score"
_VANILLA = "vanilla"


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def _tracking_uri(tracking_uri: str | Path) -> str:
    """A Path means a SQLite file; a missing SQLite file is a user error, not a new empty store."""
    if isinstance(tracking_uri, Path):
        tracking_uri = f"sqlite:///{tracking_uri.resolve()}"
    uri = str(tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.is_file():
            raise UserError(f"no MLflow store at {db} (run `diffbench run` first, or pass the right --output)")
    return uri


@contextlib.contextmanager
def _gc_paused() -> Any:
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
    if "'" in value or "\\" in value:
        raise UserError(f"{what} {value!r} contains a quote or backslash; use a plain name")
    return f"'{value}'"


def load_runs(
    tracking_uri: str | Path,
    experiment: str = "diffbench",
    *,
    task: str | None = None,
    dataset: str | None = None,
    page_size: int = 10000,
) -> pd.DataFrame:
    """All job runs of an experiment (any status) as one flat frame.

    One ``MlflowClient.search_runs`` query, paged, with the task/dataset filters pushed into the
    store: the SQL store eager-loads tags, params and latest metrics per page, so 2,000 runs cost a
    handful of queries instead of one round trip per run. The tracking URI is given to the client,
    never set globally, so a report cannot redirect the caller's own logging.

    Args:
        tracking_uri: an MLflow URI (``sqlite:////abs/mlflow.db``, ``http://host:5000``) or a Path to
            a SQLite file.
        experiment: the experiment name the runs were logged under.
        task / dataset: keep only runs with these tags (done by the store).
        page_size: runs per page (the SQL store accepts up to 50,000).

    Returns:
        One row per run: ``run_id``, ``experiment_id``, ``status``, ``start_time``, ``end_time`` (UTC
        timestamps) and ``tags.<k>``, ``params.<k>``, ``metrics.<k>`` (latest value) columns, as
        :func:`mlflow.search_runs` names them. The grid-axis tag columns always exist.

    Raises:
        UserError: the store or the experiment does not exist.
    """
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise UserError(f"no MLflow experiment {experiment!r}; the store has: {', '.join(names) or 'none'}")
    clauses = ["tags.`diffbench.kind` = 'job'"]
    if task:
        clauses.append(f"tags.task = {_quote(task, 'task')}")
    if dataset:
        clauses.append(f"tags.dataset = {_quote(dataset, 'dataset')}")
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
    df = pd.DataFrame.from_records(records)
    for col in ("run_id", "experiment_id", "status", "start_time", "end_time", *(f"tags.{t}" for t in _TAGS)):
        if col not in df:
            df[col] = pd.Series(dtype="object")
    for col in ("start_time", "end_time"):
        df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
    return df


def load_reference(path: str | Path = DEFAULT_REFERENCE) -> pd.DataFrame:
    """Read a published-numbers CSV (columns ``task,dataset,teacher,student,method,metric,value,source``).

    Raises:
        UserError: the file is missing, lacks a column, or has a non-numeric value.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference file {path} does not exist")
    ref = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in _REFERENCE_COLUMNS if c not in ref]
    if missing:
        need = ",".join(_REFERENCE_COLUMNS)
        raise UserError(f"reference file {path} lacks column(s) {', '.join(missing)}; it needs {need}")
    values = pd.to_numeric(ref["value"], errors="coerce")
    if values.isna().any():
        bad = ref.loc[values.isna(), "value"].iloc[0]
        raise UserError(f"reference file {path}: value {bad!r} is not a number")
    ref["value"] = values
    return ref


# ---------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------
@dataclass
class Leaderboard:
    """A computed leaderboard.

    Attributes:
        tidy: one row per (pair, method): ``task, dataset, metric, teacher, student, method`` (the
            column label, ``kd`` or a variant such as ``kd[temperature=8]``), ``base_method``,
            ``mean, std, n, seeds, gain, published, source``. Method ``teacher`` holds the teacher's
            score. This is what CSV and JSON export.
        table: the display frame, one row per pair, cells as text (what markdown/HTML/rich show).
        epoch: ``best`` or ``last``.
        title: what the table shows (constant task/dataset/metric are folded in here).
        failed: failed jobs left out (``task … method, seed, failure_reason, run_id``).
        unfinished: counts of other non-finished runs by status (``RUNNING``, ``KILLED``…).
        notes: warnings worth printing under the table.
    """

    tidy: pd.DataFrame
    table: pd.DataFrame
    epoch: str
    title: str
    failed: pd.DataFrame
    unfinished: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.tidy.empty

    @property
    def methods(self) -> list[str]:
        """Method column labels in display order (without ``teacher``)."""
        return [c for c in self.table.columns if c in set(self.tidy["method"]) and c != _TEACHER]

    def footer(self) -> list[str]:
        """The legend and the notes (failures, odd data) that belong under every rendering."""
        lines = [f"Cells: mean ± std over seeds (n) at the {self.epoch} epoch, gain over vanilla, [published]."]
        if len(self.failed):
            shown = [
                f"{r.method} {_pair_label(r.teacher, r.student)} s{r.seed}: {r.failure_reason or 'no reason recorded'}"
                for r in self.failed.head(10).itertuples()
            ]
            more = f"; … {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
            lines.append(f"{len(self.failed)} failed job(s) left out: " + "; ".join(shown) + more)
        if self.unfinished:
            lines.append(
                "Not finished, left out: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.unfinished.items()))
            )
        return lines + self.notes


def _pair_label(teacher: str, student: str) -> str:
    return f"{teacher}→{student}" if teacher else student


def _method_rank(label: str) -> tuple[int, str, str]:
    base = label.split("[", 1)[0]
    if base == _TEACHER:
        return (-1, "", label)
    if base in METHOD_ORDER:
        return (METHOD_ORDER.index(base), "", label)
    return (len(METHOD_ORDER), base, label)


def _parse_pairs(pairs: Iterable[str] | None) -> set[tuple[str, str]] | None:
    if pairs is None:
        return None
    out: set[tuple[str, str]] = set()
    for p in pairs:
        teacher, sep, student = p.partition(":")
        if not sep or not teacher.strip() or not student.strip():
            raise UserError(f"pair {p!r}: expected teacher:student, e.g. resnet56:resnet20")
        out.add((teacher.strip(), student.strip()))
    return out


def _normalise(runs: pd.DataFrame, epoch: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plain tag columns, the chosen metric value and a configuration key per run; the config params."""
    w = pd.DataFrame(index=runs.index)
    for t in _TAGS:
        col = f"tags.{t}"
        w[t] = runs[col].fillna("").astype(str) if col in runs else ""
    w["run_id"] = runs["run_id"] if "run_id" in runs else runs.index.astype(str)
    w["status"] = runs["status"].fillna("") if "status" in runs else "FINISHED"
    for col in ("start_time", "end_time"):
        w[col] = pd.to_datetime(runs[col], utc=True) if col in runs else pd.NaT
    if "tags.diffbench.kind" in runs:
        w = w[runs["tags.diffbench.kind"].fillna("job") == "job"]
        runs = runs.loc[w.index]
    w["metric"] = w["task"].map(PRIMARY_METRIC)
    w["value"] = np.nan
    w["teacher_value"] = np.nan
    for task, metric in PRIMARY_METRIC.items():
        mask = w["task"] == task
        if not mask.any():
            continue
        for src, dst in ((f"metrics.{epoch}_{metric}", "value"), (f"metrics.teacher_{metric}", "teacher_value")):
            if src in runs:
                w.loc[mask, dst] = pd.to_numeric(runs.loc[mask, src], errors="coerce")
    cfg_cols = sorted(
        c for c in runs if (c.startswith("params.hp.") or c.startswith("params.recipe.")) and c not in _IGNORED_CONFIG
    )
    cfg = runs[cfg_cols].astype("string").fillna("") if cfg_cols else pd.DataFrame(index=runs.index)
    w["config"] = _row_key(cfg)
    w["recipe_key"] = _row_key(cfg[[c for c in cfg_cols if c.startswith("params.recipe.")]])
    return w, cfg


def _row_key(frame: pd.DataFrame) -> pd.Series:
    """Join each row's strings into one key (column-wise: a row-wise ``apply`` is 100× slower)."""
    if frame.shape[1] == 0:
        return pd.Series("", index=frame.index, dtype="string")
    out = frame.iloc[:, 0]
    for c in frame.columns[1:]:
        out = out + "\x1f" + frame[c]
    return out


def _latest_per_job(w: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest run (by end time) of each job hash; runs without a hash stand alone."""
    key = w["job_hash"].where(w["job_hash"] != "", "run:" + w["run_id"].astype(str))
    order = w.assign(_key=key).sort_values(["end_time", "start_time"], na_position="first", kind="stable")
    return order.drop_duplicates("_key", keep="last").drop(columns="_key")


def _label_variants(runs: pd.DataFrame, cfg: pd.DataFrame) -> pd.Series:
    """``method`` unless a (pair, method) mixes configurations: then ``method[k=v, …]`` per configuration.

    Averaging runs with different hyper-parameters as if they were seeds would print a number that
    belongs to no configuration, so a sweep shows up as separate, labelled columns instead.
    """
    labels = runs["method"].copy()
    keys = [*PAIR_KEYS, "method"]
    mixed = runs.groupby(keys, sort=False)["config"].transform("nunique") > 1
    if not mixed.any():
        return labels
    for _, grp in runs[mixed].groupby(keys, sort=False):
        sub = cfg.loc[grp["_src"]]
        differing = [c for c in sub.columns if sub[c].nunique() > 1]
        for idx, src in zip(grp.index, grp["_src"], strict=True):
            desc = ", ".join(f"{c.split('.', 2)[2]}={cfg.at[src, c]}" for c in differing)
            labels.at[idx] = f"{grp.at[idx, 'method']}[{desc}]"
    return labels


def _seed_key(s: str) -> tuple[int, Any]:
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)


def _stats(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """mean, sample std (ddof=1, NaN for one seed), n (runs with a value) and the seeds per group."""
    g = frame.groupby(keys, sort=False, dropna=False)
    out = g[value].agg(mean="mean", std="std", n="count")  # pandas' std is the sample std (ddof=1)
    out["seeds"] = g["seed"].agg(lambda s: ",".join(sorted(set(s), key=_seed_key)))
    return out.reset_index()


def _reference_lookup(reference: pd.DataFrame | None) -> pd.DataFrame:
    """Reference rows that can match a pair: named teacher and student, the task's primary metric.

    Names are compared case-insensitively because the model zoos spell them differently
    (``ResNet50`` in RepDistiller, ``resnet50`` in torchvision).
    """
    cols = [*PAIR_KEYS, "method", "published", "source"]
    if reference is None or reference.empty:
        return pd.DataFrame(columns=[*cols, "metric"])
    ref = reference.copy()
    for c in (*PAIR_KEYS, "method", "metric"):
        ref[c] = ref[c].fillna("").astype(str).str.strip()
    ref = ref[(ref["teacher"] != "?") & (ref["student"] != "?")]
    ref = ref[ref["metric"] == ref["task"].map(PRIMARY_METRIC)]
    for c in (*PAIR_KEYS, "method"):
        ref[c] = ref[c].str.lower()
    ref = ref.rename(columns={"value": "published"})
    ref["published"] = pd.to_numeric(ref["published"], errors="coerce")
    ref["source"] = ref["source"].fillna("") if "source" in ref else ""
    return ref.drop_duplicates([*PAIR_KEYS, "method"], keep="first")[cols]


def _attach_published(tidy: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    ref = _reference_lookup(reference)
    keys = [*PAIR_KEYS, "base_method"]
    low = tidy[keys].apply(lambda s: s.str.lower())
    exact = low.merge(
        ref.rename(columns={"method": "base_method"}), on=keys, how="left", validate="many_to_one"
    ).set_index(tidy.index)
    tidy["published"] = exact["published"]
    tidy["source"] = exact["source"].fillna("")
    # A student trained only without a teacher: the paper's vanilla number, when all its pairs agree.
    van = ref[ref["method"] == _VANILLA].groupby(["task", "dataset", "student"])["published"]
    agree = van.agg(lambda v: v.iloc[0] if v.nunique() == 1 else np.nan).rename("published_any")
    mask = (tidy["teacher"] == "") & (tidy["base_method"] == _VANILLA)
    if mask.any() and len(agree):
        j = low[mask].merge(agree.reset_index(), on=["task", "dataset", "student"], how="left")
        tidy.loc[mask, "published"] = j["published_any"].to_numpy()
    return tidy


def leaderboard(
    runs: pd.DataFrame,
    epoch: str = "best",
    *,
    task: str | None = None,
    dataset: str | None = None,
    pairs: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    reference: pd.DataFrame | None = None,
) -> Leaderboard:
    """Aggregate job runs into a leaderboard.

    Only finished student runs count; when several finished runs share a job hash (a job re-run
    into a fresh run) the latest one wins. The vanilla runs of a student architecture belong to every
    pair with that student. The teacher's score comes from the teacher job's runs, else from the
    ``teacher_<metric>`` that distillation runs logged.

    Args:
        runs: a frame from :func:`load_runs` (or :func:`mlflow.search_runs`).
        epoch: ``best`` (``best_<metric>``) or ``last`` (``last_<metric>``).
        task / dataset: keep one task / data set.
        pairs: keep these ``teacher:student`` pairs.
        methods: show these method columns (vanilla is still used for the gain).
        reference: published numbers (:func:`load_reference`); rows with teacher ``?`` never match.

    Raises:
        UserError: a bad ``epoch`` or pair, or a task without a known metric.
    """
    if epoch not in EPOCHS:
        raise UserError(f"epoch {epoch!r}: valid are {', '.join(EPOCHS)}")
    pair_set = _parse_pairs(pairs)
    method_set = {m.strip() for m in methods} if methods is not None else None
    runs = runs.reset_index(drop=True)
    w, cfg = _normalise(runs, epoch)
    w["_src"] = w.index
    if task is not None:
        w = w[w["task"] == task]
    if dataset is not None:
        w = w[w["dataset"] == dataset]
    unknown = sorted(set(w["task"]) - set(PRIMARY_METRIC))
    if unknown:
        raise UserError(f"task {unknown[0]!r} has no known primary metric; known: {', '.join(PRIMARY_METRIC)}")

    finished = _latest_per_job(w[w["status"] == "FINISHED"])
    done_hashes = set(finished["job_hash"]) - {""}
    pending = _latest_per_job(w[(w["status"] != "FINISHED") & ~w["job_hash"].isin(done_hashes)])
    pending = _select(pending, pair_set, method_set)
    failed = pending[pending["status"] == "FAILED"]
    counts = pending.loc[pending["status"] != "FAILED", "status"].value_counts()
    unfinished = {str(k): int(v) for k, v in counts.items()}

    students = finished[finished["role"] != _TEACHER]
    teachers = finished[finished["role"] == _TEACHER]
    dist = students[students["teacher"] != ""]
    solo = students[students["teacher"] == ""]
    pair_rows = dist[PAIR_KEYS].drop_duplicates()
    if pair_set is None:  # students trained only alone still get a row (teacher "—")
        seen = set(zip(pair_rows["task"], pair_rows["dataset"], pair_rows["student"], strict=True))
        alone = solo[PAIR_KEYS].assign(teacher="").drop_duplicates()
        alone = alone[[k not in seen for k in zip(alone["task"], alone["dataset"], alone["student"], strict=True)]]
        pair_rows = pd.concat([pair_rows, alone], ignore_index=True)
    else:
        pair_rows = pair_rows[_pair_mask(pair_rows, pair_set)]

    expanded = solo.drop(columns="teacher").merge(pair_rows, on=["task", "dataset", "student"])
    member = pd.concat([dist.merge(pair_rows, on=PAIR_KEYS), expanded], ignore_index=True)
    member["label"] = _label_variants(member, cfg)

    stat_keys = [*PAIR_KEYS, "metric", "label", "method", "recipe_key"]
    tidy = _stats(member, stat_keys, "value").rename(columns={"method": "base_method"})
    # Gain over the vanilla student trained with the same recipe (and only when that is unambiguous).
    van = tidy[tidy["base_method"] == _VANILLA]
    van = van[[*PAIR_KEYS, "recipe_key", "mean"]].drop_duplicates([*PAIR_KEYS, "recipe_key"], keep=False)
    tidy = tidy.merge(van.rename(columns={"mean": "_vanilla"}), on=[*PAIR_KEYS, "recipe_key"], how="left")
    tidy["gain"] = (tidy["mean"] - tidy["_vanilla"]).where(tidy["base_method"] != _VANILLA)
    tidy = tidy.drop(columns=["_vanilla", "recipe_key"]).rename(columns={"label": "method"})

    notes: list[str] = []
    dup = member.groupby([*PAIR_KEYS, "label", "seed"]).size()
    for (t_, d_, te, st, lab, seed), count in dup[dup > 1].items():
        notes.append(f"{lab} {_pair_label(te, st)} ({t_}/{d_}): seed {seed} counted {count}× (different job hashes)")

    trows = _teacher_rows(pair_rows, teachers, dist)
    tidy = pd.concat([df for df in (trows, tidy) if len(df)], ignore_index=True) if len(trows) else tidy
    if method_set is not None:
        tidy = tidy[tidy["base_method"].isin(method_set | {_TEACHER})]
    tidy = _attach_published(tidy.reset_index(drop=True), reference)
    tidy["epoch"] = epoch
    tidy["n"] = tidy["n"].fillna(0).astype(int)
    tidy["_rank"] = tidy["method"].map(_method_rank)
    tidy = tidy.sort_values([*PAIR_KEYS, "_rank"], kind="stable").reset_index(drop=True)
    tidy = tidy[TIDY_COLUMNS]
    table, title = _display(tidy, _text_cell)
    return Leaderboard(
        tidy=tidy,
        table=table,
        epoch=epoch,
        title=title,
        failed=failed[[*PAIR_KEYS, "method", "seed", "failure_reason", "run_id"]].reset_index(drop=True),
        unfinished=unfinished,
        notes=notes,
    )


#: Columns of :attr:`Leaderboard.tidy` (and of the CSV export), in order.
TIDY_COLUMNS: list[str] = [
    "task", "dataset", "metric", "teacher", "student", "epoch", "method", "base_method",
    "mean", "std", "n", "seeds", "gain", "published", "source",
]  # fmt: skip


def _pair_mask(frame: pd.DataFrame, pair_set: set[tuple[str, str]]) -> list[bool]:
    return [(t, s) in pair_set for t, s in zip(frame["teacher"], frame["student"], strict=True)]


def _select(jobs: pd.DataFrame, pair_set: set[tuple[str, str]] | None, method_set: set[str] | None) -> pd.DataFrame:
    """Not-finished jobs that concern the requested pairs and methods (for the footer)."""
    keep = pd.Series(True, index=jobs.index)
    is_teacher = jobs["role"] == _TEACHER
    if method_set is not None:
        keep &= is_teacher | jobs["method"].isin(method_set)
    if pair_set is not None:
        students = {s for _, s in pair_set}
        archs = {t for t, _ in pair_set}
        in_pair = pd.Series(_pair_mask(jobs, pair_set), index=jobs.index, dtype=bool)
        solo = (jobs["teacher"] == "") & ~is_teacher & jobs["student"].isin(students)
        keep &= in_pair | solo | (is_teacher & jobs["student"].isin(archs))
    return jobs[keep]


def _teacher_rows(pair_rows: pd.DataFrame, teachers: pd.DataFrame, dist: pd.DataFrame) -> pd.DataFrame:
    """The teacher's score per pair: its own job runs first, else what the distillation runs logged."""
    pairs = pair_rows[pair_rows["teacher"] != ""]
    cols = [*PAIR_KEYS, "metric", "method", "base_method", "mean", "std", "n", "seeds", "gain"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    own = _stats(teachers, ["task", "dataset", "student"], "value").rename(columns={"student": "teacher"})
    own = own[own["n"] > 0]
    # One teacher checkpoint serves every seed: count distinct logged scores, not runs.
    logged = dist.merge(pairs, on=PAIR_KEYS).dropna(subset=["teacher_value"])
    logged = logged.drop_duplicates([*PAIR_KEYS, "teacher_value"])
    fb = logged.groupby(PAIR_KEYS)["teacher_value"].agg(fb_mean="mean", fb_std="std", fb_n="count").reset_index()
    out = pairs.merge(own, on=["task", "dataset", "teacher"], how="left").merge(fb, on=PAIR_KEYS, how="left")
    use_fb = out["n"].isna()
    for c in ("mean", "std", "n"):
        out[c] = out[c].where(~use_fb, out[f"fb_{c}"])
    out["seeds"] = out["seeds"].where(~use_fb, "")
    out = out[out["n"].fillna(0) > 0].copy()
    out["metric"] = out["task"].map(PRIMARY_METRIC)
    out["method"] = _TEACHER
    out["base_method"] = _TEACHER
    out["gain"] = np.nan
    return out[cols]


# ---------------------------------------------------------------------------------------------------
# Display
# ---------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _cell_parts(r: Any) -> list[tuple[str, str]]:
    """What a leaderboard cell shows, as ``(kind, text)`` pieces each renderer styles its own way.

    Kinds: ``mean``, ``std`` (the number only), ``n``, ``gain``, ``none`` (no finished run), ``published``.
    """
    parts: list[tuple[str, str]] = []
    if r.n > 0 and not math.isnan(r.mean):
        parts.append(("mean", _fmt(r.mean)))
        if r.n > 1 and not math.isnan(r.std):
            parts.append(("std", _fmt(r.std)))
        if r.method != _TEACHER or r.n > 1:
            parts.append(("n", f"(n={r.n})"))
        if not math.isnan(r.gain):
            parts.append(("gain", f"{r.gain:+.2f}"))
    else:
        parts.append(("none", "—"))
    if not math.isnan(r.published):
        parts.append(("published", _fmt(r.published)))
    return parts


def _text_cell(r: Any, pm: str = "±") -> str:
    shown = {"std": f"{pm} {{}}", "published": "[{}]"}
    return " ".join(shown.get(kind, "{}").format(text) for kind, text in _cell_parts(r))


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def _latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s)).replace("→", r"$\rightarrow$")


def _latex_cell(r: Any) -> str:
    return _latex_escape(_text_cell(r, pm="\x00")).replace("\x00", r"$\pm$").replace("—", "--")


def _pivot(tidy: pd.DataFrame) -> tuple[pd.DataFrame, list[str], str]:
    """One row per pair, method columns holding tidy row positions (-1: no entry); the title.

    Task, dataset and metric columns that are constant are folded into the title, as a paper
    table names its data set in the caption rather than on every row.
    """
    base = ["task", "dataset", "metric", "teacher", "student"]
    if tidy.empty:
        return pd.DataFrame(columns=base), [], "no finished runs"
    labels = sorted(tidy["method"].unique(), key=_method_rank)
    pos = tidy.assign(_pos=np.arange(len(tidy)))
    wide = pos.pivot(index=base, columns="method", values="_pos").reindex(columns=labels)
    labels = [TEACHER_COLUMN if m == _TEACHER else m for m in labels]
    wide.columns = labels
    wide = wide.fillna(-1).astype(int).reset_index()
    wide.columns.name = None
    folded = [c for c in ("task", "dataset", "metric") if wide[c].nunique() == 1]
    title = " · ".join([*(str(wide[c].iloc[0]) for c in folded), f"{tidy['epoch'].iloc[0]} epoch"])
    return wide.drop(columns=folded), labels, title


def _display(tidy: pd.DataFrame, cell: Any) -> tuple[pd.DataFrame, str]:
    """The pivot with each position replaced by ``cell(tidy row)``; teacher score column renamed."""
    wide, labels, title = _pivot(tidy)
    rows = list(tidy.itertuples(index=False))
    out = wide.copy()
    for m in labels:
        out[m] = [cell(rows[i]) if i >= 0 else "" for i in wide[m]]
    out["teacher"] = out["teacher"].replace("", "—")
    return out, title


def to_rich(lb: Leaderboard) -> Table:
    """A rich table for the terminal: gains coloured, published numbers dimmed."""
    from rich.markup import escape
    from rich.table import Table

    # Method labels such as ``kd[temperature=4]`` look like rich markup: escape every plain string.
    caption = escape("\n".join(lb.footer()))
    table = Table(title=escape(lb.title), caption=caption, caption_justify="left", show_lines=True)
    wide, labels, _ = _pivot(lb.tidy)
    names = [c for c in wide.columns if c not in labels]
    for c in names:
        table.add_column(escape(c), justify="left")
    for m in labels:
        table.add_column(escape(m), justify="right")
    rows = list(lb.tidy.itertuples(index=False))
    for r in wide.itertuples(index=False):
        vals = list(zip(wide.columns, r, strict=True))
        cells: list[Any] = [escape(str(v) or "—") for c, v in vals if c in names]
        cells += [_rich_cell(rows[v]) if v >= 0 else "" for c, v in vals if c in labels]
        table.add_row(*cells)
    return table


def _rich_cell(r: Any) -> Any:
    from rich.text import Text

    t = Text()
    for kind, text in _cell_parts(r):
        if kind == "mean" or kind == "none":
            t.append(text, style="bold" if kind == "mean" else "")
        elif kind == "std":
            t.append(f" ± {text}")
        elif kind == "n":
            t.append(f" {text}", style="dim")
        elif kind == "gain":
            t.append(f"\n{text}", style="green" if r.gain >= 0 else "red")
        else:
            t.append(f"\npaper {text}", style="dim italic")
    return t


def _markdown(df: pd.DataFrame) -> str:
    """A GitHub table without ``tabulate`` (pandas' ``to_markdown`` needs it; one dependency less)."""

    def esc(v: Any) -> str:
        return str(v).replace("|", r"\|").replace("\n", " ")

    head = [esc(c) for c in df.columns]
    rows = [[esc(v) for v in r] for r in df.itertuples(index=False)]
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]
    right = [c not in (*PAIR_KEYS, "metric") for c in df.columns]

    spec = list(zip(widths, right, strict=True))

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if r else v.ljust(w) for v, (w, r) in zip(vals, spec, strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else (":" + "-" * (w + 1)) for w, r in spec) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def _records(lb: Leaderboard) -> list[dict[str, Any]]:
    out = []
    for r in lb.tidy.to_dict(orient="records"):
        r = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        r["pair"] = f"{r['teacher']}:{r['student']}" if r["teacher"] else r["student"]
        out.append(r)
    return out


def render(lb: Leaderboard, fmt: str) -> str:
    """The leaderboard as text in ``fmt`` (markdown, csv, html, latex, json).

    CSV and JSON carry the tidy numbers (one record per pair and method) for machines; markdown,
    HTML and LaTeX carry the paper-style table for people.
    """
    if fmt == "markdown":
        body = _markdown(lb.table) if not lb.empty else "_No finished runs match._"
        return f"**{lb.title}**\n\n{body}\n\n" + "\n".join(f"- {line}" for line in lb.footer()) + "\n"
    if fmt == "csv":
        return lb.tidy.to_csv(index=False)
    if fmt == "json":
        failed = lb.failed.to_dict(orient="records")
        doc = {"title": lb.title, "epoch": lb.epoch, "records": _records(lb), "failed": failed}
        doc["unfinished"] = lb.unfinished
        doc["notes"] = lb.notes
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt == "html":
        return html_report(lb, None)
    if fmt == "latex":
        return _latex(lb)
    raise UserError(f"unknown report format {fmt!r}; valid: {', '.join(FORMATS)}")


def _latex(lb: Leaderboard) -> str:
    table, _ = _display(lb.tidy, _latex_cell)
    if table.empty:
        table = pd.DataFrame({"": ["no finished runs"]})
    table = table.copy()
    for c in ("task", "dataset", "metric", "teacher", "student"):
        if c in table:
            table[c] = table[c].map(_latex_escape)
    table.columns = [_latex_escape(c) for c in table.columns]
    styler = table.style.hide(axis="index")
    colfmt = "".join("l" if c in PAIR_KEYS or c == "metric" else "r" for c in table.columns)
    caption = _latex_escape(lb.title + ". " + lb.footer()[0]).replace("±", r"$\pm$")
    return styler.to_latex(hrules=True, column_format=colfmt, caption=caption, position="t")


def plot(lb: Leaderboard, path_png: str | Path) -> Path:
    """A grouped bar chart: one group per pair, one bar per method, std error bars, published markers.

    Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global backend
    (safe inside a CLI, a Ray worker or a notebook). One panel per task/data set, because their
    metrics do not share a scale. The y axis starts near the lowest score: KD gains are a point or
    two, invisible on bars that start at zero. The teacher's score is a dashed line over its group.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    tidy = lb.tidy
    panels = list(tidy.groupby(["task", "dataset", "metric"], sort=False)) if not tidy.empty else []
    widest = max((len(g[["teacher", "student"]].drop_duplicates()) for _, g in panels), default=1)
    legend_w = 0.8 + 0.075 * max((len(m) for m in tidy["method"]), default=8)
    fig = Figure(figsize=(max(4.0, 1.2 + 1.5 * widest) + legend_w, 3.6 * max(1, len(panels))), layout="constrained")
    FigureCanvasAgg(fig)
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center")
        ax.set_axis_off()
    labels = [m for m in sorted(tidy["method"].unique(), key=_method_rank) if m != _TEACHER]
    colors = {m: f"C{i % 10}" for i, m in enumerate(labels)}
    for k, ((task, dataset, metric), g) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        pairs = list(g[["teacher", "student"]].drop_duplicates().itertuples(index=False, name=None))
        here = [m for m in labels if m in set(g["method"])]
        width = 0.8 / max(1, len(here))
        ys_all: list[float] = []
        cell = {(r.teacher, r.student, r.method): r for r in g.itertuples(index=False)}
        published_x: list[float] = []
        published_y: list[float] = []
        for j, m in enumerate(here):
            xs, ys, es = [], [], []
            for i, p in enumerate(pairs):
                r = cell.get((*p, m))
                if r is None:
                    continue
                x = i - 0.4 + width * (j + 0.5)
                if r.n > 0 and not math.isnan(r.mean):
                    std = 0.0 if math.isnan(r.std) else r.std
                    xs.append(x)
                    ys.append(r.mean)
                    es.append(std)
                    ys_all += [r.mean - std, r.mean + std]
                if not math.isnan(r.published):
                    published_x.append(x)
                    published_y.append(r.published)
            if xs:
                ax.bar(xs, ys, width * 0.95, yerr=es, capsize=2, color=colors[m], label=m)
        if published_x:
            ax.scatter(published_x, published_y, marker="D", s=18, color="black", zorder=3, label="published")
            ys_all += published_y
        teacher_label = "teacher"
        for i, p in enumerate(pairs):
            r = cell.get((*p, _TEACHER))
            if r is not None and r.n > 0:
                ax.hlines(r.mean, i - 0.45, i + 0.45, colors="grey", linestyles="dashed", label=teacher_label)
                teacher_label = None
                ys_all.append(r.mean)
        if ys_all:
            lo, hi = min(ys_all), max(ys_all)
            span = max(hi - lo, 1.0)
            ax.set_ylim(lo - 0.3 * span, hi + 0.3 * span)
        ax.set_xticks(range(len(pairs)), [f"{t}\n→ {s}" if t else s for t, s in pairs], fontsize="small")
        ax.set_ylabel(f"{metric} ({lb.epoch} epoch)")
        ax.set_title(f"{task} · {dataset}")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path, dpi=110)
    return path


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 80rem;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.4rem; }
table.leaderboard { border-collapse: collapse; font-size: 0.9rem; margin: 1rem 0; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: 0.35rem 0.7rem;
                                             text-align: right; white-space: nowrap; }
table.leaderboard th { background: #f4f4f4; border-bottom: 2px solid #999; }
table.leaderboard td.name, table.leaderboard th.name { text-align: left; }
table.leaderboard tr:hover td { background: #fafafa; }
ul.notes { color: #555; font-size: 0.85rem; }
img.plot { max-width: 100%; border: 1px solid #eee; }
"""


def _html_table(lb: Leaderboard) -> str:
    if lb.empty:
        return "<p>No finished runs match.</p>"
    names = set(PAIR_KEYS) | {"metric"}
    head = "".join(
        f'<th class="{"name" if c in names else "num"}">{html.escape(str(c))}</th>' for c in lb.table.columns
    )
    rows = []
    for r in lb.table.itertuples(index=False):
        tds = "".join(
            f'<td class="{"name" if c in names else "num"}">{html.escape(str(v))}</td>'
            for c, v in zip(lb.table.columns, r, strict=True)
        )
        rows.append(f"<tr>{tds}</tr>")
    body = "\n".join(rows)
    return f'<table class="leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def html_report(lb: Leaderboard, plot_path: str | Path | None) -> str:
    """A standalone HTML page (table, notes, plot embedded as base64 PNG) to open in a browser.

    Embedding the image keeps the report one file that can be mailed or attached to an issue.
    """
    img = ""
    if plot_path is not None:
        p = Path(plot_path)
        if not p.is_file():
            raise UserError(f"plot {p} does not exist (call plot() first)")
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        img = f'<img class="plot" alt="leaderboard plot" src="data:image/png;base64,{data}">'
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in lb.footer())
    title = html.escape(lb.title)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>diffbench — {title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<h1>diffbench leaderboard — {title}</h1>\n{_html_table(lb)}\n<ul class="notes">{notes}</ul>\n{img}\n'
        "</body>\n</html>\n"
    )


__all__ = [
    "DEFAULT_REFERENCE",
    "FORMATS",
    "METHOD_ORDER",
    "PRIMARY_METRIC",
    "TEACHER_COLUMN",
    "TIDY_COLUMNS",
    "Leaderboard",
    "html_report",
    "leaderboard",
    "load_reference",
    "load_runs",
    "plot",
    "render",
    "to_rich",
]
