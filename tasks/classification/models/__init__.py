"""Classification models: mdistiller's CIFAR zoo, torchvision ResNets and mdistiller's MobileNetV1.

One file per family; :mod:`.arch` is the torch-free table of names and taps (``arch_names``, ``get_arch``,
``tap_specs``), :mod:`.zoo` the registry the task builds from (``build``, ``validate_taps``, ``register_arch``).
Names are imported on first use (PEP 562), so importing :mod:`.arch` through this package costs no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_PUBLIC = {
    "ARCHS": "tasks.classification.models.arch",
    "Arch": "tasks.classification.models.arch",
    "arch_names": "tasks.classification.models.arch",
    "get_arch": "tasks.classification.models.arch",
    "tap_specs": "tasks.classification.models.arch",
    "build": "tasks.classification.models.zoo",
    "validate_taps": "tasks.classification.models.zoo",
}

__all__ = ["ARCHS", "Arch", "arch_names", "build", "get_arch", "tap_specs", "validate_taps"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tasks.classification.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tasks.classification.models.arch import ARCHS, Arch, arch_names, get_arch, tap_specs  # noqa: F401
    from tasks.classification.models.zoo import build, validate_taps  # noqa: F401
