"""Numbers from flags, ``--set`` and YAML, read one way: what Python's ``float()`` reads is a number.

Three readers used to disagree. Click read ``--lr 1e-4``; YAML 1.1 (PyYAML) reads ``1e-4``, ``1e30`` and ``1.0e30``
as *strings* (its float needs a dot and a signed exponent), so ``--set recipe.weight_decay=1e-4`` — the README's
own example — was refused; and a YAML list or boolean slipped through a flag's conversion (``epochs: [3]`` became
3, ``epochs: true`` became 1). Every numeric value now goes through :func:`number`, which accepts what ``float()``
accepts, refuses booleans and lists where a number is expected, and checks ranges, before anything starts.

Imports neither torch nor Ray.
"""

from __future__ import annotations

import math
from typing import Any

from methods.errors import UserError

#: The largest seed: NumPy's and Python's seeding take 32-bit seeds.
SEED_MAX = 2**32 - 1


def _shown(value: Any) -> str:
    """How a refused value is quoted: YAML's spelling for booleans and null, ``repr`` otherwise."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, list | tuple):
        return f"a list {list(value)!r}"
    if isinstance(value, dict):
        return f"a mapping {value!r}"
    return repr(value)


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _read(text: str) -> int | float | None:
    """``text`` as ``int()`` reads it (exact for large integers), else as ``float()`` reads it, else ``None``."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def number(
    value: Any,
    what: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    finite: bool = True,
) -> int | float:
    """``value`` as a number, or one :class:`UserError` line naming ``what`` and the value.

    Args:
        value: an int or float, or text ``float()`` reads (``"1e-4"``, ``" 3 "``, ``"1e30"``); booleans, lists,
            mappings and ``None`` are refused.
        what: the name in the message (``"recipe lr"``, ``"--seeds"``).
        integer: the value must be a whole number (``"1e3"`` and ``3.0`` are, ``2.5`` is not); returns an int.
        low, high: inclusive bounds.
        finite: refuse NaN and infinities.
    """
    want = "an integer" if integer else "a number"
    bounds = (f" >= {_bound(low)}" if low is not None else "") + (f" <= {_bound(high)}" if high is not None else "")
    if low is not None and high is not None:
        bounds = f" within {_bound(low)}..{_bound(high)}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"{what} must be {want}{bounds}, got {_shown(value)}")
    parsed = _read(value) if isinstance(value, str) else value
    if parsed is None:
        raise UserError(f"{what} must be {want}{bounds}, got {_shown(value)}")
    if finite and isinstance(parsed, float) and not math.isfinite(parsed):
        raise UserError(f"{what} must be a finite number, got {_shown(value)}")
    if integer and isinstance(parsed, float):
        if not (math.isfinite(parsed) and parsed.is_integer()):
            raise UserError(f"{what} must be {want}{bounds}, got {_shown(value)}")
        parsed = int(parsed)
    if (low is not None and parsed < low) or (high is not None and parsed > high):
        raise UserError(f"{what} must be {want}{bounds}, got {_shown(value)}")
    return parsed


def scalar(value: Any) -> Any:
    """A ``--set`` value after YAML read it: text that ``float()`` reads becomes that number, the rest is unchanged.

    ``1e-4`` → ``0.0001``, ``1e30`` → ``1e30``, ``"3"`` → ``3``; ``"cosine"`` stays text, ``true`` stays a boolean.
    Lists are read element by element (``[1e2, 2e2]`` → ``[100, 200]``).
    """
    if isinstance(value, str):
        parsed = _read(value)
        return value if parsed is None else parsed
    if isinstance(value, list):
        return [scalar(v) for v in value]
    return value


def seed(value: Any, what: str = "--seed") -> int:
    """A random seed: an integer within 0..2^32-1 (what NumPy and every worker can be seeded with)."""
    return int(number(value, what, integer=True, low=0, high=SEED_MAX))
