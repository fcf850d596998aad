"""Evaluating a checkpoint (``diffbench eval``) and reading what a diffbench ``student.pt`` says it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from bench.engine.device import available_cpus, pick_device
from bench.engine.step import autocast
from tasks.base import get_task


def recorded_job(checkpoint: Path) -> dict[str, Any]:
    """What a diffbench ``student.pt`` says it is (arch, task, dataset, data_dir); ``{}`` for other files."""
    try:
        obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the strict loader
        return {}
    if not isinstance(obj, dict) or "arch" not in obj or "student" not in obj:
        return {}
    job = obj.get("job") or {}
    return {"arch": obj.get("arch"), "task": obj.get("task"), "dataset": obj.get("dataset"),
            "data_dir": job.get("data_dir")}  # fmt: skip


def evaluate_checkpoint(
    task_name: str,
    dataset: str,
    data_dir: Path | None,
    arch: str,
    checkpoint: Path,
    device: str = "auto",
    batch_size: int = 128,
    precision: str = "fp32",
    num_workers: int = 2,
) -> dict[str, Any]:
    """Evaluate a checkpoint (ours, mdistiller's or torchvision's) on the dataset's test split."""
    task = get_task(task_name)
    task.check_names(dataset, arch)
    dev = pick_device(device)
    recipe = task.recipe(dataset, arch).updated(batch_size=batch_size)
    bundle = task.build_data(dataset, data_dir, recipe)
    model = task.build_model(arch, bundle.num_classes, dataset)
    task.load_weights(model, checkpoint)
    model.to(dev)
    workers = min(num_workers, max(0, available_cpus() - 1))
    loader = DataLoader(bundle.val, batch_size=batch_size, shuffle=False, collate_fn=bundle.collate_fn,
                        num_workers=workers)  # fmt: skip
    ctx = autocast(dev, precision) if task.eval_autocast else torch.autocast(dev.type, enabled=False)
    with torch.inference_mode(), ctx:
        metrics = task.evaluate(model, loader, dev)
    return {**metrics, "images": len(bundle.val), "arch": arch, "dataset": dataset, "checkpoint": str(checkpoint)}
