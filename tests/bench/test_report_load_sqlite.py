"""bench.report.load on SQLite: the store read directly equals what ``MlflowClient.search_runs`` returns.

One store, written with ``MlflowClient`` as the tracker writes it (two experiments, grids with and without
``grid_jobs.json``, NaN and re-logged metrics, failed, running and deleted runs, a run that is no job), is
read both ways; the frames must be equal (values, dtypes, row order, ``attrs``), with and without the task,
dataset and grid filters, and so must the one-line errors.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("mlflow")

from report_store import T0, grid_run, log_job, new_store  # noqa: E402

from bench.report import load  # noqa: E402
from methods.base import UserError  # noqa: E402

NAN = float("nan")
KD0 = "classification-resnet56-resnet20-kd-0"
VAN0 = "classification--resnet20-vanilla-0"


def _artifact(client, run_id: str, name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        client.log_artifact(run_id, str(path))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    from mlflow.entities import Metric, Param, RunTag

    client, uri, exp = new_store(tmp_path_factory.mktemp("sqlite-direct"))
    recipe = {"recipe.epochs": 240, "recipe.lr": 0.05, "recipe.batch_size": 64, "recipe.precision": "fp32"}
    first = grid_run(client, exp, "nightly", start=0)

    def job(parent=first, **kw):
        kw.setdefault("params", recipe)
        kw.setdefault("tags", {"recipe_preset": "cifar100", "diffbench_version": "0.1.0"})
        return log_job(client, exp, parent, **kw)

    for s, (b, la) in enumerate([(69.0, 68.8), (69.5, 69.1), (70.1, 69.9)]):
        job(student="resnet20", method="vanilla", seed=s, best=b, last=la, end=20 + s)
    job(student="resnet56", method="vanilla", seed=0, role="teacher", best=72.0, last=71.6, end=10)
    kd = job(student="resnet20", teacher="resnet56", method="kd", seed=0, best=70.5, last=70.1, end=30,
             params={**recipe, "hp.temperature": 4}, extra_metrics={"teacher_top1": 71.9})  # fmt: skip
    # Re-logged metrics: search_runs reports the value of the latest step (then timestamp), NaN included.
    client.log_batch(kd, metrics=[Metric("val/top1", 80.0, T0 + 50, 10), Metric("val/top1", 81.0, T0 + 40, 9),
                                  Metric("probe", 1.0, T0, 1), Metric("probe", NAN, T0, 2),
                                  Metric("probe2", NAN, T0, 1), Metric("probe2", 3.5, T0, 2),
                                  Metric("huge", math.inf, T0, 0)])  # fmt: skip
    job(student="resnet20", teacher="resnet56", method="kd", seed=1, best=NAN, last=NAN, end=31,
        params={**recipe, "hp.temperature": 4})  # a NaN score: the column stays float  # fmt: skip
    job(student="resnet20", teacher="resnet56", method="dkd", seed=0, best=71.5, last=71.2, end=32,
        status="FAILED", reason="CUDA out of memory\nat step 3")  # fmt: skip
    job(student="resnet20", teacher="resnet56", method="dkd", seed=1, best=None, last=None, end=33,
        status="RUNNING", params={})  # no end time, no params, no metrics  # fmt: skip
    gone = job(student="resnet20", teacher="resnet56", method="fitnet", seed=0, best=60.0, end=34)
    client.delete_run(gone)
    job(student="resnet20", teacher="resnet56", method="kd", seed=2, best=70.2, end=35,
        tags={"diffbench.superseded": "true", "note": ""})  # an empty tag value  # fmt: skip
    job(student="frcnn_r18", teacher="frcnn_r101", method="kd", seed=0, task="detection", dataset="coco",
        metric="bbox_AP", best=38.5, last=38.0, end=40, params={"recipe.epochs": 12})  # fmt: skip
    job(student="frcnn_r18", method="vanilla", seed=0, task="detection", dataset="coco", metric="bbox_AP",
        best=36.0, last=35.5, end=41, params={"recipe.epochs": 12})  # fmt: skip
    # Two runs starting in the same millisecond (still running): ties are ordered by run id.
    for s in (3, 4):
        run = client.create_run(exp, start_time=T0 + 7, tags={"diffbench.kind": "job", "task": "classification",
                                                               "dataset": "imagenet", "student": "resnet20",
                                                               "method": "vanilla", "seed": str(s)})  # fmt: skip
        client.log_batch(run.info.run_id, metrics=[Metric("best_top1", 69.0 + s, T0, 0)],
                         params=[Param("recipe.epochs", "240")], tags=[RunTag("role", "student")])  # fmt: skip
    client.create_run(exp, tags={"note": "not a diffbench job"})

    # The re-run of grid "nightly": two jobs finished under the first run, one is new.
    rerun = grid_run(client, exp, "nightly", jobs=[VAN0, KD0, "classification-resnet56-resnet20-dkd-2"], start=60)
    client.set_tag(rerun, "grid_hash", "0123456789ab")
    job(rerun, student="resnet20", teacher="resnet56", method="dkd", seed=2, best=72.3, last=72.0, end=61)
    broken = grid_run(client, exp, "broken", start=70)
    _artifact(client, broken, "grid_jobs.json", "[not json")
    job(broken, student="resnet20", teacher="resnet56", method="diffkd", seed=0, best=72.6, end=71)
    odd = grid_run(client, exp, "odd", start=80)
    _artifact(client, odd, "grid_jobs.json", json.dumps({"jobs": 3}))
    job(odd, student="resnet20", teacher="resnet56", method="ofa", seed=0, best=71.0, end=81)
    records = grid_run(client, exp, "records", start=90)
    _artifact(client, records, "grid_jobs.json", json.dumps([{"job_hash": KD0}, {"job_hash": ""}, 7]))
    deleted_grid = grid_run(client, exp, "deleted-grid", jobs=[KD0], start=95)
    client.delete_run(deleted_grid)

    other = client.create_experiment("other")
    g = grid_run(client, other, "nightly", jobs=[], start=100)
    log_job(client, other, g, student="resnet8", method="kd", teacher="resnet32", seed=0, best=50.0, end=101)
    log_job(client, other, g, student="resnet8", method="vanilla", seed=0, best=48.0, dataset="digits", end=102)
    gone_exp = client.create_experiment("gone")
    log_job(client, gone_exp, None, student="resnet8", method="kd", seed=0, best=1.0, end=103)
    client.delete_experiment(gone_exp)
    return {"uri": uri, "first": first, "rerun": rerun, "broken": broken, "deleted_grid": deleted_grid,
            "records": records, "other_grid": g}  # fmt: skip


def _both(uri: str, experiment: str = "diffbench", **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    direct = load.load_runs(uri, experiment, **kw)
    client = load._load_runs(uri, experiment, read_sqlite=False, page_size=4, **kw)  # several pages
    return direct, client


def _assert_same(direct: pd.DataFrame, client: pd.DataFrame) -> None:
    assert list(direct["run_id"]) == list(client["run_id"])  # search_runs' order: newest first, then run id
    assert direct.attrs == client.attrs
    pd.testing.assert_frame_equal(
        direct.sort_values("run_id").reset_index(drop=True).sort_index(axis=1),
        client.sort_values("run_id").reset_index(drop=True).sort_index(axis=1),
    )


CASES = {
    "everything": {},
    "task": {"task": "classification"},
    "dataset": {"dataset": "coco"},
    "task and dataset": {"task": "detection", "dataset": "coco"},
    "no match": {"task": "segmentation"},
    "only running runs (no end time at all)": {"dataset": "imagenet"},
    "grid by name (the latest)": {"grid": "nightly"},
    "grid by hash": {"grid": "0123456789ab"},
    "grid and task": {"grid": "nightly", "task": "classification"},
    "grid without a list": {"grid": "FIRST"},
    "grid list unreadable": {"grid": "BROKEN"},
    "grid list not hashes": {"grid": "odd"},
    "grid list of records": {"grid": "RECORDS"},
    "deleted grid by id": {"grid": "DELETED_GRID"},
}


@pytest.mark.parametrize("kw", list(CASES.values()), ids=list(CASES))
def test_direct_read_equals_search_runs(store, kw):
    kw = {k: store.get(v.lower(), v) if k == "grid" else v for k, v in kw.items()}
    direct, client = _both(store["uri"], **kw)
    _assert_same(direct, client)
    assert len(direct) or kw.get("task") == "segmentation"


@pytest.mark.parametrize("kw", [{}, {"dataset": "imagenet"}, {"grid": "nightly"}])
def test_sqlite_without_json_functions(store, monkeypatch, kw):
    """Tags and params fetched pair by pair (a SQLite built without JSON functions) give the same frame."""
    want = load.load_runs(store["uri"], **kw)
    monkeypatch.setattr(load, "_SQLITE_JSON", False)
    _assert_same(load.load_runs(store["uri"], **kw), want)


def test_what_the_store_holds(store):
    runs = load.load_runs(store["uri"])
    assert len(runs) == 16  # the active job runs: not the deleted one, the grids or the run of no job
    assert set(runs["tags.diffbench.kind"]) == {"job"} and "fitnet" not in set(runs["tags.method"])
    kd = runs[runs["tags.job_hash"] == KD0].iloc[0]
    assert kd["metrics.val/top1"] == 80.0 and math.isnan(kd["metrics.probe"]) and kd["metrics.probe2"] == 3.5
    assert runs["metrics.best_top1"].dtype == "float64" and runs["metrics.best_top1"].isna().sum() >= 1
    assert runs["end_time"].isna().sum() == 3 and str(runs["start_time"].dtype).endswith("UTC]")
    grid = load.load_runs(store["uri"], grid="nightly").attrs["grid"]
    assert grid["run_id"] == store["rerun"] and "2 grid runs are named 'nightly'" in grid["notes"][0]
    assert "unreadable" in load.load_runs(store["uri"], grid="broken").attrs["grid"]["notes"][0]


@pytest.mark.parametrize("experiment", ["other", "gone"])
def test_other_experiments(store, experiment):
    direct, client = _both(store["uri"], experiment)
    _assert_same(direct, client)
    assert len(direct) == (2 if experiment == "other" else 0)
    _assert_same(*_both(store["uri"], "other", grid="nightly", dataset="digits"))
    _assert_same(*_both(store["uri"], "other", grid=store["other_grid"]))


def test_artifacts_elsewhere_are_read_through_mlflow(store, monkeypatch):
    """A grid whose artifacts are not a local folder: its list is downloaded by MLflow, with the same result."""
    want = load.load_runs(store["uri"], grid="nightly")
    monkeypatch.setattr(load, "_local_folder", lambda uri: None)
    _assert_same(load.load_runs(store["uri"], grid="nightly"), want)


def test_local_folder():
    assert load._local_folder("file:///srv/x%20y/1/abc/artifacts") == Path("/srv/x y/1/abc/artifacts")
    assert load._local_folder("/srv/mlartifacts/abc/artifacts") == Path("/srv/mlartifacts/abc/artifacts")
    for other in ("s3://bucket/abc", "mlflow-artifacts:/1/abc", "./mlruns/1/abc", "file://host/x", None, ""):
        assert load._local_folder(other) is None


@pytest.mark.parametrize(
    "experiment,kw",
    [("nope", {}), ("diffbench", {"grid": "nope"}), ("diffbench", {"grid": "0" * 32}),
     ("diffbench", {"task": "it's"}), ("diffbench", {"grid": "a'b"}), ("nope", {"task": "it's"})],
)  # fmt: skip
def test_same_errors(store, experiment, kw):
    with pytest.raises(UserError) as direct:
        load.load_runs(store["uri"], experiment, **kw)
    with pytest.raises(UserError) as client:
        load._load_runs(store["uri"], experiment, read_sqlite=False, **kw)
    assert str(direct.value) == str(client.value)


def test_sqlite_report_imports_neither_mlflow_nor_scipy_stats(store):
    """The SQLite path of load_runs, --grid included, and the leaderboard import no MLflow and no scipy.stats."""
    code = (
        "import sys\n"
        "from bench import report\n"
        f"runs = report.load_runs({store['uri']!r}, grid='nightly')\n"
        "assert runs.attrs['grid']['notes'] and len(runs) == 3, runs\n"
        "report.render(report.leaderboard(report.load_runs(" + repr(store["uri"]) + "), vs='kd'), 'markdown')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'sqlalchemy', 'alembic')"
        " or m.startswith('scipy.stats'))\n"
        "assert not bad, bad[:10]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_store_is_left_untouched(store):
    """Reading opens the store read-only: no byte changes, no journal is left beside it."""
    db = Path(store["uri"].removeprefix("sqlite:///"))
    before = (db.read_bytes(), db.stat().st_mtime_ns, sorted(p.name for p in db.parent.iterdir()))
    load.load_runs(store["uri"], grid="nightly")
    assert (db.read_bytes(), db.stat().st_mtime_ns, sorted(p.name for p in db.parent.iterdir())) == before
