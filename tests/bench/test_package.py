"""diffbench as an installed package: the wheel ships every data file the code reads, a wheel install runs
``diffbench report`` from outside the source tree, and one setting (``DIFFBENCH_CACHE``) places every cache.

The wheel is built offline from a copy of the sources (``pip wheel --no-build-isolation``: setuptools from
this environment) and installed with ``pip install --no-deps --target``; the report then runs in a child
process whose working directory and ``sys.path`` hold no source checkout, so only the wheel's files serve.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from report_store import log_job, new_store

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "methods", "tasks")
#: Non-Python files in the packages that no code reads: developer scripts run from a checkout.
NOT_SHIPPED: tuple[str, ...] = ()


def _tracked_files() -> list[str]:
    """Files of the packages in the source tree (git's list in a checkout, else a walk without caches)."""
    try:
        out = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True)
        names = out.stdout.split()
    except (OSError, subprocess.CalledProcessError):
        names = []
    if not names:
        names = [p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*") if p.is_file()]
    return [n for n in names if "__pycache__" not in n and (ROOT / n).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:  # a copy: the build writes build/ and *.egg-info, which must not race other checkouts
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    (whl,) = dist.glob("diffbench-*.whl")
    return whl


def test_wheel_ships_every_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [n for n in _tracked_files() if not n.endswith(".py") and not n.startswith(NOT_SHIPPED)]
    assert "bench/reference/published.csv" in data  # the list is not vacuous
    missing = [n for n in data if n not in names]
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
    assert "bench/cli/app.py" in names and not any(n.startswith(("tests/", "results/")) for n in names)


def test_wheel_install_reports_from_outside_the_tree(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    client, _uri, exp = new_store(tmp_path / "results")
    for seed in range(2):  # the CIFAR-100 recipe, so the published number (kd resnet32x4→resnet8x4 73.33) is shown
        for method, best in (("vanilla", 72.0 + seed), ("kd", 73.0 + seed)):
            log_job(client, exp, None, student="resnet8x4", teacher="resnet32x4" if method == "kd" else "",
                    method=method, seed=seed, best=best, tags={"recipe_preset": "cifar100"}, end=seed)  # fmt: skip
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # -P: no script directory or cwd on sys.path; PYTHONPATH: the installed wheel only (the editable install's
    # finder comes after it on sys.meta_path).
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = ("import bench.cli, methods, tasks; "
             "print(bench.__file__, bench.cli.__file__, methods.__file__, tasks.__file__)")
    where = subprocess.run([sys.executable, "-P", "-c", probe], cwd=outside, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(target)) for p in where.stdout.split()), where.stdout
    cmd = [sys.executable, "-P", "-c", "from bench.cli.app import app; app()", "report", "--output",
           str(tmp_path / "results"), "--format", "markdown"]  # fmt: skip
    done = subprocess.run(cmd, cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "paper 73.33" in done.stdout, done.stdout


# -- the cache setting ----------------------------------------------------------------------------------------
def test_cache_dir_one_setting(monkeypatch, tmp_path):
    from tasks.cache import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DIFFBENCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "diffbench"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset (XDG base-directory specification)
    assert cache_dir() == tmp_path / "home" / ".cache" / "diffbench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "diffbench"
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_every_generated_data_set_follows_the_setting(monkeypatch, tmp_path):
    from tasks.detection import data as det
    from tasks.segmentation import data as seg

    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-this"))
    assert det.default_shapes_dir().parent == tmp_path
    assert seg.default_cache_dir() == tmp_path
    # no task reads the cache variables itself: tasks.cache is the one place
    for path in (ROOT / "tasks").rglob("*.py"):
        if path.name != "cache.py":
            text = path.read_text(encoding="utf-8")
            assert "XDG_CACHE_HOME" not in text and '"DIFFBENCH_CACHE"' not in text, path
