"""CIFAR MobileNetV2 of RepDistiller/mdistiller; the zoo's ``MobileNetV2`` is mdistiller's ``mobile_half``.

``mobile_half`` is expansion T=6 and width multiplier 0.5, but its 1x1 head ``conv2`` keeps 1280
channels (the multiplier only widens the head above 1.0). The first conv has stride 2, so a 32x32
image leaves ``blocks.6`` and ``conv2`` at 2x2 (stride 16), which the ceil-mode 2x2 ``avgpool``
reduces to one vector. Keys (``conv1.0``, ``blocks.i.j.conv.k``, ``conv2.0``, ``classifier.0``) and
initialisation are mdistiller's; ``forward`` returns the logits only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: (output channels c, repeats n, first stride s) of each group. The first group expands by 1, the
#: others by ``T``.
SETTING: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1),
    (24, 2, 1),
    (32, 3, 2),
    (64, 4, 2),
    (96, 3, 1),
    (160, 3, 2),
    (320, 1, 1),
)


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def _conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise 3x3 - project (1x1, linear); residual when shape is kept."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        hidden = inp * expand_ratio
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """mdistiller's CIFAR MobileNetV2.

    Args:
        T: expansion ratio of every group but the first.
        feature_dim: classifier outputs (number of classes).
        input_size: image side; sets the head's pooling window (``input_size // 16``).
        width_mult: channel multiplier (``int(c * width_mult)``).
        remove_avg: skip the average pool (mdistiller's option).
    """

    def __init__(
        self, T: int, feature_dim: int, input_size: int = 32, width_mult: float = 1.0, remove_avg: bool = False
    ) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        self.remove_avg = remove_avg
        input_channel = int(32 * width_mult)
        self.conv1 = _conv_bn(3, input_channel, 2)
        self.blocks = nn.ModuleList()
        for g, (c, n, s) in enumerate(SETTING):
            t = 1 if g == 0 else T
            output_channel = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_1x1_bn(input_channel, self.last_channel)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, feature_dim))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)
        self._initialize_weights()
        self.stage_channels = [int(c * width_mult) for c in (32, 24, 32, 96, 320)]

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for block in self.blocks:
            out = block(out)
        out = self.conv2(out)
        if not self.remove_avg:
            out = self.avgpool(out)
        return self.classifier(out.reshape(out.size(0), -1))


def mobile_half(num_classes: int) -> MobileNetV2:
    """mdistiller's ``mobile_half``: T=6, width 0.5 (the DKD tables' "MobileNetV2")."""
    return MobileNetV2(T=6, feature_dim=num_classes, width_mult=0.5)
