"""Data-parallel jobs on Ray Train inside a grid: a worker killed with ``kill -9`` mid-epoch makes the
job resume from its checkpoint with every epoch logged once, and the two-worker grid reaches the report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from bench.jobs.spec import job_dir

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3


def _worker_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ray::RayTrainWorker"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_worker_resumes_its_job_and_the_two_worker_grid_reaches_the_report(tmp_path):
    from tasks.classification.models import zoo

    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    torch.save({"model": zoo.build("resnet8", 10).state_dict()}, teacher)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.cli", "run", "--output", str(out), "--dataset", "digits",
           "--pairs", "resnet8:resnet8", "--methods", "kd", "--teacher-checkpoint", f"resnet8={teacher}",
           "--workers-per-job", "2",
           "--batch-size", "16", "--max-steps", "40", "--epochs", str(EPOCHS)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and killed is None and proc.poll() is None:
        logs = {p.parent.name: p.read_text() for p in out.glob("jobs/*/train.log")}
        busy = [h for h, text in logs.items() if "epoch 1/" in text and f"epoch {EPOCHS}/" not in text]
        pids = _worker_pids()
        if busy and len(pids) == 2:
            subprocess.run(["kill", f"-{signal.SIGKILL}", str(pids[-1])], check=True)  # one worker, mid-epoch
            killed = busy[0]
        time.sleep(0.3)
    text = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, text
    assert killed is not None, "no worker was caught mid-training"
    assert "Traceback" not in text
    log = (job_dir(out, killed) / "train.log").read_text()
    assert "resumed from epoch" in log, log  # the restarted workers continued from the checkpoint

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench").experiment_id
    runs = client.search_runs([exp], "tags.`diffbench.kind` = 'job'")
    assert sorted(r.data.tags["method"] for r in runs) == ["kd", "vanilla"]  # one run each, no duplicate
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
        assert steps == list(range(1, EPOCHS + 1)), (run.info.run_name, steps)  # every epoch once

    report = subprocess.run([sys.executable, "-m", "bench.cli", "report", "--output", str(out), "--format", "json"],
                            cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert report.returncode == 0, report.stderr
    cells = json.loads(report.stdout)
    methods = {row.get("method") for row in cells.get("records", cells if isinstance(cells, list) else [])}
    assert {"vanilla", "kd"} <= methods, report.stdout[:2000]
