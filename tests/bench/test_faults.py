"""The fault matrix, one test per fault: a grid survives what users and machines do to it.

Every grid here is tiny (digits, resnet8, 2 steps per epoch) and runs in-process (``--executor local``)
unless the fault is Ray's own (SIGTERM of a Ray driver). Each test asserts what a user sees (exit code,
one line, no traceback) and what the store holds (one live run per job hash, every epoch logged once).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench.cli.app import app
from bench.jobs.spec import job_dir

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
#: A vanilla student and a KD student of a trained teacher: 3 jobs, seconds.
GRID = ["--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--batch-size", "16",
        "--max-steps", "2", "--executor", "local"]  # fmt: skip


def _run(out: Path, *extra: str, epochs: int = 2):
    return runner.invoke(app, ["run", "--output", str(out), "--epochs", str(epochs), *GRID, *extra])


def _client(out: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return client, client.get_experiment_by_name("diffbench").experiment_id


def _runs(out: Path, kind: str = "job") -> list:
    client, exp = _client(out)
    return client.search_runs([exp], f"tags.`diffbench.kind` = '{kind}'", max_results=1000)


def _live(out: Path) -> list:
    return [r for r in _runs(out) if r.data.tags.get("diffbench.superseded") != "true"]


def _steps(out: Path, run, key: str = "train/loss") -> list[int]:
    client, _ = _client(out)
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def _one_line(result, code: int, *needles: str) -> str:
    text = result.output.strip()
    assert result.exit_code == code, result.output
    assert "Traceback" not in text, text
    error_lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, text
    flat = " ".join(text.split())  # rich wraps long lines at the terminal width
    for n in needles:
        assert n in flat, text
    return text


def _assert_one_live_run_per_job(out: Path, finished: bool = True) -> None:
    live = _live(out)
    hashes = [r.data.tags["job_hash"] for r in live]
    assert len(hashes) == len(set(hashes)), sorted(hashes)
    if finished:
        assert all(r.info.status == "FINISHED" for r in live), [(r.info.run_name, r.info.status) for r in live]


def _job(out: Path, method: str) -> Path:
    run = next(r for r in _live(out) if r.data.tags["method"] == method and r.data.tags["role"] == "student")
    return job_dir(out, run.data.tags["job_hash"])


def _teacher(out: Path):
    return next(r for r in _live(out) if r.data.tags["role"] == "teacher")


# ------------------------------------------------------------------------------------------------
# Two drivers
# ------------------------------------------------------------------------------------------------
_HOLD = (
    "import sys, time, pathlib; from bench.execute.lock import OutputLock; p = pathlib.Path(sys.argv[1]); "
    "p.mkdir(parents=True, exist_ok=True); lock = OutputLock(p).acquire(); "
    "[lock.claim(pathlib.Path(j)) for j in sys.argv[2:]]; print('held', flush=True); time.sleep(120)"
)


def _holder(folder: Path, *claims: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), *map(str, claims)], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_driver_is_refused_with_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        text = _one_line(_run(out), 2, "in use by another diffbench driver", f"pid {holder.pid}")
        assert "lock file" in text
        assert not (out / "mlflow.db").exists() and not (out / "jobs").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing its lock: the lock is stale and the next driver takes it over.
    assert (out / ".diffbench.lock").exists()
    result = _run(out)
    assert result.exit_code == 0, result.output
    assert not (out / ".diffbench.lock").exists()  # released at the end
    _assert_one_live_run_per_job(out)


def test_two_drivers_started_together_train_every_job_once(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.cli", "run", "--output", str(out), "--epochs", "1", *GRID]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 2]), outputs
    for text in outputs:
        assert "Traceback" not in text and "already exists" not in text, text
    _assert_one_live_run_per_job(out)
    assert len(_runs(out)) == 3  # no duplicate, not even a superseded one
    for run in _runs(out):
        log = (job_dir(out, run.data.tags["job_hash"]) / "train.log").read_text()
        assert log.count(" job ") == 1, log  # trained once, by one driver


def test_a_job_claimed_by_another_live_driver_is_not_trained_twice(tmp_path):
    from bench.execute.events import Failed, run_reporting
    from bench.jobs.spec import resolve_job

    out = tmp_path / "out"
    spec = resolve_job(task="classification", dataset="digits", student="resnet8",
                       recipe_overrides={"epochs": 1, "batch_size": 16, "max_steps": 2})  # fmt: skip
    # Another driver (another output folder's lock, a shared job folder) holds the job.
    holder = _holder(tmp_path / "elsewhere", job_dir(out, spec.job_hash))
    try:
        events = []
        assert not run_reporting(spec, out, events.append, claim_token="mine", device="cpu", log=lambda m: None)
        assert len(events) == 1 and isinstance(events[0], Failed), events
        assert "being trained by another diffbench driver" in events[0].reason
        assert not (job_dir(out, spec.job_hash) / "checkpoint.pt").exists()
        result = _run(out, "--methods", "", epochs=1)
        assert result.exit_code == 1, result.output
        assert "being trained by another diffbench driver" in " ".join(result.output.split())
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its claim is stale, the job trains.
    assert _run(out, "--methods", "", epochs=1).exit_code == 0
    _assert_one_live_run_per_job(out)


# ------------------------------------------------------------------------------------------------
# Corrupt job files
# ------------------------------------------------------------------------------------------------
def _crashed_after_epoch_2(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A 3-epoch grid whose KD job crashed right after checkpointing epoch 2 (no retries)."""
    out = tmp_path / "out"
    monkeypatch.setenv("DIFFBENCH_CRASH_ONCE_AT_EPOCH", "2")
    monkeypatch.setenv("DIFFBENCH_CRASH_METHOD", "kd")
    assert _run(out, "--max-failures", "0", epochs=3).exit_code == 1
    wd = _job(out, "kd") if any(r.data.tags["method"] == "kd" for r in _live(out)) else None
    assert wd is not None and (wd / "checkpoint.prev.pt").exists()
    return out, wd


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch):
    out, wd = _crashed_after_epoch_2(tmp_path, monkeypatch)
    _truncate(wd / "checkpoint.pt")
    result = _run(out, epochs=3)
    assert result.exit_code == 0, result.output
    log = (wd / "train.log").read_text()
    assert "checkpoint.pt is unreadable" in log and "resuming from checkpoint.prev.pt (epoch 1)" in log
    assert (wd / "checkpoint.pt.corrupt").exists()
    _assert_one_live_run_per_job(out)
    kd = next(r for r in _live(out) if r.data.tags["method"] == "kd")
    assert _steps(out, kd) == [1, 2, 3]  # the redone epoch 2 is logged once


def test_when_every_checkpoint_is_corrupt_the_job_restarts_into_a_new_run(tmp_path, monkeypatch):
    out, wd = _crashed_after_epoch_2(tmp_path, monkeypatch)
    old = next(r for r in _live(out) if r.data.tags["method"] == "kd")
    _truncate(wd / "checkpoint.pt")
    (wd / "checkpoint.prev.pt").write_bytes(b"not a checkpoint")
    result = _run(out, epochs=3)
    assert result.exit_code == 0, result.output
    assert "restarts from epoch 1" in (wd / "train.log").read_text()
    client, _ = _client(out)
    tags = client.get_run(old.info.run_id).data.tags
    assert tags["diffbench.superseded"] == "true"
    _assert_one_live_run_per_job(out)
    new = next(r for r in _live(out) if r.data.tags["method"] == "kd")
    assert new.info.run_id == tags["diffbench.superseded_by"]
    assert _steps(out, new) == [1, 2, 3]


def test_a_truncated_result_of_an_unfinished_run_is_rewritten_without_retraining(tmp_path):
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    client, _ = _client(out)
    kd = next(r for r in _live(out) if r.data.tags["method"] == "kd")
    client.update_run(kd.info.run_id, status="RUNNING")  # the driver died before it logged the end
    wd = job_dir(out, kd.data.tags["job_hash"])
    (wd / "result.json").write_text('{"job_hash": "x", "metr')
    result = _run(out)
    assert result.exit_code == 0, result.output
    assert "result.json is unreadable" in " ".join(result.output.split())
    assert json.loads((wd / "result.json").read_text())["metrics"]["best_top1"] >= 0
    assert "resumed from epoch 2" in (wd / "train.log").read_text()  # nothing trained again
    _assert_one_live_run_per_job(out)
    assert _steps(out, next(r for r in _live(out) if r.data.tags["method"] == "kd")) == [1, 2]


# ------------------------------------------------------------------------------------------------
# Deleted job files: reuse or supersede, never duplicate
# ------------------------------------------------------------------------------------------------
def test_a_deleted_teacher_export_is_made_again_in_the_same_run(tmp_path):
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    teacher = _teacher(out)
    wd = job_dir(out, teacher.data.tags["job_hash"])
    (wd / "student.pt").unlink()
    assert _run(out).exit_code == 0
    assert (wd / "student.pt").is_file()
    assert len(_runs(out)) == 3  # no second run
    assert _teacher(out).info.run_id == teacher.info.run_id
    _assert_one_live_run_per_job(out)


def test_a_deleted_jobs_folder_is_restored_from_the_runs_without_training(tmp_path):
    import shutil

    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    old = _teacher(out)
    shutil.rmtree(out / "jobs")
    result = _run(out)
    assert result.exit_code == 0, result.output
    assert " ".join(result.output.split()).count("repaired") == 3, result.output
    _assert_one_live_run_per_job(out)
    assert _teacher(out).info.run_id == old.info.run_id and len(_runs(out)) == 3  # nothing trained again
    for run in _live(out):
        assert (job_dir(out, run.data.tags["job_hash"]) / "student.pt").is_file()


# ------------------------------------------------------------------------------------------------
# Stale parent runs
# ------------------------------------------------------------------------------------------------
def test_parent_runs_a_dead_driver_left_running_are_adopted_or_closed(tmp_path):
    out = tmp_path / "out"
    assert _run(out).exit_code == 0
    client, _ = _client(out)
    (parent,) = _runs(out, "grid")
    client.update_run(parent.info.run_id, status="RUNNING")  # its driver was killed
    assert _run(out).exit_code == 0  # the same grid: nothing to do, the stale parent is closed as finished
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"

    client.update_run(parent.info.run_id, status="RUNNING")
    assert _run(out, "--methods", "kd,dkd").exit_code == 0  # another grid on the same output
    closed = client.get_run(parent.info.run_id)
    assert closed.info.status == "KILLED" and "diffbench.closed" in closed.data.tags
    assert all(r.info.status != "RUNNING" for r in _runs(out, "grid"))


# ------------------------------------------------------------------------------------------------
# SIGTERM
# ------------------------------------------------------------------------------------------------
def test_sigterm_stops_a_ray_grid_like_ctrl_c_and_the_grid_resumes(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.cli", "run", "--output", str(out), "--dataset", "digits",
           "--pairs", "resnet8:resnet8", "--methods", "kd", "--batch-size", "16", "--max-steps", "2", "--epochs", "6",
           "--cpus-per-job", "1"]  # fmt: skip
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until the teacher job has trained an epoch (its own log says)
        if any("epoch 1/" in p.read_text() for p in out.glob("jobs/*/train.log")):
            break
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "interrupted" in text, text
    runs = _runs(out)
    assert runs and all(r.info.status != "RUNNING" for r in runs + _runs(out, "grid"))
    assert any(r.info.status == "KILLED" for r in runs)
    assert not (out / ".diffbench.lock").exists()
    result = runner.invoke(app, ["run", "--output", str(out), "--epochs", "6", *GRID])
    assert result.exit_code == 0, result.output
    _assert_one_live_run_per_job(out)
    assert _steps(out, _teacher(out)) == list(range(1, 7))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_stops_the_whole_ui_process_group(tmp_path):
    out = tmp_path / "out"
    assert _run(out, epochs=1).exit_code == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "ui", "--output", str(out), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        _check_ui_stops(proc, port)
    finally:  # whatever failed above, leave no server behind
        subprocess.run(["pkill", "-f", "--", f"--port {port}"], capture_output=True)


def _check_ui_stops(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the MLflow UI never listened: " + proc.communicate()[0])
    children = subprocess.run(["pgrep", "-f", "--", f"--port {port}"], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2  # diffbench ui and the server it started
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", "--", f"--port {port}"], capture_output=True, text=True).stdout.split()
    assert left == [], left
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# ------------------------------------------------------------------------------------------------
# Full disk, read-only output
# ------------------------------------------------------------------------------------------------
def test_a_store_that_stops_taking_writes_ends_the_grid_in_one_line_and_a_rerun_resumes(tmp_path, monkeypatch):
    import sqlite3

    from bench.tracking.tracker import Tracker

    out = tmp_path / "out"
    original = Tracker.log_epoch
    calls = {"n": 0}

    def full(self, run_id, epoch, metrics):
        calls["n"] += 1
        if calls["n"] == 3:  # the store fills up in the middle of the grid
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, run_id, epoch, metrics)

    monkeypatch.setattr(Tracker, "log_epoch", full)
    _one_line(_run(out), 3, "cannot write", "database or disk is full", "run the same command again")
    assert not (out / ".diffbench.lock").exists()
    assert all(r.info.status != "RUNNING" for r in _runs(out) + _runs(out, "grid"))
    monkeypatch.setattr(Tracker, "log_epoch", original)
    assert _run(out).exit_code == 0
    _assert_one_live_run_per_job(out)
    for run in _live(out):
        assert _steps(out, run) == [1, 2]


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return ok.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_real_full_disk_ends_the_grid_in_one_line_and_a_rerun_after_freeing_space_resumes(tmp_path):
    mnt = tmp_path / "disk"
    if not _tmpfs(mnt, "48m"):
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN); the simulated test above covers the path")
    try:
        out = mnt / "out"
        assert _run(out, "--methods", "", epochs=1).exit_code == 0  # the store exists, then the disk fills up
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * max(0, free - 150_000))
        result = _run(out, epochs=2)
        assert result.exit_code in (1, 3), result.output
        assert "Traceback" not in result.output
        flat = " ".join(result.output.split())
        assert "No space left on device" in flat or "disk is full" in flat, result.output
        filler.unlink()
        result = _run(out, epochs=2)
        assert result.exit_code == 0, result.output
        _assert_one_live_run_per_job(out)
    finally:
        _umount(mnt)


def test_a_read_only_output_is_refused_before_anything_starts(tmp_path, monkeypatch):
    mnt = tmp_path / "ro"
    if _tmpfs(mnt, "1m"):
        try:
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            _one_line(_run(mnt / "out"), 2, "not writable", "Read-only file system")
        finally:
            _umount(mnt)
    # Also where mounting is not allowed: the probe write fails as on a read-only disk.
    import errno

    import bench.execute.lock

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(bench.execute.lock, "_probe", refuse)
    _one_line(_run(tmp_path / "out"), 2, "not writable", "Read-only file system")
    assert not (tmp_path / "out" / "mlflow.db").exists()


# ------------------------------------------------------------------------------------------------
# Unschedulable requests, Ray token authentication
# ------------------------------------------------------------------------------------------------
def test_jobs_waiting_for_resources_are_reported_with_what_is_missing(monkeypatch):
    import ray

    from bench.execute.ray_callback import PendingWatch

    class Trial:
        def __init__(self, status):
            self.status = status

    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 0.0})
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    watch = PendingWatch({"cpu": 2, "gpu": 1}, after_s=0.0)
    assert watch.check([Trial("RUNNING"), Trial("PENDING")]) == ""  # queued behind a running job: normal
    line = watch.check([Trial("PENDING"), Trial("PENDING")])
    assert "2 job(s) waiting" in line and "1 GPU" in line and "GPU 0 of 0 free" in line and "CPU 0 of 16" in line


def test_a_cluster_that_wants_a_token_says_what_to_set(monkeypatch):
    import ray

    from bench.execute.ray_tune import init_ray
    from methods.base import UserError

    def refused(**_kw):
        os.write(2, b"gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated: RPC error: "
                    b"InvalidAuthToken: Authentication token is missing or incorrect\n" * 20)  # fmt: skip
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(UserError, match="requires token authentication.*RAY_AUTH_TOKEN"):
        init_ray("auto")


# ------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing started
# ------------------------------------------------------------------------------------------------
def _write_cifar_garbage(root: Path) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (d / name).write_bytes(b"\x80\x04not a pickle")
    return root


def _write_bad_coco(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    (root / "val2017").mkdir()
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}2017.json").write_text('{"images": [')
    return root


def _coco_with(root: Path, bbox, image: bool = True) -> Path:
    """A one-image COCO folder whose only box is ``bbox`` (and whose image file may be missing)."""
    from PIL import Image

    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir()
        if image:
            Image.new("RGB", (64, 48)).save(root / f"{split}2017" / "1.jpg")
        doc = {"images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
               "categories": [{"id": 1, "name": "thing"}],
               "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}]}  # fmt: skip
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))
    return root


#: COCO detectors are fine-tuning setups: a grid names their start (random here; the data is what is under test).
RANDOM_START = ["--student-checkpoint", "fasterrcnn_r18=random", "--student-checkpoint", "fasterrcnn_mbv3s=random"]
DET = ["--task", "detection", "--dataset", "coco", "--pairs", "fasterrcnn_r18:fasterrcnn_mbv3s", "--batch-size", "1",
       *RANDOM_START]  # fmt: skip


def _teacher_file(tmp_path: Path, arch: str, garbage: bool = False) -> Path:
    import torch

    from tasks.classification.models import zoo

    path = tmp_path / f"{arch}.pth"
    if garbage:
        path.write_bytes(os.urandom(2048))
    else:
        torch.save({"model": zoo.build(arch, 10).state_dict()}, path)
    return path


BAD_INPUTS = [
    (lambda t: ["--dataset", "cifar100", "--data-dir", str(t / "nope")], "does not exist"),
    (lambda t: ["--dataset", "cifar100", "--data-dir", str(_write_cifar_garbage(t / "c"))], "not a readable pickle"),
    (lambda t: ["--task", "detection", "--dataset", "coco", "--data-dir", str(_write_bad_coco(t / "coco")),
                "--pairs", "fasterrcnn_r18:fasterrcnn_mbv3s", *RANDOM_START], "instances_train2017.json"),  # fmt: skip
    (lambda t: [*DET, "--data-dir", str(_coco_with(t / "c3", [1, 2, 3]))], "annotation id 7 has bbox [1, 2, 3]"),
    (lambda t: [*DET, "--data-dir", str(_coco_with(t / "cs", "1 2 3 4"))], "annotation id 7 has bbox '1 2 3 4'"),
    (lambda t: [*DET, "--data-dir", str(_coco_with(t / "ci", [1, 2, 9, 9], image=False))], "are missing from"),
    (lambda t: ["--teacher-checkpoint", f"resnet8={_teacher_file(t, 'resnet20')}"], "does not fit"),
    (lambda t: ["--teacher-checkpoint", f"resnet8={_teacher_file(t, 'resnet8', garbage=True)}"], "cannot be read"),
    (lambda t: ["--batch-size", "5000"], "fewer than one batch of 5000"),
    (lambda t: ["--lr", "nan"], "lr must be a finite number"),
    (lambda t: ["--lr", "inf"], "lr must be a finite number"),
    (lambda t: ["--device", "tpu"], "unknown device 'tpu'"),
    (lambda t: ["--set", "kd.temperature=abc"], "temperature must be a number"),
    (lambda t: ["--set", "kd.temperature=-2"], "temperature must be > 0"),
    (lambda t: ["--set", "kd.kd_weight=.nan"], "kd_weight must be a finite number"),
    (lambda t: ["--max-concurrent", "-1"], "--max-concurrent must be at least 1"),
    (lambda t: ["--gpus-per-job", "-1"], "--gpus-per-job must be >= 0"),
    (lambda t: ["--gpus-per-job", "1.5"], "a fraction must be below 1"),
    (lambda t: ["--gpus-per-job", "1"], "no Ray node has that many GPUs"),
    (lambda t: ["--cpus-per-job", "-1"], "--cpus-per-job must be > 0"),
    (lambda t: ["--max-failures", "-1"], "--max-failures"),
    (lambda t: ["--tracking-uri", "foo://bar"], "unsupported scheme 'foo'"),
    (lambda t: ["--config", str(_binary(t / "x.yaml"))], "not a text file"),
    (lambda t: ["--output", str(_file(t / "a_file"))], "is a file, not a folder"),
    (lambda t: ["--executor", "slurm"], "unknown executor"),
    (lambda t: ["--seeds", "0"], "--seeds must be at least 1"),
]


def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _file(path: Path) -> Path:
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(("make_args", "needle"), BAD_INPUTS, ids=[n for _, n in BAD_INPUTS])
def test_bad_input_is_refused_up_front(tmp_path, make_args, needle):
    out = tmp_path / "out"
    args = make_args(tmp_path)
    if "--output" not in args:
        args += ["--output", str(out)]
    base = ["--pairs", "resnet8:resnet8", "--methods", "kd", "--epochs", "1", "--max-steps", "1"]
    if "--pairs" in args:
        base = base[2:]
    result = runner.invoke(app, ["run", *base, *args])
    _one_line(result, 2, needle)
    assert not (out / "jobs").exists() and not (out / "mlflow.db").exists()
