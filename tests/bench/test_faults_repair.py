"""A finished job is whole or it is not finished: each fault of the fault matrix that a re-run used to leave behind,
then the same command again, which must repair it in one line per job and end with every job finished exactly once,
its files whole, nothing RUNNING.

Grids are tiny (digits, resnet8, 2 steps per epoch) and run in-process (``--executor local``). ``diffbench doctor``
is asked first each time: it must name the damage and what the re-run will do, without training or changing anything.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench.cli.app import app
from bench.execute.integrity import damage_of
from bench.jobs.files import job_dir

runner = CliRunner()
GRID = ["--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--batch-size", "16",
        "--max-steps", "2", "--executor", "local", "--epochs", "2"]  # fmt: skip


def _run(out: Path, *extra: str):
    return runner.invoke(app, ["run", "--output", str(out), *GRID, *extra])


def _flat(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines at the terminal width


def _client(out: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return client, client.get_experiment_by_name("diffbench").experiment_id


def _runs(out: Path) -> list:
    client, exp = _client(out)
    return client.search_runs([exp], "tags.`diffbench.kind` = 'job'", max_results=1000)


def _live(out: Path) -> list:
    return [r for r in _runs(out) if r.data.tags.get("diffbench.superseded") != "true"]


def _job(out: Path, method: str, role: str = "student"):
    return next(r for r in _live(out) if r.data.tags["method"] == method and r.data.tags["role"] == role)


def _trainings(out: Path, run) -> int:
    """How many times the job's own log says it started (a repair must not train)."""
    return (job_dir(out, run.data.tags["job_hash"]) / "train.log").read_text().count(" job ")


def _assert_whole_and_once(out: Path) -> None:
    """Every job finished exactly once (one live run per hash, FINISHED), its files whole, nothing RUNNING."""
    runs = _runs(out)
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    live = _live(out)
    hashes = [r.data.tags["job_hash"] for r in live]
    assert len(hashes) == len(set(hashes)) == 3, sorted(hashes)
    for r in live:
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
        damage = damage_of(job_dir(out, r.data.tags["job_hash"]), r.data.tags["job_hash"])
        assert not damage, (r.info.run_name, damage)


def _doctor(out: Path, *needles: str) -> str:
    result = runner.invoke(app, ["doctor", "--output", str(out)])
    flat = _flat(result)
    assert result.exit_code == 1, result.output  # something to repair
    for n in needles:
        assert n in flat, result.output
    return flat


def _repaired(result, *needles: str) -> str:
    assert result.exit_code == 0, result.output
    flat = _flat(result)
    assert "Traceback" not in flat
    for n in needles:
        assert n in flat, result.output
    return flat


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 3-job grid (teacher, vanilla, KD), copied for each test."""
    out = tmp_path_factory.mktemp("grid") / "out"
    assert _run(out).exit_code == 0
    return out


@pytest.fixture
def out(finished, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(finished, copy)
    return copy


def _moved_store(out: Path) -> None:
    """The copy's runs still name the original folder's artifact store: point the copy's at its own."""
    import sqlite3

    old = None
    with sqlite3.connect(out / "mlflow.db") as db:
        for (loc,) in db.execute("select artifact_location from experiments"):
            if loc and loc.endswith("/mlartifacts"):
                old = loc[: -len("/mlartifacts")]
        if old:
            new = out.as_uri()
            db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (old, new))
            db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
            db.execute("update tags set value = ? where key = 'diffbench.output'", (str(out),))


@pytest.fixture(autouse=True)
def _own_store(request):
    if "out" in request.fixturenames:
        _moved_store(request.getfixturevalue("out"))


# ------------------------------------------------------------------------------------------------
def test_a_garbled_result_of_a_finished_job_is_rewritten_from_its_run(out):
    kd = _job(out, "kd")
    wd = job_dir(out, kd.data.tags["job_hash"])
    (wd / "result.json").write_text('{"job_hash": "x", "metr')
    _doctor(out, kd.data.tags["job_hash"], "result.json unreadable", "rewritten from its MLflow run")
    flat = _repaired(_run(out), "repaired", kd.data.tags["job_hash"], "result.json unreadable")
    assert "0 to run" in flat
    result = json.loads((wd / "result.json").read_text())
    assert result["job_hash"] == kd.data.tags["job_hash"] and [r["epoch"] for r in result["history"]] == [1, 2]
    assert result["metrics"]["best_top1"] == kd.data.metrics["best_top1"]
    assert _trainings(out, kd) == 1
    _assert_whole_and_once(out)


def test_a_deleted_student_export_is_made_again_from_the_checkpoint_and_exports(out, tmp_path):
    kd = _job(out, "kd")
    wd = job_dir(out, kd.data.tags["job_hash"])
    (wd / "student.pt").unlink()
    _doctor(out, "student.pt missing", "re-exported from its checkpoint")
    _repaired(_run(out), "repaired", kd.data.tags["job_hash"], "student.pt missing: re-exported from its checkpoint")
    assert _trainings(out, kd) == 1
    _assert_whole_and_once(out)
    result = runner.invoke(app, ["export", kd.data.tags["job_hash"], "--output", str(out), "--last", "--format",
                                 "state_dict", "--out", str(tmp_path / "x.pt")])  # fmt: skip
    assert result.exit_code == 0, result.output


def test_a_student_export_of_another_job_is_replaced(out):
    vanilla, kd = _job(out, "vanilla"), _job(out, "kd")
    shutil.copy(job_dir(out, vanilla.data.tags["job_hash"]) / "student.pt",
                job_dir(out, kd.data.tags["job_hash"]) / "student.pt")  # fmt: skip
    _repaired(_run(out), "repaired", kd.data.tags["job_hash"], f"student.pt of job {vanilla.data.tags['job_hash']}")
    _assert_whole_and_once(out)


def test_a_truncated_teacher_export_is_made_again_without_training(out):
    teacher = _job(out, "vanilla", "teacher")
    path = job_dir(out, teacher.data.tags["job_hash"]) / "student.pt"
    path.write_bytes(path.read_bytes()[:1000])
    _repaired(_run(out), "repaired", teacher.data.tags["job_hash"], "student.pt unreadable")
    assert _trainings(out, teacher) == 1
    _assert_whole_and_once(out)


def test_a_deleted_jobs_folder_is_restored_from_the_runs(out):
    before = {r.info.run_id for r in _runs(out)}
    shutil.rmtree(out / "jobs")
    _doctor(out, "copied from its MLflow run's artifacts")
    flat = _repaired(_run(out), "0 to run")
    assert flat.count("repaired") == 3, flat
    assert {r.info.run_id for r in _runs(out)} == before  # no new run: nothing trained
    for r in _live(out):
        wd = job_dir(out, r.data.tags["job_hash"])
        assert (wd / "config.json").is_file() and (wd / "train.log").is_file()
    _assert_whole_and_once(out)


def test_a_deleted_jobs_folder_and_artifact_store_retrain_into_superseding_runs(out):
    old = {r.data.tags["job_hash"]: r.info.run_id for r in _live(out)}
    shutil.rmtree(out / "jobs")
    shutil.rmtree(out / "mlartifacts")
    _doctor(out, "trains again")
    flat = _repaired(_run(out), "3 to run")
    assert flat.count("retraining") == 3, flat
    _assert_whole_and_once(out)
    client, _ = _client(out)
    for h, run_id in old.items():
        assert client.get_run(run_id).data.tags["diffbench.superseded"] == "true", h


def test_doctor_of_a_whole_grid_says_so_and_changes_nothing(out):
    db = (out / "mlflow.db").read_bytes()
    result = runner.invoke(app, ["doctor", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 jobs" in _flat(result) and "whole" in _flat(result)
    assert (out / "mlflow.db").read_bytes() == db


# ------------------------------------------------------------------------------------------------
# Read-only mid-grid
# ------------------------------------------------------------------------------------------------
def _read_only(path: Path) -> str | None:
    """Make ``path`` unwritable even for root (``chattr +i``), else by permissions; how, or ``None`` if neither."""
    if subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True).returncode == 0:
        return "chattr"
    subprocess.run(["chmod", "-R", "a-w", str(path)], capture_output=True)
    try:
        (path / ".probe").write_text("x")
    except OSError:
        return "chmod"
    (path / ".probe").unlink()
    subprocess.run(["chmod", "-R", "u+w", str(path)], capture_output=True)
    return None


def _writable(path: Path, how: str | None) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
    elif how == "chmod":
        subprocess.run(["chmod", "-R", "u+w", str(path)], capture_output=True)


def test_an_output_made_read_only_mid_grid_is_one_line_and_exit_3_and_a_rerun_finishes(tmp_path, monkeypatch):
    from bench.execute.state import GridRun

    out = tmp_path / "out"
    finish = GridRun.on_finish
    state = {"how": None, "done": False}

    def then_read_only(self, spec, summary):
        finish(self, spec, summary)
        if not state["done"]:  # after the teacher finished: the folder is made read-only under the grid
            state["done"] = True
            state["how"] = _read_only(out)
            if state["how"] is None:
                pytest.skip("cannot make a folder read-only here (not root with chattr, and root ignores chmod)")

    monkeypatch.setattr(GridRun, "on_finish", then_read_only)
    try:
        result = _run(out)
    finally:
        _writable(out, state["how"])
    text = result.output
    assert result.exit_code == 3, text
    assert "Traceback" not in text and len([x for x in text.splitlines() if x.startswith("error:")]) == 1, text
    assert "run the same command again" in _flat(result)
    monkeypatch.setattr(GridRun, "on_finish", finish)
    result = _run(out)
    assert result.exit_code == 0, result.output
    assert not (out / ".diffbench.lock").exists()
    _assert_whole_and_once(out)
