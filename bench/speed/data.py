"""``diffbench speed --data``: the data pipeline alone, PIL ``DataLoader`` against the device-resident loader.

Both pipelines produce the same CIFAR training batches (pad-4 crop, flip, normalisation) from the same
in-memory ``uint8`` images on the same CPU cores; the figure of merit is images/s. The PIL path is timed
as a training loop sees it: ``DataLoader(shuffle=True, num_workers=W)`` plus the copy to ``device``
(pinned, non-blocking on CUDA). Worker start-up and the first batch are excluded from both.
``python -m bench.perf.data_pipeline`` sweeps threads and workers on random data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.engine.device import pick_device
from bench.speed.system import environment
from methods.errors import UserError
from tasks.classification.data import CIFAR100Pickle, cifar100_transform
from tasks.classification.resident import ResidentLoader, supports


def random_cifar(n: int = 50_000, seed: int = 0) -> CIFAR100Pickle:
    """A CIFAR-100-shaped training split of ``n`` random ``uint8`` images with the training transform."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, size=n).tolist()
    return CIFAR100Pickle.from_arrays(data, labels, [f"class{i}" for i in range(100)], cifar100_transform(True))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(loader: Iterable) -> Iterator[Any]:
    while True:
        yield from loader


def _rate(batches: Iterator[Any], steps: int, device: torch.device, to_device: bool) -> float:
    """Images/s over ``steps`` batches after one warm-up batch."""

    def take() -> int:
        x, y = next(batches)
        if to_device:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return int(x.shape[0])

    take()
    _sync(device)
    t0 = time.perf_counter()
    n = sum(take() for _ in range(steps))
    _sync(device)
    return n / (time.perf_counter() - t0)


def time_pipeline(
    dataset: Dataset | None,
    batch_size: int,
    device: torch.device | str,
    steps: int,
    *,
    num_workers: Iterable[int] | None = None,
    threads: Iterable[int] | None = None,
    repeats: int = 3,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Images/s of the PIL ``DataLoader`` and of :class:`ResidentLoader` on one training set.

    Each figure is the best of ``repeats`` runs of ``steps`` batches (others may share the CPUs: the best
    run is the least disturbed one). The PIL path is timed with every worker count in ``num_workers``
    (default: 0 and the CPUs this process may use) and its best is the baseline, so the ratio is never
    flattered by a bad worker count. The resident path is timed with every intra-op thread count in
    ``threads`` (default: 1 and torch's current count) and its best is reported: on a CPU shared with other
    work, two OpenMP threads can lose to one on batches this small.

    Args:
        dataset: a training split that :func:`~tasks.classification.resident.supports` accepts and that
            a ``DataLoader`` can read (default: :func:`random_cifar`, 50,000 images).
        batch_size: images per batch (the CIFAR recipe's 64 is the honest figure).
        device: where the resident images live and the PIL batches are copied to.
        steps: timed batches per run.
        num_workers: ``DataLoader`` worker counts to try.
        threads: ``torch.set_num_threads`` values to try for the resident loader (restored afterwards).
        repeats: runs per configuration.
        channels_last: resident output memory format.

    Returns:
        ``images``, ``batch_size``, ``device``, ``cpus``, ``torch_threads``, ``pil`` (best images/s),
        ``pil_workers`` (its worker count), ``pil_by_workers``, ``resident`` (best images/s),
        ``resident_threads`` (its thread count), ``resident_by_threads``, ``resident_upload_s`` (moving the
        data set to the device once), ``speedup``.
    """
    device = torch.device(device)
    dataset = random_cifar() if dataset is None else dataset
    if not supports(dataset):
        raise ValueError(f"{type(dataset).__name__} has no device-resident form to compare")
    workers = sorted(set(num_workers if num_workers is not None else (0, _cpus())))
    cuda = device.type == "cuda"

    pil_by_workers: dict[int, float] = {}
    for w in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=w,
                            pin_memory=cuda, persistent_workers=w > 0, generator=torch.Generator().manual_seed(0))
        batches = _endless(loader)
        pil_by_workers[w] = max(_rate(batches, steps, device, to_device=True) for _ in range(repeats))
        del batches, loader  # stop the workers before the next configuration

    t0 = time.perf_counter()
    resident = ResidentLoader(dataset, batch_size, device, train=True, generator=torch.Generator().manual_seed(0),
                              channels_last=channels_last)
    _sync(device)
    upload = time.perf_counter() - t0
    batches = _endless(resident)
    default_threads = torch.get_num_threads()
    res_by_threads: dict[int, float] = {}
    try:
        for t in sorted(set(threads if threads is not None else (1, default_threads))):
            torch.set_num_threads(t)
            res_by_threads[t] = max(_rate(batches, steps, device, to_device=False) for _ in range(repeats))
    finally:
        torch.set_num_threads(default_threads)

    best_w = max(pil_by_workers, key=pil_by_workers.__getitem__)
    best_t = max(res_by_threads, key=res_by_threads.__getitem__)
    return {
        "images": len(dataset),  # type: ignore[arg-type]
        "batch_size": batch_size,
        "device": str(device),
        "cpus": _cpus(),
        "torch_threads": default_threads,
        "pil": pil_by_workers[best_w],
        "pil_workers": best_w,
        "pil_by_workers": pil_by_workers,
        "resident": res_by_threads[best_t],
        "resident_threads": best_t,
        "resident_by_threads": res_by_threads,
        "resident_upload_s": upload,
        "speedup": res_by_threads[best_t] / pil_by_workers[best_w],
    }


def data_benchmark(
    task_name: str,
    dataset: str | None,
    data_dir: str | None,
    batch_size: int,
    steps: int,
    device: str = "auto",
    images: int = 50_000,
    channels_last: bool = False,
) -> dict[str, Any]:
    """``diffbench speed --data``: images/s of the PIL ``DataLoader`` and of the device-resident loader.

    Times :func:`time_pipeline` on the training split of ``dataset`` (read
    from ``data_dir``), or, for CIFAR-100 without a folder, on ``images`` random CIFAR-shaped ``uint8``
    images with the CIFAR training transform: the same crops, flips and normalisation either way.
    """
    if task_name != "classification":
        raise UserError(f"--data times the in-memory classification pipelines; task {task_name!r} has none")
    from tasks.base import get_task

    task = get_task(task_name)
    dataset = dataset or "cifar100"
    task.check_names(dataset)
    if dataset == "cifar100" and data_dir is None:
        train = random_cifar(images)
    else:
        recipe = task.recipe(dataset, "resnet8")
        train = task.build_data(dataset, Path(data_dir) if data_dir else None, recipe).train
        if not supports(train):
            raise UserError(f"--data: {dataset!r} has no device-resident pipeline to compare with its DataLoader")
    if batch_size < 1 or steps < 1:
        raise UserError("--batch-size and --steps must be >= 1")
    dev = pick_device(device)
    out = time_pipeline(train, batch_size, dev, steps, channels_last=channels_last)
    return {"task": task_name, "dataset": dataset, "steps": steps, **environment(dev), **out}
