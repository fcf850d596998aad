"""Wide ResNets of RepDistiller/mdistiller (``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``).

Pre-activation blocks (Zagoruyko & Komodakis 2016) with mdistiller's names (``block1.layer.0.bn1``,
``convShortcut``, top-level ``bn1``/``relu``/``fc``) and initialisation. Two quirks are kept on purpose:

* a block whose input and output widths differ adds the projection of the *activated* input, one whose
  widths match adds the raw input (``equalInOut``), exactly as the original code does;
* mdistiller's ``forward`` calls ``block2.layer.0.bn1``, ``block3.layer.0.bn1`` and ``bn1`` a second
  time to build its pre-activation features, so in training mode those three BatchNorms update their
  running statistics twice per step. ``double_bn_update=True`` (the default) repeats those calls
  (their outputs are discarded) so the running statistics of a model trained here match mdistiller's;
  ``False`` skips them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tasks.classification.models.configs import WRN_CONFIGS, wrn_widths

#: name -> (depth, widen factor), and the channels of each group, in :mod:`.configs` (torch-free).
CONFIGS = WRN_CONFIGS
widths = wrn_widths


class BasicBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv with an identity or 1x1 projection shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes  # noqa: N815 - mdistiller's attribute name
        self.convShortcut = (  # noqa: N815 - the state-dict key must be mdistiller's
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.equalInOut else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of ``nb_layers`` blocks; only the first one changes width and stride."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k for 32x32 inputs; ``block1``/``block2``/``block3`` have output strides 1, 2, 4.

    Args:
        depth: 6n+4.
        num_classes: classifier outputs.
        widen_factor: k.
        drop_rate: dropout between the two convs of a block (0 in mdistiller's zoo).
        double_bn_update: repeat mdistiller's second BatchNorm calls in training (see module doc).
    """

    def __init__(
        self,
        depth: int,
        num_classes: int,
        widen_factor: int = 1,
        drop_rate: float = 0.0,
        double_bn_update: bool = True,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]  # noqa: N815
        self.stage_channels = ch
        self.double_bn_update = double_bn_update

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.block1(self.conv1(x))
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        out = self.relu(self.bn1(f3))
        logits = self.fc(F.avg_pool2d(out, 8).reshape(-1, self.nChannels))
        if self.training and self.double_bn_update:
            with torch.no_grad():
                self.block2.layer[0].bn1(f1)
                self.block3.layer[0].bn1(f2)
                self.bn1(f3)
        return logits


def build(name: str, num_classes: int) -> WideResNet:
    """The WRN ``name`` (a key of :data:`CONFIGS`)."""
    depth, k = CONFIGS[name]
    return WideResNet(depth=depth, num_classes=num_classes, widen_factor=k)
