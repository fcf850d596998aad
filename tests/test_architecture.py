"""The architecture's promises: the import rules hold (ARCHITECTURE.md), and the commands that do not train answer
without torch — checked with torch and torchvision made unimportable, so a stray import anywhere on their path
fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_rules_hold():
    """Layers (bench -> tasks -> methods; bench's rooms top to bottom), no cycles, torch-free planning modules."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """An environment in which ``import torch`` / ``import torchvision`` fail."""
    blocker = tmp_path_factory.mktemp("blocker")
    for name in ("torch", "torchvision"):
        (blocker / name).mkdir()
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An output folder whose MLflow store holds a small grid's runs (written the way the tracker writes them)."""
    sys.path.insert(0, str(REPO / "tests" / "bench"))
    from report_store import grid_run, log_job, new_store

    out = tmp_path_factory.mktemp("results")
    client, _uri, exp = new_store(out)
    parent = grid_run(client, exp)
    log_job(client, exp, parent, student="resnet32x4", method="vanilla", role="teacher", seed=0, best=79.0)
    for seed in range(2):
        log_job(client, exp, parent, student="resnet8x4", method="vanilla", seed=seed, best=72.0 + seed)
        log_job(client, exp, parent, student="resnet8x4", teacher="resnet32x4", method="kd", seed=seed,
                best=73.5 + seed)  # fmt: skip
    return out


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


ANSWERS = [
    ["--help"],
    ["--version"],
    ["run", "--help"],
    ["train", "--help"],
    ["tune", "--help"],
    ["tune", "--dry-run", "--trials", "2", "--methods", "dkd"],
    ["report", "--help"],
    ["ui", "--help"],
    ["list", "methods"],
    ["list", "archs"],
    ["list", "datasets"],
    ["list", "presets"],
    ["list", "tasks"],
    ["doctor", "--help"],
]

USAGE_ERRORS = [
    (["run", "--methods", "kdd"], "did you mean 'kd'"),
    (["run", "--task", "segmentaton"], "did you mean 'segmentation'"),
    (["run", "--task", "detection", "--dataset", "cocco"], "did you mean 'coco'"),
    (["run", "--pairs", "resnet32x4:resnet8x5", "--dataset", "cifar100"], "unknown architecture 'resnet8x5'"),
    (["run", "--set", "dkd.betta=3"], "did you mean 'beta'"),
    (["run", "--set", "dkd.beta=-1"], "beta must be >= 0"),
    (["run", "--preset", "smok"], "did you mean 'smoke'"),
    (["run", "--recipe", "cifar1000", "--dataset", "cifar100"], "cifar1000"),
    (["run", "--seeds", "x"], "--seeds"),
    (["run", "--set", "recipe.momentum=abc"], "momentum"),
    (["run", "--executor", "rya"], "unknown executor"),
    (["run", "--cpus-per-job", "0"], "--cpus-per-job must be > 0"),
    (["run", "--device", "tpu"], "unknown device"),
    (["run", "--channels-last", "maybe"], "--channels-last"),
    (["train", "--student", "resnet8", "--method", "kdd"], "did you mean"),
    (["train"], "train needs --student"),
    (["tune", "--space", "dkd.beta=uniform(-1,4)"], "beta must be >= 0"),
    (["tune", "--space", "dkd.betta=loguniform(1,4)"], "did you mean 'beta'"),
    (["tune", "--space", "dkd.beta=gauss(1,4)"], "search space"),
    (["tune", "--trials", "0"], "--trials must be at least 1"),
    (["tune", "--time-budget", "soon"], "--time-budget"),
    (["tune", "--scheduler", "pbt"], "--scheduler"),
    (["tune", "--holdout", "0.9"], "--holdout"),
    (["tune", "--methods", "kdd"], "did you mean 'kd'"),
    (["list", "thing"], "unknown thing to list"),
    (["report", "--task", "detecton"], "did you mean 'detection'"),
    (["ui", "--output", "/nonexistent/folder"], "no MLflow store"),
    (["doctor", "--output", "/nonexistent/folder"], "does not exist"),
    (["run", "--set", "recipe.epochs=true", "--dry-run"], "recipe epochs must be an integer"),
]


@pytest.mark.parametrize("args", ANSWERS, ids=" ".join)
def test_commands_that_do_not_train_answer_without_torch(no_torch, args):
    proc = _cli(no_torch, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "blocked by the test" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("args", "needle"), USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_usage_errors_are_one_line_without_torch(no_torch, args, needle):
    proc = _cli(no_torch, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert needle in " ".join(proc.stderr.split()), proc.stderr
    assert "blocked by the test" not in proc.stderr


def test_report_reads_a_store_without_torch(no_torch, store):
    proc = _cli(no_torch, "report", "--output", str(store), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert "resnet8x4" in proc.stdout and "kd" in proc.stdout


def test_doctor_reads_a_store_without_torch(no_torch, store):
    """The store's runs finished but their folders are gone (and no artifacts hold them): doctor says so, exit 1."""
    proc = _cli(no_torch, "doctor", "--output", str(store))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing" in proc.stdout and "retrains it" in " ".join(proc.stdout.split()), proc.stdout
    assert "blocked by the test" not in proc.stdout + proc.stderr
