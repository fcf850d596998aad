"""Executors: run a grid's jobs on Ray Tune (default) or one by one in-process (``--executor local``).

Both run the same job function (:func:`bench.train.run_job`) and share :class:`GridRun`, the driver's
book-keeping: which jobs are already finished (skipped), which MLflow run a job logs into (its old
one when it is resumed), the live progress view, and the one MLflow writer.

Order: teacher jobs first; a student whose teacher job failed is recorded as failed without running.
Failures: an exception in a job (a crash) is retried up to ``max_failures`` times, each retry resuming
from the job's last checkpoint; a deterministic failure (:class:`~bench.train.JobFailed`, e.g. a NaN
loss, or a :class:`~methods.base.UserError` such as missing data) is recorded at once, without retries.
Either way the rest of the grid goes on.

On Ray the workers never talk to MLflow: each epoch they ``tune.report`` metrics (plus a small
checkpoint pointer, so Ray's ``FailureConfig`` restores the trial), Tune streams the results to the
driver, and a Tune callback in the driver logs them. One writer, however many jobs run at once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bench.spec import JobSpec, job_dir
from bench.tracking import Tracker
from methods.base import UserError

_EPOCH_PREFIXES = ("train/", "val/")
_EPOCH_KEYS = {"lr", "epoch_time_s"}


@dataclass
class JobState:
    spec: JobSpec
    status: str = "queued"  # queued | running | finished | failed | skipped
    epoch: int = 0
    metric: float | None = None
    run_id: str | None = None
    reason: str = ""
    attempts: int = 0
    #: epochs the job's MLflow run already holds (a retry on another node re-reports them: log each once).
    logged: set[int] = field(default_factory=set)


@dataclass
class GridRun:
    """Driver-side state of one ``diffbench run``: tracking, skipping, progress."""

    jobs: list[JobSpec]
    output: Path
    tracker: Tracker
    device: str
    console: Console = field(default_factory=Console)
    parent_id: str | None = None
    states: dict[str, JobState] = field(default_factory=dict)
    primary: dict[str, str] = field(default_factory=dict)
    to_recover: list[JobState] = field(default_factory=list)

    def __post_init__(self) -> None:
        from tasks.base import get_task

        self.output = Path(self.output).resolve()
        self.states = {j.job_hash: JobState(j) for j in self.jobs}
        self.primary = {j.task: get_task(j.task).primary_metric for j in self.jobs}
        self._existing = self.tracker.job_runs([j.job_hash for j in self.jobs])

    # -- planning ----------------------------------------------------------------------------
    def plan(self) -> list[JobSpec]:
        """Mark finished jobs as skipped; return the jobs to run.

        Jobs finished on disk whose MLflow run is missing or unfinished (the driver died before it
        logged the end) are set aside in :attr:`to_recover`: :meth:`recover` logs them without training.
        """
        todo = []
        self.to_recover = []
        for h, st in self.states.items():
            run = self._existing.get(h)
            wd = job_dir(self.output, h)
            on_disk = (wd / "result.json").is_file() and (wd / "student.pt").is_file()
            if run is not None and run.info.status == "FINISHED" and (on_disk or st.spec.role != "teacher"):
                st.status, st.run_id = "skipped", run.info.run_id
            elif on_disk:
                self.to_recover.append(st)
            else:
                todo.append(st.spec)
        return todo

    def recover(self) -> None:
        """Log the jobs :meth:`plan` found finished on disk only (epochs the run lacks, summary, artifacts)."""
        for st in self.to_recover:
            wd = job_dir(self.output, st.spec.job_hash)
            result = json.loads((wd / "result.json").read_text())
            run = self._existing.get(st.spec.job_hash)
            st.run_id = self.tracker.start_job(
                st.spec,
                self.parent_id,
                self.device,
                existing=run if run is not None and run.info.status != "FINISHED" else None,
            )
            self._fill_missing_epochs(st)
            self.tracker.finish_job(st.run_id, result["metrics"], wd)
            st.status = "skipped"

    # -- events ------------------------------------------------------------------------------
    def on_start(self, spec: JobSpec) -> None:
        st = self.states[spec.job_hash]
        st.attempts += 1
        if st.run_id is None:
            existing = self._existing.get(spec.job_hash)
            st.run_id = self.tracker.start_job(spec, self.parent_id, self.device, existing)
            if existing is not None and existing.info.run_id == st.run_id:
                st.logged = self.tracker.logged_epochs(st.run_id)
        st.status = "running"

    def on_epoch(self, spec: JobSpec, epoch: int, metrics: dict[str, Any]) -> None:
        st = self.states[spec.job_hash]
        if st.run_id is None:
            self.on_start(spec)
        st.epoch = epoch
        key = f"val/{self.primary[spec.task]}"
        if key in metrics:
            st.metric = float(metrics[key])
        if epoch not in st.logged:
            self.tracker.log_epoch(st.run_id, epoch, _epoch_metrics(metrics))
            st.logged.add(epoch)

    def on_finish(self, spec: JobSpec, summary: dict[str, float]) -> None:
        st = self.states[spec.job_hash]
        if st.run_id is None:
            self.on_start(spec)
        self._fill_missing_epochs(st)
        self.tracker.finish_job(st.run_id, summary, job_dir(self.output, spec.job_hash))
        st.status = "finished"

    def _fill_missing_epochs(self, st: JobState) -> None:
        """Log epochs the run lacks from the job's own history (``result.json``).

        An epoch is checkpointed before it is reported, so if the driver died between the two, the
        resumed job starts after it and the run would never get it: the finished job's history fills the gap.
        """
        path = job_dir(self.output, st.spec.job_hash) / "result.json"
        if not path.is_file():
            return
        st.logged = self.tracker.logged_epochs(st.run_id)
        for row in json.loads(path.read_text())["history"]:
            if int(row["epoch"]) not in st.logged:
                self.tracker.log_epoch(st.run_id, int(row["epoch"]), _epoch_metrics(row))
                st.logged.add(int(row["epoch"]))

    def on_fail(self, spec: JobSpec, reason: str) -> None:
        st = self.states[spec.job_hash]
        if st.run_id is None:
            self.on_start(spec)
        st.status, st.reason = "failed", reason
        self.tracker.fail_job(st.run_id, reason, job_dir(self.output, spec.job_hash))

    def teacher_failed(self, spec: JobSpec) -> str | None:
        """The reason a student cannot run because its teacher job failed, else None."""
        if spec.teacher_ref and spec.teacher_ref.startswith("job:"):
            t = self.states.get(spec.teacher_ref[4:])
            if t is not None and t.status == "failed":
                return f"teacher job {t.spec.label} ({t.spec.job_hash}) failed: {t.reason}"
        return None

    # -- view --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("finished", "skipped", "running", "failed", "queued")}
        for st in self.states.values():
            out[st.status] += 1
        return out

    def view(self) -> Group:
        c = self.counts()
        head = (
            f"[bold]{len(self.states)} jobs[/]: [green]{c['finished']} done[/], {c['skipped']} already done, "
            f"[cyan]{c['running']} running[/], [red]{c['failed']} failed[/], {c['queued']} queued"
        )
        table = Table(box=None, pad_edge=False, show_header=True)
        for col in ("job", "hash", "status", "epoch", "metric"):
            table.add_column(col)
        shown = [s for s in self.states.values() if s.status in ("running", "failed")]
        for st in shown[:20]:
            total = st.spec.recipe.get("epochs", "?")
            metric = f"{self.primary[st.spec.task]} {st.metric:.2f}" if st.metric is not None else ""
            status = "[red]failed[/]" if st.status == "failed" else "[cyan]running[/]"
            table.add_row(st.spec.label, st.spec.job_hash, status, f"{st.epoch}/{total}", metric or st.reason[:60])
        return Group(head, table) if shown else Group(head)


def _epoch_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if (k.startswith(_EPOCH_PREFIXES) or k in _EPOCH_KEYS) and isinstance(v, int | float)
    }


def _stages(jobs: list[JobSpec]) -> list[list[JobSpec]]:
    teachers = [j for j in jobs if j.role == "teacher"]
    students = [j for j in jobs if j.role != "teacher"]
    return [s for s in (teachers, students) if s]


# ------------------------------------------------------------------------------------------------
# Local executor
# ------------------------------------------------------------------------------------------------
def run_local(grid: GridRun, jobs: list[JobSpec], max_failures: int = 1, live: Live | None = None) -> None:
    """Run ``jobs`` one by one in this process (teachers first), with the same retry semantics as Ray."""
    from bench.train import JobFailed, run_job

    for stage in _stages(jobs):
        for spec in stage:
            reason = grid.teacher_failed(spec)
            if reason:
                grid.on_fail(spec, reason)
                continue
            grid.on_start(spec)
            for attempt in range(max_failures + 1):
                try:
                    result = run_job(
                        spec,
                        grid.output,
                        device=grid.device,
                        log=lambda _m: None,
                        reporter=lambda e, m, _p, s=spec: grid.on_epoch(s, e, m),
                    )
                    grid.on_finish(spec, result.metrics)
                    break
                except (JobFailed, UserError) as err:
                    grid.on_fail(spec, f"{type(err).__name__}: {err}")
                    break
                except Exception as err:  # noqa: BLE001 - a crash: retry from the checkpoint, then give up
                    if attempt == max_failures:
                        grid.on_fail(spec, f"crashed {attempt + 1}x; last: {type(err).__name__}: {err}")
                    else:
                        grid.console.print(f"[yellow]{spec.label} crashed ({err}); retrying from its checkpoint[/]")
            if live is not None:
                live.update(grid.view())


# ------------------------------------------------------------------------------------------------
# Ray executor
# ------------------------------------------------------------------------------------------------
def _ray_trainable(config: dict[str, Any]) -> None:
    """One job inside a Ray Tune trial. Reports each epoch; never touches MLflow."""
    import tempfile

    import torch
    from ray import tune

    from bench.train import JobFailed, run_job

    spec = JobSpec.from_dict(config["job"])
    torch.set_num_threads(max(1, int(config["cpus"])))
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            pointer = json.loads((Path(d) / "pointer.json").read_text())
        print(f"[{spec.label}] Ray restored the trial at epoch {pointer['epoch']}; resuming from the job checkpoint")

    def reporter(epoch: int, metrics: dict[str, float], _path: Path) -> None:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "pointer.json").write_text(json.dumps({"job_hash": spec.job_hash, "epoch": epoch}))
            tune.report({**metrics, "epoch": epoch, "event": "epoch"}, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        result = run_job(
            spec,
            config["output"],
            device=config["device"],
            reporter=reporter,
            log=print,
        )
    except (JobFailed, UserError) as err:
        tune.report({"event": "failed", "failure_reason": f"{type(err).__name__}: {err}"})
        return
    tune.report({"event": "finished", "summary": json.dumps(result.metrics)})


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a dead ``HOST:PORT`` (``ray.init`` waits minutes for the GCS to answer)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"Ray address {address!r}: expected auto or HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise UserError(f"cannot reach Ray at {address!r}: {err.strerror or err}") from None


def check_resources(cpus_per_job: float | None, gpus_per_job: float) -> None:
    """Refuse a per-job request no live Ray node can meet (Tune would wait for it forever, silently)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
    most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
    if gpus_per_job > most_gpus:
        raise UserError(f"--gpus-per-job {gpus_per_job:g}: no Ray node has that many GPUs (the most: {most_gpus:g})")
    if cpus_per_job is not None and cpus_per_job > most_cpus:
        raise UserError(f"--cpus-per-job {cpus_per_job:g}: no Ray node has that many CPUs (the most: {most_cpus:g})")


def _node_cpus() -> int:
    import ray

    return int(max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=1))


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Start a local Ray instance or join ``address`` (``auto`` or ``HOST:PORT``); clear error if unreachable."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C must reach the driver (Tune's own handler would end the stage "normally" and start the next).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # with verbose=0: no Tune tables over our live view
    import logging

    import ray

    if address and address != "auto":
        _check_reachable(address)
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot reach Ray at {address or 'a new local instance'!r}: {first[:300]}") from None


def run_ray(
    grid: GridRun,
    jobs: list[JobSpec],
    cpus_per_job: float | None = None,
    gpus_per_job: float = 0,
    max_concurrent: int | None = None,
    max_failures: int = 1,
    address: str | None = None,
    live: Live | None = None,
) -> None:
    """Run ``jobs`` as Ray Tune trials, teachers first; see the module docstring."""
    init_ray(address)
    import logging

    from ray import tune

    # Trial errors are recorded in MLflow with their reason; Tune's own logging would draw over the live view.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    logging.getLogger("ray.train").setLevel(logging.CRITICAL)

    from bench.ray_callback import DriverCallback

    def refresh() -> None:
        if live is not None:
            live.update(grid.view())

    import ray

    device = "cuda" if gpus_per_job > 0 else "cpu"
    cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
    node_cpus = _node_cpus()
    for i, stage in enumerate(_stages(jobs)):
        runnable = []
        for spec in stage:
            reason = grid.teacher_failed(spec)
            if reason:
                grid.on_fail(spec, reason)
            else:
                runnable.append(spec)
        refresh()
        if not runnable:
            continue
        # Unless the user fixed it, the jobs running at once share the cluster's CPUs: a lone teacher job gets
        # a whole node (torch threads follow), a wide student stage one CPU each.
        at_once = min(len(runnable), max_concurrent or len(runnable))
        cpus = cpus_per_job or max(1, min(node_cpus, cluster_cpus // at_once))
        trainable = tune.with_resources(_ray_trainable, {"cpu": cpus, "gpu": gpus_per_job})
        tuner = tune.Tuner(
            trainable,
            param_space={
                "job": tune.grid_search([s.to_dict() for s in runnable]),
                "output": str(grid.output),
                "device": device,
                "cpus": cpus,
            },
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or 0, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"grid-{time.strftime('%Y%m%d-%H%M%S')}-stage{i}",
                storage_path=str(grid.output / "ray_results"),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[DriverCallback(grid, refresh)],
                verbose=0,
            ),
        )
        tuner.fit()
        # A trial that ended without a final event (e.g. killed) counts as failed.
        for spec in runnable:
            if grid.states[spec.job_hash].status in ("queued", "running"):
                grid.on_fail(spec, "ended without reporting a result")
        refresh()
