"""Executors: run a grid's jobs on Ray Tune (default) or one by one in-process (``--executor local``).

Both run the same job function (:func:`bench.engine.loop.run_job`) and share :class:`GridRun`, the driver's
book-keeping: which jobs are already finished (skipped), which MLflow run a job logs into (its old
one when it is resumed), the live progress view, and the one MLflow writer.

Order: teacher jobs first; a student whose teacher job failed is recorded as failed without running.
Failures: an exception in a job (a crash) is retried up to ``max_failures`` times, each retry resuming
from the job's last checkpoint; a deterministic failure (:class:`~bench.engine.loop.JobFailed`, e.g. a NaN
loss, or a :class:`~methods.base.UserError` such as missing data) is recorded at once, without retries.
Either way the rest of the grid goes on.

On Ray the workers never talk to MLflow: each epoch they ``tune.report`` metrics (plus a small
checkpoint pointer, so Ray's ``FailureConfig`` restores the trial), Tune streams the results to the
driver, and a Tune callback in the driver logs them. One writer, however many jobs run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.live import Live

from bench.execute.state import GridRun
from bench.execute.lock import is_write_error
from bench.jobs.spec import JobSpec
from methods.base import UserError


def _stages(jobs: list[JobSpec]) -> list[list[JobSpec]]:
    teachers = [j for j in jobs if j.role == "teacher"]
    students = [j for j in jobs if j.role != "teacher"]
    return [s for s in (teachers, students) if s]


# ------------------------------------------------------------------------------------------------
# Local executor
# ------------------------------------------------------------------------------------------------
def run_local(grid: GridRun, jobs: list[JobSpec], max_failures: int = 1, live: Live | None = None) -> None:
    """Run ``jobs`` one by one in this process (teachers first), with the same retry semantics as Ray."""
    from bench.engine.loop import JobFailed, run_job

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
                        on_begin=lambda done, s=spec: grid.on_begin(s, done),
                        on_step=lambda e, i, n, loss, s=spec: grid.on_step(s, e, i, n, loss),
                        claim_token=grid.lock.token if grid.lock is not None else None,
                    )
                    grid.on_finish(spec, result.metrics)
                    break
                except (JobFailed, UserError) as err:
                    grid.on_fail(spec, f"{type(err).__name__}: {err}", storage=getattr(err, "storage", False))
                    break
                except Exception as err:  # noqa: BLE001 - a crash: retry from the checkpoint, then give up
                    if grid.fatal is not None or is_write_error(err):
                        raise  # the driver could not write (the store is full): not the job's fault
                    if attempt == max_failures:
                        grid.on_fail(spec, f"crashed {attempt + 1}x; last: {type(err).__name__}: {err}")
                    else:
                        grid.console.print(f"[yellow]{spec.label} crashed ({err}); retrying from its checkpoint[/]")
            if live is not None:
                live.refresh()


# ------------------------------------------------------------------------------------------------
# Ray executor
# ------------------------------------------------------------------------------------------------
def _ray_trainable(config: dict[str, Any]) -> None:
    """One job inside a Ray Tune trial. Reports each epoch; never touches MLflow."""
    import tempfile

    import torch
    from ray import tune

    from bench.jobs.plugins import load_plugins
    from bench.engine.loop import JobFailed, run_job

    load_plugins(config.get("imports"))  # entry points and the driver's --import modules, in this worker too
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

    def on_begin(done: int) -> None:
        tune.report({"event": "begin", "resumed_after": done})  # "done" is a reserved Tune key

    try:
        result = run_job(
            spec,
            config["output"],
            device=config["device"],
            reporter=reporter,
            log=print,
            on_begin=on_begin,
            claim_token=config.get("claim_token"),
        )
    except (JobFailed, UserError) as err:
        tune.report({"event": "failed", "failure_reason": f"{type(err).__name__}: {err}",
                     "storage": bool(getattr(err, "storage", False))})  # fmt: skip
        return
    tune.report({"event": "finished", "summary": json.dumps(result.metrics)})


def check_reachable(address: str, timeout: float = 5.0) -> None:
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


def validate_request(cpus_per_job: float | None, gpus_per_job: float, max_concurrent: int | None) -> None:
    """Refuse per-job requests no scheduler can meet, before Ray starts (one line each)."""
    import math

    if cpus_per_job is not None and (not math.isfinite(cpus_per_job) or cpus_per_job <= 0):
        raise UserError(f"--cpus-per-job must be > 0, got {cpus_per_job:g}")
    if not math.isfinite(gpus_per_job) or gpus_per_job < 0:
        raise UserError(f"--gpus-per-job must be >= 0, got {gpus_per_job:g}")
    if gpus_per_job > 1 and not float(gpus_per_job).is_integer():
        raise UserError(
            f"--gpus-per-job {gpus_per_job:g}: a fraction must be below 1 (jobs share a GPU), else whole GPUs"
        )
    if max_concurrent is not None and max_concurrent < 1:
        raise UserError(f"--max-concurrent must be at least 1, got {max_concurrent}")


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


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Capture file descriptor 2 (Ray's C++ core writes there, past ``sys.stderr``); text lands in the list."""
    sys.stderr.flush()
    saved = os.dup(2)
    out: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


_TOKEN_HELP = (
    "the Ray cluster at {address!r} requires token authentication (Ray >= 2.59 turns it on for clusters started "
    "with `ray start`): on the head node run `ray get-auth-token` and put the token in ~/.ray/auth_token on this "
    "machine, or export RAY_AUTH_TOKEN=<token> (and RAY_AUTH_MODE=token)"
)


def init_ray(address: str | None, num_cpus: int | None = None) -> str:
    """Start a local Ray instance or join ``address`` (``auto`` or ``HOST:PORT``); clear error if unreachable.

    Returns one line saying which cluster this is and what it has (printed by ``diffbench run``, so joining
    someone else's instance with ``--address auto`` is never silent). A cluster that refuses us for lack
    of an authentication token is reported as that, with what to set, instead of Ray's 20 retry lines.
    """
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C must reach the driver (Tune's own handler would end the stage "normally" and start the next).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # with verbose=0: no Tune tables over our live view
    import logging

    import ray

    if address and address != "auto":
        check_reachable(address)
    if ray.is_initialized():
        return describe_cluster(address)
    captured: list[str] = []
    try:
        with _stderr_captured() as captured:
            if address:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        text = "".join(captured) + str(err)
        if "InvalidAuthToken" in text or "Unauthenticated" in text or "auth_token" in text.lower():
            raise UserError(_TOKEN_HELP.format(address=address)) from None
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot reach Ray at {address or 'a new local instance'!r}: {first[:300]}") from None
    return describe_cluster(address)


def describe_cluster(address: str | None) -> str:
    """``joined Ray cluster 10.0.0.1:6379: 3 nodes, 48 CPUs, 8 GPUs`` (or the local instance started)."""
    import ray

    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    what = f"{nodes} node{'s' if nodes != 1 else ''}, {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"
    if not address:
        return f"Ray: started a local instance ({what})"
    try:
        where = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - informative only
        where = address
    return f"Ray: joined the cluster at {where} ({what})"


class PendingWatch:
    """Notices a stage whose jobs wait for resources while none runs (a request the free nodes cannot meet).

    ``check`` returns the line to show (empty when all is well); it says what each job asks and what the
    cluster has free, so a user who joined a busy cluster with ``--address auto`` knows why nothing starts.
    """

    def __init__(self, request: dict[str, float], after_s: float | None = None) -> None:
        self.request = request
        self.after_s = float(os.environ.get("DIFFBENCH_PENDING_WARN_S", 60)) if after_s is None else after_s
        self.since: float | None = None

    def check(self, trials: list[Any]) -> str:
        import ray

        statuses = [getattr(t, "status", "") for t in trials]
        pending = statuses.count("PENDING")
        if not pending or "RUNNING" in statuses:
            self.since = None
            return ""
        now = time.monotonic()
        self.since = self.since if self.since is not None else now
        waited = now - self.since
        if waited < self.after_s:
            return ""
        free, total = ray.available_resources(), ray.cluster_resources()
        parts = [
            f"{key} {free.get(key, 0):g} of {total.get(key, 0):g} free"
            for key in ("CPU", "GPU")
            if self.request.get(key.lower(), 0) > 0 or key == "CPU"
        ]
        asks = ", ".join(f"{v:g} {k.upper()}" for k, v in self.request.items() if v)
        return (
            f"{pending} job(s) waiting {waited:.0f}s for resources: each asks {asks}; the cluster has "
            f"{', '.join(parts)} (other work may hold them; see `ray status`)"
        )


def run_ray(
    grid: GridRun,
    jobs: list[JobSpec],
    cpus_per_job: float | None = None,
    gpus_per_job: float = 0,
    max_concurrent: int | None = None,
    max_failures: int = 1,
    live: Live | None = None,
    workers: Any | None = None,
) -> None:
    """Run ``jobs`` as Ray Tune trials, teachers first; see the module docstring.

    ``workers`` (a :class:`bench.execute.ray_train.Workers` of more than one worker): every job is a Ray Train
    data-parallel run whose Tune trial is only its driver (:func:`bench.execute.ray_train.train_driver`).
    """
    import logging

    from ray import tune

    # Trial errors are recorded in MLflow with their reason; Tune's own logging would draw over the live view.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    logging.getLogger("ray.train").setLevel(logging.CRITICAL)

    from bench.jobs.plugins import imported_modules
    from bench.execute.ray_callback import DriverCallback

    def refresh() -> None:
        if live is not None:
            live.refresh()

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
        space: dict[str, Any] = {
            "job": tune.grid_search([s.to_dict() for s in runnable]),
            "output": str(grid.output),
            "device": device,
            "cpus": cpus,
            "claim_token": grid.lock.token if grid.lock is not None else None,
            "imports": imported_modules(),
        }
        request = {"cpu": cpus, "gpu": gpus_per_job}
        concurrent = max_concurrent or 0
        if workers is not None and workers.distributed:
            from dataclasses import asdict

            from bench.execute.ray_train import driver_resources, jobs_at_once, train_driver

            trainable = tune.with_resources(train_driver, driver_resources())
            space.update(workers=asdict(workers), max_failures=max_failures)
            # Driver trials hold nothing: cap them at the jobs whose workers fit, or the rest would only wait.
            concurrent = min(max_concurrent or 10**6, jobs_at_once(workers))
            request = {"cpu": workers.cpus * workers.count, "gpu": workers.gpus * workers.count}
        else:
            trainable = tune.with_resources(_ray_trainable, request)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=f"grid-{time.strftime('%Y%m%d-%H%M%S')}-stage{i}",
                storage_path=str(grid.output / "ray_results"),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[DriverCallback(grid, refresh, PendingWatch(request))],
                verbose=0,
            ),
        )
        tuner.fit()
        # A trial that ended without a final event (e.g. killed) counts as failed.
        for spec in runnable:
            if grid.states[spec.job_hash].status in ("queued", "running"):
                grid.on_fail(spec, "ended without reporting a result")
        refresh()
