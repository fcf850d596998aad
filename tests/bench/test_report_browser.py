"""The HTML report in a real browser (headless Chromium; skipped where none is installed).

Layout cannot be checked on the HTML text: the test loads the page at a narrow and a wide window,
lets the browser measure it (a small script writes the measurements into the DOM, which
``--dump-dom`` prints), and checks that the table wraps inside the window, that the embedded figure
decodes, and that a screenshot comes out. ``bench/scripts/screenshot_report.sh`` takes the same
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
  document.body.dataset.pageOverflow = document.documentElement.scrollWidth > window.innerWidth + 1;
  document.body.dataset.tableRight = Math.ceil(t.getBoundingClientRect().right);
  document.body.dataset.windowWidth = window.innerWidth;
  document.body.dataset.imgWidth = img ? img.naturalWidth : 0;
});
</script>"""


def _chromium(*args: str, profile: Path) -> str:
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    cmd = [BROWSER, "--headless", *sandbox, "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A wide table (long method labels from a sweep, five methods, 3 seeds) rendered to HTML."""
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
    lb = report.leaderboard(report.load_runs(uri), vs="dkd")
    html = report.render(lb, "html", ui_url="http://127.0.0.1:5000").replace("</body>", MEASURE + "\n</body>")
    path = folder / "report.html"
    path.write_text(html)
    return path


@pytest.mark.parametrize("width", [700, 1400])
def test_table_wraps_to_the_window_and_figure_decodes(page, tmp_path, width):
    dom = _chromium(f"--window-size={width},1200", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
                    profile=tmp_path / "profile")  # fmt: skip
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', dom.split("<body", 1)[1].split(">", 1)[0]))
    assert attrs, dom[:500]
    assert attrs["page-overflow"] == "false", attrs
    assert int(attrs["table-right"]) <= int(attrs["window-width"]), attrs
    assert int(attrs["img-width"]) > 0, attrs


def test_screenshot(page, tmp_path):
    shot = tmp_path / "report.png"
    _chromium("--window-size=1280,1800", f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
