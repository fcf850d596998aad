"""Every format says the same things: n=1 and n=0 cells, the legend, the provenance, mixed recipes/commits.

The store: one pair on the digits recipe with vanilla (2 seeds), kd (1 seed: no CI), dkd (a failed run
only: n=0) and fitnet requested with ``--methods`` but never run (n=0).
"""

from __future__ import annotations

import html
import json
from io import StringIO

import pandas as pd
import pytest

pytest.importorskip("mlflow")

from report_store import grid_run, log_job, new_store  # noqa: E402

from bench import report  # noqa: E402

RECIPE = {"recipe.epochs": 5, "recipe.batch_size": 128, "recipe.lr": 0.1, "recipe.precision": "fp32"}
TAGS = {"recipe_preset": "digits", "diffbench_version": "0.1.0"}
PROVENANCE = (
    "Provenance classification/digits: 4 run(s), recipe 'digits' (epochs 5, batch 128, lr 0.1, precision fp32); "
    "diffbench 0.1.0, commit abc123; runs 2023-11-14 22:13 UTC."
)
N1 = "(n=1, no CI)"
N0_FAILED = "n=0, no finished run (1 failed)"
N0 = "n=0, no finished run"
LEGEND = "* p < 0.05, ** p < 0.01"


@pytest.fixture(scope="module")
def lb(tmp_path_factory) -> report.Leaderboard:
    client, uri, exp = new_store(tmp_path_factory.mktemp("formats"))
    g = grid_run(client, exp)
    common = {"dataset": "digits", "params": RECIPE, "tags": TAGS}
    log_job(client, exp, g, student="resnet8", method="vanilla", seed=0, best=90.0, end=1, **common)
    log_job(client, exp, g, student="resnet8", method="vanilla", seed=1, best=91.0, end=2, **common)
    log_job(client, exp, g, student="resnet8", teacher="resnet20", method="kd", seed=0, best=92.5, end=3, **common)
    log_job(client, exp, g, student="resnet8", teacher="resnet20", method="dkd", seed=0, status="FAILED",
            reason="loss is NaN", end=4, **common)  # fmt: skip
    log_job(client, exp, g, student="resnet20", method="vanilla", role="teacher", seed=0, best=97.0, end=0, **common)
    runs = report.load_runs(uri)
    return report.leaderboard(runs, methods=["vanilla", "kd", "dkd", "fitnet"])


def _cell(lb, method):
    return lb.tidy[lb.tidy["method"] == method].iloc[0]


def test_cells_n1_and_n0(lb):
    assert _cell(lb, "kd")["n"] == 1 and _cell(lb, "kd")["note"] == "n=1, no CI"
    assert _cell(lb, "kd")["gain"] == pytest.approx(92.5 - 90.5)
    assert (_cell(lb, "dkd")["n"], _cell(lb, "dkd")["note"]) == (0, N0_FAILED)
    assert (_cell(lb, "fitnet")["n"], _cell(lb, "fitnet")["note"]) == (0, N0)
    assert pd.isna(_cell(lb, "fitnet")["mean"]) and not lb.empty


@pytest.mark.parametrize("fmt", ["markdown", "html", "latex"])
def test_tables_for_people(lb, fmt):
    text = report.render(lb, fmt)
    if fmt == "latex":  # the text is escaped for LaTeX: compare with the same escaping
        from bench.report.render_latex import latex_escape as esc
    else:
        esc = html.escape if fmt == "html" else (lambda s: s)  # noqa: E731
    # HTML heads the provenance sentences with "Provenance" once, so they do not start with the word again.
    prov = PROVENANCE.removeprefix("Provenance ") if fmt == "html" else PROVENANCE
    for needle in (N1, N0_FAILED, f"({N0})", LEGEND, prov, "n=1, no CI: one finished seed"):
        assert esc(needle) in text, (fmt, needle)
    if fmt == "html":
        assert text.count("Provenance") == 1 and "<h2>Provenance</h2>" in text


def test_terminal(lb):
    from rich.console import Console

    console = Console(record=True, width=300, color_system=None)
    console.print(report.to_rich(lb))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    for needle in (N1, N0_FAILED, f"({N0})", LEGEND, PROVENANCE):
        assert needle in text, needle


def test_csv(lb):
    back = pd.read_csv(StringIO(report.render(lb, "csv")), keep_default_na=False)
    assert list(back.columns) == report.TIDY_COLUMNS
    row = lambda m: back[back["method"] == m].iloc[0]  # noqa: E731
    assert row("kd")["note"] == "n=1, no CI" and row("kd")["gain_ci_low"] == ""
    assert (row("dkd")["n"], row("dkd")["note"], row("fitnet")["note"]) == (0, N0_FAILED, N0)
    kd = row("kd")
    assert (kd["recipe_preset"], str(kd["epochs"]), str(kd["batch_size"]), kd["precision"]) == (
        "digits", "5", "128", "fp32")  # fmt: skip
    assert (kd["git_commit"], kd["diffbench_version"], kd["first_run"]) == ("abc123", "0.1.0", "2023-11-14T22:13:19Z")
    assert len(kd["run_ids"]) == 32


def test_json(lb):
    doc = json.loads(report.render(lb, "json"))
    rec = {r["method"]: r for r in doc["records"]}
    assert rec["kd"]["note"] == "n=1, no CI" and rec["kd"]["gain_ci_low"] is None and rec["kd"]["std"] is None
    assert (rec["dkd"]["n"], rec["dkd"]["note"], rec["dkd"]["mean"]) == (0, N0_FAILED, None)
    assert rec["fitnet"]["note"] == N0
    assert any(LEGEND in line for line in doc["legend"])
    (prov,) = doc["provenance"]
    assert (prov["recipe_preset"], prov["epochs"], prov["precision"], prov["git_commit"]) == (
        ["digits"], ["5"], ["fp32"], ["abc123"])  # fmt: skip
    assert (prov["first_run"], prov["recipes"], prov["runs"]) == ("2023-11-14 22:13", 1, 4)


def test_mixed_recipes_and_commits_are_called_out(tmp_path):
    client, uri, exp = new_store(tmp_path)
    for seed, (epochs, commit) in enumerate([(5, "aaa111"), (5, "bbb222"), (10, "aaa111")]):
        for method in ("vanilla", "kd"):
            log_job(client, exp, None, student="resnet8", teacher="" if method == "vanilla" else "resnet20",
                    method=method, seed=seed, best=90.0 + seed, dataset="digits", end=seed,
                    params={**RECIPE, "recipe.epochs": epochs}, tags={**TAGS, "git_commit": commit})  # fmt: skip
    lb = report.leaderboard(report.load_runs(uri))
    text = report.render(lb, "markdown")
    assert "Warning: classification/digits mixes 2 recipes" in text
    assert "Warning: classification/digits mixes code versions (commits aaa111, bbb222)" in text
    assert "(epochs 5/10, batch 128" in text
    # Each recipe is its own column, and each gain is taken against the vanilla runs of the same recipe.
    assert {"kd[epochs=5]", "kd[epochs=10]"} <= set(lb.tidy["method"])
    kd5 = lb.tidy[lb.tidy["method"] == "kd[epochs=5]"].iloc[0]
    assert (kd5["git_commit"], kd5["epochs"], kd5["seeds"]) == ("aaa111,bbb222", "5", "0,1")
    kd10 = lb.tidy[lb.tidy["method"] == "kd[epochs=10]"].iloc[0]
    assert kd10["gain"] == 0.0 and kd10["note"] == "n=1, no CI"


def test_precision_absent_means_fp32_and_version_unknown(tmp_path):
    client, uri, exp = new_store(tmp_path)
    old = {k: v for k, v in RECIPE.items() if k != "recipe.precision"}
    log_job(client, exp, None, student="resnet8", method="vanilla", seed=0, best=90.0, dataset="digits", params=old)
    lb = report.leaderboard(report.load_runs(uri))
    (prov,) = lb.provenance
    assert (prov["precision"], prov["recipe_preset"], prov["diffbench_version"]) == (["fp32"], ["unknown"], ["unknown"])
    # A newer run that logs precision=fp32 is a seed of the same configuration, not a second column.
    log_job(client, exp, None, student="resnet8", method="vanilla", seed=1, best=91.0, dataset="digits", params=RECIPE)
    lb = report.leaderboard(report.load_runs(uri))
    assert list(lb.tidy["method"]) == ["vanilla"] and lb.tidy["n"].iloc[0] == 2


def test_a_hyper_parameter_added_later_is_its_neutral_value_in_older_runs(tmp_path):
    """A FitNet run from before ``feat_norm`` existed and one logging ``feat_norm=none`` are seeds of one column;
    ``feat_norm=pkd`` is another configuration."""
    client, uri, exp = new_store(tmp_path)
    common = dict(student="resnet8", teacher="resnet20", method="fitnet", dataset="digits")
    log_job(client, exp, None, seed=0, best=90.0, params={**RECIPE, "hp.feat_weight": "100.0"}, **common)
    log_job(client, exp, None, seed=1, best=91.0, params={**RECIPE, "hp.feat_weight": "100.0", "hp.feat_norm": "none"},
            **common)  # fmt: skip
    lb = report.leaderboard(report.load_runs(uri))
    assert list(lb.tidy["method"]) == ["fitnet"] and lb.tidy["n"].iloc[0] == 2
    log_job(client, exp, None, seed=0, best=80.0, params={**RECIPE, "hp.feat_weight": "100.0", "hp.feat_norm": "pkd"},
            job_hash="pkd000000000", **common)  # fmt: skip
    lb = report.leaderboard(report.load_runs(uri))
    assert set(lb.tidy["method"]) == {"fitnet[feat_norm=none]", "fitnet[feat_norm=pkd]"}


def test_why_a_gain_has_no_interval(tmp_path):
    """kd with two seeds against vanilla with one: "vanilla n=1, no CI"; fitnet on vanilla's seeds with the same
    difference on each: paired, "paired differences without spread, no CI"."""
    client, uri, exp = new_store(tmp_path)
    common = {"dataset": "digits", "params": RECIPE, "tags": TAGS, "student": "resnet8"}
    log_job(client, exp, None, method="vanilla", seed=0, best=90.0, **common)
    for seed in range(2):
        log_job(client, exp, None, teacher="resnet20", method="kd", seed=seed, best=92.0 + seed, **common)
    lb = report.leaderboard(report.load_runs(uri))
    assert (_cell(lb, "kd")["note"], _cell(lb, "kd")["test"]) == ("vanilla n=1, no CI", "")
    log_job(client, exp, None, method="vanilla", seed=1, best=91.0, **common)
    for seed in range(2):
        log_job(client, exp, None, teacher="resnet20", method="fitnet", seed=seed, best=93.0 + seed, **common)
    lb = report.leaderboard(report.load_runs(uri))
    fitnet = _cell(lb, "fitnet")
    assert (fitnet["note"], fitnet["test"], fitnet["gain"]) == ("paired differences without spread, no CI", "paired", 3)
    assert "(paired differences without spread, no CI)" in report.render(lb, "markdown")
