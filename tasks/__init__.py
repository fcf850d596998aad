"""Vision tasks: classification, detection and segmentation.

Importing this package registers every task whose sub-package is present.
"""

from tasks.base import (
    DataBundle,
    PairedOutput,
    Recipe,
    TapRecorder,
    Task,
    get_task,
    load_state_dict_file,
    register_task,
    task_names,
)

__all__ = [
    "DataBundle",
    "PairedOutput",
    "Recipe",
    "TapRecorder",
    "Task",
    "get_task",
    "load_state_dict_file",
    "register_task",
    "task_names",
]

for _mod in ("classification", "detection", "segmentation"):
    try:
        __import__(f"tasks.{_mod}.task")
    except ModuleNotFoundError as _err:  # a task sub-package still being written
        if not (_err.name or "").startswith(f"tasks.{_mod}"):
            raise
