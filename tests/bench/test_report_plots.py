"""The report's figure and the HTML page around it name only what they show.

Built from in-memory runs (no MLflow store): two CIFAR-100 pairs, vanilla and four methods, three seeds (and one
cell with a single seed), once with the shipped published numbers and once without.
"""

from __future__ import annotations

import pytest
from test_report_terminal import PAIRS, runs_frame

from bench import report
from bench.report.plots import DPI, FONT_PT, WIDTH_IN, figure
from bench.report.schema import TEACHER


def _board(published: str) -> report.Leaderboard:
    runs = runs_frame(PAIRS[:2], seeds=3)
    one_seed = (runs["tags.method"] == "fitnet") & (runs["tags.seed"] != "0") & (runs["tags.student"] == "resnet20")
    return report.leaderboard(runs[~one_seed], "best", reference=report.load_reference(), published=published)


@pytest.fixture(scope="module", params=["match", "never"])
def lb(request) -> report.Leaderboard:
    return _board(request.param)


def _texts(fig) -> list:
    return [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_fontsize")) if t.get_text()]


def test_the_forest_plot_has_a_row_per_gain_and_none_for_teacher_or_vanilla(lb):
    fig = figure(lb)
    scores, gains = fig.axes  # one task/data set: the scores, then the gains
    gain_rows = lb.tidy[(lb.tidy["method"] != TEACHER) & (lb.tidy["method"] != "vanilla") & lb.tidy["gain"].notna()]
    assert len(gains.get_yticklabels()) == len(gain_rows) == 2 * 4
    assert len(scores.get_yticklabels()) == len(lb.tidy) == 2 * 6
    labels = " ".join(t.get_text() for t in gains.get_yticklabels())
    assert "vanilla" not in labels and "teacher" not in labels
    assert "n=1: no CI" in gains.get_title(loc="left")  # the one-seed fitnet cell is drawn hollow


def test_the_published_marker_is_named_only_when_drawn(lb):
    fig = figure(lb)
    shown = bool(lb.tidy["published"].notna().any())
    assert shown == lb.shows_published
    assert ("◆ published" in fig.axes[0].get_title(loc="left")) == shown
    diamonds = [line for line in fig.axes[0].get_lines() if line.get_marker() == "D"]
    assert bool(diamonds) == shown


def test_the_figure_fits_an_800_pixel_page_and_its_text_stays_readable(lb):
    fig = figure(lb)
    assert fig.get_figwidth() * DPI == WIDTH_IN * DPI <= 760
    assert min(t.get_fontsize() for t in _texts(fig)) >= FONT_PT >= 9  # 9 pt at 100 dpi: 12.5 px
    page = report.render(lb, "html")
    assert f'width="{round(WIDTH_IN * DPI)}"' in page


def test_the_html_legend_and_provenance_say_only_what_the_page_shows(lb):
    page = report.render(lb, "html")
    assert ("&#x27;paper&#x27;" in page) == lb.shows_published
    assert page.count("Provenance") == 1 and "<h2>Provenance</h2>" in page


def test_a_panel_of_many_cells_draws_its_first_rows_and_says_how_many_the_table_has(monkeypatch, lb):
    from bench.report import plots

    monkeypatch.setattr(plots, "MAX_ROWS", 5)
    fig = figure(lb)
    scores, gains = fig.axes
    assert len(scores.get_yticklabels()) == len(gains.get_yticklabels()) == 5
    assert f"first 5 of {len(lb.tidy)} rows" in scores.get_title(loc="center") + scores.get_title(loc="left")
    assert "first 5 of 8 rows" in gains.get_title(loc="center") + gains.get_title(loc="left")
