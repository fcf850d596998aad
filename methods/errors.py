"""The one exception a user's input causes (kept free of torch, so the CLI can raise and catch it cheaply)."""

from __future__ import annotations


class UserError(ValueError):
    """An error the user caused (unknown name, bad file, impossible combination).

    The CLI prints ``str(err)`` as one line and exits non-zero, without a traceback. Everything below
    ``bench`` raises this for input problems so the message can name what is wrong and what is valid.
    """
