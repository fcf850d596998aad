"""The one exception a user's input causes, and the one way to refuse an unknown name (both free of torch, so the
CLI can raise and catch them cheaply)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """An error the user caused (unknown name, bad file, impossible combination).

    The CLI prints ``str(err)`` as one line and exits non-zero, without a traceback. Everything below
    ``bench`` raises this for input problems so the message can name what is wrong and what is valid.
    """


def close_matches(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``valid`` that look like ``name`` (case-insensitive; ``difflib``'s ratio >= 0.6)."""
    valid = list(valid)
    by_lower = {v.lower(): v for v in valid}
    return [by_lower[m] for m in difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.6)]


def did_you_mean(names: object, valid: Iterable[str]) -> str:
    """``"; did you mean 'kd'?"`` when ``valid`` holds names close to ``names`` (one name, or a list: a guess for
    each, ``'kd' for 'kdd'``), else ``""``: the suggestion every refusal of a typed name ends with."""
    valid = [str(v) for v in valid]
    names = list(names) if isinstance(names, (list, tuple)) else [names]
    guesses = []
    for n in names:
        close = close_matches(str(n), valid)
        if close:
            guesses.append(" or ".join(repr(c) for c in close) + (f" for {str(n)!r}" if len(names) > 1 else ""))
    return f"; did you mean {', '.join(guesses)}?" if guesses else ""


def unknown(what: str, name: object, valid: Iterable[str], hint: str = "") -> UserError:
    """``unknown method 'kdd'; did you mean 'kd'? valid: kd, dkd, ...`` as a :class:`UserError`: the one way every
    name a user types (method, task, data set, arch, preset, hyper-parameter, executor, format...) is refused.

    Args:
        what: what the name names (``method``, ``task``, ``dataset for task 'detection'``, ``--precision``).
        name: what the user typed; a list or tuple of several unknown names gets a guess for each.
        valid: every accepted name, in the order to show them.
        hint: text appended after the list (e.g. ``(or timm/<model> with timm installed)``).
    """
    valid = [str(v) for v in valid]
    names = list(name) if isinstance(name, (list, tuple)) else [name]
    guess = did_you_mean(names, valid)
    shown = ", ".join(repr(str(n)) if len(names) > 1 else repr(n) for n in names)
    listed = f" valid: {', '.join(valid)}" if valid else ""
    return UserError(f"unknown {what} {shown}{guess}{';' if not guess and listed else ''}{listed}"
                     f"{' ' + hint if hint else ''}")  # fmt: skip


def first_line(err: BaseException | str, limit: int = 300, last: bool = False) -> str:
    """The first (or, with ``last``, the last) non-empty line of an error's message, cut to ``limit`` characters;
    the exception's type name when the message is empty. What a one-line error shows of a long traceback text."""
    lines = [x for x in str(err).strip().splitlines() if x.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else ""
    return (lines[-1] if last else lines[0])[:limit]
