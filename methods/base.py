"""The method contract: what a distillation method is given and what it returns.

A method is small (mdistiller's ``Distiller`` without the models): an ``nn.Module`` built from the
student's and teacher's *tap specs* plus its hyper-parameters. Called with the captured tensors it
returns a dict of named, already weighted loss terms. Its own learnable extras (FitNet's regressor,
DiffKD's diffusion model) are its parameters: the training loop optimises them with the student and
drops them when it exports the student.

Methods know nothing of tasks: a task describes its taps with :class:`~methods.taps.TapSpec` and hands the
method ``[N, C, H, W]`` maps and ``[N, K]`` logits rows (see :mod:`methods.taps`). That is why per-pixel
segmentation KD and box-head detection KD are the classification losses applied to the rows a task
flattened out: the method cannot tell them apart.

This module needs torch; what can be known without it (tap specs, hyper-parameter declarations and checks,
which methods exist) lives in :mod:`methods.taps`, :mod:`methods.hparams` and :mod:`methods.catalog`, and is
re-exported here for plugins.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from methods import catalog
from methods.catalog import accepted_hparams, check_hparams, default_hparams
from methods.errors import UserError
from methods.hparams import Choice, IntUniform, LogUniform, Range, Uniform, from_signature
from methods.taps import ROLES, Progress, TapSpec, paired_taps, select_taps


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if autocast made it float16/bfloat16, else unchanged (float64 stays float64).

    Losses call it on their inputs: softmaxes and squared errors in half precision lose what KD measures.
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class Method(nn.Module):
    """Base class of every distillation method.

    Subclasses set ``name`` (the CLI name), ``consumes`` (the roles they need; the builder refuses a
    pair whose taps lack one) and implement :meth:`forward`.

    Args:
        student_taps: the student's tap specs (all of them; the method picks by role).
        teacher_taps: the teacher's tap specs, same names as the student's.

    Attributes:
        task_weight: weight the training loop puts on the task's own loss (CE, detector losses).
            KD on CIFAR uses 0.1 (mdistiller's ``CE_WEIGHT``); most methods keep 1.0.
    """

    name: ClassVar[str] = ""
    consumes: ClassVar[tuple[str, ...]] = ()
    task_weight: float = 1.0

    def __init__(self, student_taps: Mapping[str, TapSpec], teacher_taps: Mapping[str, TapSpec]) -> None:
        super().__init__()
        for role in self.consumes:
            if not select_taps(student_taps, role) or not select_taps(teacher_taps, role):
                have = sorted({r for s in student_taps.values() for r in s.roles})
                raise UserError(
                    f"method {self.name!r} needs a {role!r} tap, which this pair does not provide "
                    f"(available roles: {', '.join(have) or 'none'})"
                )
        self.student_taps = dict(student_taps)
        self.teacher_taps = dict(teacher_taps)

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor],
        target: torch.Tensor | None,
        progress: Progress,
    ) -> dict[str, torch.Tensor]:
        """Return the weighted loss terms, e.g. ``{"kd": ..., "diff": ..., "ae": ...}``.

        Args:
            student: captured student tensors by tap name.
            teacher: captured teacher tensors by tap name (computed under ``no_grad``).
            target: integer labels matching the rows of the ``logits`` tap, or ``None``.
            progress: the training position, for warm-ups.
        """
        raise NotImplementedError


class _Registry:
    """Name → method class. Built-in classes are imported on first use (their descriptions need no import:
    :mod:`methods.catalog`); a plugin's class registers when its module is imported. Fails loudly on
    duplicates and unknown names."""

    def __init__(self) -> None:
        self._entries: dict[str, type[Method]] = {}

    def register(self, cls: type[Method]) -> type[Method]:
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no name")
        if cls.name in self._entries:
            raise ValueError(f"method {cls.name!r} registered twice")
        if not (cls.name in catalog.BUILTIN and cls.__module__ == f"methods.{cls.name}"):
            summary = (cls.__doc__ or "").strip().splitlines()
            catalog.add_plugin(catalog.MethodInfo(cls.name, summary[0] if summary else "", tuple(cls.consumes),
                                                  from_signature(cls.__init__), cls.__module__, builtin=False))
        self._entries[cls.name] = cls
        return cls

    def get(self, name: str) -> type[Method]:
        if name not in self._entries:
            catalog.method_info(name)  # an unknown name: one line naming the valid ones
            importlib.import_module(f"methods.{name}")  # a built-in method: its module registers the class
        return self._entries[name]

    def names(self) -> list[str]:
        return catalog.method_names()


METHODS = _Registry()

#: Decorator that registers a :class:`Method` subclass under its ``name``.
register: Callable[[type[Method]], type[Method]] = METHODS.register


def build_method(
    name: str,
    student_taps: Mapping[str, TapSpec],
    teacher_taps: Mapping[str, TapSpec],
    **hparams: Any,
) -> Method:
    """Build the method ``name``; unknown hyper-parameters are a :class:`UserError`."""
    check_hparams(name, hparams)
    return METHODS.get(name)(student_taps, teacher_taps, **hparams)


def fetch(method: str, tensors: Mapping[str, torch.Tensor], name: str, who: str) -> torch.Tensor:
    """``tensors[name]`` or a :class:`UserError` saying which model's forward did not capture the tap."""
    try:
        return tensors[name]
    except KeyError:
        raise UserError(
            f"method {method!r}: the {who} forward captured no tap {name!r} (captured: {', '.join(tensors) or 'none'})"
        ) from None


__all__ = [
    "METHODS",
    "ROLES",
    "Choice",
    "IntUniform",
    "LogUniform",
    "Method",
    "Progress",
    "Range",
    "Uniform",
    "TapSpec",
    "UserError",
    "accepted_hparams",
    "build_method",
    "check_hparams",
    "default_hparams",
    "fetch",
    "paired_taps",
    "register",
    "select_taps",
    "upcast",
]
