"""CIFAR ResNets of RepDistiller/mdistiller (``resnet8`` ... ``resnet110``, ``resnet8x4``, ``resnet32x4``).

Layer names, bias flags, BatchNorm placement and initialisation follow mdistiller's
``mdistiller/models/cifar/resnet.py`` exactly, so its released ``ckpt_epoch_240.pth`` teachers load with
``strict=True``. Two deliberate differences in *code* (not in keys, shapes or logits):

* mdistiller's last block of each stage returns ``(out, preact)``; ours returns ``out`` only, so the
  output of ``layerK`` is the post-activation map mdistiller calls ``feats[K]`` and a forward hook on
  ``layerK`` captures it directly.
* ``forward`` returns the logits only; features are captured by hooks (``tasks.base.TapRecorder``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tasks.classification.models.configs import RESNET_CONFIGS

#: name -> (depth, filters of stem and the three stages), in :mod:`.configs` (torch-free).
CONFIGS = RESNET_CONFIGS


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus the (optionally projected) input, then ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck (mdistiller keeps it for ``block_name="bottleneck"``; no zoo entry uses it)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class ResNet(nn.Module):
    """Three-stage CIFAR ResNet (He et al. 2016, section 4.2) with 1x1-conv projection shortcuts.

    Args:
        depth: 6n+2 for basic blocks, 9n+2 for bottlenecks.
        num_filters: channels of the stem and of the three stages.
        block_name: ``"basicblock"`` or ``"bottleneck"``.
        num_classes: classifier outputs.
    """

    def __init__(
        self, depth: int, num_filters: tuple[int, ...], block_name: str = "basicblock", num_classes: int = 10
    ) -> None:
        super().__init__()
        if block_name.lower() == "basicblock":
            if (depth - 2) % 6:
                raise ValueError(f"basic-block ResNet depth must be 6n+2, got {depth}")
            n, block = (depth - 2) // 6, BasicBlock
        elif block_name.lower() == "bottleneck":
            if (depth - 2) % 9:
                raise ValueError(f"bottleneck ResNet depth must be 9n+2, got {depth}")
            n, block = (depth - 2) // 9, Bottleneck
        else:
            raise ValueError(f"block_name must be basicblock or bottleneck, got {block_name!r}")
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, num_filters[1], n)
        self.layer2 = self._make_layer(block, num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], n, stride=2)
        # A fixed 8x8 window, as in mdistiller: the model assumes 32x32 inputs.
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)
        self.stage_channels = list(num_filters)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def build(name: str, num_classes: int) -> ResNet:
    """The CIFAR ResNet ``name`` (a key of :data:`CONFIGS`)."""
    depth, filters = CONFIGS[name]
    return ResNet(depth, filters, "basicblock", num_classes=num_classes)
