"""The HTML report in a real browser (headless Chromium; skipped where none is installed).

Layout cannot be checked on the HTML text: the test loads the page at narrow and wide windows, lets the
browser measure it (a small script writes the measurements into the DOM, which ``--dump-dom`` prints), and
checks that the page never scrolls sideways, that no header or cell is broken inside a word ("studen/t"), that
the paper-shaped table fits 800 pixels, that the figure's text is at least 10 pixels on screen, and that a
screenshot comes out. ``bench/scripts/screenshot_report.sh`` takes the same
screenshot of a real results folder, for looking at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from report_store import log_job, new_store  # noqa: E402

from bench import report  # noqa: E402

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install -y chromium)")

MEASURE = """<script>
window.addEventListener('load', () => {
  const t = document.querySelector('table.leaderboard'), img = document.querySelector('img.plot');
  const d = document.body.dataset;
  d.pageOverflow = document.documentElement.scrollWidth > window.innerWidth + 1;
  d.tableRight = Math.ceil(t.getBoundingClientRect().right);
  d.windowWidth = window.innerWidth;
  d.imgWidth = img ? img.naturalWidth : 0;
  d.imgShown = img ? Math.round(img.getBoundingClientRect().width) : 0;
  // A word of the table (text between spaces; a <wbr> ends a text node) laid out on two lines is broken.
  const broken = [], walker = document.createTreeWalker(t, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    for (const m of n.data.matchAll(/\\S+/g)) {
      const r = document.createRange();
      r.setStart(n, m.index);
      r.setEnd(n, m.index + m[0].length);
      if (new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1) broken.push(m[0]);
    }
  }
  d.brokenWords = broken.join(' ');
});
</script>"""


def _chromium(*args: str, profile: Path) -> str:
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    cmd = [BROWSER, "--headless", *sandbox, "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _write(folder: Path, lb: report.Leaderboard) -> Path:
    html = report.render(lb, "html", ui_url="http://127.0.0.1:5000").replace("</body>", MEASURE + "\n</body>")
    path = folder / "report.html"
    path.write_text(html)
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A wide table (long method labels from a sweep, seven method columns, 3 seeds) rendered to HTML."""
    folder = tmp_path_factory.mktemp("browser")
    client, uri, exp = new_store(folder / "results")
    for seed in range(3):
        log_job(client, exp, None, student="resnet8x4", method="vanilla", seed=seed, best=70.0 + seed)
        for k, method in enumerate(("kd", "dkd", "fitnet", "diffkd")):
            log_job(client, exp, None, student="resnet8x4", teacher="resnet32x4", method=method, seed=seed,
                    best=71.0 + k + 0.3 * seed)  # fmt: skip
        for temp in (2, 8):
            log_job(client, exp, None, student="resnet8x4", teacher="resnet32x4", method="kd", seed=seed,
                    best=72.0 + 0.2 * seed, job_hash=f"sweep-{temp}-{seed}",
                    params={"hp.temperature": temp, "hp.long_hyperparameter_name": f"value_{temp}" * 3})  # fmt: skip
    return _write(folder, report.leaderboard(report.load_runs(uri), vs="dkd"))


@pytest.fixture(scope="module")
def paper_page(tmp_path_factory) -> Path:
    """The paper's shape: five CIFAR-100 pairs, vanilla and four methods, teacher scores, published numbers."""
    from test_report_terminal import runs_frame

    lb = report.leaderboard(runs_frame(), "best", reference=report.load_reference(), vs="dkd")
    return _write(tmp_path_factory.mktemp("paper"), lb)


def _measure(page: Path, width: int, profile: Path) -> dict[str, str]:
    dom = _chromium(f"--window-size={width},1200", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
                    profile=profile)  # fmt: skip
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', dom.split("<body", 1)[1].split(">", 1)[0]))
    assert attrs, dom[:500]
    return attrs


@pytest.mark.parametrize("width", [700, 800, 1400])
def test_no_word_breaks_the_page_never_scrolls_and_the_figure_decodes(page, tmp_path, width):
    """A table too wide for the window scrolls in its own box; no header or cell breaks inside a word."""
    attrs = _measure(page, width, tmp_path / "profile")
    assert attrs["page-overflow"] == "false", attrs
    assert attrs["broken-words"] == "", attrs
    assert int(attrs["img-width"]) > 0, attrs
    if width >= 1400:
        assert int(attrs["table-right"]) <= int(attrs["window-width"]), attrs


@pytest.mark.parametrize("width", [800, 1400])
def test_the_paper_table_fits_and_the_figure_text_stays_readable(paper_page, tmp_path, width):
    from bench.report.plots import DPI, FONT_PT

    attrs = _measure(paper_page, width, tmp_path / "profile")
    assert attrs["page-overflow"] == "false" and attrs["broken-words"] == "", attrs
    assert int(attrs["table-right"]) <= int(attrs["window-width"]), attrs
    # The PNG is drawn at 2 × DPI; its smallest text is FONT_PT points: on screen, in CSS pixels,
    px = FONT_PT / 72 * 2 * DPI * int(attrs["img-shown"]) / int(attrs["img-width"])
    assert px >= 10, attrs


def test_screenshot(page, tmp_path):
    shot = tmp_path / "report.png"
    _chromium("--window-size=1280,1800", f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
