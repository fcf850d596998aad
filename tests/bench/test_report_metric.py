"""``diffbench report --metric NAME``: a leaderboard on a metric other than the task's primary one.

The store holds colorshapes-few runs that log ``excess_nll`` (the NLL above the generator's Bayes NLL: lower is
better, printed to 3 decimals) beside ``top1``, and plain colorshapes runs that log ``top1`` only. Every expected
number is computed here by hand from the values logged (``statistics``, the t quantile from scipy).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

pytest.importorskip("mlflow")

from report_store import log_job, new_store  # noqa: E402

from bench import report  # noqa: E402
from bench.cli.app import app  # noqa: E402
from methods.errors import UserError  # noqa: E402

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
#: best_excess_nll per seed (vanilla and kd ran seeds 0, 1, 2: paired; dkd seeds 0, 1: Welch) and the teacher job's.
VAN = [0.210, 0.190, 0.230]
KD = [0.150, 0.160, 0.140]
DKD = [0.180, 0.200]
TEACHER_NLL = 0.040
TOP1 = {"vanilla": 80.0, "kd": 82.0, "dkd": 81.0}
TAGS = {"recipe_preset": "colorshapes-few", "diffbench_version": "0.1.0"}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    client, _, exp = new_store(folder)

    def job(dataset="colorshapes-few", **kw):
        key = f"{dataset}-{kw.get('teacher', '')}-{kw['student']}-{kw['method']}-{kw['seed']}"
        return log_job(client, exp, None, dataset=dataset, tags=TAGS, job_hash=key, **kw)

    job(student=TEACHER, method="vanilla", seed=0, role="teacher", metric="excess_nll", best=TEACHER_NLL,
        extra_metrics={"best_top1": 95.0})  # fmt: skip
    for method, values in (("vanilla", VAN), ("kd", KD), ("dkd", DKD)):
        for seed, v in enumerate(values):
            top1 = {"best_top1": TOP1[method] + seed, "teacher_top1": 95.0}
            job(student=STUDENT, teacher="" if method == "vanilla" else TEACHER, method=method, seed=seed,
                metric="excess_nll", best=v, extra_metrics=top1)  # fmt: skip
    for method in ("vanilla", "kd"):  # plain colorshapes: no Bayes posterior, so no excess_nll
        for seed in range(2):
            job(dataset="colorshapes", student=STUDENT, teacher="" if method == "vanilla" else TEACHER,
                method=method, seed=seed, best=TOP1[method] + seed, extra_metrics={"teacher_top1": 95.0})  # fmt: skip
    return folder


def _board(results: Path, **kw) -> report.Leaderboard:
    runs = report.load_runs(f"sqlite:///{results / 'mlflow.db'}", "diffbench")
    return report.leaderboard(runs, "best", task="classification", **kw)


def _row(lb: report.Leaderboard, method: str, dataset: str = "colorshapes-few"):
    t = lb.tidy
    rows = t[(t["method"] == method) & (t["dataset"] == dataset)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_excess_nll_means_gains_and_intervals(results):
    """Means and stds over seeds; kd's gain is paired (same seeds), dkd's Welch; a lower NLL is a negative gain."""
    lb = _board(results, metric="excess_nll")
    van, kd, dkd, teacher = (_row(lb, m) for m in ("vanilla", "kd", "dkd", "teacher"))
    assert set(lb.tidy["metric"]) == {"excess_nll"}
    assert bool(kd["lower_is_better"]) and kd["decimals"] == 3
    assert van["mean"] == pytest.approx(statistics.mean(VAN)) and van["std"] == pytest.approx(statistics.stdev(VAN))
    assert teacher["mean"] == pytest.approx(TEACHER_NLL) and teacher["n"] == 1  # the teacher job's own excess_nll
    d = [k - v for k, v in zip(KD, VAN, strict=True)]
    half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    assert kd["test"] == "paired" and kd["gain"] == pytest.approx(statistics.mean(d)) and kd["gain"] < 0
    low, high = statistics.mean(d) - half, statistics.mean(d) + half
    assert (kd["gain_ci_low"], kd["gain_ci_high"]) == pytest.approx((low, high))
    va, vb = statistics.variance(DKD) / len(DKD), statistics.variance(VAN) / len(VAN)
    df = (va + vb) ** 2 / (va**2 / (len(DKD) - 1) + vb**2 / (len(VAN) - 1))
    diff = statistics.mean(DKD) - statistics.mean(VAN)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert dkd["test"] == "welch" and dkd["gain"] == pytest.approx(diff)
    assert (dkd["gain_ci_low"], dkd["gain_ci_high"]) == pytest.approx((diff - half, diff + half))
    assert lb.tidy["published"].isna().all()  # published numbers are top-1 ones: never beside another metric


def test_runs_without_the_metric_are_n0_cells_with_a_note(results):
    """Plain colorshapes runs log no excess_nll: their cells are n=0 and say why; the teacher_top1 they logged is no
    teacher score for another metric."""
    lb = _board(results, metric="excess_nll")
    for method in ("vanilla", "kd"):
        r = _row(lb, method, "colorshapes")
        assert r["n"] == 0 and r["note"] == "n=0, 2 finished runs without best_excess_nll"
    plain = lb.tidy[lb.tidy["dataset"] == "colorshapes"]
    assert "teacher" not in set(plain["method"])
    assert "(or its finished runs did not log the metric)" in " ".join(lb.legend())
    only_plain = _board(results, metric="excess_nll", dataset="colorshapes")
    assert only_plain.empty
    assert only_plain.empty_reason().startswith("no finished run logged best_excess_nll (2 cell(s) without it")


def test_markdown_three_decimals_and_legend(results):
    lb = _board(results, metric="excess_nll", dataset="colorshapes-few")
    md = report.render(lb, "markdown")
    kd = _row(lb, "kd")
    cell = (f"{statistics.mean(KD):.3f} ± {statistics.stdev(KD):.3f} (n=3) {kd['gain']:+.3f} "
            f"[{kd['gain_ci_low']:+.3f}, {kd['gain_ci_high']:+.3f}]ᵖ")  # fmt: skip
    assert cell in md, md
    assert f"{TEACHER_NLL:.3f}" in md and "excess_nll" in lb.title
    assert "of excess_nll (lower is better) at the best epoch" in md and "a negative gain is an improvement" in md
    for fmt in ("csv", "html", "latex", "json"):  # every format renders; CSV/JSON keep the raw numbers
        assert report.render(lb, fmt)
    assert str(statistics.mean(KD))[:5] in report.render(lb, "csv")


def test_default_metric_is_the_primary_one(results):
    """Without a metric the table ranks on top-1 (2 decimals, higher is better), as it always has."""
    lb = _board(results, dataset="colorshapes-few")
    assert set(lb.tidy["metric"]) == {"top1"} and not lb.tidy["lower_is_better"].any()
    assert set(lb.tidy["decimals"]) == {2}
    assert "lower is better" not in " ".join(lb.legend())
    assert _row(lb, "kd")["gain"] == pytest.approx(82.0 + 1.0 - (80.0 + 1.0))
    assert _row(lb, "teacher")["mean"] == pytest.approx(95.0)


def test_rich_colours_an_improvement_green(results):
    """A negative gain on a lower-is-better metric is green; the same sign on top-1 would be red."""
    from rich.console import Console
    from rich.text import Text

    lb = _board(results, metric="excess_nll", dataset="colorshapes-few")
    table = report.to_rich(lb).tables()[0]
    kd = table.tidy[table.tidy["method"] == "kd"].iloc[0]
    styled: Text = table._styled(kd, [("gain", f"{kd['gain']:+.3f}")])
    assert kd["gain"] < 0 and [str(s.style) for s in styled.spans] == ["green"]
    worse = kd.copy()
    worse["gain"] = 0.01
    assert [str(s.style) for s in table._styled(worse, [("gain", "+0.010")]).spans] == ["red"]
    console = Console(width=160)
    with console.capture() as captured:
        console.print(report.to_rich(lb))
    assert "0.150 ± 0.010 (n=3)" in captured.get()


def test_plot_with_another_metric(results, tmp_path):
    """The figure names the direction and labels its bars and gains in the metric's decimals."""
    from bench.report.plots import figure

    lb = _board(results, metric="excess_nll", dataset="colorshapes-few")
    score, gain = figure(lb).axes
    assert score.get_xlabel() == "excess_nll (lower is better), best epoch (from 0)"
    assert gain.get_xlabel() == "gain over vanilla (excess_nll points; negative is better)"
    labels = {t.get_text().strip() for ax in (score, gain) for t in ax.texts}
    assert {f"{statistics.mean(KD):.3f}", f"{TEACHER_NLL:.3f}", f"{_row(lb, 'kd')['gain']:+.3f}"} <= labels, labels
    assert report.plot(lb, tmp_path / "fig.png").stat().st_size > 0


def test_published_numbers_stay_with_the_primary_metric(results):
    """A reference row for this pair's top-1 is shown on the top-1 table and never beside excess_nll."""
    ref = pd.DataFrame([{"task": "classification", "dataset": "colorshapes-few", "teacher": TEACHER, "student": STUDENT,
                         "method": "kd", "metric": "top1", "value": 82.5, "source": "paper",
                         "recipe_preset": "colorshapes-few"}])  # fmt: skip
    top1 = _board(results, dataset="colorshapes-few", reference=ref)
    assert _row(top1, "kd")["published"] == 82.5
    nll = _board(results, dataset="colorshapes-few", reference=ref, metric="excess_nll")
    assert nll.tidy["published"].isna().all()
    assert "Published numbers are of top1: none is shown beside excess_nll." in nll.notes


def test_unknown_metric_is_refused(results):
    with pytest.raises(UserError, match=r"unknown metric 'excess_nl' for task 'classification'; did you mean "
                                        r"'excess_nll'\? valid: top1, top5, loss, excess_nll"):  # fmt: skip
        _board(results, metric="excess_nl")


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--metric", "excess_nl"], "unknown metric 'excess_nl'; did you mean 'excess_nll'?"),
        (["--metric", "bbox_AP", "--task", "classification"], "unknown metric 'bbox_AP' for task 'classification'"),
        (["--metric", "excess_nll", "--dataset", "colorshapes"], "no finished run logged best_excess_nll"),
    ],
)
def test_cli_bad_metric_is_one_line_and_exit_2(results, args, needle):
    result = runner.invoke(app, ["report", "--output", str(results), *args], catch_exceptions=False)
    out = result.output.strip()
    assert result.exit_code == 2 and out.startswith("error:") and len(out.splitlines()) == 1, out
    assert needle in out, out


def test_cli_metric_markdown(results):
    result = runner.invoke(app, ["report", "--output", str(results), "--metric", "excess_nll", "--format",
                                 "markdown"], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{statistics.mean(VAN):.3f} ± {statistics.stdev(VAN):.3f} (n=3)" in result.output
