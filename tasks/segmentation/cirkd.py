"""CIRKD's DeepLabV3 models, module for module, so that CIRKD's checkpoint files load with strict key matching.

CIRKD v1 (winycg/CIRKD @91735ef39d37a8a15ba942ae011e98587ac0e71d) trains its Cityscapes / ADE20K pairs with
``models/deeplabv3.py`` on ``models/base_models/resnet.py``'s ``resnet18_v1s`` / ``resnet101_v1s``; the published
numbers (teacher 78.07, student baseline 74.21 mIoU on Cityscapes val, README) are of these models, which differ
from torchvision's in ways that change both the keys and the shapes of their files:

* **Deep stem** (``ResNetV1b(deep_stem=True)``, resnet.py L103-123): three 3x3 convs ``conv1`` (3->64, stride 2),
  ``conv2`` (64->64), ``conv3`` (64->128), each with ``bn1..bn3`` and a ReLU, flat names; the stages then start
  from 128 channels (L100), so ``layer1.0`` has a ``downsample``. torchvision's 7x7 ``conv1`` does not fit.
* **Output stride 8 by dilation** (L131-133, ``_make_layer`` L154-176): ``layer3`` rate 2 and ``layer4`` rate 4,
  stride 1; in the first block of a dilated stage the first dilated 3x3 conv keeps the previous stage's rate (1
  for ``layer3``, 2 for ``layer4``), as :class:`BasicBlockV1b` / :class:`BottleneckV1b` take it (``entry_rate``).
* **Head** (``_DeepLabHead`` / ``_ASPP``, deeplabv3.py L72-167): ASPP at rates 12/24/36 whose width CIRKD sets per
  backbone, 128 channels on ResNet-18's 512, 256 on ResNet-101's 2048 (L77-82, L133-138), branches ``b0..b4``
  and ``project`` (1x1 conv-BN-ReLU-Dropout 0.5); then ``block``: 3x3 conv-BN-ReLU-Dropout 0.1 and a 1x1
  classifier. The output of ``block[0:4]`` is ``x_feat_after_aspp`` (L92-97), CIRKD's FitNet hint: module
  ``head.block.3`` here. **Auxiliary head** ``_FCNHead`` on ``layer3`` (L41-42, L56-69): ``block`` = 3x3 conv to a
  quarter of the channels, BN, ReLU, Dropout 0.1, 1x1 classifier.
* Module names: ``pretrained`` (the backbone, segbase.py L23-28), ``head``, ``auxlayer`` (deeplabv3.py L40-42).
  CIRKD saves ``model.state_dict()`` of the unwrapped model (``train_baseline.py`` ``save_checkpoint``), so a
  teacher file such as ``deeplabv3_resnet101_citys_best_model.pth`` is these keys exactly.

**Input.** CIRKD reads images with OpenCV (BGR) and only subtracts the Caffe mean ``[104.008, 116.669, 122.679]``
on the 0-255 scale, no division by a std (``dataset/cityscapes.py`` L78-79, ``dataset/ade20k.py``). diffbench's
data are RGB in ImageNet mean/std units, so :class:`CirkdDeepLabV3` turns them back into CIRKD's input first, an
exact per-channel affine map plus a channel swap held in non-persistent buffers (the state dict stays CIRKD's):
a CIRKD teacher sees the numbers it was trained on, and a CIRKD student trains on them. The only difference is
the padding of a crop smaller than the image: diffbench pads with the ImageNet mean colour, which lands within
one grey level of CIRKD's zero.

``forward`` returns ``{"out": logits at stride 8, "aux": auxiliary logits (training only)}``, diffbench's
segmentation contract (CIRKD returns ``[x, auxout, x_feat_after_aspp]``; the hint is taken by a hook instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from tasks.segmentation.data import MEAN, STD

#: CIRKD's input mean, BGR order, 0-255 scale (dataset/cityscapes.py L79, dataset/ade20k.py).
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
#: ASPP width per backbone width (deeplabv3.py L77-82 and L133-138; any other width raises there).
ASPP_CHANNELS = {512: 128, 2048: 256}
#: ASPP rates (deeplabv3.py L75).
ASPP_RATES = (12, 24, 36)


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class BasicBlockV1b(nn.Module):
    """CIRKD's ``BasicBlockV1b``: two 3x3 convs; ``conv1`` at ``entry_rate``, ``conv2`` at ``rate``.

    CIRKD passes the previous stage's rate as ``dilation`` (used by ``conv1``) and the stage's own as
    ``previous_dilation`` (used by ``conv2``) in a stage's first block, and the stage's rate to both afterwards;
    the names here say what each conv gets.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, entry_rate: int = 1, rate: int = 1,
                 downsample: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, entry_rate, entry_rate, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, rate, rate, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class BottleneckV1b(nn.Module):
    """CIRKD's ``BottleneckV1b``: 1x1, 3x3 (stride and ``entry_rate`` here, as in CIRKD), 1x1 expanding by 4.

    Its only dilated conv is the 3x3 one, which takes CIRKD's ``dilation`` argument: the previous stage's rate in
    a stage's first block, the stage's rate afterwards. ``rate`` is accepted for a common signature and unused.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, entry_rate: int = 1, rate: int = 1,
                 downsample: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, entry_rate, entry_rate, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetV1bDeepStem(nn.Module):
    """CIRKD's ``ResNetV1b(..., dilated=True, deep_stem=True)`` (``resnet18_v1s`` / ``resnet101_v1s``), no ``fc``.

    Args:
        block: :class:`BasicBlockV1b` or :class:`BottleneckV1b`.
        layers: blocks per stage (``[2, 2, 2, 2]`` for ResNet-18, ``[3, 4, 23, 3]`` for ResNet-101).
    """

    def __init__(self, block: type[BasicBlockV1b] | type[BottleneckV1b], layers: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.relu3 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 128  # the deep stem's width (resnet.py L100)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1, rate=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, rate=1)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=1, rate=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=1, rate=4)
        for m in self.modules():  # resnet.py L140-145
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlockV1b] | type[BottleneckV1b], planes: int, blocks: int,
                    stride: int, rate: int) -> nn.Sequential:  # fmt: skip
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        entry = 2 if rate == 4 else 1  # CIRKD: dilation 1 or 2 -> first conv at 1; dilation 4 -> at 2 (L163-170)
        layers = [block(self.inplanes, planes, stride, entry, rate, downsample)]
        self.inplanes = out
        layers += [block(out, planes, 1, rate, rate) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.maxpool(self.relu3(self.bn3(self.conv3(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ASPPConv(nn.Module):
    """CIRKD's ``_ASPPConv``: ``block`` = dilated 3x3 conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, rate: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False), *_bn_relu(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ASPPPooling(nn.Module):
    """CIRKD's ``_AsppPooling``: ``gap`` = global average pool, 1x1 conv, BN, ReLU; broadcast back (bilinear)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gap = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), *_bn_relu(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.gap(x), x.shape[-2:], mode="bilinear", align_corners=True)


class ASPP(nn.Module):
    """CIRKD's ``_ASPP``: ``b0`` (1x1), ``b1..b3`` (rates 12, 24, 36), ``b4`` (pooling), ``project``."""

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.b0 = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), *_bn_relu(channels))
        self.b1, self.b2, self.b3 = (ASPPConv(in_channels, channels, r) for r in rates)
        self.b4 = ASPPPooling(in_channels, channels)
        self.project = nn.Sequential(
            nn.Conv2d(5 * channels, channels, 1, bias=False), *_bn_relu(channels), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in (self.b0, self.b1, self.b2, self.b3, self.b4)], dim=1))


class DeepLabHead(nn.Module):
    """CIRKD's ``_DeepLabHead``: ASPP, then ``block`` = 3x3 conv-BN-ReLU-Dropout 0.1 (the hint) and a 1x1 classifier.

    ``block[3]``'s output is CIRKD's ``x_feat_after_aspp``; the forward runs ``block`` module by module so a hook on
    ``head.block.3`` captures it.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        channels = ASPP_CHANNELS[in_channels]
        self.aspp = ASPP(in_channels, channels)
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), *_bn_relu(channels), nn.Dropout(0.1),
            nn.Conv2d(channels, num_classes, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.aspp(x))


class FCNHead(nn.Module):
    """CIRKD's ``_FCNHead``: ``block`` = 3x3 conv to ``in_channels // 4``, BN, ReLU, Dropout 0.1, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        inter = in_channels // 4
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), *_bn_relu(inter), nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class CirkdDeepLabV3(nn.Module):
    """CIRKD's ``DeepLabV3`` (``pretrained``, ``head``, ``auxlayer``) taking diffbench's normalised RGB input.

    Args:
        depth: 18 or 101 (CIRKD's ``resnet18`` / ``resnet101`` backbones).
        num_classes: output classes.
        aux: build the auxiliary FCN head on ``layer3`` (CIRKD always does for ResNet students and teachers).
    """

    def __init__(self, depth: int, num_classes: int, aux: bool = True) -> None:
        super().__init__()
        block, layers = {18: (BasicBlockV1b, (2, 2, 2, 2)), 101: (BottleneckV1b, (3, 4, 23, 3))}[depth]
        self.pretrained = ResNetV1bDeepStem(block, layers)
        width = 512 * block.expansion
        self.head = DeepLabHead(width, num_classes)
        self.auxlayer = FCNHead(width // 2, num_classes) if aux else None
        # diffbench input (x - mean) / std, RGB  ->  CIRKD input 255 x - caffe mean, BGR (see the module docstring)
        scale = torch.tensor(STD).view(1, 3, 1, 1) * 255.0
        shift = torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0 - torch.tensor(CAFFE_BGR_MEAN[::-1]).view(1, 3, 1, 1)
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

    def cirkd_input(self, x: torch.Tensor) -> torch.Tensor:
        """diffbench's normalised RGB images as CIRKD feeds its models: BGR, 0-255, Caffe mean subtracted."""
        return (x * self.input_scale + self.input_shift).flip(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.pretrained
        x = self.cirkd_input(x)
        x = p.relu1(p.bn1(p.conv1(x)))
        x = p.relu2(p.bn2(p.conv2(x)))
        x = p.maxpool(p.relu3(p.bn3(p.conv3(x))))
        c3 = p.layer3(p.layer2(p.layer1(x)))
        out = {"out": self.head(p.layer4(c3))}
        if self.auxlayer is not None and self.training:
            out["aux"] = self.auxlayer(c3)
        return out


def cirkd_deeplabv3(depth: int) -> Callable[[int], CirkdDeepLabV3]:
    """``builder(num_classes)`` of CIRKD's DeepLabV3 on its ResNet-``depth`` (for :data:`.models.BUILDERS`)."""

    def build(num_classes: int) -> CirkdDeepLabV3:
        return CirkdDeepLabV3(depth, num_classes)

    return build
