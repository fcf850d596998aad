"""Named grids (``diffbench run --preset NAME``): what each expands to, and where its values come from."""

from __future__ import annotations

from typing import Any

#: Named grids. ``default`` is what ``diffbench run`` with no arguments runs.
GRID_PRESETS: dict[str, dict[str, Any]] = {
    # colorshapes (tasks/classification/colorshapes.py), resnet20 -> resnet8, 3 seeds: the methods differ there.
    "default": {"task": "classification", "dataset": "colorshapes", "seeds": 3},
    "smoke": {"task": "classification", "dataset": "digits", "preset": "smoke"},
    "cifar100": {"task": "classification", "dataset": "cifar100", "preset": "cifar100"},
    "imagenet": {"task": "classification", "dataset": "imagenet", "preset": "imagenet"},
    "detection": {"task": "detection"},
    "segmentation": {"task": "segmentation"},
}
