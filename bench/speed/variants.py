"""What ``diffbench speed`` varies and what every step benchmark shares: speed variants (precision, memory format,
compilation) resolved for a device, the argument checks, and the batch in the variant's memory format."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.jobs.spec import VANILLA
from methods.errors import UserError, unknown
from tasks.recipe import COMPILE_MODES, Recipe

#: ``--channels-last`` / ``--compile`` spellings of the CLI, as recipe values.
_CHANNELS_LAST = {"auto": None, "on": True, "off": False, "true": True, "false": False}
_COMPILE_ALIASES = {"on": "default", "true": "default", "false": "off"}
#: Steps a row runs per timed block on CUDA (see the module docstring).
INNER_CUDA = 10


@dataclass(frozen=True)
class Variant:
    """One speed setting of a job, resolved for a device: what ``Recipe.resolved`` would run."""

    precision: str
    channels_last: bool
    compile: str = "off"

    @property
    def label(self) -> str:
        """``bf16 cl compile`` style name (``fp32`` for the plain reproduction setting)."""
        parts = [self.precision] + (["cl"] if self.channels_last else [])
        if self.compile != "off":
            parts.append("compile" if self.compile == "default" else f"compile:{self.compile}")
        return " ".join(parts)


def expand_variants(
    precisions: Sequence[str] = ("auto",),
    channels_last: Sequence[str | bool | None] = ("auto",),
    compiles: Sequence[str] = ("off",),
    device_type: str = "cpu",
) -> list[Variant]:
    """The cartesian product of the given settings, ``auto`` resolved for ``device_type``, duplicates dropped.

    Args:
        precisions: ``auto``, ``fp32``, ``bf16``, ``fp16``.
        channels_last: ``auto``, ``on``, ``off`` (or ``True``/``False``/``None``).
        compiles: ``off``, ``on`` (= ``default``) or a ``torch.compile`` mode.
        device_type: ``cpu`` or ``cuda`` (decides the ``auto`` values, as for a training job).
    """
    cls_: list[bool | None] = []
    for v in channels_last or ("auto",):
        key = v if isinstance(v, bool) or v is None else str(v).lower()
        if key not in (True, False, None) and key not in _CHANNELS_LAST:
            raise unknown("--channels-last value", v, ("auto", "on", "off"))
        cls_.append(key if key in (True, False, None) else _CHANNELS_LAST[key])  # type: ignore[index]
    comps = [_COMPILE_ALIASES.get(c, c) for c in (compiles or ("off",))]
    for c in comps:
        if c not in COMPILE_MODES:
            raise unknown("--compile mode", c, ("off", "on", *COMPILE_MODES[1:]))
    for p in precisions or ("auto",):
        if p not in ("auto", "fp32", "bf16", "fp16"):
            raise unknown("--precision", p, ("auto", "fp32", "bf16", "fp16"))
    out: list[Variant] = []
    for p, cl, c in itertools.product(precisions or ("auto",), cls_, comps):
        r = Recipe(epochs=1, batch_size=1, lr=1.0, precision=p, channels_last=cl, compile=c).resolved(device_type, True)
        v = Variant(r.precision, bool(r.channels_last), r.compile)
        if v not in out:
            out.append(v)
    return out


def to_memory_format(batch: Any, channels_last: bool) -> Any:
    """The synthetic batch as the training pipeline hands it over: NHWC images for channels_last jobs."""
    if channels_last and isinstance(batch, tuple | list) and isinstance(batch[0], torch.Tensor) and batch[0].ndim == 4:
        return (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
    return batch


def check_args(
    methods: Sequence[str], teacher: str | None, batch_size: int, steps: int, warmup: int, inner: int | None
) -> None:
    """The arguments every step benchmark shares, refused in one line each."""
    if not methods:
        raise UserError("no methods to time")
    if any(m != VANILLA for m in methods) and teacher is None:
        raise UserError("--teacher is needed to time distillation methods")
    if batch_size < 1 or steps < 1 or warmup < 0 or (inner is not None and inner < 1):
        raise UserError("--batch-size, --steps and --inner must be >= 1 and --warmup >= 0")
