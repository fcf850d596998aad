"""``diffbench speed --data``: the data pipeline alone, PIL ``DataLoader`` against the device-resident loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.engine.build import pick_device
from bench.speed.steps import environment
from methods.base import UserError
from tasks.base import get_task


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

    Times :func:`bench.speed.pipeline.time_pipeline` on the training split of ``dataset`` (read
    from ``data_dir``), or, for CIFAR-100 without a folder, on ``images`` random CIFAR-shaped ``uint8``
    images with the CIFAR training transform: the same crops, flips and normalisation either way.
    """
    if task_name != "classification":
        raise UserError(f"--data times the in-memory classification pipelines; task {task_name!r} has none")
    from bench.speed.pipeline import random_cifar, time_pipeline
    from tasks.classification.resident import supports

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
