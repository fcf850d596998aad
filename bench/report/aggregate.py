"""Job runs → leaderboard numbers: dedupe, filter, mean ± std over seeds, gains with intervals, published numbers.

Only finished student runs count; when several finished runs share a job hash (a job re-run into a
fresh run) the latest one wins. The vanilla runs of a student architecture belong to every pair with
that student. Every comparison (gain over vanilla, difference to ``--vs``) is made between runs of the
same recipe and starting weights: paired by seed when both cells ran the same seeds (at least two),
else with Welch's interval and test (:mod:`bench.report.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.jobs.compat import NEUTRAL_HPARAMS
from bench.report import provenance
from bench.report.board import MISSING_METRIC, Leaderboard, method_rank, pair_label
from bench.report.load import RUN_TAGS
from bench.report.published import add_verdicts, attach_published, published_policy
from bench.report.schema import (
    EPOCHS,
    INIT_PRETRAINED,
    INIT_RANDOM,
    PAIR_KEYS,
    PAIRED,
    PRIMARY_METRIC,
    PUBLISHED_MODES,
    RECIPE_FIELDS,
    SIG_VANILLA,
    SIG_VS,
    TEACHER,
    TIDY_COLUMNS,
    VANILLA,
    WELCH,
    lower_is_better,
    metric_decimals,
)
from bench.report.stats import mark, one_sample, welch
from bench.tracking import schema as S
from methods.errors import UserError, unknown
from tasks.spec import task_spec

#: Tag ``bench.tracking.tracker`` sets on a job run that a later run of the same job replaced.
SUPERSEDED_TAG = f"tags.{S.SUPERSEDED}"
# Recipe fields that do not change a result: runs differing only in these are seeds of one configuration.
_IGNORED_CONFIG = {"params.recipe.num_workers"}
#: Per-cell provenance columns, aggregated as the sorted distinct values of the cell's runs.
_CELL_PROVENANCE = (
    "recipe_preset", *RECIPE_FIELDS, "student_init", "student_init_file", "workers",
    "git_commit", "diffbench_version", "experiment_id",
)  # fmt: skip
#: The configuration column of a run's starting weights: ``random`` (also for runs that do not record it: the task's
#: default is random weights) or ``sha256:<hex>`` of the weights file. Runs from different starting points are
#: different configurations (columns), and a gain is taken against vanilla runs that started from the same point.
INIT_CONFIG = f"params.{S.STUDENT_INIT}"


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


def _text_column(runs: pd.DataFrame, col: str, default: str) -> pd.Series | str:
    if col not in runs:
        return default
    s = runs[col].astype("string").fillna(default)
    return s.where(s != "", default).astype(str)


def _strings(runs: pd.DataFrame, col: str) -> pd.Series:
    """A text column, stripped, ``""`` where absent."""
    if col not in runs:
        return pd.Series("", index=runs.index, dtype=object)
    return runs[col].astype("string").fillna("").str.strip().astype(str)


def _init_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: ``init_ref`` (``random`` or ``sha256:<hex>``), its kind ``student_init`` and ``student_init_file``."""
    ref = _strings(runs, INIT_CONFIG)
    pretrained = ref.str.startswith("sha256:")
    ref = ref.where(pretrained, INIT_RANDOM)  # absent, "random" (or anything else): random weights
    files = _strings(runs, f"params.{S.STUDENT_INIT_FILE}")
    return pd.DataFrame(
        {
            "init_ref": ref,
            "student_init": np.where(pretrained, INIT_PRETRAINED, INIT_RANDOM),
            "student_init_file": files.where(pretrained, ""),
        },
        index=runs.index,
    )


def _normalise(runs: pd.DataFrame, epoch: str, metric: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plain tag columns, the chosen metric value, provenance fields and configuration keys per run.

    ``metric``: the metric of every task (``None``: each task's primary one). ``teacher_value`` (the teacher's score
    that distillation runs log, ``teacher_<metric>``) exists for the primary metric only.
    """
    w = pd.DataFrame(index=runs.index)
    for t in RUN_TAGS:
        w[t] = runs[f"tags.{t}"].fillna("").astype(str) if f"tags.{t}" in runs else ""
    for t in ("recipe_preset", "git_commit", "diffbench_version"):  # absent on runs of older diffbench
        w[t] = _text_column(runs, f"tags.{t}", provenance.UNKNOWN)
    for f, default in RECIPE_FIELDS.items():
        w[f] = _text_column(runs, f"params.recipe.{f}", default or "?")
    w[["init_ref", "student_init", "student_init_file"]] = _init_columns(runs)
    w["workers"] = _text_column(runs, f"tags.{S.WORKERS}", provenance.UNKNOWN)  # absent on runs of older diffbench
    w["run_id"] = runs["run_id"].astype(str) if "run_id" in runs else runs.index.astype(str)
    w["experiment_id"] = _text_column(runs, "experiment_id", "")
    w["status"] = runs["status"].fillna("") if "status" in runs else "FINISHED"
    for col in ("start_time", "end_time"):
        w[col] = pd.to_datetime(runs[col], utc=True) if col in runs else pd.NaT
    if f"tags.{S.KIND}" in runs:
        w = w[runs[f"tags.{S.KIND}"].fillna(S.KIND_JOB) == S.KIND_JOB]
        runs = runs.loc[w.index]
    if SUPERSEDED_TAG in runs:  # a run a later run of the same job replaced: kept for the record only
        w = w[runs[SUPERSEDED_TAG].fillna("") != "true"]
        runs = runs.loc[w.index]
    w["metric"] = w["task"].map(PRIMARY_METRIC) if metric is None else metric
    w["value"] = np.nan
    w["teacher_value"] = np.nan
    for task, primary in PRIMARY_METRIC.items():
        mask = w["task"] == task
        if not mask.any():
            continue
        chosen = metric or primary
        sources = [(f"metrics.{epoch}_{chosen}", "value")]
        if chosen == primary:
            sources.append((f"metrics.teacher_{chosen}", "teacher_value"))
        for src, dst in sources:
            if src in runs:
                w.loc[mask, dst] = pd.to_numeric(runs.loc[mask, src], errors="coerce")
    cfg_cols = sorted(
        c for c in runs if (c.startswith("params.hp.") or c.startswith("params.recipe.")) and c not in _IGNORED_CONFIG
    )
    cfg = runs[cfg_cols].astype("string").fillna("") if cfg_cols else pd.DataFrame(index=runs.index)
    # An absent precision param is fp32 (the only precision before it became a recipe field).
    if "params.recipe.precision" in cfg:
        cfg["params.recipe.precision"] = cfg["params.recipe.precision"].replace("", "fp32")
    # Likewise a hyper-parameter added later: absent means the value that reproduces the old behaviour.
    method = runs["tags.method"].fillna("") if "tags.method" in runs else pd.Series("", index=runs.index)
    for name_of_method, neutral in NEUTRAL_HPARAMS.items():
        rows = method == name_of_method
        for name, value in neutral.items():
            if f"params.hp.{name}" in cfg:
                cfg.loc[rows, f"params.hp.{name}"] = cfg.loc[rows, f"params.hp.{name}"].replace("", str(value))
    cfg[INIT_CONFIG] = w["init_ref"].astype("string")
    w["config"] = _row_key(cfg)
    # What a gain must hold equal: the recipe and the starting weights (a method's own hyper-parameters differ).
    recipe_cols = [c for c in cfg_cols if c.startswith("params.recipe.")]
    w["recipe_key"] = _row_key(cfg[[*recipe_cols, INIT_CONFIG]])
    w["recipe_only_key"] = _row_key(cfg[recipe_cols])  # the recipe alone (provenance counts recipes)
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
        inits = _init_labels(grp) if INIT_CONFIG in differing else {}
        for idx, src in zip(grp.index, grp["_src"], strict=True):
            desc = ", ".join(
                f"init={inits[cfg.at[src, c]]}"
                if c == INIT_CONFIG
                else f"{c.split('.', 2)[2]}={cfg.at[src, c] or 'unset'}"
                for c in differing
            )
            labels.at[idx] = f"{grp.at[idx, 'method']}[{desc}]"
    return labels


def _init_labels(runs: pd.DataFrame) -> dict[str, str]:
    """A short name per starting point in ``runs``: ``random``, the weights file's name, else ``sha256:<12 hex>``.

    Two files of one name (different contents) get ``name@<8 hex>`` so that no two columns share a label.
    """
    names: dict[str, str] = {}
    for ref, file in zip(runs["init_ref"], runs["student_init_file"], strict=True):
        if ref == INIT_RANDOM:
            names[ref] = INIT_RANDOM
        elif file or ref not in names:
            names[ref] = file or ref[: len("sha256:") + 12]
    counts = pd.Series(list(names.values())).value_counts()
    return {ref: f"{n}@{ref[len('sha256:') : len('sha256:') + 8]}" if counts[n] > 1 else n for ref, n in names.items()}


def _seed_key(s: str) -> tuple[int, Any]:
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)


def _join_sorted(values: pd.Series) -> str:
    return ",".join(sorted(set(values), key=provenance.natural_key))


def _distinct(g: Any, frame: pd.DataFrame, keys: list[str], col: str) -> pd.Series:
    """Per group, the sorted distinct values of ``col`` joined by commas.

    Almost every group has one value (one recipe, one commit), so ``first`` (vectorised) answers
    those and the Python join runs only for the groups that mix values.
    """
    out = g[col].first()
    mixed = g[col].nunique() > 1
    if mixed.any():
        sub = frame.set_index(keys).loc[mixed[mixed].index].reset_index()
        out.loc[mixed] = sub.groupby(keys, sort=False, dropna=False)[col].agg(_join_sorted)
    return out


def _aggregate(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Per group: mean, sample std (ddof=1, NaN for one seed), n (runs with a value), seeds, provenance."""
    g = frame.groupby(keys, sort=False, dropna=False)
    out = g[value].agg(mean="mean", std="std", n="count")  # pandas' std is the sample std (ddof=1)
    out["_runs"] = g.size()  # finished runs, with or without a value (n counts those with one)
    for col in _CELL_PROVENANCE:
        out[col] = _distinct(g, frame, keys, col)
    out["first_run"] = g["start_time"].min()
    out["last_run"] = g["end_time"].max()
    seed_keys = {s: _seed_key(s) for s in frame["seed"].unique()}  # a few seeds, thousands of runs
    ordered = frame.assign(_seed=frame["seed"].map(seed_keys)).sort_values("_seed", kind="stable")
    by_seed = ordered.groupby(keys, sort=False, dropna=False)
    out["run_ids"] = by_seed["run_id"].agg(",".join)
    seeds = ordered.drop_duplicates([*keys, "seed"])
    out["seeds"] = seeds.groupby(keys, sort=False, dropna=False)["seed"].agg(",".join)
    return out.reset_index()


def _seed_values(member: pd.DataFrame, tidy: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Each run's value with its cell (``_cell``: the tidy row it counts in) and ``seed``; runs without a value out."""
    cells = tidy[keys].assign(_cell=np.arange(len(tidy)))
    runs = member[[*keys, "seed", "value"]].dropna(subset=["value"]).merge(cells, on=keys, how="inner")
    return runs[["_cell", "seed", "value"]]


def _paired_differences(rows: np.ndarray, bases: np.ndarray, seeds: pd.DataFrame) -> pd.DataFrame:
    """Per tidy row against its baseline cell: whether the seeds pair, and the per-seed differences' mean, std, n.

    A row pairs with its baseline when both ran exactly the same seeds, each once, at least two of them. Both
    cells hold runs of one recipe and one starting point (the baseline is looked up on ``recipe_key``), so the
    runs of seed ``i`` started from the same weights and saw the same data order: what pairing needs.

    Args:
        rows: tidy row positions; bases: the baseline's row position per row (NaN: none).
        seeds: :func:`_seed_values`.

    Returns:
        Indexed by ``rows``: ``paired`` (bool) and ``d_mean``, ``d_std``, ``d_n`` of ``row - baseline`` per seed.
    """
    out = pd.DataFrame({"paired": False, "d_mean": np.nan, "d_std": np.nan, "d_n": 0}, index=rows)
    has = ~np.isnan(bases)
    if not has.any() or seeds.empty:
        return out
    link = pd.DataFrame({"_row": rows[has], "_base": bases[has].astype(int)})
    per_cell = seeds.groupby("_cell").agg(n=("seed", "size"), distinct=("seed", "nunique"))
    left = link.merge(seeds.rename(columns={"_cell": "_row"}), on="_row")
    pairs = left.merge(seeds.rename(columns={"_cell": "_base", "value": "_base_value"}), on=["_base", "seed"])
    d = pairs.assign(d=pairs["value"] - pairs["_base_value"]).groupby("_row")["d"].agg(["mean", "std", "size"])
    link = link.join(d, on="_row")
    mine = per_cell.reindex(link["_row"]).reset_index(drop=True)
    theirs = per_cell.reindex(link["_base"]).reset_index(drop=True)
    count = link["size"].fillna(0).to_numpy()
    ok = (
        (count >= 2)
        & (count == mine["n"].to_numpy())
        & (count == theirs["n"].to_numpy())
        & (mine["n"] == mine["distinct"]).to_numpy()
        & (theirs["n"] == theirs["distinct"]).to_numpy()
    )
    at = link["_row"].to_numpy()
    out.loc[at, "paired"] = ok
    out.loc[at, "d_mean"] = link["mean"].to_numpy()
    out.loc[at, "d_std"] = link["std"].to_numpy()
    out.loc[at, "d_n"] = count.astype(int)
    return out


def _compare(
    tidy: pd.DataFrame, base: pd.DataFrame, prefix: str, levels: tuple[tuple[float, str], ...], seeds: pd.DataFrame
) -> None:
    """Add ``<prefix>``, ``<prefix>_ci_low/high``, ``p_…``, ``sig_…`` and test columns: each row against ``base``.

    ``base`` holds the baseline rows of ``tidy`` (one per pair, recipe and starting point, ``recipe_key``; ambiguous
    keys are dropped). A row whose seeds pair with its baseline's (:func:`_paired_differences`) is compared by the
    paired test (:func:`~bench.report.stats.one_sample` on the per-seed differences), any other by Welch's.
    """
    keys = [*PAIR_KEYS, "recipe_key"]
    base = base[[*keys, "mean", "std", "n"]].assign(_base=base.index.to_numpy(dtype=float))
    base = base.drop_duplicates(keys, keep=False)
    j = tidy[keys].merge(base, on=keys, how="left", validate="many_to_one")
    res = welch(tidy["mean"], tidy["std"], tidy["n"], j["mean"], j["std"], j["n"])
    pair = _paired_differences(np.arange(len(tidy)), j["_base"].to_numpy(dtype=float), seeds)
    paired = pair["paired"].to_numpy()
    pres = one_sample(pair["d_mean"], pair["d_std"], pair["d_n"])
    tidy[prefix] = np.where(paired, pres.diff, res.diff)
    tidy[f"{prefix}_ci_low"] = np.where(paired, pres.ci_low, res.ci_low)
    tidy[f"{prefix}_ci_high"] = np.where(paired, pres.ci_high, res.ci_high)
    tidy[f"_{prefix}_base_n"] = j["n"].to_numpy()
    p = np.where(paired, pres.p, res.p)
    tested = (tidy["n"].to_numpy() >= 2) & (j["n"].fillna(0).to_numpy() >= 2)
    gain = prefix == "gain"
    tidy["p_vs_vanilla" if gain else "p_vs"] = p
    tidy["sig_vs_vanilla" if gain else "sig_vs"] = [mark(x, levels) for x in p]
    tidy["test" if gain else "test_vs"] = np.where(paired, PAIRED, np.where(tested, WELCH, ""))


def leaderboard(
    runs: pd.DataFrame,
    epoch: str = "best",
    *,
    task: str | None = None,
    dataset: str | None = None,
    pairs: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    reference: pd.DataFrame | None = None,
    vs: str | None = None,
    published: str = "match",
    metric: str | None = None,
) -> Leaderboard:
    """Aggregate job runs into a leaderboard.

    The teacher's score comes from the teacher job's runs, else from the ``teacher_<metric>`` that
    distillation runs logged. A requested method (``methods``) or a job that exists but did not finish
    gets an ``n=0`` cell rather than silently no column.

    Args:
        runs: a frame from :func:`~bench.report.load_runs` (or :func:`mlflow.search_runs`).
        epoch: ``best`` (``best_<metric>``) or ``last`` (``last_<metric>``).
        task / dataset: keep one task / data set.
        pairs: keep these ``teacher:student`` pairs.
        methods: show these method columns (vanilla is still used for the gain).
        reference: published numbers (:func:`~bench.report.load_reference`); rows with teacher ``?`` never match.
        vs: a second reference method (e.g. ``dkd``): every other cell also gets its difference to it,
            with an interval and test (paired or Welch, as against vanilla).
        published: ``match`` (published numbers only beside runs of the paper's recipe preset),
            ``always`` or ``never``.
        metric: rank every task on this metric (``best_<metric>`` / ``last_<metric>``) instead of its primary one,
            e.g. ``excess_nll``; the teacher's score then comes from its own job runs only, and published numbers
            (all of a primary metric) are not shown. Cells whose runs did not log it are ``n=0`` with a note.

    Raises:
        UserError: a bad ``epoch``, pair or ``published`` mode, a task without a known metric, a ``metric`` a
            selected task does not report, or a ``vs`` method with no finished run.
    """
    if epoch not in EPOCHS:
        raise unknown("--epoch", epoch, EPOCHS)
    if published not in PUBLISHED_MODES:
        raise unknown("--published", published, PUBLISHED_MODES)
    grid = runs.attrs.get("grid")
    pair_set = _parse_pairs(pairs)
    method_set = {m.strip() for m in methods} if methods is not None else None
    runs = runs.reset_index(drop=True)
    w, cfg = _normalise(runs, epoch, metric)
    w["_src"] = w.index
    if task is not None:
        w = w[w["task"] == task]
    if dataset is not None:
        w = w[w["dataset"] == dataset]
    no_metric = sorted(set(w["task"].unique()) - set(PRIMARY_METRIC))
    if no_metric:
        raise UserError(f"task {no_metric[0]!r} has no known primary metric; known: {', '.join(PRIMARY_METRIC)}")
    if metric is not None:
        for t in sorted(set(w["task"])):
            task_spec(t).check_metric(metric)

    finished = _latest_per_job(w[w["status"] == "FINISHED"])
    done_hashes = finished.loc[finished["job_hash"] != "", "job_hash"].unique()  # an array: isin() takes it as is
    pending = _latest_per_job(w[(w["status"] != "FINISHED") & ~w["job_hash"].isin(done_hashes)])
    pending = _select(pending, pair_set, method_set)
    failed = pending[pending["status"] == "FAILED"]
    counts = pending.loc[pending["status"] != "FAILED", "status"].value_counts()
    unfinished = {str(k): int(v) for k, v in counts.items()}

    students = finished[finished["role"] != TEACHER]
    teachers = finished[finished["role"] == TEACHER]
    dist = students[students["teacher"] != ""]
    solo = students[students["teacher"] == ""]
    pending_dist = pending[(pending["role"] != TEACHER) & (pending["teacher"] != "")]
    pair_rows = pd.concat([dist[PAIR_KEYS], pending_dist[PAIR_KEYS]]).drop_duplicates()
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
    tidy = _aggregate(member, stat_keys, "value")
    tidy["note"] = _missing_value_notes(tidy, epoch)
    seeds = _seed_values(member, tidy, stat_keys)
    tidy = tidy.rename(columns={"method": "base_method"})
    notes: list[str] = list(grid["notes"]) if grid else []
    # The baseline is the method's row of the same pair and recipe; a sweep of it (two rows) is no baseline.
    _compare(tidy, tidy[tidy["base_method"] == VANILLA], "gain", SIG_VANILLA, seeds)
    tidy.loc[tidy["base_method"] == VANILLA, ["gain", "gain_ci_low", "gain_ci_high", "p_vs_vanilla"]] = np.nan
    tidy.loc[tidy["base_method"] == VANILLA, ["sig_vs_vanilla", "test"]] = ""
    tidy["vs_method"] = vs or ""
    if vs:
        ref_rows = tidy[tidy["base_method"] == vs]
        if ref_rows.empty and len(tidy):
            have = ", ".join(sorted(set(tidy["base_method"]), key=method_rank))
            raise UserError(f"--vs {vs}: no finished {vs} run in this table; it has {have}")
        _compare(tidy, ref_rows, "diff_vs", SIG_VS, seeds)
        tidy.loc[tidy["base_method"] == vs, ["diff_vs", "diff_vs_ci_low", "diff_vs_ci_high", "p_vs"]] = np.nan
        tidy.loc[tidy["base_method"] == vs, ["sig_vs", "test_vs"]] = ""
    tidy = tidy.drop(columns=["recipe_key"]).rename(columns={"label": "method"})

    dup = member.groupby([*PAIR_KEYS, "label", "seed"]).size()
    for (t_, d_, te, st, lab, seed), count in dup[dup > 1].items():
        notes.append(f"{lab} {pair_label(te, st)} ({t_}/{d_}): seed {seed} counted {count}× (different job hashes)")

    trows, used_teachers = _teacher_rows(pair_rows, teachers, dist, metric)
    tidy = pd.concat([df for df in (trows, tidy) if len(df)], ignore_index=True) if len(trows) else tidy
    if method_set is not None:
        tidy = tidy[tidy["base_method"].isin(method_set | {TEACHER})]
        member = member[member["method"].isin(method_set)]
    tidy = attach_published(tidy.reset_index(drop=True), reference)
    notes += published_policy(tidy, published)
    if metric is not None and reference is not None and published != "never" and len(tidy):
        primaries = sorted({PRIMARY_METRIC[t] for t in tidy["task"]} - {metric})
        if primaries:
            notes.append(f"Published numbers are of {'/'.join(primaries)}: none is shown beside {metric}.")
    tidy = _add_missing_cells(tidy, pair_rows, pending, method_set, metric)
    tidy["lower_is_better"] = [lower_is_better(t, m) for t, m in zip(tidy["task"], tidy["metric"], strict=True)]
    tidy["decimals"] = [metric_decimals(t, m) for t, m in zip(tidy["task"], tidy["metric"], strict=True)]
    tidy["epoch"] = epoch
    tidy["n"] = tidy["n"].fillna(0).astype(int)
    add_verdicts(tidy)
    tidy["note"] = _cell_notes(tidy)
    tidy["_rank"] = tidy["method"].map(method_rank)
    tidy = tidy.sort_values([*PAIR_KEYS, "_rank"], kind="stable").reset_index(drop=True)
    tidy = tidy.reindex(columns=TIDY_COLUMNS)
    for c in TIDY_COLUMNS:
        if tidy[c].dtype == object or isinstance(tidy[c].dtype, pd.StringDtype):  # pandas 3 infers "str"
            tidy[c] = tidy[c].where(tidy[c].notna(), "")
    from bench.report.cells import display_table

    table, title = display_table(tidy)
    return Leaderboard(
        tidy=tidy,
        table=table,
        epoch=epoch,
        title=title,
        failed=failed[[*PAIR_KEYS, "method", "seed", "failure_reason", "run_id"]].reset_index(drop=True),
        unfinished=unfinished,
        notes=notes,
        provenance=provenance.summarise(member, used_teachers),
        vs=vs,
        grid=grid,
    )


def _missing_value_notes(tidy: pd.DataFrame, epoch: str) -> list[str]:
    """``n=0`` cells whose runs finished without logging the metric (``excess_nll`` off colorshapes-few) say so."""
    return [
        f"n=0, {k} finished run{'s' if k > 1 else ''}{MISSING_METRIC}{epoch}_{m}" if n == 0 and k > 0 else ""
        for n, k, m in zip(tidy["n"], tidy["_runs"], tidy["metric"], strict=True)
    ]


def _cell_notes(tidy: pd.DataFrame) -> list[str]:
    """Why a cell has no interval: one seed, or a vanilla baseline with one seed (kept in every format)."""
    if "note" not in tidy:
        tidy["note"] = ""
    out = []
    cols = {"method": "method", "n": "n", "note": "note", "gain": "gain", "gain_ci_low": "gain_ci_low",
            "_gain_base_n": "base_n", "test": "test"}  # fmt: skip
    # itertuples renames a column whose name starts with "_": hence base_n
    for r in tidy.reindex(columns=list(cols)).rename(columns=cols).itertuples(index=False):
        if r.n == 0:
            out.append(r.note if isinstance(r.note, str) and r.note else "n=0, no finished run")
        elif r.method == TEACHER:
            out.append("")
        elif r.n == 1:
            out.append("n=1, no CI")
        elif not math.isnan(r.gain) and math.isnan(r.gain_ci_low):
            if r.base_n == 1:
                out.append("vanilla n=1, no CI")
            elif r.test == PAIRED:
                out.append("paired differences without spread, no CI")
            else:
                out.append("no spread over seeds, no CI")
        else:
            out.append("")
    return out


def _add_missing_cells(
    tidy: pd.DataFrame,
    pair_rows: pd.DataFrame,
    pending: pd.DataFrame,
    method_set: set[str] | None,
    metric: str | None = None,
) -> pd.DataFrame:
    """``n=0`` cells: requested methods without a finished run, and jobs that exist but did not finish."""
    if pair_rows.empty:
        return tidy
    have = set(zip(*(tidy[k] for k in PAIR_KEYS), tidy["base_method"], strict=True))
    want: dict[tuple[str, ...], list[str]] = {}
    if method_set is not None:
        for p in pair_rows[PAIR_KEYS].itertuples(index=False, name=None):
            for m in sorted(method_set - {TEACHER}):
                want.setdefault((*p, m), [])
    students = pending[pending["role"] != TEACHER]
    solo = (
        students[students["teacher"] == ""].drop(columns="teacher").merge(pair_rows, on=["task", "dataset", "student"])
    )
    both = pd.concat([students[students["teacher"] != ""].merge(pair_rows, on=PAIR_KEYS), solo])
    for r in both[[*PAIR_KEYS, "method", "status"]].itertuples(index=False, name=None):
        want.setdefault(r[:5], []).append(r[5].lower())
    rows = []
    for key, statuses in want.items():
        if key in have:
            continue
        counts = pd.Series(statuses, dtype=object).value_counts()
        why = f" ({', '.join(f'{n} {s}' for s, n in counts.items())})" if len(counts) else ""
        task, dataset, teacher, student, method = key
        rows.append({
            "task": task, "dataset": dataset, "teacher": teacher, "student": student,
            "metric": metric or PRIMARY_METRIC.get(task, ""), "method": method, "base_method": method,
            "n": 0, "seeds": "", "note": f"n=0, no finished run{why}",
        })  # fmt: skip
    if not rows:
        return tidy
    return pd.concat([tidy, pd.DataFrame(rows)], ignore_index=True)


def _pair_mask(frame: pd.DataFrame, pair_set: set[tuple[str, str]]) -> list[bool]:
    return [(t, s) in pair_set for t, s in zip(frame["teacher"], frame["student"], strict=True)]


def _select(jobs: pd.DataFrame, pair_set: set[tuple[str, str]] | None, method_set: set[str] | None) -> pd.DataFrame:
    """Not-finished jobs that concern the requested pairs and methods (for the footer)."""
    keep = pd.Series(True, index=jobs.index)
    is_teacher = jobs["role"] == TEACHER
    if method_set is not None:
        keep &= is_teacher | jobs["method"].isin(method_set)
    if pair_set is not None:
        students = {s for _, s in pair_set}
        archs = {t for t, _ in pair_set}
        in_pair = pd.Series(_pair_mask(jobs, pair_set), index=jobs.index, dtype=bool)
        solo = (jobs["teacher"] == "") & ~is_teacher & jobs["student"].isin(students)
        keep &= in_pair | solo | (is_teacher & jobs["student"].isin(archs))
    return jobs[keep]


def _teacher_rows(
    pair_rows: pd.DataFrame, teachers: pd.DataFrame, dist: pd.DataFrame, metric: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The teacher's score per pair (its own job runs first, else what the distillation runs logged: the primary
    metric's ``teacher_<metric>``; ``metric`` another one has none).

    Returns:
        The tidy teacher rows and the teacher runs they were computed from (for the provenance).
    """
    pairs = pair_rows[pair_rows["teacher"] != ""]
    if pairs.empty:
        return pd.DataFrame(), teachers.iloc[0:0]
    own = _aggregate(teachers, ["task", "dataset", "student"], "value").rename(columns={"student": "teacher"})
    own = own[own["n"] > 0]
    # One teacher checkpoint serves every seed: count distinct logged scores, not runs.
    logged = dist.merge(pairs, on=PAIR_KEYS).dropna(subset=["teacher_value"])
    logged = logged.drop_duplicates([*PAIR_KEYS, "teacher_value"])
    fb = _aggregate(logged, PAIR_KEYS, "teacher_value")
    with_own = pairs.merge(own, on=["task", "dataset", "teacher"], how="inner")
    rest = pairs.merge(own[["task", "dataset", "teacher"]], how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].drop(columns="_merge")
    out = pd.concat([with_own, rest.merge(fb, on=PAIR_KEYS, how="inner")], ignore_index=True)
    out = out[out["n"].fillna(0) > 0].copy()
    out["metric"] = out["task"].map(PRIMARY_METRIC) if metric is None else metric
    out["method"] = TEACHER
    out["base_method"] = TEACHER
    used = set(zip(with_own["task"], with_own["dataset"], with_own["teacher"], strict=True))
    mask = [k in used for k in zip(teachers["task"], teachers["dataset"], teachers["student"], strict=True)]
    return out, teachers[np.array(mask, dtype=bool)]
