"""MLflow tracking: one parent run per ``diffbench run``, one child run per job, keyed by job hash.

There is exactly **one writer**: the driver process. Ray workers never touch MLflow; their per-epoch
results reach the driver through Ray Tune's result stream and a Tune callback logs them (see
``bench.executors``). So many concurrent jobs cannot lock the SQLite store or interleave writes, and a
remote tracking server sees one client.

Default store: ``sqlite:///<output>/mlflow.db`` with artifacts in ``<output>/mlartifacts`` (absolute
paths: Ray runs trials in their own working directory).

Run schema (what ``diffbench report`` reads):

* tags: ``diffbench.kind`` (``grid`` | ``job``), ``task``, ``dataset``, ``teacher`` (empty for vanilla
  and teacher jobs), ``student``, ``method``, ``seed``, ``role`` (``student`` | ``teacher``),
  ``job_hash``, ``git_commit``, ``torch_version``, ``torchvision_version``, ``device``,
  ``failure_reason`` on failed jobs;
* params: ``hp.<name>`` (method hyper-parameters), ``recipe.<name>``;
* metrics per epoch (step = epoch): ``train/loss``, ``train/<term>``, ``lr``, ``val/<metric>``;
  summary: ``best_<metric>``, ``last_<metric>``, ``best_epoch``, ``train_time_s``, ``images_per_s``,
  ``peak_mem_mb``, ``teacher_<metric>``;
* artifacts: ``config.json`` (the resolved job), ``student.pt`` (student weights only), ``train.log``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.spec import JobSpec
from methods.base import UserError

EXPERIMENT = "diffbench"
#: MLflow's HTTP client retries for minutes by default; an unreachable server should fail fast.
_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def fail_fast_http() -> None:
    """Make MLflow's HTTP client give up at once on a dead server (it retries for minutes by default)."""
    for k, v in _HTTP_ENV.items():
        os.environ.setdefault(k, v)


def check_server(uri: str) -> None:
    """For an ``http(s)://`` tracking URI, one request to the server; ``UserError`` if it does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"MLflow tracking server {uri!r} is not reachable: {reason}") from None


def default_tracking_uri(output: Path) -> str:
    return f"sqlite:///{Path(output).resolve() / 'mlflow.db'}"


def git_commit() -> str:
    """The project's git commit (``unknown`` outside a checkout)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


class Tracker:
    """The single MLflow writer of a grid. Uses ``MlflowClient`` with explicit run ids (no global state).

    Args:
        output: the grid's output folder (default store and artifact root live there).
        tracking_uri: a remote server (``http://host:5000``) or any MLflow URI; default: the SQLite file.
        experiment: experiment name.
    """

    def __init__(self, output: Path, tracking_uri: str | None = None, experiment: str = EXPERIMENT) -> None:
        fail_fast_http()
        check_server(tracking_uri or "")
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # schema-migration chatter on a new store
            logging.getLogger(name).setLevel(logging.WARNING)

        self.output = Path(output).resolve()
        self.output.mkdir(parents=True, exist_ok=True)
        self.uri = tracking_uri or default_tracking_uri(self.output)
        self.client = MlflowClient(tracking_uri=self.uri)
        self._mlflow = mlflow
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                artifacts = None if tracking_uri else (self.output / "mlartifacts").as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            else:
                self.experiment_id = exp.experiment_id
        except Exception as err:  # noqa: BLE001 - connection errors come in many types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"MLflow tracking store {self.uri!r} is not reachable: {first[:300]}") from None

    # -- grid --------------------------------------------------------------------------------
    def start_grid(self, name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={"diffbench.kind": "grid", "git_commit": git_commit(), **tags}
        )
        return run.info.run_id

    def end_grid(self, run_id: str, failed: int, finished: int) -> None:
        self.client.log_metric(run_id, "jobs_failed", failed)
        self.client.log_metric(run_id, "jobs_finished", finished)
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    # -- jobs --------------------------------------------------------------------------------
    def job_runs(self, hashes: list[str] | None = None) -> dict[str, Any]:
        """Latest run per job hash (all statuses), optionally only for ``hashes``."""
        # MLflow's filter language has no IN for tags: page through the experiment's job runs instead.
        wanted = set(hashes) if hashes is not None else None
        found: dict[str, Any] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string="tags.`diffbench.kind` = 'job'",
                max_results=1000,
                page_token=token,
                order_by=["attributes.start_time ASC"],
            )
            for run in page:
                h = run.data.tags.get("job_hash")
                if h and (wanted is None or h in wanted):
                    found[h] = run
            token = page.token
            if not token:
                break
        return found

    def start_job(self, spec: JobSpec, parent_id: str | None, device: str, existing: Any | None = None) -> str:
        """The job's run: the unfinished one it had (resume) or a new child of ``parent_id``."""
        if existing is not None and existing.info.status != "FINISHED":
            self.client.update_run(existing.info.run_id, status="RUNNING")
            if "failure_reason" in existing.data.tags:  # an earlier attempt's reason no longer applies
                self.client.delete_tag(existing.info.run_id, "failure_reason")
            return existing.info.run_id
        import torch
        import torchvision

        tags = {
            "diffbench.kind": "job",
            "task": spec.task,
            "dataset": spec.dataset,
            "teacher": spec.teacher or "",
            "student": spec.student,
            "method": spec.method,
            "seed": str(spec.seed),
            "role": spec.role,
            "job_hash": spec.job_hash,
            "git_commit": git_commit(),
            "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__,
            "device": device,
        }
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=spec.label, tags=tags)
        params = {f"hp.{k}": v for k, v in spec.hparams}
        params.update({f"recipe.{k}": v for k, v in spec.recipe.items() if k != "extra"})
        params.update({f"recipe.extra.{k}": v for k, v in (spec.recipe.get("extra") or {}).items()})
        if spec.teacher_ref:
            params["teacher_ref"] = spec.teacher_ref
        from mlflow.entities import Param

        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(plist, 100):
            self.client.log_batch(run.info.run_id, params=chunk)
        return run.info.run_id

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(epoch)) for k, v in metrics.items() if k != "epoch"]
        for chunk in _chunks(items, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def logged_epochs(self, run_id: str, key: str = "train/loss") -> set[int]:
        """Epochs (steps) of ``key`` the run already holds."""
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def finish_job(self, run_id: str, summary: dict[str, float], workdir: Path) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()])
        for name in ("config.json", "student.pt", "train.log"):
            path = Path(workdir) / name
            if path.is_file():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, "FINISHED")

    def kill(self, run_id: str) -> None:
        """Mark a run interrupted by the user (``KILLED``); a re-run resumes the job into it."""
        self.client.set_terminated(run_id, "KILLED")

    def fail_job(self, run_id: str, reason: str, workdir: Path | None = None) -> None:
        self.client.set_tag(run_id, "failure_reason", reason[:4000])
        if workdir is not None and (Path(workdir) / "train.log").is_file():
            self.client.log_artifact(run_id, str(Path(workdir) / "train.log"))
        self.client.set_terminated(run_id, "FAILED")
