"""The Ray Tune executor (the default): a grid's jobs as Tune trials, teachers first, on one machine or a cluster.

Each trial runs the same job function as the other executors (:func:`bench.execute.events.run_reporting`).
The workers never talk to MLflow: each epoch they ``tune.report`` the job's events (plus a small checkpoint
pointer, so Ray's ``FailureConfig`` restores the trial), Tune streams the results to the driver, and a Tune
callback in the driver (:mod:`.ray_callback`) hands them to the grid. One writer, however many jobs run at once.

Failures: an exception in a job (a crash) is retried up to ``max_failures`` times by Tune, each retry resuming
from the job's last checkpoint; a deterministic failure (:class:`~bench.engine.loop.JobFailed`, a
:class:`~methods.errors.UserError`) is reported at once, without retries. Either way the rest of the grid goes
on; a student whose teacher job failed is recorded as failed without running.
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

from bench.execute.options import RunOptions
from bench.execute.state import GridRun, stages
from bench.jobs.spec import JobSpec
from methods.errors import UserError, first_line


# ------------------------------------------------------------------------------------------------
# Ray executor
# ------------------------------------------------------------------------------------------------
def _ray_trainable(config: dict[str, Any]) -> None:
    """One job inside a Ray Tune trial: its events go to the driver as Tune results; never touches MLflow."""
    import torch
    from ray import tune

    from bench.execute.events import Epoch, run_reporting, throttled_steps, to_report
    from bench.jobs.plugins import load_plugins

    load_plugins(config.get("imports"))  # entry points and the driver's --import modules, in this worker too
    spec = JobSpec.from_dict(config["job"])
    torch.set_num_threads(max(1, int(config["cpus"])))
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            pointer = json.loads((Path(d) / "pointer.json").read_text())
        print(f"[{spec.label}] Ray restored the trial at epoch {pointer['epoch']}; resuming from the job checkpoint")

    def emit(event: Any) -> None:
        if not isinstance(event, Epoch):
            tune.report(to_report(event))
            return
        with tempfile.TemporaryDirectory() as d:  # a pointer: the job's own checkpoint holds the state
            (Path(d) / "pointer.json").write_text(json.dumps({"job_hash": spec.job_hash, "epoch": event.epoch}))
            tune.report(to_report(event), checkpoint=tune.Checkpoint.from_directory(d))

    run_reporting(spec, config["output"], emit, claim_token=config.get("claim_token"), device=config["device"],
                  log=print, on_step=throttled_steps(emit))  # fmt: skip


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


@contextlib.contextmanager
def _our_sigterm_handler() -> Iterator[None]:
    """Keep our SIGTERM handler (:mod:`.signals`) while ``ray.init`` runs: it installs one that calls ``sys.exit(15)``.

    Ray sets its handler through ``ray._private.utils.set_sigterm_handler``, made a no-op for the call. Should Ray's
    handler run anyway (another path, another version), its ``SystemExit(15)`` is turned into
    :class:`~.signals.Terminated`; afterwards our handlers are installed again.
    """
    import signal

    from bench.execute import signals

    try:
        import ray._private.utils as ray_utils
    except ImportError:  # pragma: no cover - Ray's layout changed: rely on the SystemExit conversion below
        ray_utils = None
    original = getattr(ray_utils, "set_sigterm_handler", None)
    if original is not None:
        ray_utils.set_sigterm_handler = lambda _handler: None
    try:
        yield
    except SystemExit as err:
        if err.code != signal.SIGTERM:
            raise
        raise signals.received(signal.SIGTERM) from None
    finally:
        if original is not None:
            ray_utils.set_sigterm_handler = original
        signals.reinstall()


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
        with _our_sigterm_handler(), _stderr_captured() as captured:
            if address:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        text = "".join(captured) + str(err)
        if "InvalidAuthToken" in text or "Unauthenticated" in text or "auth_token" in text.lower():
            raise UserError(_TOKEN_HELP.format(address=address)) from None
        first = first_line(err)
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


def run_ray(grid: GridRun, jobs: list[JobSpec], options: RunOptions, gpus_per_job: float,
            live: Live | None = None) -> None:  # fmt: skip
    """Run ``jobs`` as Ray Tune trials, teachers first; see the module docstring.

    ``gpus_per_job`` is the resolved GPU share of each job (a whole GPU when CUDA was picked without a request).
    Jobs of several workers (``options.workers``) are each a Ray Train data-parallel run whose Tune trial is only
    its driver (:func:`bench.execute.ray_train.train_driver`).
    """
    cpus_per_job, max_concurrent, max_failures = options.cpus_per_job, options.max_concurrent, options.max_failures
    workers = options.workers
    import logging

    from ray import tune

    # Trial errors are recorded in MLflow with their reason; Tune's own logging would draw over the live view.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    logging.getLogger("ray.train").setLevel(logging.CRITICAL)

    from bench.execute.ray_callback import DriverCallback, PendingWatch
    from bench.jobs.plugins import imported_modules

    def refresh() -> None:
        if live is not None:
            live.refresh()

    import ray

    device = "cuda" if gpus_per_job > 0 else "cpu"
    cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
    node_cpus = _node_cpus()
    for i, stage in enumerate(stages(jobs)):
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
        # a whole node (torch threads follow), a wide student stage one CPU each. Counted over the stage's jobs in
        # the whole grid, not those left to run: a job's thread count (and so its floating-point sums) must not
        # depend on how many of its siblings finished before a resume.
        stage_size = sum((j.role == "teacher") == (stage[0].role == "teacher") for j in grid.jobs)
        at_once = min(stage_size, max_concurrent or stage_size)
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
        if workers.distributed:
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
