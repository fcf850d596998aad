"""The report's user errors, without importing torch.

:class:`methods.base.UserError` is what the CLI turns into one ``error:`` line, but importing anything
under ``methods`` imports torch (the package registers its methods on import), and ``bench.report``
must stay importable without it (a laptop reading a cluster's store). So the class is imported on the
error path only.
"""

from __future__ import annotations


def user_error(message: str) -> Exception:
    """A :class:`methods.base.UserError` carrying ``message`` (``raise user_error("...")``)."""
    from methods.base import UserError

    return UserError(message)
