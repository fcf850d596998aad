"""CIFAR VGGs of RepDistiller/mdistiller; the zoo's ``vgg8`` ... ``vgg19`` are mdistiller's ``vggN_bn``.

Five conv blocks (``block0`` ... ``block4``, ``nn.Sequential`` of conv(+bias)-BN-ReLU whose *last* ReLU
is dropped), max-pools ``pool0`` ... ``pool3``, a global average pool ``pool4`` and one linear
``classifier``: the keys of mdistiller's ``vgg.py``. mdistiller applies the block-final ReLU with
``F.relu`` in ``forward``; here it is a parameter-free module (``relu0`` ... ``relu4``) so a forward
hook can capture the post-activation map. Its quirk is kept: ``pool3`` is used only for 64x64 inputs
(Tiny-ImageNet), so on 32x32 CIFAR images ``block3`` and ``block4`` both run at 4x4 (stride 8).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tasks.classification.models.configs import VGG_CFG, VGG_CONFIGS

#: mdistiller's VGG configurations and the zoo's names for them, in :mod:`.configs` (torch-free).
CFG = VGG_CFG
CONFIGS = VGG_CONFIGS


class VGG(nn.Module):
    """VGG for 32x32 (or 64x64) inputs.

    Args:
        cfg: five lists of conv widths (a value of :data:`CFG`).
        batch_norm: BN after each conv (the zoo always uses ``True``).
        num_classes: classifier outputs.
    """

    def __init__(self, cfg: list[list[int]], batch_norm: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        self.block0 = self._make_layers(cfg[0], batch_norm, 3)
        self.block1 = self._make_layers(cfg[1], batch_norm, cfg[0][-1])
        self.block2 = self._make_layers(cfg[2], batch_norm, cfg[1][-1])
        self.block3 = self._make_layers(cfg[3], batch_norm, cfg[2][-1])
        self.block4 = self._make_layers(cfg[4], batch_norm, cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.relu0, self.relu1, self.relu2, self.relu3, self.relu4 = (nn.ReLU() for _ in range(5))
        self.classifier = nn.Linear(512, num_classes)
        self._initialize_weights()
        self.stage_channels = [c[-1] for c in cfg]

    @staticmethod
    def _make_layers(cfg: list[int], batch_norm: bool, in_channels: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for v in cfg:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
        return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied in forward

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
        h = x.shape[2]
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        if h == 64:
            x = self.pool3(x)
        x = self.relu4(self.block4(x))
        return self.classifier(self.pool4(x).flatten(1))


def build(name: str, num_classes: int) -> VGG:
    """The BN VGG ``name`` (a key of :data:`CONFIGS`)."""
    return VGG(CFG[CONFIGS[name]], batch_norm=True, num_classes=num_classes)
