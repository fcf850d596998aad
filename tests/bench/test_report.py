"""bench.report: MLflow runs → leaderboard.

A temporary SQLite MLflow store is filled with job runs following the tracking schema (tags, params,
summary metrics), with known values; every expected number is computed here by hand from the values
logged (``statistics.mean`` / ``statistics.stdev``), never taken from the module under test.
"""

from __future__ import annotations

import json
import math
import statistics
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("mlflow")

from report_store import log_job, new_store  # noqa: E402

from bench import report  # noqa: E402
from methods.base import UserError  # noqa: E402

VAN_BEST, VAN_LAST = [69.0, 69.5, 70.1], [68.8, 69.1, 69.9]
KD_A_BEST, KD_A_LAST = [70.5, 71.0, 70.2], [70.1, 70.9, 70.0]
DKD_A_BEST, DKD_A_LAST = [71.5, 72.3], [71.2, 72.0]
DIFFKD_A_BEST, DIFFKD_A_LAST = [72.6], [72.4]
KD_B_BEST, KD_B_LAST = [70.8, 71.4], [70.6, 71.0]
TEACHER_A_BEST, TEACHER_A_LAST = 72.0, 71.6  # the resnet56 teacher job
TEACHER_A_LOGGED = 71.9  # teacher_top1 logged on pair A's distillation runs: the teacher job must win
TEACHER_B_LOGGED = 74.0  # no teacher job for resnet110: the logged score is used
DET_KD, DET_VAN = (38.5, 38.0), (36.0, 35.5)  # (best, last) bbox_AP

REFERENCE_CSV = """task,dataset,teacher,student,method,metric,value,source,recipe_preset
classification,cifar100,resnet56,resnet20,teacher,top1,72.34,paper A,cifar100
classification,cifar100,resnet56,resnet20,vanilla,top1,69.06,paper A,cifar100
classification,cifar100,resnet56,resnet20,kd,top1,70.66,paper A,cifar100
classification,cifar100,resnet56,resnet20,dkd,top5,91.0,wrong metric: never matched,cifar100
classification,cifar100,?,?,diffkd,top1,77.52,pair unknown: never matched,cifar100
classification,cifar100,ResNet110,ResNet20,kd,top1,73.08,spelled in another case,cifar100
detection,coco,frcnn_r101,frcnn_r18,kd,bbox_AP,40.0,paper D,1x
classification,cifar100,resnet56,resnet14,vanilla,top1,66.5,paper A,cifar100
classification,cifar100,resnet110,resnet14,vanilla,top1,66.5,paper B,cifar100
"""
#: Every run of the store is tagged with the recipe preset the reference rows name, so numbers match.
PRESET = {"classification": "cifar100", "detection": "1x"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    client, uri, exp = new_store(tmp_path_factory.mktemp("mlruns"))
    parent = client.create_run(exp, tags={"diffbench.kind": "grid"}).info.run_id

    def job(tags=None, **kw):
        base = {"recipe_preset": PRESET[kw.get("task", "classification")], "diffbench_version": "0.1.0"}
        return log_job(client, exp, parent, tags={**base, **(tags or {})}, **kw)

    recipe = {"recipe.epochs": 240, "recipe.lr": 0.05, "recipe.batch_size": 64}  # no precision: an older run
    kd_hp = {"hp.temperature": 4, "hp.kd_weight": 0.9}

    job(student="resnet56", method="vanilla", seed=0, role="teacher", best=TEACHER_A_BEST, last=TEACHER_A_LAST,
        params=recipe, end=10)  # fmt: skip
    for s, (b, la) in enumerate(zip(VAN_BEST, VAN_LAST, strict=True)):
        job(student="resnet20", method="vanilla", seed=s, best=b, last=la, params=recipe, end=20 + s)
    for s, (b, la) in enumerate(zip(KD_A_BEST, KD_A_LAST, strict=True)):
        # num_workers differs between seeds: it must not split the seeds into configurations.
        p = {**recipe, **kd_hp, "recipe.num_workers": 2 + 2 * (s % 2)}
        job(student="resnet20", teacher="resnet56", method="kd", seed=s, best=b, last=la, params=p, end=100 + s,
            extra_metrics={"teacher_top1": TEACHER_A_LOGGED, "best_top5": 90.0 + s})  # fmt: skip
    # An older finished run of the same job (kd seed 0), created after the newer one: end time decides.
    job(student="resnet20", teacher="resnet56", method="kd", seed=0, best=50.0, last=49.0,
        params={**recipe, **kd_hp}, end=1, job_hash="classification-resnet56-resnet20-kd-0")  # fmt: skip
    # A finished run of kd seed 1 that a later run replaced (the newest by end time): never counted.
    job(student="resnet20", teacher="resnet56", method="kd", seed=1, best=10.0, last=10.0, end=900,
        params={**recipe, **kd_hp}, job_hash="classification-resnet56-resnet20-kd-1",
        tags={"diffbench.superseded": "true"})  # fmt: skip
    for s, (b, la) in enumerate(zip(DKD_A_BEST, DKD_A_LAST, strict=True)):
        job(student="resnet20", teacher="resnet56", method="dkd", seed=s, best=b, last=la, params=recipe, end=200 + s)
    job(student="resnet20", teacher="resnet56", method="diffkd", seed=0, best=DIFFKD_A_BEST[0],
        last=DIFFKD_A_LAST[0], params=recipe, end=300)  # fmt: skip
    for s, (b, la) in enumerate(zip(KD_B_BEST, KD_B_LAST, strict=True)):
        job(student="resnet20", teacher="resnet110", method="kd", seed=s, best=b, last=la,
            params={**recipe, **kd_hp}, extra_metrics={"teacher_top1": TEACHER_B_LOGGED}, end=400 + s)  # fmt: skip
    for temp, b in ((4, 73.0), (8, 74.0)):  # a sweep: two configurations, one seed each
        job(student="resnet8x4", teacher="resnet32x4", method="kd", seed=0, best=b, last=b - 0.5,
            params={**recipe, "hp.temperature": temp}, job_hash=f"sweep-{temp}", end=500 + temp)  # fmt: skip
    job(student="resnet20", teacher="resnet56", method="kd", seed=3, best=99.0, last=99.0, status="FAILED",
        reason="CUDA out of memory", params=recipe, end=600)  # fmt: skip
    job(student="resnet20", teacher="resnet56", method="dkd", seed=2, best=10.0, last=10.0, status="RUNNING",
        params=recipe, end=700)  # fmt: skip
    job(student="resnet14", method="vanilla", seed=0, best=66.0, last=65.0, params=recipe, end=750)  # no pair
    det = {"task": "detection", "dataset": "coco", "metric": "bbox_AP"}
    job(student="frcnn_r18", teacher="frcnn_r101", method="kd", seed=0, best=DET_KD[0], last=DET_KD[1], end=800,
        **det)  # fmt: skip
    job(student="frcnn_r18", method="vanilla", seed=0, best=DET_VAN[0], last=DET_VAN[1], end=801, **det)
    return uri


@pytest.fixture(scope="module")
def runs(store) -> pd.DataFrame:
    return report.load_runs(store)


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("ref") / "published.csv"
    path.write_text(REFERENCE_CSV)
    return report.load_reference(path)


@pytest.fixture(scope="module")
def lb(runs, ref) -> report.Leaderboard:
    return report.leaderboard(runs, "best", reference=ref)


def cell(lb: report.Leaderboard, teacher: str, student: str, method: str) -> pd.Series:
    t = lb.tidy
    hit = t[(t["teacher"] == teacher) & (t["student"] == student) & (t["method"] == method)]
    assert len(hit) == 1, f"{method} {teacher}->{student}: {len(hit)} rows"
    return hit.iloc[0]


def test_load_runs_reads_job_runs_only(runs):
    assert len(runs) == 21  # 22 runs minus the grid parent
    assert set(runs["tags.diffbench.kind"]) == {"job"}
    assert {"metrics.best_top1", "params.hp.temperature", "tags.job_hash", "status"} <= set(runs.columns)
    assert (runs["tags.job_hash"] == "classification-resnet56-resnet20-kd-0").sum() == 2


def test_load_runs_pushes_task_filter_into_the_query(store):
    det = report.load_runs(store, task="detection")
    assert set(det["tags.task"]) == {"detection"} and len(det) == 2


def test_rows_are_one_per_pair(lb):
    pairs = set(map(tuple, lb.tidy[["task", "dataset", "teacher", "student"]].drop_duplicates().to_numpy()))
    assert pairs == {
        ("classification", "cifar100", "resnet56", "resnet20"),
        ("classification", "cifar100", "resnet110", "resnet20"),
        ("classification", "cifar100", "resnet32x4", "resnet8x4"),
        ("detection", "coco", "frcnn_r101", "frcnn_r18"),
        ("classification", "cifar100", "", "resnet14"),  # a student trained only alone
    }
    assert len(lb.table) == 5


def test_mean_std_n_over_seeds(lb):
    # The stale duplicate (50.0), the superseded run (10.0) and the FAILED seed (99.0) are out.
    kd = cell(lb, "resnet56", "resnet20", "kd")
    assert kd["mean"] == pytest.approx(statistics.mean(KD_A_BEST))
    assert kd["std"] == pytest.approx(statistics.stdev(KD_A_BEST))  # sample std, ddof=1
    assert kd["n"] == 3 and kd["seeds"] == "0,1,2"
    dkd = cell(lb, "resnet56", "resnet20", "dkd")  # the RUNNING seed 2 (10.0) is out
    assert (dkd["mean"], dkd["n"]) == (pytest.approx(statistics.mean(DKD_A_BEST)), 2)
    assert dkd["std"] == pytest.approx(statistics.stdev(DKD_A_BEST))
    diffkd = cell(lb, "resnet56", "resnet20", "diffkd")
    assert diffkd["mean"] == pytest.approx(DIFFKD_A_BEST[0]) and diffkd["n"] == 1 and math.isnan(diffkd["std"])


def test_vanilla_belongs_to_every_pair_of_its_student(lb):
    for teacher in ("resnet56", "resnet110"):
        van = cell(lb, teacher, "resnet20", "vanilla")
        assert van["mean"] == pytest.approx(statistics.mean(VAN_BEST)) and van["n"] == 3
        assert math.isnan(van["gain"])


def test_gain_over_vanilla(lb):
    for teacher, method, values in (("resnet56", "kd", KD_A_BEST), ("resnet56", "dkd", DKD_A_BEST),
                                    ("resnet110", "kd", KD_B_BEST)):  # fmt: skip
        got = cell(lb, teacher, "resnet20", method)["gain"]
        assert got == pytest.approx(statistics.mean(values) - statistics.mean(VAN_BEST))
    det = cell(lb, "frcnn_r101", "frcnn_r18", "kd")
    assert det["metric"] == "bbox_AP" and det["gain"] == pytest.approx(DET_KD[0] - DET_VAN[0])


def test_last_epoch_selects_last_metric(runs):
    last = report.leaderboard(runs, "last")
    kd = cell(last, "resnet56", "resnet20", "kd")
    assert kd["mean"] == pytest.approx(statistics.mean(KD_A_LAST))
    assert kd["gain"] == pytest.approx(statistics.mean(KD_A_LAST) - statistics.mean(VAN_LAST))
    assert cell(last, "resnet56", "resnet20", "teacher")["mean"] == pytest.approx(TEACHER_A_LAST)
    assert "last epoch" in last.title


def test_teacher_score_from_teacher_job_else_logged(lb):
    a = cell(lb, "resnet56", "resnet20", "teacher")
    assert a["mean"] == pytest.approx(TEACHER_A_BEST) and a["n"] == 1
    b = cell(lb, "resnet110", "resnet20", "teacher")
    assert b["mean"] == pytest.approx(TEACHER_B_LOGGED) and b["n"] == 1  # one checkpoint, logged twice


def test_published_values_matched(lb):
    assert cell(lb, "resnet56", "resnet20", "kd")["published"] == pytest.approx(70.66)
    assert cell(lb, "resnet56", "resnet20", "teacher")["published"] == pytest.approx(72.34)
    assert cell(lb, "resnet56", "resnet20", "vanilla")["published"] == pytest.approx(69.06)
    assert cell(lb, "resnet56", "resnet20", "kd")["source"] == "paper A"
    assert math.isnan(cell(lb, "resnet56", "resnet20", "dkd")["published"])  # only a top5 row exists
    assert math.isnan(cell(lb, "resnet56", "resnet20", "diffkd")["published"])  # the "?" row
    assert cell(lb, "resnet110", "resnet20", "kd")["published"] == pytest.approx(73.08)
    assert math.isnan(cell(lb, "resnet110", "resnet20", "vanilla")["published"])
    assert cell(lb, "frcnn_r101", "frcnn_r18", "kd")["published"] == pytest.approx(40.0)
    assert cell(lb, "", "resnet14", "vanilla")["published"] == pytest.approx(66.5)  # both pairs agree


def test_sweep_configurations_are_separate_columns(lb):
    t4 = cell(lb, "resnet32x4", "resnet8x4", "kd[temperature=4]")
    t8 = cell(lb, "resnet32x4", "resnet8x4", "kd[temperature=8]")
    assert (t4["mean"], t4["n"], t8["mean"], t8["n"]) == (73.0, 1, 74.0, 1)
    assert math.isnan(t4["gain"])  # no vanilla resnet8x4 was run
    assert "kd" in set(lb.tidy.loc[lb.tidy["student"] == "resnet20", "method"])  # num_workers split nothing


def test_failed_and_unfinished_runs_reported_not_counted(lb):
    assert len(lb.failed) == 1
    f = lb.failed.iloc[0]
    assert (f["method"], f["seed"], f["failure_reason"]) == ("kd", "3", "CUDA out of memory")
    assert lb.unfinished == {"RUNNING": 1}
    assert any("CUDA out of memory" in line for line in lb.footer())


def test_method_columns_in_paper_order(lb):
    cols = list(lb.table.columns)
    order = ["teacher score", "vanilla", "kd", "kd[temperature=4]", "kd[temperature=8]", "dkd", "diffkd"]
    assert [c for c in cols if c in order] == order
    assert cols[:4] == ["task", "dataset", "metric", "teacher"] or cols[:2] == ["teacher", "student"]


def test_filters(runs, ref):
    det = report.leaderboard(runs, task="detection")
    assert set(det.tidy["task"]) == {"detection"}
    assert "task" not in det.table.columns and det.title.startswith("detection · coco · bbox_AP")
    assert report.leaderboard(runs, dataset="imagenet").empty
    b = report.leaderboard(runs, pairs=["resnet110:resnet20"])
    assert set(zip(b.tidy["teacher"], b.tidy["student"], strict=True)) == {("resnet110", "resnet20")}
    assert set(b.tidy["method"]) == {"teacher", "vanilla", "kd"} and len(b.failed) == 0
    only_kd = report.leaderboard(runs, methods=["kd"], pairs=["resnet56:resnet20"], reference=ref)
    assert set(only_kd.tidy["method"]) == {"teacher", "kd"}
    kd = cell(only_kd, "resnet56", "resnet20", "kd")
    assert kd["gain"] == pytest.approx(statistics.mean(KD_A_BEST) - statistics.mean(VAN_BEST))
    assert len(only_kd.failed) == 1 and only_kd.unfinished == {}  # the RUNNING job is dkd


def test_user_errors(store, runs, lb, tmp_path):
    with pytest.raises(UserError, match="epoch"):
        report.leaderboard(runs, "middle")
    with pytest.raises(UserError, match="teacher:student"):
        report.leaderboard(runs, pairs=["resnet20"])
    with pytest.raises(UserError, match="no MLflow store"):
        report.load_runs(tmp_path / "missing.db")
    with pytest.raises(UserError, match="no MLflow experiment 'nope'.*diffbench"):
        report.load_runs(store, "nope")
    with pytest.raises(UserError, match="format"):
        report.render(lb, "docx")
    (tmp_path / "bad.csv").write_text("task,value\nclassification,1\n")
    with pytest.raises(UserError, match="no known primary metric"):
        report.leaderboard(runs.assign(**{"tags.task": "depth"}))
    with pytest.raises(UserError, match="lacks column"):
        report.load_reference(tmp_path / "bad.csv")


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """CI low, high and p of mean(a) - mean(b), from scipy on the raw values (not from bench.report)."""
    from scipy import stats

    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    return ci.low, ci.high, res.pvalue


def _paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """CI low, high and p of the paired mean(a - b), from scipy's ttest_rel on the raw values."""
    from scipy import stats

    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    return ci.low, ci.high, res.pvalue


def test_gain_confidence_interval_and_p(lb):
    # kd resnet56→resnet20 ran vanilla's seeds 0, 1, 2 with its recipe and starting weights: paired. dkd ran seeds
    # 0, 1 and kd from resnet110 seeds 0, 1 against vanilla's 0, 1, 2: different seed sets keep Welch.
    for teacher, method, values, test in (("resnet56", "kd", KD_A_BEST, "paired"),
                                          ("resnet56", "dkd", DKD_A_BEST, "welch"),
                                          ("resnet110", "kd", KD_B_BEST, "welch")):  # fmt: skip
        c = cell(lb, teacher, "resnet20", method)
        lo, hi, p = (_paired if test == "paired" else _welch)(values, VAN_BEST)
        assert (c["gain_ci_low"], c["gain_ci_high"], c["p_vs_vanilla"]) == (
            pytest.approx(lo), pytest.approx(hi), pytest.approx(p))  # fmt: skip
        assert c["sig_vs_vanilla"] == ("**" if p < 0.01 else "*" if p < 0.05 else "")
        assert c["test"] == test
    assert cell(lb, "resnet56", "resnet20", "dkd")["sig_vs_vanilla"] == "*"  # Welch p = 0.033
    assert cell(lb, "resnet56", "resnet20", "kd")["sig_vs_vanilla"] == ""  # paired p = 0.16
    for method in ("vanilla", "diffkd", "teacher"):  # no comparison, or one seed: no test
        assert cell(lb, "resnet56", "resnet20", method)["test"] == ""


def test_paired_by_hand(lb):
    """The paired interval written out: d = kd - vanilla per seed, d̄ ± t(0.975, 2)·s_d/√3."""
    from scipy import stats

    d = [k - v for k, v in zip(KD_A_BEST, VAN_BEST, strict=True)]
    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    c = cell(lb, "resnet56", "resnet20", "kd")
    assert c["gain"] == pytest.approx(statistics.mean(d))
    assert (c["gain_ci_low"], c["gain_ci_high"]) == (
        pytest.approx(statistics.mean(d) - half), pytest.approx(statistics.mean(d) + half))  # fmt: skip


def test_vs_is_paired_by_the_same_rule(runs):
    lb = report.leaderboard(runs, vs="dkd", pairs=["resnet56:resnet20"])
    kd = cell(lb, "resnet56", "resnet20", "kd")  # seeds 0, 1, 2 against dkd's 0, 1: Welch
    lo, hi, p = _welch(KD_A_BEST, DKD_A_BEST)
    assert (kd["test_vs"], kd["diff_vs_ci_low"], kd["diff_vs_ci_high"], kd["p_vs"]) == (
        "welch", pytest.approx(lo), pytest.approx(hi), pytest.approx(p))  # fmt: skip
    van = cell(lb, "resnet56", "resnet20", "vanilla")  # vanilla's seeds 0, 1, 2 against dkd's 0, 1: Welch too
    assert van["test_vs"] == "welch" and cell(lb, "resnet56", "resnet20", "dkd")["test_vs"] == ""
    lb = report.leaderboard(runs, vs="kd", pairs=["resnet56:resnet20"])
    van = cell(lb, "resnet56", "resnet20", "vanilla")  # the same seeds as kd: paired
    lo, hi, p = _paired(VAN_BEST, KD_A_BEST)
    assert (van["test_vs"], van["diff_vs_ci_low"], van["diff_vs_ci_high"], van["p_vs"]) == (
        "paired", pytest.approx(lo), pytest.approx(hi), pytest.approx(p))  # fmt: skip
    assert "vs kd -1.03ᵖ" in report.render(lb, "markdown")


def test_n1_cells_say_no_ci(lb):
    diffkd = cell(lb, "resnet56", "resnet20", "diffkd")  # one seed against three vanilla seeds
    assert diffkd["note"] == "n=1, no CI" and math.isnan(diffkd["gain_ci_low"]) and math.isnan(diffkd["p_vs_vanilla"])
    assert diffkd["gain"] == pytest.approx(DIFFKD_A_BEST[0] - statistics.mean(VAN_BEST))
    det = cell(lb, "frcnn_r101", "frcnn_r18", "kd")  # one seed on each side
    assert det["note"] == "n=1, no CI" and math.isnan(det["gain_ci_high"])
    assert cell(lb, "frcnn_r101", "frcnn_r18", "vanilla")["note"] == "n=1, no CI"
    assert cell(lb, "resnet56", "resnet20", "kd")["note"] == ""


def test_markdown(lb):
    md = report.render(lb, "markdown").splitlines()
    table = [line for line in md if line.startswith("|")]
    header, sep = table[0], table[1]
    assert "teacher" in header and "| kd" in header.replace("  ", " ")
    assert set(sep) <= {"|", "-", ":"}
    assert len(table) == 2 + 5 and all(line.count("|") == header.count("|") for line in table)
    row = next(line for line in table if "resnet56" in line)
    m, s = statistics.mean(KD_A_BEST), statistics.stdev(KD_A_BEST)
    lo, hi, _ = _paired(KD_A_BEST, VAN_BEST)  # the kd seeds pair with vanilla's: the interval is marked ᵖ
    assert f"{m:.2f} ± {s:.2f} (n=3) {m - statistics.mean(VAN_BEST):+.2f} [{lo:+.2f}, {hi:+.2f}]ᵖ paper 70.66" in row
    lo, hi, _ = _welch(DKD_A_BEST, VAN_BEST)
    assert f"[{lo:+.2f}, {hi:+.2f}]* " in row  # the dkd gain is significant at 5 % (Welch: no mark)
    assert f"{DIFFKD_A_BEST[0]:.2f} (n=1, no CI) +3.07" in row
    legend = "\n".join(md)
    assert "* p < 0.05, ** p < 0.01" in legend and "n=1, no CI: one finished seed" in legend
    assert "Tests: paired (ᵖ after the interval)" in legend and "otherwise Welch's interval" in legend
    # 14 student runs (vanilla counted once although it serves two pairs) and the resnet56 teacher job.
    prov = "Provenance classification/cifar100: 15 run(s), recipe 'cifar100' (epochs 240, batch 64, lr 0.05, "
    assert prov + "precision fp32); diffbench 0.1.0, commit abc123; runs 2023-11-14 22:13 UTC" in legend


def test_csv_round_trip(lb):
    back = pd.read_csv(StringIO(report.render(lb, "csv")), keep_default_na=True)
    assert list(back.columns) == report.TIDY_COLUMNS and len(back) == len(lb.tidy)
    row = back[(back["teacher"] == "resnet56") & (back["method"] == "kd")].iloc[0]
    assert row["mean"] == pytest.approx(statistics.mean(KD_A_BEST))
    assert row["std"] == pytest.approx(statistics.stdev(KD_A_BEST))
    assert row["n"] == 3 and row["published"] == pytest.approx(70.66)


def test_json_records(lb):
    doc = json.loads(report.render(lb, "json"))
    rec = next(r for r in doc["records"] if r["pair"] == "resnet56:resnet20" and r["method"] == "diffkd")
    assert rec["mean"] == pytest.approx(DIFFKD_A_BEST[0]) and rec["n"] == 1 and rec["std"] is None
    assert rec["gain"] == pytest.approx(DIFFKD_A_BEST[0] - statistics.mean(VAN_BEST)) and rec["published"] is None
    assert doc["epoch"] == "best" and doc["failed"][0]["failure_reason"] == "CUDA out of memory"


def test_latex(lb):
    tex = report.render(lb, "latex")
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex and r"$\pm$" in tex
    assert "±" not in tex.split(r"\begin{tabular}")[1]  # no raw unicode in the cells
    assert r"kd[temperature=4]" in tex


def test_plot_and_html_report(lb, tmp_path):
    png = report.plot(lb, tmp_path / "sub" / "leaderboard.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.html_report(lb, png)
    assert page.startswith("<!DOCTYPE html>") and "<table" in page and '<img class="plot"' in page
    assert "data:image/png;base64,iVBORw0KGgo" in page  # base64 of the PNG magic
    assert "resnet56" in page and "&lt;" not in page.split("<tbody>")[0].split("<thead>")[1]
    inline = report.render(lb, "html")  # the figure is drawn in memory and embedded: no file anywhere
    assert "data:image/png;base64,iVBORw0KGgo" in inline and "<table" in inline
    assert list(tmp_path.rglob("*.png")) == [png]
    assert "<a href" not in inline
    linked = report.render(lb, "html", ui_url="http://127.0.0.1:5000")
    kd_run = cell(lb, "resnet110", "resnet20", "kd")["run_ids"].split(",")
    exp = cell(lb, "resnet110", "resnet20", "kd")["experiment_id"]
    assert f'href="http://127.0.0.1:5000/#/experiments/{exp}/runs/' in linked
    assert "http://127.0.0.1:5000/#/compare-runs?runs=%5B%22" + kd_run[0] in linked


def test_rich_table(lb):
    from rich.console import Console

    console = Console(record=True, width=250, color_system=None)
    console.print(report.to_rich(lb))
    text = console.export_text()
    assert "teacher score" in text and "paper 70.66" in text and f"{statistics.mean(KD_A_BEST):.2f}" in text
    assert "kd[temperature=4]" in text and "[low, high]" in text  # brackets are not eaten as rich markup
    assert "(n=1, no CI)" in text and "Provenance classification/cifar100" in text


def test_empty_leaderboard_renders(runs, tmp_path):
    empty = report.leaderboard(runs, task="segmentation")
    assert empty.empty
    for fmt in report.FORMATS:
        assert report.render(empty, fmt)
        assert report.render(empty, fmt, reproduction=True)
    assert report.plot(empty, tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    report.to_rich(empty)
    report.to_rich(empty, reproduction=True)
    no_reference = report.leaderboard(runs)  # no published numbers at all: still a float column, and a summary
    assert no_reference.tidy["published"].isna().all() and no_reference.tidy["published"].dtype.kind == "f"
    doc = json.loads(report.render(no_reference, "json", reproduction=True))
    assert doc["summary"]["cells"] == 0 and doc["headline"].startswith("Reproduction: no cell shows a published")


def test_shipped_reference_file_loads():
    ref = report.load_reference(report.DEFAULT_REFERENCE)
    assert {"top1", "bbox_AP", "mIoU"} <= set(ref["metric"]) and ref["value"].dtype.kind == "f"
    assert isinstance(report.DEFAULT_REFERENCE, Path)


# --- Reproduction verdicts -------------------------------------------------------------------------------------------
VERDICT_CSV = """task,dataset,teacher,student,method,metric,value,source,recipe_preset,student_init,precision
classification,cifar100,resnet56,resnet20,kd,top1,60.0,a low paper number,cifar100,random,fp32
classification,cifar100,resnet56,resnet20,dkd,top1,90.0,a high paper number,cifar100,random,fp32
classification,cifar100,resnet56,resnet20,diffkd,top1,72.0,one seed of ours,cifar100,random,fp32
classification,cifar100,resnet110,resnet20,kd,top1,73.08,inside the interval,cifar100,random,fp32
"""


def _interval(values: list[float]) -> tuple[float, float]:
    from scipy import stats

    return stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values))


@pytest.fixture(scope="module")
def verdict_lb(runs, tmp_path_factory) -> report.Leaderboard:
    path = tmp_path_factory.mktemp("verdicts") / "published.csv"
    path.write_text(VERDICT_CSV)
    return report.leaderboard(runs, reference=report.load_reference(path))


def test_verdict_rule(verdict_lb):
    """reproduced: the paper's number inside mean ± t(0.975, n-1)·std/√n; below / above: ours is lower / higher."""
    cases = [("resnet56", "kd", KD_A_BEST, 60.0, "above"), ("resnet56", "dkd", DKD_A_BEST, 90.0, "below"),
             ("resnet110", "kd", KD_B_BEST, 73.08, "reproduced")]  # fmt: skip
    for teacher, method, values, paper, verdict in cases:
        c = cell(verdict_lb, teacher, "resnet20", method)
        lo, hi = _interval(values)
        assert (c["mean_ci_low"], c["mean_ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
        assert (lo <= paper <= hi, paper > hi, paper < lo) == (
            verdict == "reproduced", verdict == "below", verdict == "above")  # fmt: skip
        assert (c["published"], c["verdict"]) == (paper, verdict)
    one = cell(verdict_lb, "resnet56", "resnet20", "diffkd")
    assert (one["verdict"], one["mean_ci_low"]) == ("undecided (1 seed)", pytest.approx(math.nan, nan_ok=True))
    assert cell(verdict_lb, "resnet56", "resnet20", "vanilla")["verdict"] == ""  # no published number


def test_verdict_marks_and_legend(verdict_lb, lb):
    md = report.render(verdict_lb, "markdown")
    assert "paper 60.00 ↑" in md and "paper 90.00 ↓" in md and "paper 73.08 ✓" in md
    assert "paper 72.00 |" in md  # one seed: no mark
    legend = "\n".join(verdict_lb.legend())
    assert "✓ reproduced" in legend and "↓ ours is below" in legend and "↑ ours is above" in legend
    assert "mean ± t(0.975, n-1)·std/√n" in legend
    # The fixture's reference leaves only reproduced and undecided cells: only ✓ is explained.
    assert {cell(lb, "resnet56", "resnet20", m)["verdict"] for m in ("kd", "vanilla")} == {"reproduced"}
    assert cell(lb, "resnet56", "resnet20", "teacher")["verdict"] == "undecided (1 seed)"
    legend = "\n".join(lb.legend())
    assert "✓ reproduced" in legend and "↓" not in legend and "↑" not in legend
    tex = report.render(verdict_lb, "latex")
    assert r"paper 60.00 $\uparrow$" in tex and r"paper 73.08 $\surd$" in tex and "✓" not in tex


def test_verdicts_in_csv_and_json(verdict_lb):
    back = pd.read_csv(StringIO(report.render(verdict_lb, "csv")), keep_default_na=False)
    got = {(r.teacher, r.method): r.verdict for r in back.itertuples() if r.student == "resnet20"}
    assert (got[("resnet56", "kd")], got[("resnet56", "dkd")], got[("resnet110", "kd")]) == (
        "above", "below", "reproduced")  # fmt: skip
    assert got[("resnet56", "diffkd")] == "undecided (1 seed)"
    doc = json.loads(report.render(verdict_lb, "json"))
    rec = next(r for r in doc["records"] if r["pair"] == "resnet56:resnet20" and r["method"] == "dkd")
    lo, hi = _interval(DKD_A_BEST)
    assert (rec["verdict"], rec["mean_ci_low"], rec["mean_ci_high"]) == ("below", pytest.approx(lo), pytest.approx(hi))
