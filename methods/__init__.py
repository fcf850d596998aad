"""Distillation methods: pure loss functions and small ``nn.Module`` methods over feature taps.

Each built-in method is one module (``kd``, ``dkd``, ``fitnet``, ``diffkd``) that registers its class with
:func:`register`; :mod:`methods.catalog` knows them, and what each accepts, without importing them (torch).
``vanilla`` (the student alone) is not a method but the absence of one, handled by the training loop. Methods
from outside diffbench register with :func:`register` too: a plugin module imported through the
``diffbench.methods`` entry point group or ``--import`` (see :mod:`bench.jobs.plugins` and the README's
example).

This package imports nothing until one of its names is used (PEP 562); the names that need no torch (tap specs,
:class:`Range`, :class:`UserError`) come from torch-free modules, so the CLI's ``--help`` never pays for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it: the API a plugin method needs.
_PUBLIC = {
    "METHODS": "methods.base",
    "Method": "methods.base",
    "Progress": "methods.taps",
    "Range": "methods.hparams",
    "TapSpec": "methods.taps",
    "UserError": "methods.errors",
    "build_method": "methods.base",
    "fetch": "methods.base",
    "paired_taps": "methods.taps",
    "register": "methods.base",
    "select_taps": "methods.taps",
    "upcast": "methods.base",
    "kd_loss": "methods.kd",
    "dkd_loss": "methods.dkd",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'methods' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from methods.base import METHODS, Method, build_method, fetch, register, upcast  # noqa: F401
    from methods.dkd import dkd_loss  # noqa: F401
    from methods.errors import UserError  # noqa: F401
    from methods.hparams import Range  # noqa: F401
    from methods.kd import kd_loss  # noqa: F401
    from methods.taps import Progress, TapSpec, paired_taps, select_taps  # noqa: F401
