"""Data parallelism for one job: ranks, per-epoch seeds, the one DDP module, SyncBN. Imports torch only.

A job of N workers (Ray Train's ``TorchTrainer`` starts them and their process group: NCCL on GPUs,
gloo on CPUs) runs :func:`bench.engine.loop.run_job` on every rank with a :class:`Dist`. What makes N workers
the same job as one process:

* **the global batch**: the recipe's batch is split over the ranks; every epoch draws one global order
  (and, for device-resident data, one set of crops/flips per position) from a seed of the job and the
  epoch alone, and rank ``r`` takes positions ``r, r + N, ...`` of it — so step ``k`` of any N trains on
  the same images. Gradients are averaged over ranks (DDP), which for mean losses over equal shares is
  the gradient of the global batch's mean loss;
* **state that does not depend on N**: model, method extras and optimizer state are identical on every
  rank; random streams are re-seeded at every epoch from (job seed, epoch, rank) instead of being saved,
  so a job resumes exactly after a crash and may resume with another N (only the per-rank streams, e.g.
  DiffKD's noise, then differ);
* **one DDP module** over the student *and* the method's extras (:class:`PairedStep`): the unit a
  task calls once per step is the paired forward — a detector's stages are driven one by one, never
  through its own ``forward`` — so that is what DDP wraps; one reducer averages every trainable
  parameter. The frozen teacher is not wrapped (it has no gradients; each rank runs its own copy).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from methods.base import Method, Progress
from tasks.base import Task


@dataclass(frozen=True)
class Dist:
    """Where this process sits in its job: ``rank`` of ``world_size`` (``Dist()``: one process)."""

    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the job's files and logs."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.parallel:
            import torch.distributed as dist

            dist.barrier()


def epoch_seed(seed: int, epoch: int, rank: int | None = None) -> int:
    """A well-mixed 63-bit seed of (job seed, epoch[, rank]).

    Mixed, not added: ``seed + epoch`` would give seed 1 the orders of seed 0 shifted by one epoch, and the
    seeds of a report would not be independent.
    """
    key = [seed, epoch] if rank is None else [seed, epoch, rank]
    return int(np.random.SeedSequence(key).generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1 << 31, 1])


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Re-seed Python, numpy and torch (CPU and CUDA) for ``epoch`` on ``rank``: what a step draws."""
    s = epoch_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s % (1 << 32))
    torch.manual_seed(s)


class PairedStep(nn.Module):
    """The trainable part of one training step as a module: the paired forward and the method's loss.

    Registers the student and the method (their parameters are what DDP averages); the teacher and the
    callables actually run (``torch.compile`` wrappers of the same modules) are held outside the module tree.
    """

    def __init__(
        self, task: Task, student: nn.Module, teacher: nn.Module | None, method: Method | None,
        device: torch.device, run: tuple[Any, Any, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.student = student
        self.method = method
        self._task, self._device = task, device
        self._run = run or (student, teacher, method)

    def forward(self, batch: Any, progress: Progress) -> tuple[dict[str, torch.Tensor], int]:
        """The weighted loss terms of the step and the images it saw."""
        student, teacher, method = self._run
        out = self._task.paired_forward(student, teacher, batch, self._device)
        weight = self.method.task_weight if self.method is not None else 1.0
        terms = {k: weight * v for k, v in out.losses.items()}
        if method is not None:
            terms.update(method(out.student_taps, out.teacher_taps, out.target, progress))
        return terms, out.batch_size


def wrap_ddp(module: PairedStep, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``DistributedDataParallel`` over ``module`` (device ids on CUDA); ``find_unused`` only where needed."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def convert_sync_bn(modules: list[nn.Module | None], device: torch.device, log: Any) -> list[nn.Module | None]:
    """BatchNorm → SyncBatchNorm (statistics over the global batch, the published segmentation setting).

    PyTorch's SyncBatchNorm runs on GPUs only; on CPU workers (gloo) each rank keeps its own statistics
    and the log says so.
    """
    if device.type != "cuda":
        log("warning: SyncBatchNorm needs CUDA; on CPU workers each rank normalises over its own share")
        return modules
    return [nn.SyncBatchNorm.convert_sync_batchnorm(m) if m is not None else None for m in modules]


def all_reduce_mean(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (in place)."""
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= world_size
    return tensor
