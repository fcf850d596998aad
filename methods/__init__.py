"""Distillation methods: pure loss functions and small ``nn.Module`` methods over feature taps.

Importing this package registers every method (``kd``, ``dkd``, ``fitnet``, ``diffkd``); ``vanilla``
(the student alone) is not a method but the absence of one, handled by the training loop.
"""

from methods.base import METHODS, Method, Progress, TapSpec, UserError, build_method, register, select_taps

__all__ = ["METHODS", "Method", "Progress", "TapSpec", "UserError", "build_method", "register", "select_taps"]

# Registration side effects; each module imports only torch and methods.base.
for _mod in ("kd", "dkd", "fitnet", "diffkd"):
    try:
        __import__(f"methods.{_mod}")
    except ModuleNotFoundError as _err:  # pragma: no cover - only while a method file is being written
        if _err.name != f"methods.{_mod}":
            raise
