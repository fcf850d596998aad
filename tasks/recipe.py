"""The training recipe of a job: optimiser, schedule, batch and speed settings (free of torch).

Kept apart from :mod:`tasks.base` (which imports torch) because planning a grid, hashing its jobs and every
command that does not train read and compare recipes without ever building a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from methods.errors import UserError, unknown

#: ``Recipe.precision`` values: autocast dtypes (``fp16`` adds a gradient scaler).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: ``Recipe.compile`` values: ``off`` or a ``torch.compile`` mode.
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
PIPELINES = ("auto", "device", "pil")
#: The ``Recipe.extra`` key of a tuning trial's validation split, carved from the training split:
#: ``{"fraction": 0.1, "seed": 0}`` (the task holds that part out of training and evaluates on it instead of its
#: validation split, which the trial never sees). Absent from ordinary jobs, so their identity is unchanged.
HOLDOUT = "holdout"
#: The largest fraction of the training split a hold-out may take.
MAX_HOLDOUT = 0.5


def holdout_of(extra: Mapping[str, Any] | None) -> tuple[float, int] | None:
    """``(fraction, seed)`` of a recipe's hold-out (:data:`HOLDOUT`), ``None`` without one; one-line errors."""
    spec = (extra or {}).get(HOLDOUT)
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) != {"fraction", "seed"}:
        raise UserError(f"recipe extra.{HOLDOUT} must be {{fraction: <0..{MAX_HOLDOUT}>, seed: <int>}}, got {spec!r}")
    fraction, seed = spec["fraction"], spec["seed"]
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= MAX_HOLDOUT:
        raise UserError(f"hold-out fraction must be a number in (0, {MAX_HOLDOUT}], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"hold-out seed must be an integer >= 0, got {seed!r}")
    return float(fraction), int(seed)


def _whole_numbers(name: str, values: Any) -> tuple[int, ...]:
    """Milestones as a tuple of integers >= 0; one line for text, booleans or fractions (not a traceback).

    Text that reads as a number was made one before (:func:`bench.jobs.values.scalar`); what is left here is not.
    """
    if isinstance(values, str | bool) or not isinstance(values, list | tuple):
        raise UserError(f"recipe {name} must be a list of integers, got {values!r}")
    for m in values:
        if isinstance(m, bool) or not isinstance(m, int | float) or m < 0 or not float(m).is_integer():
            raise UserError(f"recipe {name} must be a list of integers >= 0, got {list(values)!r}")
    return tuple(int(m) for m in values)


@dataclass(frozen=True)
class Recipe:
    """A training recipe: optimiser, schedule and batch. Presets live with each task.

    ``schedule`` is ``"step"`` (``milestones`` in epochs, × ``gamma``), ``"poly"`` (power
    ``poly_power`` over all iterations) or ``"cosine"``. ``warmup_epochs`` ramps the lr linearly from
    ``warmup_factor × lr`` (may be fractional: detection warms up over a few hundred iterations).

    Recipes of iteration-based code (detectron2's ``SOLVER.MAX_ITER``/``STEPS``, CIRKD's ``--max-iterations``) give
    ``max_iters``, the total number of training iterations (training stops there, mid-epoch if need be, and the
    poly/cosine schedules run over it), and ``iter_milestones``, the iterations at which a step schedule decays
    (instead of ``milestones``); ``epochs`` must then cover ``max_iters``.

    Speed fields change how a job computes, so they are part of its identity like the rest:
    ``precision`` (``fp32`` | ``bf16`` | ``fp16`` autocast; ``auto``: bf16 on CUDA, fp32 elsewhere),
    ``channels_last`` (``None``: on for CUDA), ``compile`` (``off`` or a ``torch.compile`` mode) and
    ``data_pipeline`` (``device``: in-memory data sets live on the training device and are augmented there
    in batches; ``pil``: a per-sample DataLoader; ``auto``: ``device`` where the data set supports it).
    :meth:`resolved` turns the ``auto`` values into what a device will run; jobs only hold resolved recipes.
    ``eval_batch_size`` (default: the training batch) and ``num_workers`` change speed only.
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    #: weight decay on 1-D parameters (biases, normalisation weights) too; mdistiller: yes, DiffKD's ImageNet: no.
    weight_decay_1d: bool = True
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    poly_power: float = 0.9
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.001
    eval_every: int = 1
    num_workers: int = 2
    #: cap on training steps per epoch (smoke runs); part of a job's identity like every other field.
    max_steps: int | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    compile: str = "off"
    data_pipeline: str = "auto"
    #: BatchNorm statistics over the global batch when a job runs on several workers (``None``: the task's
    #: default, on for segmentation as published); no effect on one worker.
    sync_bn: bool | None = None
    eval_batch_size: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    max_iters: int | None = None
    iter_milestones: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        """Refuse values no run can use, with one line naming the field (they would crash much later)."""
        ints = {"epochs": 1, "batch_size": 1, "eval_every": 1, "num_workers": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))
            elif not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"recipe {name} must be an integer >= {low}, got {value!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise UserError(f"recipe max_steps must be an integer >= 1, got {self.max_steps!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "poly_power", "warmup_epochs", "warmup_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserError(f"recipe {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise UserError(f"recipe {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # 1 and 1.0 are the same recipe (and job hash)
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise UserError(
                f"recipe needs lr > 0 and momentum, weight_decay, warmup_epochs >= 0 (got lr={self.lr}, "
                f"momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"warmup_epochs={self.warmup_epochs})"
            )
        if self.schedule not in ("step", "poly", "cosine"):
            raise unknown("lr schedule", self.schedule, ("step", "poly", "cosine"))
        for name, valid in (("precision", PRECISIONS), ("compile", COMPILE_MODES), ("data_pipeline", PIPELINES)):
            if getattr(self, name) not in valid:
                raise unknown(f"recipe {name}", getattr(self, name), valid)
        for name in ("channels_last", "sync_bn"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise UserError(f"recipe {name} must be true, false or null (auto), got {getattr(self, name)!r}")
        ebs = self.eval_batch_size
        if ebs is not None and (not isinstance(ebs, int) or isinstance(ebs, bool) or ebs < 1):
            raise UserError(f"recipe eval_batch_size must be an integer >= 1, got {self.eval_batch_size!r}")
        object.__setattr__(self, "milestones", _whole_numbers("milestones", self.milestones))
        if self.max_iters is not None and (not isinstance(self.max_iters, int) or isinstance(self.max_iters, bool)
                                           or self.max_iters < 1):  # fmt: skip
            raise UserError(f"recipe max_iters must be an integer >= 1, got {self.max_iters!r}")
        object.__setattr__(self, "iter_milestones", _whole_numbers("iter_milestones", self.iter_milestones))
        if self.iter_milestones and self.milestones:
            raise UserError("recipe: give milestones (epochs) or iter_milestones (iterations), not both")
        holdout_of(self.extra)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["iter_milestones"] = list(self.iter_milestones)
        d["extra"] = dict(self.extra)
        return d

    def updated(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def resolved(self, device_type: str, resident: bool) -> Recipe:
        """The ``auto`` speed settings decided for a device (``cpu`` / ``cuda``) and data set.

        ``resident``: whether the data set can live on the device (in-memory sets). CPU keeps fp32 and
        contiguous tensors (what the official code ran, and the fastest there); CUDA gets bf16 autocast
        and channels_last. A job on a GPU without bf16 (before Ampere) should ask for ``fp16``.
        """
        cuda = device_type == "cuda"
        return replace(
            self,
            precision=("bf16" if cuda else "fp32") if self.precision == "auto" else self.precision,
            channels_last=cuda if self.channels_last is None else self.channels_last,
            data_pipeline=("device" if resident else "pil") if self.data_pipeline == "auto" else self.data_pipeline,
        )
