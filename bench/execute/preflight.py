"""Checks a grid passes before anything is written or started: bad input is one line and exit 2.

A job that cannot work because of its input (a missing CIFAR-100 folder, a COCO json with a broken box,
a teacher checkpoint of another architecture, a batch larger than the data set, a device that does not
exist) must not cost a minute of Ray start-up, three FAILED runs and an exit code that counts them. The
driver builds each distinct data set of the grid once (the same code the jobs run, so the same checks)
and loads each given teacher checkpoint into its model, strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.execute.options import RunOptions
from bench.jobs.spec import VANILLA, JobSpec
from methods.errors import UserError, first_line


def check_device(options: RunOptions) -> str:
    """The jobs' device (``cpu``, ``cuda``, ``cuda:N``) for validated ``options``; needs torch to count GPUs.

    On the Ray executor a job gets a GPU only through ``--gpus-per-job``; with ``auto`` (or ``cuda``) on a
    machine with CUDA and no request, each job gets one whole GPU. A local Ray instance has exactly this
    machine's GPUs, so a request above them is refused here, before Ray starts.
    """
    import torch

    from bench.engine.device import pick_device

    device, gpus_per_job = options.device, options.gpus_per_job
    if options.executor == "local":
        return str(pick_device(device))
    if device == "cpu":
        return "cpu"
    if options.address is None:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus_per_job > have:
            raise UserError(
                f"--gpus-per-job {gpus_per_job:g}: no Ray node has that many GPUs (this machine has {have}; "
                "join a cluster with --address to use others)"
            )
        if device == "cuda" and have == 0:
            raise UserError("--device cuda requested but CUDA is not available here; use --device cpu")
        if gpus_per_job == 0 and have > 0:
            return "cuda"
    elif device == "cuda" and gpus_per_job == 0:
        raise UserError("--device cuda with the Ray executor needs --gpus-per-job > 0 (e.g. 1 or 0.25)")
    return "cuda" if gpus_per_job > 0 else "cpu"


def machine_cpus() -> int:
    """The CPUs this process may run on (its affinity: what ``taskset``, cgroups' cpusets and Slurm allow)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_machine(options: RunOptions, gpus_per_job: float) -> None:
    """Refuse, before Ray starts, a job no local Ray instance could place: it has this machine's CPUs and GPUs.

    Ray Tune would wait for such a job forever (or, asked through Ray, refuse it only after Ray's 20-30 s start). A
    job's CPUs (``--cpus-per-job``, split between its ``--workers-per-job`` workers; one per worker by default) and
    GPUs must fit on the machine. With ``--address`` the cluster is checked right after joining, before any job.
    """
    import torch

    cpus = machine_cpus()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    workers = options.workers
    hint = "; join a cluster with --address to use more"
    if workers.distributed:
        need_cpu, need_gpu = workers.count * workers.cpus, workers.count * workers.gpus
        if need_cpu > cpus or need_gpu > gpus:
            raise UserError(
                f"a job of {workers.count} workers ({workers.cpus:g} CPUs and {workers.gpus:g} GPUs each) needs "
                f"{need_cpu:g} CPUs and {need_gpu:g} GPUs; this machine has {cpus} CPUs and {gpus} GPUs, all a "
                f"local Ray instance gets{hint}"
            )
        return
    if options.cpus_per_job is not None and options.cpus_per_job > cpus:
        raise UserError(
            f"--cpus-per-job {options.cpus_per_job:g}: this machine has {cpus} CPUs, all a local Ray instance "
            f"gets{hint}"
        )
    if gpus_per_job > gpus:
        raise UserError(f"--gpus-per-job {gpus_per_job:g}: this machine has {gpus} GPUs{hint}")


def _data_key(spec: JobSpec) -> tuple[str, str, str | None, str]:
    return spec.task, spec.dataset, spec.data_dir, json.dumps(spec.recipe.get("extra") or {}, sort_keys=True)


def preflight(jobs: list[JobSpec], output: Path, console: Console | None = None) -> None:
    """Raise :class:`UserError` for the first job whose data or teacher checkpoint cannot work."""
    from tasks.base import get_task

    sizes: dict[tuple[Any, ...], tuple[int, int, int]] = {}
    for spec in jobs:
        key = _data_key(spec)
        if key not in sizes:
            sizes[key] = _check_data(spec)
        n_train, n_val, num_classes = sizes[key]
        batch = int(spec.recipe["batch_size"])
        if n_train < batch:
            raise UserError(
                f"{spec.dataset}: {n_train} training images is fewer than one batch of {batch} "
                f"({spec.label}); lower --batch-size"
            )
        if n_val < 1:
            raise UserError(f"{spec.dataset}: the validation split is empty")
    checked: set[tuple[str, str, str]] = set()
    for spec in jobs:
        if spec.method == VANILLA or not (spec.teacher_ref or "").startswith(("sha256:", "file:")):
            continue
        path = spec.teacher_checkpoint(output)
        key = (spec.task, spec.teacher or "", str(path))
        if key in checked:
            continue
        checked.add(key)
        task = get_task(spec.task)
        model = task.build_model(spec.teacher, sizes[_data_key(spec)][2], spec.dataset)
        task.load_weights(model, path)  # strict: a wrong architecture or garbage file is a UserError


def _check_data(spec: JobSpec) -> tuple[int, int, int]:
    """Build the job's data sets once (cheap structural checks happen there); sizes and class count."""
    from tasks.base import get_task

    task = get_task(spec.task)
    try:
        bundle = task.build_split(spec.dataset, Path(spec.data_dir) if spec.data_dir else None, spec.recipe_obj())
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable data is the user's to fix, in one line
        first = first_line(err)
        where = f" in {spec.data_dir}" if spec.data_dir else ""
        raise UserError(f"{spec.dataset}{where}: cannot be read ({type(err).__name__}: {first})") from None
    return len(bundle.train), len(bundle.val), bundle.num_classes
