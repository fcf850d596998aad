"""The LaTeX table fits a page: stacked cells with the interval on its own line, scaled to the text width.

Built from in-memory runs of the paper's shape (five CIFAR-100 pairs, vanilla and four methods, three seeds,
published numbers, ``--vs dkd``) plus a sweep with long labels. Where ``pdflatex`` is installed the table is also
compiled into a minimal article and must give neither an error nor an overfull box.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest
from test_report_terminal import runs_frame

from bench import report
from bench.report.render_latex import PACKAGES, latex_escape


@pytest.fixture(scope="module")
def tex() -> str:
    runs = runs_frame()
    sweep = runs[runs["tags.method"] == "kd"].copy()
    sweep["tags.method"] = "kd[long_hyperparameter_name=value_2, temperature=2]"
    sweep["run_id"] = "sweep" + sweep["run_id"].str[5:]
    sweep["tags.job_hash"] = "sweep-" + sweep["tags.job_hash"]
    runs = pd.concat([runs, sweep], ignore_index=True)
    lb = report.leaderboard(runs, "best", reference=report.load_reference(), vs="dkd")
    return report.render(lb, "latex")


def test_a_float_that_fits_the_page(tex):
    assert tex.splitlines()[0] == PACKAGES and r"\usepackage{booktabs,graphicx}" in PACKAGES
    float_ = tex.split(r"\begin{table}[t]", 1)[1]
    assert float_.lstrip().startswith(r"\centering")
    assert re.search(r"\\label\{tab:diffbench-classification-cifar100-top1-best-epoch\}", tex)
    assert r"\resizebox{\linewidth}{!}{%" in tex and tex.count(r"\begin{tabular}{") == 1


def test_the_interval_is_a_line_of_its_own(tex):
    # "+1.78" then, on the next line of the cell, "[+0.23, +3.34]ᵖ*" (braced: not \\'s optional argument)
    lines = re.findall(r"\{([+-]\d+\.\d\d)\} \\\\ \{(\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\][^}]*)\}", tex)
    assert len(lines) >= 20, tex[:2000]
    assert r"\begin{tabular}[t]{@{}r@{}}" in tex
    # a sweep label's head is stacked, one hyper-parameter per line
    assert r"{kd[long\_hyperparameter\_name=value\_2,} \\ {temperature=2]}" in tex


def test_typeset_quotes_and_flags():
    assert latex_escape("'paper' = the published number") == "`paper' = the published number"
    assert latex_escape("the paper's number, 'vs dkd'") == "the paper's number, `vs dkd'"
    assert latex_escape('a "quoted" word') == "a ``quoted'' word"
    assert latex_escape("--reproduction lists") == "-{}-reproduction lists"
    assert latex_escape("Welch–Satterthwaite") == "Welch--Satterthwaite"


def test_legend_quotes(tex):
    assert "`paper' = the published number" in tex and "'paper'" not in tex
    assert "-{}-reproduction" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex")
def test_compiles_without_an_overfull_box(tex, tmp_path):
    doc = tmp_path / "doc.tex"
    preamble = "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs,graphicx}\n"
    doc.write_text(preamble + "\\begin{document}\n" + tex + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert "Overfull" not in log, log[-3000:]
