"""Building a job: device, seeds, data loaders, models (teacher loaded and frozen), method, optimizer.

Imports neither Ray nor MLflow. Speed choices that the recipe resolved (``bench.jobs.spec``) are applied
here: channels_last weights, the device-resident data pipeline of in-memory data sets, DataLoader
workers sized to the CPUs the job was given, fused SGD on CUDA with the learning rate held as a device
tensor (a step then never copies a Python float to the GPU).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from bench.engine.device import available_cpus
from bench.engine.distributed import Dist, convert_sync_bn, epoch_seed, seed_epoch
from bench.jobs.spec import RANDOM_INIT, VANILLA, JobSpec
from methods.base import Method, build_method
from methods.errors import UserError
from tasks.base import Recipe, Task, get_task


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return the CPU generator that drives the data order and augmentation."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass
class Built:
    """Everything a job trains with, built from its spec."""

    task: Task
    student: nn.Module
    teacher: nn.Module | None
    method: Method | None
    train_loader: Any
    val_loader: Any
    num_classes: int
    info: dict[str, Any]
    #: the CPU generator behind the data order / augmentation (re-seeded every epoch by :meth:`start_epoch`).
    generator: torch.Generator | None = None
    seed: int = 0
    dist: Dist = Dist()

    def start_epoch(self, epoch: int) -> None:
        """Seed everything ``epoch`` draws from (job seed, epoch, rank): resumable without saved RNG state.

        The data order and the device-resident crops/flips are one draw per *epoch* shared by all ranks
        (each rank takes its positions of it); augmentations in DataLoader workers and the model's own
        draws (DiffKD's noise) get a stream per rank.
        """
        seed_epoch(self.seed, epoch, self.dist.rank)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if self.generator is not None:
            resident = not isinstance(self.train_loader, DataLoader)
            rank = None if resident else self.dist.rank
            self.generator.manual_seed(epoch_seed(self.seed, epoch, rank))


def make_loaders(
    task: Task,
    bundle: Any,
    recipe: Recipe,
    device: torch.device,
    generator: torch.Generator | None,
    cpus: int | None = None,
    dist: Dist | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Train and validation loaders: device-resident batches or a DataLoader sized to the job's CPUs.

    ``recipe.batch_size`` is the *global* batch; each of ``dist.world_size`` ranks draws its share of every
    global batch (see :mod:`bench.engine.distributed`). Validation is sharded too, each image on exactly one rank
    (tasks sum their counts over ranks, so the metric is the single-process one).
    """
    dist = dist or Dist()
    rank, world_size = dist.rank, dist.world_size
    per_rank = recipe.batch_size // world_size
    eval_batch = recipe.eval_batch_size or recipe.batch_size
    if recipe.data_pipeline == "device":
        kw = {"device": device, "channels_last": bool(recipe.channels_last), "rank": rank, "world_size": world_size}
        train = task.resident_loader(bundle.train, per_rank, train=True, generator=generator, **kw)
        val = task.resident_loader(bundle.val, eval_batch, train=False, generator=None, **kw)
        return train, val
    # Workers beyond the CPUs the job was given only contend (and make torch warn at every epoch).
    workers = min(recipe.num_workers, max(0, (cpus or available_cpus()) - 1))
    # Workers are not persistent: each epoch's get their seeds from the freshly re-seeded generator, so a
    # resumed job replays the augmentations exactly (persistent workers would carry their streams over).
    loader_kw: dict[str, Any] = {"collate_fn": bundle.collate_fn, "num_workers": workers,
                                 "pin_memory": device.type == "cuda"}  # fmt: skip
    if workers > 0:
        loader_kw["prefetch_factor"] = 4
    # One order per epoch for the whole job, drawn from (job seed, epoch); rank r takes positions r, r+N, ...
    sampler = DistributedSampler(bundle.train, world_size, rank, shuffle=True, seed=epoch_seed(seed, 0) % (1 << 62),
                                 drop_last=True)  # fmt: skip
    train = DataLoader(bundle.train, batch_size=per_rank, sampler=sampler, drop_last=True, generator=generator,
                       **loader_kw)  # fmt: skip
    val_sampler = range(rank, len(bundle.val), world_size) if world_size > 1 else None
    val = DataLoader(bundle.val, batch_size=eval_batch, sampler=val_sampler, shuffle=False, **loader_kw)
    return train, val


def build_job(
    spec: JobSpec,
    output: Path,
    device: torch.device,
    generator: torch.Generator | None = None,
    cpus: int | None = None,
    dist: Dist | None = None,
    log: Any = print,
) -> Built:
    """Data, models (teacher weights loaded, frozen) and method for ``spec`` (this rank's share of the data)."""
    dist = dist or Dist()
    task = get_task(spec.task)
    recipe = spec.recipe_obj()
    if recipe.batch_size % dist.world_size:
        raise UserError(
            f"batch size {recipe.batch_size} does not divide over {dist.world_size} workers (the recipe's batch "
            "is the global batch); pick a batch size that is a multiple of the worker count"
        )
    bundle = task.build_split(spec.dataset, Path(spec.data_dir) if spec.data_dir else None, recipe)
    generator = generator if generator is not None else torch.Generator()
    train_loader, val_loader = make_loaders(task, bundle, recipe, device, generator, cpus, dist, spec.seed)
    if len(train_loader) == 0:
        raise UserError(
            f"{spec.dataset}: {len(bundle.train)} training images is fewer than one batch of "
            f"{recipe.batch_size}; lower --batch-size"
        )
    ckpt = spec.teacher_checkpoint(output) if spec.method != VANILLA else None
    if spec.method != VANILLA and (ckpt is None or not ckpt.is_file()):
        raise UserError(f"teacher checkpoint for {spec.teacher!r} not found at {ckpt}")
    student, teacher, method = build_models(
        task,
        spec.student,
        spec.teacher,
        spec.method,
        dict(spec.hparams),
        bundle.num_classes,
        spec.dataset,
        ckpt,
        device,
        channels_last=bool(recipe.channels_last),
        init=init_kind(spec.student_init),
        init_path=Path(spec.student_init_path) if spec.student_init_path else None,
        log=log,
    )
    if dist.parallel and recipe.sync_bn:
        student, method = convert_sync_bn([student, method], device, log)
    return Built(task, student, teacher, method, train_loader, val_loader, bundle.num_classes, bundle.info,
                 generator, spec.seed, dist)  # fmt: skip


def init_kind(student_init: str | None) -> str | None:
    """A job's ``student_init`` as :meth:`tasks.base.Task.build_model` takes it: ``None``, ``random`` or ``file``."""
    return None if student_init is None else "random" if student_init == RANDOM_INIT else "file"


def build_models(
    task: Task,
    student_arch: str,
    teacher_arch: str | None,
    method_name: str,
    hparams: dict[str, Any],
    num_classes: int,
    dataset: str,
    teacher_ckpt: Path | None,
    device: torch.device,
    channels_last: bool = False,
    init: str | None = None,
    init_path: Path | None = None,
    log: Any = print,
) -> tuple[nn.Module, nn.Module | None, Method | None]:
    """Student (its starting weights from ``init_path`` when given), frozen teacher (weights from ``teacher_ckpt``
    when given) and method, taps attached. ``init``: see :meth:`tasks.base.Task.build_model`."""
    fmt = torch.channels_last if channels_last else torch.preserve_format
    student = task.build_model(student_arch, num_classes, dataset, init=init)
    note = task.init_note(dataset, student_arch, init)
    if note:
        log(f"{student_arch}: {note}")
    if init_path is not None:
        what = task.load_init(student, student_arch, init_path)
        log(f"{student_arch} starts from {init_path} ({what})")
    teacher = method = None
    if method_name != VANILLA:
        if teacher_arch is None:
            raise UserError(f"method {method_name!r} needs a teacher")
        teacher = task.build_model(teacher_arch, num_classes, dataset)
        if teacher_ckpt is not None:
            task.load_weights(teacher, teacher_ckpt)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        task.check_pair(student, teacher)
        s_specs = task.tap_specs(student_arch, num_classes, dataset)
        t_specs = task.tap_specs(teacher_arch, num_classes, dataset)
        method = build_method(method_name, s_specs, t_specs, **hparams)
        task.attach_taps(teacher, teacher_arch, num_classes, dataset)
        teacher.to(device, memory_format=fmt)
        method.to(device, memory_format=fmt)
    task.attach_taps(student, student_arch, num_classes, dataset)
    student.to(device, memory_format=fmt)
    return student, teacher, method


def make_optimizer(
    recipe: Recipe, student: nn.Module, method: Method | None, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """SGD over the student and the method's extras.

    Weight decay on every parameter (mdistiller's choice), or, with ``recipe.weight_decay_1d=False``, not
    on biases and normalisation weights (1-D parameters; DiffKD's official ImageNet recipe). On CUDA the
    fused kernel updates all parameters at once and the learning rate is a device tensor, so a step
    issues no host→device copy (:func:`set_lr` changes it in place).
    """
    params = [p for p in student.parameters() if p.requires_grad]
    if method is not None:
        params += [p for p in method.parameters() if p.requires_grad]
    if recipe.weight_decay_1d:
        groups: list[dict[str, Any]] = [{"params": params}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    cuda = device is not None and device.type == "cuda"
    lr: float | torch.Tensor = torch.tensor(recipe.lr, device=device) if cuda else recipe.lr
    return torch.optim.SGD(
        groups,
        lr=lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov,
        **({"fused": True} if cuda else {}),
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (in place when it is a tensor: no new allocation, no sync)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
