"""The method contract: what a distillation method is given and what it returns.

A method is small (mdistiller's ``Distiller`` without the models): an ``nn.Module`` built from the
student's and teacher's *tap specs* plus its hyper-parameters. Called with the captured tensors it
returns a dict of named, already weighted loss terms. Its own learnable extras (FitNet's regressor,
DiffKD's diffusion model) are its parameters: the training loop optimises them with the student and
drops them when it exports the student.

Methods know nothing of tasks. A task describes its taps with :class:`TapSpec` and hands the method
tensors in two shapes only:

* ``feature`` / ``hint`` taps: ``[N, C, H, W]`` feature maps;
* ``logits`` taps: ``[N, K]`` class scores, one row per *sample* being classified (an image, a
  region proposal, a valid pixel), with the matching integer ``target`` of shape ``[N]``.

That is why per-pixel segmentation KD and box-head detection KD are the classification losses
applied to the rows a task flattened out: the method cannot tell them apart.
"""

from __future__ import annotations

import importlib
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, get_args, get_origin

import torch
from torch import nn

from methods.errors import UserError

#: Roles a tap can play. ``hint``: FitNet's hint layer; ``feature``: the feature map(s) DiffKD
#: denoises; ``logits``: class scores.
ROLES = ("hint", "feature", "logits")


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if autocast made it float16/bfloat16, else unchanged (float64 stays float64).

    Losses call it on their inputs: softmaxes and squared errors in half precision lose what KD measures.
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@dataclass(frozen=True)
class TapSpec:
    """Where a tensor is captured and what it looks like, without running the model.

    Like detectron2's ``ShapeSpec``: methods build their adapters from it.

    Attributes:
        name: the tap's name within its model (``"hint"``, ``"feat"``, ``"logits"``, ``"fpn.p3"``).
        channels: channels of a feature map, or number of classes for logits.
        stride: spatial reduction relative to the input image (0 for logits).
        roles: which roles in :data:`ROLES` this tap can play.
        module: the dotted module path the forward hook sits on (informative for methods).
    """

    name: str
    channels: int
    stride: int
    roles: tuple[str, ...]
    module: str = ""

    def __post_init__(self) -> None:
        bad = [r for r in self.roles if r not in ROLES]
        if bad:
            raise ValueError(f"tap {self.name!r}: unknown role(s) {bad}; valid: {', '.join(ROLES)}")


@dataclass(frozen=True)
class Progress:
    """Where training is, for warm-ups and schedules.

    ``epoch`` is 1-based like mdistiller's (``min(epoch / warmup, 1)`` reaches 1 at ``epoch == warmup``).
    """

    epoch: int = 1
    epochs: int = 1
    step: int = 0
    steps_per_epoch: int = 1


def select_taps(specs: Mapping[str, TapSpec], role: str) -> dict[str, TapSpec]:
    """The taps of ``specs`` that can play ``role``, in declaration order."""
    return {name: spec for name, spec in specs.items() if role in spec.roles}


def paired_taps(
    method: str, student_taps: Mapping[str, TapSpec], teacher_taps: Mapping[str, TapSpec], role: str
) -> list[str]:
    """Names of the student's ``role`` taps, each of which the teacher must have too (declaration order).

    :class:`Method` already refuses a pair with no tap of a consumed role at all; a student tap the
    teacher lacks would silently drop a loss term, so it is an error as well.
    """
    s_taps, t_taps = select_taps(student_taps, role), select_taps(teacher_taps, role)
    missing = [n for n in s_taps if n not in t_taps]
    if missing:
        raise UserError(
            f"method {method!r}: teacher has no {role} tap {missing[0]!r} "
            f"(teacher {role} taps: {', '.join(t_taps) or 'none'})"
        )
    return list(s_taps)


def fetch(method: str, tensors: Mapping[str, torch.Tensor], name: str, who: str) -> torch.Tensor:
    """``tensors[name]`` or a :class:`UserError` saying which model's forward did not capture the tap."""
    try:
        return tensors[name]
    except KeyError:
        raise UserError(
            f"method {method!r}: the {who} forward captured no tap {name!r} (captured: {', '.join(tensors) or 'none'})"
        ) from None


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
    """Name → method class. Fails loudly on duplicates and unknown names."""

    def __init__(self) -> None:
        self._entries: dict[str, type[Method]] = {}

    def register(self, cls: type[Method]) -> type[Method]:
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no name")
        if cls.name in self._entries:
            raise ValueError(f"method {cls.name!r} registered twice")
        self._entries[cls.name] = cls
        return cls

    def get(self, name: str) -> type[Method]:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(f"unknown method {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)


METHODS = _Registry()

#: Decorator that registers a :class:`Method` subclass under its ``name``.
register: Callable[[type[Method]], type[Method]] = METHODS.register


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric hyper-parameter, declared once, next to its type, in the method's constructor.

    ``temperature: Annotated[float, Range(gt=0)] = 4.0`` is the single declaration: the constructor's
    signature gives the name, type and default, this gives the bounds, and :func:`check_hparams` checks a
    grid's settings against them before anything trains (a bad value is one line, never a job crash).
    """

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def violation(self, value: float) -> str | None:
        """Why ``value`` is out of range (``"must be > 0"``), or ``None`` if it is inside."""
        for bound, op, ok in (
            (self.gt, ">", lambda b: value > b),
            (self.ge, ">=", lambda b: value >= b),
            (self.lt, "<", lambda b: value < b),
            (self.le, "<=", lambda b: value <= b),
        ):
            if bound is not None and not ok(bound):
                return f"must be {op} {bound:g}"
        return None


#: Constructor parameters every method has that are not hyper-parameters.
_NOT_HPARAMS = ("self", "student_taps", "teacher_taps")


def _signature_params(name: str) -> dict[str, Any]:
    import inspect

    params = inspect.signature(METHODS.get(name).__init__).parameters
    return {k: p for k, p in params.items() if k not in _NOT_HPARAMS}


def _hparam_types(name: str) -> dict[str, Any]:
    """Resolved (``Annotated``-preserving) type hints of method ``name``'s constructor."""
    cls = METHODS.get(name)
    try:
        return typing.get_type_hints(cls.__init__, include_extras=True)
    except (NameError, TypeError):  # an annotation that cannot be resolved: check names only
        return {}


def accepted_hparams(name: str) -> set[str]:
    """The hyper-parameter names method ``name`` accepts (its constructor's keywords)."""
    return set(_signature_params(name))


def default_hparams(name: str) -> dict[str, Any]:
    """The constructor defaults of method ``name``: what a job uses for anything not set otherwise."""
    import inspect

    return {k: p.default for k, p in _signature_params(name).items() if p.default is not inspect.Parameter.empty}


def _type_name(tp: Any) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _check_value(method: str, key: str, value: Any, hint: Any) -> None:
    """Raise :class:`UserError` unless ``value`` fits ``hint`` (a type, ``X | None``, ``Annotated[X, Range]``)."""
    ranges: list[Range] = []
    if get_origin(hint) is Annotated:
        hint, *meta = get_args(hint)
        ranges = [m for m in meta if isinstance(m, Range)]
    if get_origin(hint) is typing.Literal:
        if value not in get_args(hint) or isinstance(value, bool):
            valid = ", ".join(map(str, get_args(hint)))
            raise UserError(f"method {method!r}: {key} must be one of {valid}, got {value!r}")
        return
    options = get_args(hint) if get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return
        raise UserError(f"method {method!r}: {key} must be set, got null")
    simple = [t for t in options if t in (bool, int, float, str)]
    if not simple or len(simple) < len([t for t in options if t is not type(None)]):
        return  # a structured type (e.g. a size list): the constructor checks it
    is_bool = isinstance(value, bool)
    fits = (
        (bool in simple and is_bool)
        or (int in simple and isinstance(value, int) and not is_bool)
        or (float in simple and isinstance(value, int | float) and not is_bool)
        or (str in simple and isinstance(value, str))
    )
    if not fits:
        want = " or ".join(_type_name(t) for t in simple)
        raise UserError(f"method {method!r}: {key} must be {want}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"method {method!r}: {key} must be a finite number, got {value!r}")
    for r in ranges:
        why = r.violation(value)
        if why:
            raise UserError(f"method {method!r}: {key} {why}, got {value!r}")


def check_hparams(name: str, hparams: Mapping[str, Any]) -> None:
    """Refuse unknown names, wrong types, non-finite numbers and out-of-range values, one line each.

    The declaration is the constructor's signature (:class:`Range` in ``Annotated`` for bounds), so a
    ``--set kd.temperature=abc`` or ``--set dkd.beta=-1`` is refused when the grid is expanded, not as a
    crash inside a job that Ray would then retry.
    """
    accepted = accepted_hparams(name)
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise UserError(
            f"method {name!r} has no hyper-parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(accepted))}"
        )
    hints = _hparam_types(name)
    for key, value in hparams.items():
        if key in hints:
            _check_value(name, key, value, hints[key])


def build_method(
    name: str,
    student_taps: Mapping[str, TapSpec],
    teacher_taps: Mapping[str, TapSpec],
    **hparams: Any,
) -> Method:
    """Build the method ``name``; unknown hyper-parameters are a :class:`UserError`."""
    check_hparams(name, hparams)
    return METHODS.get(name)(student_taps, teacher_taps, **hparams)


#: The built-in methods, one module each. Imported here, once the registry exists, so that importing any part
#: of ``methods`` registers all of them before a plugin can register (and collide with) a name.
BUILTIN_METHODS = ("kd", "dkd", "fitnet", "diffkd")
for _mod in BUILTIN_METHODS:
    importlib.import_module(f"methods.{_mod}")
