"""Hyper-parameters of a method, declared once in its constructor's signature and checked without torch.

``temperature: Annotated[float, Range(gt=0)] = 4.0`` is the single declaration: the signature gives the name,
type and default, :class:`Range` the bounds. :func:`check_value` checks a grid's settings against them before
anything trains, so a bad value is one line, never a job crash. The declarations are read from the source of the
built-in methods (:mod:`methods.catalog`) or from a plugin's live class (:func:`from_signature`).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

from methods.errors import UserError


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric hyper-parameter, next to its type in the method's constructor.

    ``temperature: Annotated[float, Range(gt=0)] = 4.0``.
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


#: The constructor parameters every method has that are not hyper-parameters.
NOT_HPARAMS = ("self", "student_taps", "teacher_taps")


@dataclass(frozen=True)
class HParam:
    """One declared hyper-parameter: its type hint (``Annotated`` stripped), default and bounds."""

    name: str
    hint: Any
    default: Any = None
    has_default: bool = True
    ranges: tuple[Range, ...] = ()
    #: further ``Annotated`` metadata (e.g. a search space), in declaration order.
    meta: tuple[Any, ...] = field(default=())

    @classmethod
    def of(cls, name: str, hint: Any, default: Any = None, has_default: bool = True) -> HParam:
        """An :class:`HParam` from a (possibly ``Annotated``) type hint."""
        meta: tuple[Any, ...] = ()
        if get_origin(hint) is Annotated:
            hint, *rest = get_args(hint)
            meta = tuple(rest)
        ranges = tuple(m for m in meta if isinstance(m, Range))
        return cls(name, hint, default, has_default, ranges, tuple(m for m in meta if not isinstance(m, Range)))


def from_signature(init: Callable[..., Any]) -> dict[str, HParam]:
    """The hyper-parameters of a live constructor (a plugin's method class), in signature order."""
    import inspect

    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except (NameError, TypeError):  # an annotation that cannot be resolved: check names only
        hints = {}
    out = {}
    for name, p in inspect.signature(init).parameters.items():
        if name in NOT_HPARAMS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        has = p.default is not inspect.Parameter.empty
        out[name] = HParam.of(name, hints.get(name, Any), p.default if has else None, has)
    return out


def _type_name(tp: Any) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def check_value(method: str, hp: HParam, value: Any) -> None:
    """Raise :class:`UserError` unless ``value`` fits ``hp`` (a type, ``X | None``, a ``Literal``, its ranges)."""
    key, hint = hp.name, hp.hint
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
    for r in hp.ranges:
        why = r.violation(value)
        if why:
            raise UserError(f"method {method!r}: {key} {why}, got {value!r}")


def check(method: str, declared: Mapping[str, HParam], values: Mapping[str, Any]) -> None:
    """Refuse unknown names (with a "did you mean"), wrong types, non-finite and out-of-range values."""
    from methods.errors import unknown

    names = sorted(set(values) - set(declared))
    if names:
        err = unknown("hyper-parameter(s)", names if len(names) > 1 else names[0], sorted(declared))
        raise UserError(f"method {method!r}: {err}")
    for key, value in values.items():
        check_value(method, declared[key], value)
