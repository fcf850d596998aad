"""``report --grid``: one grid's jobs — its child runs plus the jobs its ``grid_jobs.json`` lists.

A re-run of a grid skips jobs that finished under the earlier parent run, so those runs are not
children of the new parent; the list decides.
"""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from report_store import grid_run, log_job, new_store  # noqa: E402

from bench import report  # noqa: E402
from methods.base import UserError  # noqa: E402

KD0 = "classification-resnet20-resnet8-kd-0"
VAN0 = "classification--resnet8-vanilla-0"
DKD0 = "classification-resnet20-resnet8-dkd-0"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    client, uri, exp = new_store(tmp_path_factory.mktemp("grids"))
    job = lambda parent, **kw: log_job(client, exp, parent, student="resnet8", seed=0, dataset="digits", **kw)  # noqa: E731
    first = grid_run(client, exp, "nightly", start=0)  # the first run of the grid: two jobs
    job(first, method="vanilla", best=90.0, end=10)
    job(first, method="kd", teacher="resnet20", best=92.0, end=11)
    other = grid_run(client, exp, "other", start=20)  # an unrelated grid
    job(other, method="fitnet", teacher="resnet20", best=50.0, end=21)
    # The re-run: the two finished jobs are skipped (their runs stay under `first`), dkd is new.
    rerun = grid_run(client, exp, "nightly", jobs=[VAN0, KD0, DKD0], start=30)
    client.set_tag(rerun, "grid_hash", "0123456789ab")  # bench.tracking.tracker tags every grid run with its hash
    job(rerun, method="dkd", teacher="resnet20", best=93.0, end=31)
    bare = grid_run(client, exp, "no-list", start=40)  # a grid from before grid_jobs.json: children only
    job(bare, method="diffkd", teacher="resnet20", best=94.0, end=41)
    return {"uri": uri, "first": first, "other": other, "rerun": rerun, "bare": bare}


def _methods(runs) -> set[str]:
    return set(runs["tags.method"])


def test_grid_by_id_uses_children_and_job_list(store):
    runs = report.load_runs(store["uri"], grid=store["rerun"])
    assert _methods(runs) == {"vanilla", "kd", "dkd"}
    assert runs.attrs["grid"]["run_id"] == store["rerun"]
    lb = report.leaderboard(runs)
    assert set(lb.tidy["method"]) == {"vanilla", "kd", "dkd"}
    line = f"grid nightly (run {store['rerun']}): 1 child run(s), 3 job(s) listed in grid_jobs.json."
    assert line in lb.provenance_lines() and line in report.render(lb, "markdown")


def test_grid_by_name_takes_the_latest_and_says_so(store):
    runs = report.load_runs(store["uri"], grid="nightly")
    assert runs.attrs["grid"]["run_id"] == store["rerun"] and _methods(runs) == {"vanilla", "kd", "dkd"}
    lb = report.leaderboard(runs)
    assert any("2 grid runs are named 'nightly'" in n and store["rerun"] in n for n in lb.notes)


def test_grid_by_hash(store):
    assert report.load_runs(store["uri"], grid="0123456789ab").attrs["grid"]["run_id"] == store["rerun"]


def test_earlier_grid_and_grid_without_list(store):
    assert _methods(report.load_runs(store["uri"], grid=store["first"])) == {"vanilla", "kd"}
    assert _methods(report.load_runs(store["uri"], grid="other")) == {"fitnet"}
    assert _methods(report.load_runs(store["uri"], grid="no-list")) == {"diffkd"}
    assert len(report.load_runs(store["uri"])) == 5  # no --grid: everything


def test_grid_combines_with_store_filters(store):
    assert report.load_runs(store["uri"], grid="nightly", task="detection").empty


def test_unknown_grid_lists_the_latest(store):
    with pytest.raises(UserError, match=r"no grid run with id, name or grid hash 'nope'; latest grids: no-list \("):
        report.load_runs(store["uri"], grid="nope")
    with pytest.raises(UserError, match="no grid run"):
        report.load_runs(store["uri"], grid="0" * 32)  # a well-formed run id that does not exist
