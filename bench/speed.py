"""``diffbench speed``: time full training steps per method on synthetic batches.

A step is what training pays for: the teacher's forward, the student's forward and backward, the
method's loss (and its extras' backward) and the optimiser step. Methods are *interleaved* round by
round (in a rotating order) so that thermal drift, other processes and allocator warm-up hit every
method alike; the median over rounds is reported. Imports neither Ray nor MLflow, so it runs on a
machine that has only torch and torchvision.

Peak memory (CUDA only) is measured per method during its build and warm-up: its own teacher copy,
student, extras, optimiser state and activations (what one job of that method needs on the GPU).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from bench.spec import VANILLA
from bench.train import Built, build_models, make_optimizer, pick_device, train_step
from methods.base import Progress, UserError
from tasks.base import get_task


@dataclass
class SpeedRow:
    method: str
    ms_per_step: float
    ms_iqr: float
    images_per_s: float
    peak_mem_mb: float | None
    vs_vanilla: float | None = None
    vs_kd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    task_name: str,
    teacher: str,
    student: str,
    methods: list[str],
    batch_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    device: str = "auto",
    dataset: str | None = None,
    num_classes: int = 100,
    hparams: dict[str, dict[str, Any]] | None = None,
    channels_last: bool = False,
) -> list[SpeedRow]:
    """Median step time per method; see the module docstring for what is timed.

    Args:
        dataset: whose method defaults and model variants to use (``cifar100`` for 32×32 CIFAR models).
        hparams: per-method overrides of the task's method defaults.
    """
    task = get_task(task_name)
    dataset = dataset or task.default_dataset
    dev = pick_device(device)
    if not methods:
        raise UserError("no methods to time")
    torch.manual_seed(0)
    built: dict[str, Built] = {}
    opts: dict[str, torch.optim.Optimizer] = {}
    peaks: dict[str, float | None] = {}
    recipe = task.recipe(dataset, student)
    batch = task.synthetic_batch(batch_size, num_classes, dev, dataset=dataset, arch=student)
    progress = Progress(epoch=recipe.epochs, epochs=recipe.epochs, step=0, steps_per_epoch=1)
    for name in methods:
        hp = (
            {**task.method_defaults(name, dataset, teacher, student), **(hparams or {}).get(name, {})}
            if name != VANILLA
            else {}
        )
        base_mem = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        s, t, m = build_models(task, student, teacher, name, hp, num_classes, dataset, None, dev)
        if channels_last:
            s.to(memory_format=torch.channels_last)
        b = Built(task, s, t, m, None, None, num_classes, {})  # type: ignore[arg-type]
        built[name] = b
        opts[name] = make_optimizer(recipe, s, m)
        for _ in range(warmup):
            train_step(b, batch, dev, progress, opts[name])
        _sync(dev)
        peaks[name] = (torch.cuda.max_memory_allocated(dev) - base_mem) / 2**20 if dev.type == "cuda" else None
    times: dict[str, list[float]] = {n: [] for n in methods}
    for r in range(steps):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for name in order:
            _sync(dev)
            t0 = time.perf_counter()
            train_step(built[name], batch, dev, progress, opts[name])
            _sync(dev)
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name in methods:
        ts = sorted(times[name])
        med = statistics.median(ts)
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [med, med, med]
        rows.append(SpeedRow(name, med * 1e3, (q[2] - q[0]) * 1e3, batch_size / med, peaks[name]))
    ref = {r.method: r.ms_per_step for r in rows}
    for row in rows:
        row.vs_vanilla = row.ms_per_step / ref[VANILLA] if VANILLA in ref else None
        row.vs_kd = row.ms_per_step / ref["kd"] if "kd" in ref else None
    return rows
