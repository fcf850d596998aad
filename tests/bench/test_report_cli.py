"""``diffbench report`` on the command line: bad input is one ``error:`` line and exit 2; -o/--output is the
results folder, --out the file written.

The bad-input table holds every way a user was found to make ``report`` print a traceback or exit 0
with nothing to show, plus the other one-line refusals of the command.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("mlflow")

from report_store import grid_run, log_job, new_store  # noqa: E402

from bench.cli.app import app  # noqa: E402

runner = CliRunner()
TAGS = {"recipe_preset": "digits", "diffbench_version": "0.1.0"}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder with one finished grid (vanilla and kd, 2 seeds) and one grid whose job failed."""
    folder = tmp_path_factory.mktemp("results")
    client, _, exp = new_store(folder)
    ok = grid_run(client, exp, "ok")
    for seed in range(2):
        for method, best in (("vanilla", 90.0 + seed), ("kd", 92.0 + seed)):
            log_job(client, exp, ok, student="resnet8", teacher="" if method == "vanilla" else "resnet20",
                    method=method, seed=seed, best=best, dataset="digits", tags=TAGS, end=seed)  # fmt: skip
    broken = grid_run(client, exp, "broken", start=10)
    log_job(client, exp, broken, student="resnet8", teacher="resnet20", method="dkd", seed=0, dataset="digits",
            status="FAILED", reason="loss is NaN at epoch 3", tags=TAGS, end=11)  # fmt: skip
    return folder


def _run(*args: str):
    return runner.invoke(app, ["report", *args], catch_exceptions=False)


def _garbage(tmp: Path) -> Path:
    (tmp / "mlflow.db").write_bytes(bytes(range(256)) * 16)
    return tmp


def _foreign(tmp: Path) -> Path:
    con = sqlite3.connect(tmp / "mlflow.db")
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.execute("INSERT INTO notes (body) VALUES ('not mlflow')")
    con.commit()
    con.close()
    return tmp


def _empty_file(tmp: Path) -> Path:
    (tmp / "mlflow.db").write_bytes(b"")
    return tmp


def _empty_store(tmp: Path) -> Path:
    new_store(tmp)
    return tmp


# (id, extra args (RESULTS = the fixture folder, TMP = a fresh folder), make TMP/... first, words in the line)
BAD_INPUTS = [
    ("unknown task", ["--task", "nosuch"], None, ["unknown task 'nosuch'", "classification"]),
    ("valid task, no runs", ["--task", "segmentation"], None, ["no diffbench job runs match --task segmentation"]),
    ("unknown dataset", ["--dataset", "nosuch"], None, ["no diffbench job runs match --dataset nosuch"]),
    ("unknown method", ["--methods", "nosuch"], None, ["no finished runs match", "--methods nosuch"]),
    ("only failed runs", ["--grid", "broken"], None, ["no finished runs match (1 failed)", "loss is NaN at epoch 3"]),
    ("unknown grid", ["--grid", "nope"], None, ["no grid run with id, name or grid hash 'nope'"]),
    ("unknown experiment", ["--experiment", "nope"], None, ["no MLflow experiment 'nope'"]),
    ("bad pair", ["--pairs", "resnet8"], None, ["expected teacher:student"]),
    ("bad --vs", ["--vs", "nosuch"], None, ["--vs nosuch: no finished nosuch run"]),
    ("bad epoch", ["--epoch", "middle"], None, ["--epoch 'middle'"]),
    ("bad --published", ["--published", "sometimes"], None, ["--published 'sometimes'"]),
    ("bad format", ["--format", "docx"], None, ["unknown format 'docx'"]),
    ("suffix names no format", ["--out", "TMP/report.txt"], None, ["cannot tell the format", "--format"]),
    ("missing reference", ["--reference", "TMP/none.csv"], None, ["reference file", "does not exist"]),
    ("no store", ["--output", "TMP"], None, ["no MLflow store at"]),
    ("garbage mlflow.db", ["--output", "TMP"], _garbage, ["is not an MLflow store: file is not a database"]),
    ("foreign SQLite file", ["--output", "TMP"], _foreign, ["is not an MLflow store: it lacks table(s)", "notes"]),
    ("empty mlflow.db", ["--output", "TMP"], _empty_file, ["is not an MLflow store: the database is empty"]),
    ("store without runs", ["--output", "TMP"], _empty_store, ["no diffbench job runs in experiment 'diffbench'"]),
    ("bad tracking URI", ["--tracking-uri", "foo://bar"], None, ["cannot read the MLflow store foo://bar"]),
    ("--out is a folder", ["--out", "TMP"], None, ["is a folder"]),
    ("--out under a file", ["--out", "RESULTS/mlflow.db/report.md"], None, ["is a file, not a folder"]),
    (
        "old -o FILE",
        ["-o", "TMP/report.html"],
        None,
        ["report: -o/--output is the results folder since 0.1.x; write the page with --out", "report.html"],
    ),
    ("old --output FILE", ["--output", "TMP/r.csv"], None, ["-o/--output is the results folder", "--out"]),
    ("--plot under a file", ["--plot", "RESULTS/mlflow.db/x.png"], None, ["is a file, not a folder"]),
]


@pytest.mark.parametrize(("args", "make", "needles"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(results, tmp_path, args, make, needles):
    if make is not None:
        make(tmp_path)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    args = [a.replace("TMP", str(tmp_path)).replace("RESULTS", str(results)) for a in args]
    if not {"--output", "-o", "--tracking-uri"} & set(args):
        args += ["--output", str(results)]
    result = _run(*args)
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert "Traceback" not in out and out.startswith("error:") and len(out.splitlines()) == 1, out
    for needle in needles:
        assert needle in out, out
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # a foreign database is not written to, nothing is left behind


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_out_where_nothing_can_be_created(results):
    """The early check passes (/proc is a folder), the write fails: still one line, exit 2."""
    result = _run("--output", str(results), "--out", "/proc/diffbench-report/report.md")
    assert result.exit_code == 2 and result.output.startswith("error: cannot write --out"), result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_out_in_read_only_folder(results, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    result = _run("--output", str(results), "--out", str(ro / "report.md"))
    assert result.exit_code == 2 and "no write permission" in result.output


def test_html_to_file(results, tmp_path, monkeypatch):
    """`report -o RESULTS --format html --out report.html` writes the page; no PNG lands anywhere."""
    monkeypatch.chdir(tmp_path)
    result = _run("-o", str(results), "--format", "html", "--out", "report.html", "--grid", "ok")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert not list(tmp_path.rglob("*.png")) and not list(results.rglob("*.png"))


def test_format_from_suffix(results, tmp_path):
    tex = "% Needs \\usepackage{booktabs"  # the LaTeX table starts with the packages it needs
    for name, start in (("r.md", "**"), ("r.json", "{"), ("r.csv", "task,dataset"), ("r.tex", tex)):
        result = _run("--output", str(results), "--out", str(tmp_path / "sub" / name), "--grid", "ok")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "sub" / name).read_text().startswith(start), name


def test_html_without_out_goes_to_stdout(results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("--output", str(results), "--format", "html", "--grid", "ok")
    assert result.exit_code == 0 and "<!DOCTYPE html>" in result.output and "data:image/png;base64," in result.output
    assert not list(tmp_path.iterdir()) and not list(results.rglob("*.png"))


def test_terminal_table_plot_and_links(results, tmp_path):
    png = tmp_path / "fig.png"
    result = _run("--output", str(results), "--grid", "ok", "--plot", str(png), "--vs", "kd",
                  "--ui-url", "http://127.0.0.1:5000")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(n=2)" in result.output and "vs kd" in result.output and "Provenance classification/digits" in result.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    md = _run("--output", str(results), "--grid", "ok", "--format", "markdown", "--ui-url", "http://h:5000")
    assert "[(n=2)](http://h:5000/#/compare-runs?runs=" in md.output


def test_failed_jobs_beside_finished_ones_still_report(results):
    """Only an empty table is an error: a failure next to finished runs is listed under the table."""
    result = _run("--output", str(results), "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "1 failed job(s) left out: dkd resnet20→resnet8 s0: loss is NaN at epoch 3" in result.output
    assert "— (n=0, no finished run (1 failed))" in result.output


REPRO_CSV = """task,dataset,teacher,student,method,metric,value,source,recipe_preset,student_init,precision
classification,digits,resnet20,resnet8,kd,top1,99.0,paper K,digits,random,fp32
classification,digits,resnet20,resnet8,vanilla,top1,90.5,paper V,digits,random,fp32
"""
# kd seeds 92, 93: 92.5 ± t(0.975, 1)·0.707/√2 = [86.15, 98.85], below 99.0; vanilla 90, 91: [84.15, 96.85] holds 90.5.
REPRO_LINE = "Reproduction: 1 of 2 cell(s) with a published number reproduced (1 below, 0 above, 0 undecided: 1 seed)."


@pytest.fixture
def repro_reference(tmp_path) -> Path:
    path = tmp_path / "published.csv"
    path.write_text(REPRO_CSV)
    return path


def test_reproduction_markdown_and_terminal(results, repro_reference):
    args = ["--output", str(results), "--grid", "ok", "--reference", str(repro_reference), "--reproduction"]
    md = _run(*args, "--format", "markdown")
    assert md.exit_code == 0, md.output
    assert REPRO_LINE in md.output
    row = next(line for line in md.output.splitlines() if line.startswith("|") and "kd resnet20→resnet8" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:8] == ["92.50 (n=2)", "[86.15, 98.85]", "99.00", "-6.50", "1.0", "below"]
    assert "vanilla resnet20→resnet8" not in md.output  # reproduced: not a miss
    assert "Rule: with n ≥ 2 seeds, reproduced when the published number lies in the 95 % t-interval" in md.output
    term = _run(*args)
    assert term.exit_code == 0 and REPRO_LINE in " ".join(term.output.split()), term.output
    assert "92.50" in term.output and "below" in term.output  # the 80-column table wraps "(n=2)"


def test_reproduction_json_and_csv(results, repro_reference, tmp_path):
    import json

    import pandas as pd

    args = ["--output", str(results), "--grid", "ok", "--reference", str(repro_reference), "--reproduction"]
    result = _run(*args, "--out", str(tmp_path / "repro.json"))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "repro.json").read_text())
    assert doc["summary"] == {"cells": 2, "reproduced": 1, "below": 1, "above": 0, "undecided": 0}
    assert doc["headline"] == REPRO_LINE and doc["rule"].startswith("Rule: with n ≥ 2 seeds")
    (miss,) = doc["misses"]
    assert (miss["method"], miss["verdict"], miss["published"]) == ("kd", "below", 99.0)
    assert miss["diff"] == pytest.approx(-6.5) and miss["mean_ci_high"] == pytest.approx(98.85, abs=0.005)
    assert [c["verdict"] for c in doc["cells"]] == ["below", "reproduced"]
    result = _run(*args, "--format", "csv")
    assert result.exit_code == 0, result.output
    from io import StringIO

    back = pd.read_csv(StringIO(result.output))
    assert list(back["method"]) == ["kd", "vanilla"] and list(back["verdict"]) == ["below", "reproduced"]
    for fmt, start in (("html", "<!DOCTYPE html>"), ("latex", "\\begin{table}")):
        out = _run(*args, "--format", fmt).output
        first = next(line for line in out.splitlines() if not line.startswith("%"))  # LaTeX: after its comment
        assert first.startswith(start) and "1 of 2 cell(s)" in out, fmt
