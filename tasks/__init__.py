"""Vision tasks: classification, detection and segmentation.

Importing this package registers the :class:`~tasks.spec.TaskSpec` of every task whose sub-package is present,
and nothing more: the specs are free of torch, so listing tasks, planning a grid and refusing a misspelt name
cost no torch import. Each public name below is imported on first use (PEP 562); :class:`Task`,
:func:`get_task` and the other torch-side names import torch then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it.
_PUBLIC = {
    "DataBundle": "tasks.base",
    "PairedOutput": "tasks.base",
    "Recipe": "tasks.recipe",
    "TapRecorder": "tasks.base",
    "Task": "tasks.base",
    "TaskSpec": "tasks.spec",
    "get_task": "tasks.spec",
    "load_state_dict_file": "tasks.base",
    "task_names": "tasks.spec",
    "task_spec": "tasks.spec",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


for _mod in ("classification", "detection", "segmentation"):
    try:
        importlib.import_module(f"tasks.{_mod}.spec")
    except ModuleNotFoundError as _err:  # a task sub-package still being written
        if not (_err.name or "").startswith(f"tasks.{_mod}"):
            raise


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from tasks.base import DataBundle, PairedOutput, TapRecorder, Task, load_state_dict_file  # noqa: F401
    from tasks.recipe import Recipe  # noqa: F401
    from tasks.spec import TaskSpec, get_task, task_names, task_spec  # noqa: F401
