"""Jobs larger than one device: each job a Ray Train data-parallel run (``TorchTrainer``, DDP) in its grid.

In a grid, the job's Tune trial is only the *driver* of its Ray Train run (it holds no CPU or GPU, so it
never competes with the workers): it starts ``N`` workers — NCCL on GPUs, gloo on CPUs — that each run
:func:`bench.engine.loop.run_job` with their rank (:mod:`bench.engine.distributed`), and forwards rank 0's reports to
Tune (``TuneReportCallback``), where the grid's driver logs them to MLflow like any other job's. A worker
that dies makes Ray Train restart the group (``FailureConfig``); the new workers resume from the job's
checkpoint, written by rank 0 after every epoch. ``diffbench train --workers N`` runs the same trainer
without a grid.

Imports Ray lazily (the module itself only needs torch).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.execute.options import Workers
from bench.jobs.spec import JobSpec
from methods.errors import UserError, first_line


def _worker(config: dict[str, Any]) -> None:
    """One rank of a job, inside a Ray Train worker (its process group is already up)."""
    import ray.train
    import torch

    from bench.engine.distributed import Dist
    from bench.execute.events import run_reporting, to_report

    ctx = ray.train.get_context()
    dist = Dist(ctx.get_world_rank(), ctx.get_world_size())
    if config["use_gpu"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    torch.set_num_threads(max(1, int(config["cpus"])))
    from bench.jobs.plugins import load_plugins

    load_plugins(config.get("imports"))  # entry points and the driver's --import modules, in this worker too
    spec = JobSpec.from_dict(config["job"])

    # Every rank reports the same (reduced) values; rank 0's reach Tune.
    run_reporting(spec, config["output"], lambda event: ray.train.report(to_report(event)),
                  claim_token=config.get("claim_token"), device=device, log=print, cpus=max(1, int(config["cpus"])),
                  dist=dist)  # fmt: skip


def _trainer(config: dict[str, Any], workers: Workers, max_failures: int, callbacks: list[Any]) -> Any:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    spec = JobSpec.from_dict(config["job"])
    per_worker: dict[str, float] = {"CPU": workers.cpus}
    if workers.gpus:
        per_worker["GPU"] = workers.gpus
    return TorchTrainer(
        _worker,
        train_loop_config={**config, "use_gpu": workers.gpus > 0, "cpus": workers.cpus},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers.count, use_gpu=workers.gpus > 0, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if workers.gpus else "gloo"),
        run_config=ray.train.RunConfig(
            name=f"job-{spec.job_hash}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(config["output"]) / "ray_results" / "train"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
    )


def train_driver(config: dict[str, Any]) -> None:
    """A grid's Tune trial for a data-parallel job: runs its Ray Train run, forwards its reports to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from bench.execute.events import Failed, to_report

    workers = Workers(**config["workers"])
    trainer = _trainer(config, workers, int(config["max_failures"]), [TuneReportCallback()])
    try:
        trainer.fit()
    except Exception as err:  # noqa: BLE001 - Ray Train gave up after its retries: the job failed
        why = f"crashed {int(config['max_failures']) + 1}x; last: {first_line(err, 500, last=True)}"
        tune.report(to_report(Failed(why)))


def driver_resources() -> dict[str, float]:
    """What a driver trial holds: nothing its workers need (Tune refuses an empty request; 1 byte of memory)."""
    return {"cpu": 0, "memory": 1}


def jobs_at_once(workers: Workers) -> int:
    """How many of these jobs the cluster can run at once (more driver trials would only wait)."""
    import ray

    res = ray.cluster_resources()
    fits = math.floor(res.get("CPU", 0) / (workers.count * workers.cpus)) if workers.cpus else 10**6
    if workers.gpus:
        fits = min(fits, math.floor(res.get("GPU", 0) / (workers.count * workers.gpus)))
    return max(1, fits)


def check_cluster(workers: Workers) -> None:
    """Refuse a job shape the whole cluster cannot hold (Ray Train would wait for it forever)."""
    import ray

    res = ray.cluster_resources()
    need_cpu, need_gpu = workers.count * workers.cpus, workers.count * workers.gpus
    if need_gpu > res.get("GPU", 0) or need_cpu > res.get("CPU", 0):
        raise UserError(
            f"a job of {workers.count} workers needs {need_cpu:g} CPUs and {need_gpu:g} GPUs; the Ray cluster has "
            f"{res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs"
        )


def train_one(spec: JobSpec, output: Path, workers: Workers, max_failures: int = 1) -> dict[str, Any]:
    """``diffbench train --workers N``: one job as a Ray Train run, without a grid; returns its ``result.json``.

    Raises:
        JobFailed: the job failed for good (its reason, as a grid would record it).
    """
    from bench.engine.loop import JobFailed
    from bench.execute.events import Failed, from_report
    from bench.jobs.files import job_dir, read_result
    from bench.jobs.plugins import imported_modules

    check_cluster(workers)
    config = {"job": spec.to_dict(), "output": str(output), "claim_token": None, "imports": imported_modules()}
    last = from_report(_trainer(config, workers, max_failures, []).fit().metrics or {})
    if isinstance(last, Failed):
        raise JobFailed(last.reason, storage=last.storage)
    result = read_result(job_dir(output, spec.job_hash))
    if result is None:
        raise JobFailed(f"job {spec.job_hash} ended without a result; see {job_dir(output, spec.job_hash)}/train.log")
    return result
