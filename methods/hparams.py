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


# -- search spaces (``diffbench tune``) ---------------------------------------------------------------------------
# Declared next to the Range, as further ``Annotated`` metadata:
# ``beta: Annotated[float, Range(ge=0), LogUniform(1, 16)] = 8.0``. Free of torch and Ray; the search turns them into
# Ray Tune's sampling objects when it starts (:mod:`bench.execute.tune`).


@dataclass(frozen=True)
class Space:
    """Where a search draws one hyper-parameter from. Subclasses: :class:`Uniform`, :class:`LogUniform`,
    :class:`IntUniform`, :class:`Choice`."""

    def values_at_bounds(self) -> tuple[Any, ...]:
        """The values a range check must accept for the whole space to lie inside it (its ends, or its choices)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The space as ``--space`` writes it: ``loguniform(1, 16)``."""
        raise NotImplementedError


    def is_numeric(self) -> bool:
        return True


def _check_bounds(kind: str, low: float, high: float) -> None:
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise UserError(f"{kind}({low!r}, {high!r}): the bounds must be finite numbers")
    if not low < high:
        raise UserError(f"{kind}({low:g}, {high:g}): the lower bound must be below the upper one")


@dataclass(frozen=True)
class Uniform(Space):
    """A number drawn uniformly from ``[low, high]``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds("uniform", self.low, self.high)

    def values_at_bounds(self) -> tuple[Any, ...]:
        return (float(self.low), float(self.high))

    def describe(self) -> str:
        return f"uniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class LogUniform(Space):
    """A number drawn uniformly in log space from ``[low, high]`` (``0 < low``): for weights and temperatures
    whose scale is unknown."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds("loguniform", self.low, self.high)
        if self.low <= 0:
            raise UserError(f"loguniform({self.low:g}, {self.high:g}): the lower bound must be > 0")

    def values_at_bounds(self) -> tuple[Any, ...]:
        return (float(self.low), float(self.high))

    def describe(self) -> str:
        return f"loguniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class IntUniform(Space):
    """An integer drawn uniformly from ``low .. high``, both included."""

    low: int
    high: int

    def __post_init__(self) -> None:
        for v in (self.low, self.high):
            if isinstance(v, bool) or not isinstance(v, int):
                raise UserError(f"intuniform({self.low!r}, {self.high!r}): the bounds must be integers")
        if not self.low < self.high:
            raise UserError(f"intuniform({self.low}, {self.high}): the lower bound must be below the upper one")

    def values_at_bounds(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def describe(self) -> str:
        return f"intuniform({self.low}, {self.high})"


@dataclass(frozen=True)
class Choice(Space):
    """One of a few values, drawn with equal probability: ``Choice(1, 3, 5)``."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        if len(values) == 1 and isinstance(values[0], list | tuple):
            values = tuple(values[0])
        if len(values) < 2:
            raise UserError(f"choice{values!r}: give at least two values")
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"choice{values!r}: a value is given twice")
        object.__setattr__(self, "values", tuple(values))

    def values_at_bounds(self) -> tuple[Any, ...]:
        return self.values

    def describe(self) -> str:
        return f"choice({', '.join(map(repr, self.values))})"


    def is_numeric(self) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.values)


#: The names ``--space`` accepts, and the class each builds.
SPACE_KINDS: dict[str, type[Space]] = {
    "uniform": Uniform,
    "loguniform": LogUniform,
    "intuniform": IntUniform,
    "randint": IntUniform,
    "choice": Choice,
}


def space_of(hp: HParam) -> Space | None:
    """The search space declared for ``hp`` (its ``Annotated`` metadata), or ``None``: not tuned by default."""
    found = [m for m in hp.meta if isinstance(m, Space)]
    if len(found) > 1:
        raise ValueError(f"hyper-parameter {hp.name!r} declares {len(found)} search spaces; declare one")
    return found[0] if found else None


def check_space(method: str, hp: HParam, space: Space) -> None:
    """Refuse a space that could draw a value the hyper-parameter does not accept (its type, its ranges), in one line.

    Both ends of a continuous space (or every choice) are checked with :func:`check_value`; an integer
    hyper-parameter takes :class:`IntUniform` or integer choices only.
    """
    options = get_args(hp.hint) if get_origin(hp.hint) in (typing.Union, types.UnionType) else (hp.hint,)
    if isinstance(space, Uniform | LogUniform) and int in options and float not in options:
        raise UserError(
            f"method {method!r}: {hp.name} is an integer; give intuniform(a, b) or choice(...), not {space.describe()}"
        )
    for value in space.values_at_bounds():
        try:
            check_value(method, hp, value)
        except UserError as err:
            raise UserError(
                f"--space {method}.{hp.name}={space.describe()} lies outside what {hp.name} accepts: {err}"
            ) from None
