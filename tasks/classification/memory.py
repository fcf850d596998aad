"""An image classification split held in memory as ``uint8`` HWC images (CIFAR-100's pickles, generated sets).

Items go through a torchvision transform as PIL images, exactly as torchvision's ``CIFAR100`` does, and the
split implements the device-resident protocol of :mod:`tasks.classification.resident` (``resident_data`` and
``resident_transform``), so training can keep the images on the device and augment them there in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tasks.classification.resident import ResidentTransform


class MemoryImages(Dataset):
    """``uint8 [N, H, W, 3]`` images with integer labels and class names.

    Attributes:
        data: the images, ``uint8 [N, H, W, 3]`` (HWC, as PIL and CIFAR keep them).
        targets: labels, Python ``int``.
        classes: class names, in label order.
        transform: applied to each PIL image (``None``: the PIL image itself).
    """

    def __init__(
        self, data: np.ndarray, targets: Sequence[int], classes: list[str], transform: Callable | None = None
    ) -> None:
        self.data = np.ascontiguousarray(data, dtype=np.uint8)
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img = Image.fromarray(self.data[index])
        return (self.transform(img) if self.transform else img), self.targets[index]

    # device-resident protocol (tasks/classification/resident.py)
    def resident_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``uint8 [N, 3, H, W]`` images and ``int64`` labels."""
        return torch.from_numpy(self.data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(self.targets)

    @property
    def resident_transform(self) -> ResidentTransform | None:
        """This split's transform as batched device ops, or ``None`` if it has steps they cannot reproduce."""
        return ResidentTransform.from_torchvision(self.transform, uint8=True)
