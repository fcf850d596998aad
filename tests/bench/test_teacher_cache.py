"""Teachers shared across output folders: a second grid whose teacher job has the same hash copies it from
``$DIFFBENCH_CACHE/teachers/<hash>`` instead of training it, and only then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench.cli.app import app
from bench.jobs.files import job_dir

runner = CliRunner()
#: A trained resnet8 teacher and a KD student: 3 jobs, seconds.
GRID = ["--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--batch-size", "16",
        "--max-steps", "2", "--executor", "local", "--epochs", "2"]  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFBENCH_TEACHER_CACHE", "1")
    return tmp_path / "cache" / "teachers"


def _run(out: Path, *extra: str):
    result = runner.invoke(app, ["run", "--output", str(out), *GRID, *extra])
    assert result.exit_code == 0, result.output
    return result


def _teacher_run(out: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench").experiment_id
    (run,) = client.search_runs([exp], "tags.role = 'teacher'")
    return run


def _teacher_hash(out: Path) -> str:
    return _teacher_run(out).data.tags["job_hash"]


def test_second_output_folder_reuses_the_teacher(cache, tmp_path):
    _run(tmp_path / "a")
    h = _teacher_hash(tmp_path / "a")
    assert (cache / h / "student.pt").is_file() and (cache / h / "result.json").is_file()
    assert not list(cache.glob(".*.tmp"))  # written to a temporary folder, then renamed

    second = _run(tmp_path / "b")
    assert f"({h}): reused from {cache / h}" in " ".join(second.output.split())
    a, b = job_dir(tmp_path / "a", h), job_dir(tmp_path / "b", h)
    assert (b / "student.pt").read_bytes() == (a / "student.pt").read_bytes()
    assert not (b / "checkpoint.pt").exists()  # not trained here
    run = _teacher_run(tmp_path / "b")
    assert run.info.status == "FINISHED" and run.data.tags["diffbench.teacher_cache"] == str(cache / h)
    assert run.data.metrics == _teacher_run(tmp_path / "a").data.metrics  # logged from the same result.json
    assert json.loads((b / "result.json").read_text()) == json.loads((a / "result.json").read_text())


def test_other_hash_or_damaged_copy_trains_the_teacher(cache, tmp_path):
    _run(tmp_path / "a")
    h = _teacher_hash(tmp_path / "a")
    other = _run(tmp_path / "b", "--set", "teacher.epochs=1")  # another teacher recipe: another hash
    assert "reused from" not in other.output and _teacher_hash(tmp_path / "b") != h

    (cache / h / "student.pt").write_bytes(b"not a checkpoint")  # a damaged copy is ignored
    damaged = _run(tmp_path / "c")
    assert "reused from" not in damaged.output
    assert (job_dir(tmp_path / "c", h) / "checkpoint.pt").is_file()  # trained here


def test_no_teacher_cache_neither_reads_nor_writes(cache, tmp_path):
    _run(tmp_path / "a", "--no-teacher-cache")
    assert not cache.exists()
    _run(tmp_path / "b")
    h = _teacher_hash(tmp_path / "b")
    third = _run(tmp_path / "c", "--no-teacher-cache")
    assert "reused from" not in third.output and (job_dir(tmp_path / "c", h) / "checkpoint.pt").is_file()
