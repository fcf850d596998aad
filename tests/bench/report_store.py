"""Synthetic MLflow stores for the report tests: job runs logged the way ``bench.tracking.tracker`` logs them.

Tags (grid axes, ``job_hash``, ``git_commit``, ``recipe_preset``, ``diffbench_version``), params
(``hp.*``, ``recipe.*``), summary metrics (``best_<metric>``, ``last_<metric>``) and a short per-epoch
history, written with ``MlflowClient`` into a temporary SQLite store.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

T0 = 1_700_000_000_000  # ms: 2023-11-14 22:13:20 UTC


def new_store(folder: Path, experiment: str = "diffbench") -> tuple[Any, str, str]:
    """A fresh SQLite store ``folder/mlflow.db`` (artifacts beside it): ``(client, uri, experiment_id)``."""
    from mlflow import MlflowClient

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(experiment, artifact_location=(folder / "mlartifacts").resolve().as_uri())
    return client, uri, exp


def grid_run(client: Any, exp_id: str, name: str = "grid", jobs: list[str] | None = None, start: int = 0) -> str:
    """A grid's parent run; ``jobs`` (job hashes) are written as its ``grid_jobs.json`` artifact."""
    run = client.create_run(exp_id, run_name=name, start_time=T0 + start, tags={"diffbench.kind": "grid"})
    if jobs is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "grid_jobs.json"
            path.write_text(json.dumps(jobs))
            client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + start + 1)
    return run.info.run_id


def log_job(client, exp_id, parent, *, student, method, seed, best=None, last=None, teacher="", role="student",
            task="classification", dataset="cifar100", metric="top1", job_hash=None, status="FINISHED", end=0,
            extra_metrics=None, params=None, reason=None, tags=None) -> str:  # fmt: skip
    """One job run; returns its run id. ``end`` is the end time in ms after :data:`T0`."""
    from mlflow.entities import Metric, Param

    all_tags = {
        "diffbench.kind": "job",
        "task": task,
        "dataset": dataset,
        "teacher": teacher,
        "student": student,
        "method": method,
        "seed": str(seed),
        "role": role,
        "job_hash": job_hash or f"{task}-{teacher}-{student}-{method}-{seed}",
        "git_commit": "abc123",
        "torch_version": "2.15.0",
        "device": "cpu",
    }
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    if reason:
        all_tags["failure_reason"] = reason
    all_tags.update(tags or {})
    run = client.create_run(exp_id, start_time=T0 + end - 500, tags=all_tags)
    values = dict(extra_metrics or {})
    if best is not None:
        values[f"best_{metric}"] = best
    if last is not None:
        values[f"last_{metric}"] = last
        values["best_epoch"] = 2
    metrics = [Metric(k, float(v), T0, 0) for k, v in values.items()]
    if last is not None:  # a short per-epoch history, as the training loop logs it
        metrics += [Metric(f"val/{metric}", last - 1.0 + 0.5 * e, T0 + e, e) for e in range(3)]
    plist = [Param(k, str(v)) for k, v in (params or {}).items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=plist)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status, end_time=T0 + end)
    return run.info.run_id
