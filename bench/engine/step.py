"""One training step at the recipe's precision, and evaluation, without a device sync per step.

* **Precision**: the paired forward (student and frozen teacher) and the method run under
  ``torch.autocast`` in ``bf16`` or ``fp16``; ``fp16`` scales the loss (``GradScaler``) so small
  gradients survive. What must stay float32 does: the loss terms are summed in float32, the KD/DKD
  softmaxes cast their logits up (``methods.kd``/``methods.dkd``), DiffKD's DDIM tables and step math
  are float32 (``methods.ddim``), BatchNorm keeps float32 statistics. ``fp32`` runs no autocast at all:
  exactly the computation of the official code.
* **Compilation** (``recipe.compile``): ``torch.compile`` wrappers of the student, teacher and method
  serve the training step; evaluation and checkpoints use the modules themselves (same weights), so
  eval batches of another shape trigger no recompilation and state-dict keys do not change.
* **No sync per step**: the loss terms are accumulated on the device (float64, the precision Python's
  float sums had) and read once every :attr:`Stepper.sync_every` steps (every step on the CPU, where a
  read costs nothing) — that read is also where a non-finite loss is caught.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from bench.engine.build import Built
from bench.engine.distributed import Dist, PairedStep, all_reduce_mean, wrap_ddp
from methods.base import Progress

#: On CUDA the loss terms are read (one sync) every this many steps; a NaN is caught at the next read.
SYNC_EVERY_CUDA = 50

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFinite(RuntimeError):
    """A loss term became NaN or infinite (the message names the step and the terms)."""


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for ``fp32``)."""
    dtype = _DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


class Stepper:
    """Runs training steps of one job and keeps their loss terms on the device.

    Args:
        built: the job's models, method and task.
        optimizer: over the student and the method's extras.
        device: the training device.
        precision: ``fp32``, ``bf16`` or ``fp16`` (resolved, never ``auto``).
        compile_mode: ``off`` or a ``torch.compile`` mode.
        log: where the compile time goes.
    """

    def __init__(
        self,
        built: Built,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        precision: str = "fp32",
        compile_mode: str = "off",
        log: Callable[[str], None] = print,
        dist: Dist | None = None,
    ) -> None:
        self.built, self.optimizer, self.device, self.precision = built, optimizer, device, precision
        self.dist = dist or Dist()
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.sync_every = 1 if device.type == "cpu" else SYNC_EVERY_CUDA
        self.log = log
        self.compile_mode = compile_mode
        self.compile_time_s = 0.0
        self._first = compile_mode != "off"
        self.student, self.teacher, self.method = built.student, built.teacher, built.method
        if compile_mode != "off":
            kw = {"mode": None if compile_mode == "default" else compile_mode}
            self.student = torch.compile(built.student, **kw)
            self.teacher = torch.compile(built.teacher, **kw) if built.teacher is not None else None
            self.method = torch.compile(built.method, **kw) if built.method is not None else None
        if device.type == "cuda":
            # Kernels are picked once per input shape; worth it when the shape never changes.
            torch.backends.cudnn.benchmark = built.task.fixed_input_size
        self.forward: torch.nn.Module = PairedStep(
            built.task, built.student, built.teacher, built.method, device, (self.student, self.teacher, self.method)
        )
        if self.dist.parallel:
            unused = built.task.ddp_find_unused or bool(getattr(built.method, "ddp_find_unused", False))
            self.forward = wrap_ddp(self.forward, device, find_unused=unused)
        self.names: list[str] | None = None
        self.reset()

    # -- accumulation ------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new epoch's sums."""
        self._sums: torch.Tensor | None = None
        self._last: torch.Tensor | None = None
        self.steps = 0
        self._unchecked = 0
        self.last_loss = math.nan

    def _accumulate(self, values: torch.Tensor) -> None:
        stacked = values.detach().to(torch.float64)
        self._sums = stacked if self._sums is None else self._sums + stacked
        self._last = stacked
        self.steps += 1
        self._unchecked += 1

    def check(self, epoch: int, step: int, force: bool = False) -> None:
        """Read the sums (one sync) when due; raise :class:`NonFinite` naming the terms that went bad."""
        if self._sums is None or not (force or self._unchecked >= self.sync_every):
            return
        both = all_reduce_mean(torch.stack([self._last, self._sums]), self.dist.world_size).tolist()
        self._unchecked = 0
        last, sums = both
        self.last_loss = last[-1]
        if not all(math.isfinite(v) for v in sums):
            names = [*(self.names or []), "loss"]
            bad = [n for n, v in zip(names, sums, strict=True) if not math.isfinite(v)]
            where = f"step {step}" if self.sync_every == 1 else f"a step up to {step}"
            raise NonFinite(f"loss is {last[-1] if not math.isfinite(last[-1]) else sums[-1]} at epoch {epoch}, "
                            f"{where} (non-finite terms: {', '.join(bad)})")  # fmt: skip

    def means(self) -> dict[str, float]:
        """The epoch's mean of every term and of ``loss`` (one sync)."""
        if self._sums is None:
            return {}
        names = [*(self.names or []), "loss"]
        sums = all_reduce_mean(self._sums.clone(), self.dist.world_size).tolist()  # the mean over ranks
        return {f"train/{k}": v / max(self.steps, 1) for k, v in zip(names, sums, strict=True)}

    # -- the step ----------------------------------------------------------------------------
    def step(self, batch: Any, progress: Progress) -> int:
        """One full training step (forward of both models, method, backward, optimizer); returns the images."""
        t0 = time.perf_counter() if self._first else 0.0
        with autocast(self.device, self.precision):
            terms, images = self.forward(batch, progress)
        # Summed in float32 whatever the autocast dtype of each term (a no-op in fp32).
        loss = sum(v.float() for v in terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.names is None:
            self.names = list(terms)
        self._accumulate(torch.stack([*(v.detach().float() for v in terms.values()), loss.detach()]))
        if self._first:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_time_s = time.perf_counter() - t0
            self._first = False
            self.log(f"torch.compile ({self.compile_mode}): first step took {self.compile_time_s:.1f}s")
        return images * self.dist.world_size

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, model: torch.nn.Module, loader: Any) -> dict[str, float]:
        """The task's metrics under ``inference_mode`` (and the training autocast where the task allows it)."""
        task = self.built.task
        ctx = autocast(self.device, self.precision) if task.eval_autocast else nullcontext()
        with torch.inference_mode(), ctx:
            return task.evaluate(model, loader, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
