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


def unknown(what: str, name: object, valid: Iterable[str], hint: str = "") -> UserError:
    """``unknown method 'kdd'; did you mean 'kd'? valid: kd, dkd, ...`` as a :class:`UserError`.

    Args:
        what: what the name names (``method``, ``task``, ``dataset for task 'detection'``).
        name: what the user typed.
        valid: every accepted name, in the order to show them.
        hint: text appended after the list (e.g. ``(or timm/<model> with timm installed)``).
    """
    valid = list(valid)
    close = close_matches(str(name), valid)
    guess = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = f" valid: {', '.join(valid)}" if valid else ""
    return UserError(f"unknown {what} {name!r}{guess}{';' if not guess and listed else ''}{listed}"
                     f"{' ' + hint if hint else ''}")  # fmt: skip


def first_line(err: BaseException | str, limit: int = 300, last: bool = False) -> str:
    """The first (or, with ``last``, the last) non-empty line of an error's message, cut to ``limit`` characters;
    the exception's type name when the message is empty. What a one-line error shows of a long traceback text."""
    lines = [x for x in str(err).strip().splitlines() if x.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else ""
    return (lines[-1] if last else lines[0])[:limit]
