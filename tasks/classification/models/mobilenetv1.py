"""ImageNet MobileNetV1 as mdistiller's ``mdistiller/models/imagenet/mobilenetv1.py`` defines it.

One ``model`` Sequential of 14 conv units plus ``AvgPool2d(7)`` at index 14, and ``fc``: those keys let
mdistiller's (and the OFD/CRD ImageNet baselines') MobileNetV1 checkpoints load strictly. Each unit
ends with its ReLU, so the output of ``model.i`` is the post-activation map mdistiller reports; its
``feats`` are ``model.3`` (stride 4), ``model.5`` (8), ``model.11`` (16) and ``model.13`` (32).
mdistiller hard-codes 1000 classes; here ``num_classes`` sets the width of ``fc``.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


#: (in, out, stride) of the depthwise-separable units ``model.1`` ... ``model.13``.
UNITS: tuple[tuple[int, int, int], ...] = (
    (32, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 512, 1),
    (512, 1024, 2),
    (1024, 1024, 1),
)


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al. 2017), width 1.0, for 224x224 inputs (the pool is a fixed 7x7)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.model = nn.Sequential(
            _conv_bn(3, 32, 2),
            *(_conv_dw(i, o, s) for i, o, s in UNITS),
            nn.AvgPool2d(7),
        )
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return self.fc(out.reshape(out.size(0), -1))
