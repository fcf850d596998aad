"""Distillation methods: pure loss functions and small ``nn.Module`` methods over feature taps.

The registry (:data:`METHODS`, in :mod:`methods.base`) holds the built-in methods (``kd``, ``dkd``,
``fitnet``, ``diffkd``: each module registers itself, and :mod:`methods.base` imports them once it has
defined the registry); ``vanilla`` (the student alone) is not a method but the absence of one, handled by
the training loop. Methods from outside diffbench register with :func:`register` too: a plugin module
imported through the ``diffbench.methods`` entry point group or ``--import`` (see :mod:`bench.jobs.plugins`
and the README's example).

This package imports nothing until one of its names is used (PEP 562), so ``methods.errors`` and the
CLI's ``--help`` do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it: the API a plugin method needs.
_PUBLIC = {
    "METHODS": "methods.base",
    "Method": "methods.base",
    "Progress": "methods.base",
    "Range": "methods.base",
    "TapSpec": "methods.base",
    "UserError": "methods.base",
    "build_method": "methods.base",
    "fetch": "methods.base",
    "paired_taps": "methods.base",
    "register": "methods.base",
    "select_taps": "methods.base",
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
    from methods.base import (  # noqa: F401
        METHODS,
        Method,
        Progress,
        Range,
        TapSpec,
        UserError,
        build_method,
        fetch,
        paired_taps,
        register,
        select_taps,
        upcast,
    )
    from methods.dkd import dkd_loss  # noqa: F401
    from methods.kd import kd_loss  # noqa: F401
