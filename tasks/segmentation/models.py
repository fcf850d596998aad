"""Segmentation model zoo: DeepLabV3 / PSPNet heads on dilated backbones at output stride 8.

Every model is a :class:`SegmentationNet`: a backbone wrapped in torchvision's
``IntermediateLayerGetter`` (so module paths read ``backbone.layer4``), a main head and an optional
FCN auxiliary head on the stage before the last, as in CIRKD and torchvision's ``deeplabv3_*``.

Output stride 8 everywhere, so teacher and student feature maps line up pixel for pixel:

* ResNet-50/101: torchvision's ``replace_stride_with_dilation=[False, True, True]``;
* ResNet-18: torchvision's ``BasicBlock`` refuses ``dilation > 1``, so :class:`DilatedBasicBlock`
  is a drop-in with the *same* parameter names and shapes — an ImageNet ``resnet18`` state dict
  loads into the backbone strictly;
* MobileNetV3-Large: torchvision's ``deeplabv3_mobilenet_v3_large`` dilates only the last stage
  (stride 16); here the stride-16 stage is dilated too (rate 2, last stage rate 4) to reach 8.

``forward`` returns the logits at the output stride (not upsampled) in a dict ``{"out", "aux"}``,
``aux`` only in training mode. The task upsamples for the loss and evaluation; keeping the
low-resolution logits lets per-pixel KD run at stride 8 (see ``tasks.segmentation.task``).

Nothing is downloaded: every builder passes ``weights=None``. What each arch is (family, ``feat`` tap, auxiliary
head) is declared, free of torch, in :mod:`.archs`; the builders here read their widths from it. CIRKD's own
models (``*_cirkd``: deep-stem ResNets, CIRKD's module names) are in :mod:`.cirkd`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import mobilenetv3, resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from tasks.segmentation.archs import ARCHS, OUTPUT_STRIDE, TINY_STUDENT, TINY_TEACHER, ArchSpec, arch_spec
from tasks.segmentation.cirkd import CirkdDeepLabV3, cirkd_deeplabv3

#: The torch-free table (:mod:`.archs`) stays importable from here.
__all__ = [
    "ARCHS",
    "BUILDERS",
    "CirkdDeepLabV3",
    "OUTPUT_STRIDE",
    "ArchSpec",
    "DilatedBasicBlock",
    "PSPHead",
    "SegmentationNet",
    "TinyResNet",
    "arch_spec",
    "build_model",
    "dilated_resnet18",
    "mobilenet_v3_large_os8",
    "small_deeplab_head",
]


class DilatedBasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` with dilation allowed (both 3x3 convs dilated).

    Same attribute names (``conv1, bn1, conv2, bn2, downsample``) and shapes as ``BasicBlock``, so it
    plugs into ``torchvision.models.resnet.ResNet`` and loads ``resnet18`` checkpoints. The signature
    is ``BasicBlock``'s, which ``ResNet._make_layer`` calls positionally.
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("DilatedBasicBlock only supports groups=1 and base_width=64")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def dilated_resnet18() -> resnet.ResNet:
    """ResNet-18 at output stride 8 (layer3 dilation 2, layer4 dilation 4), torchvision's key layout."""
    return resnet.ResNet(DilatedBasicBlock, [2, 2, 2, 2], replace_stride_with_dilation=[False, True, True])


class TinyResNet(nn.Module):
    """A narrow ResNet (torchvision's stem and stage names) for the embedded CPU preset.

    Same topology as ResNet-18/10 — 7x7 stem, max-pool, four stages of :class:`DilatedBasicBlock`,
    stages 3 and 4 dilated instead of strided — at a fraction of the width, so a teacher trains on two
    CPU cores in minutes. It exists only for the ``shapes`` data set.
    """

    def __init__(self, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes, dilation = widths[0], 1
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            stride, prev = (1, dilation) if i == 0 else (2, dilation)
            if i >= 2:  # dilate instead of striding, as torchvision's replace_stride_with_dilation does
                dilation *= 2
                stride = 1
            down = None
            if stride != 1 or inplanes != width:
                down = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride, bias=False), nn.BatchNorm2d(width))
            layers = [DilatedBasicBlock(inplanes, width, stride, down, dilation=prev)]
            layers += [DilatedBasicBlock(width, width, dilation=dilation) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            inplanes = width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def mobilenet_v3_large_os8() -> nn.Sequential:
    """MobileNetV3-Large features at output stride 8 (the C3 stage dilated 2, C4 dilated 4)."""
    setting, last_channel = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_large")
    for i, cnf in enumerate(setting):
        # blocks 6..11 form the stride-16 stage (C3 down-samples at 6), 12..14 the stride-32 one (C4);
        # InvertedResidual turns stride into 1 wherever dilation > 1.
        if 6 <= i <= 11:
            cnf.dilation = 2
        elif i >= 12:
            cnf.dilation = 4
    return mobilenetv3.MobileNetV3(setting, last_channel).features


class PSPHead(nn.Module):
    """Pyramid Scene Parsing head (Zhao et al. 2017): pooled context at bins 1, 2, 3, 6, then conv.

    Laid out like mmsegmentation's ``PSPHead``: each bin is average-pooled, reduced by a 1x1
    conv-BN-ReLU to ``channels``, upsampled back and concatenated with the input; a 3x3 conv-BN-ReLU
    bottleneck and a 1x1 classifier follow (dropout 0.1 before it, as in mmseg and CIRKD).
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: int = 512, bins: Sequence[int] = (1, 2, 3, 6)
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + len(bins) * channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        return self.classifier(self.dropout(self.bottleneck(torch.cat([x, *pooled], dim=1))))


def small_deeplab_head(in_channels: int, num_classes: int, channels: int, rates: Sequence[int]) -> nn.Sequential:
    """torchvision's ``DeepLabHead`` layout with a narrower ASPP, for the CPU preset."""
    return nn.Sequential(
        ASPP(in_channels, rates, out_channels=channels),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, num_classes, 1),
    )


class SegmentationNet(nn.Module):
    """Backbone + head (+ auxiliary FCN head), returning logits at the output stride.

    Args:
        backbone: an ``IntermediateLayerGetter`` returning ``{"out": last stage, "aux": stage before}``.
        head: maps the last stage to ``num_classes`` logits.
        aux_head: maps the ``aux`` stage to logits, or ``None``.
    """

    output_stride: int = OUTPUT_STRIDE

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        out = {"out": self.head(feats["out"])}
        if self.aux_head is not None and self.training:
            out["aux"] = self.aux_head(feats["aux"])
        return out


def _resnet_net(body: nn.Module, head: Callable[[int, int], nn.Module], spec: ArchSpec, n: int) -> SegmentationNet:
    layers = {"layer4": "out", "layer3": "aux"} if spec.aux else {"layer4": "out"}
    getter = IntermediateLayerGetter(body, return_layers=layers)
    channels = spec.feat_channels
    return SegmentationNet(getter, head(channels, n), FCNHead(channels // 2, n) if spec.aux else None)


def _deeplab_resnet(depth: int) -> Callable[[int], SegmentationNet]:
    spec = ARCHS[f"deeplabv3_r{depth}"]

    def build(n: int) -> SegmentationNet:
        if depth == 18:
            body = dilated_resnet18()
        else:
            fn = {50: resnet.resnet50, 101: resnet.resnet101}[depth]
            body = fn(weights=None, replace_stride_with_dilation=[False, True, True])
        return _resnet_net(body, DeepLabHead, spec, n)

    return build


def _pspnet_r18(n: int) -> SegmentationNet:
    return _resnet_net(dilated_resnet18(), PSPHead, ARCHS["pspnet_r18"], n)


def _deeplab_mbv3(n: int) -> SegmentationNet:
    features = mobilenet_v3_large_os8()
    # Last conv (960 ch) feeds the head, as torchvision's deeplabv3_mobilenet_v3_large; no auxiliary head (the table).
    getter = IntermediateLayerGetter(features, return_layers={str(len(features) - 1): "out"})
    return SegmentationNet(getter, DeepLabHead(ARCHS["deeplabv3_mbv3"].feat_channels, n), None)


def _deeplab_tiny(widths: Sequence[int], blocks: Sequence[int]) -> Callable[[int], SegmentationNet]:
    def build(n: int) -> SegmentationNet:
        body = TinyResNet(widths, blocks)
        # Rates (12, 24, 36) exceed a 64x128 image's 8x16 feature map; (2, 4, 6) keep the ASPP meaningful.
        getter = IntermediateLayerGetter(body, return_layers={"layer4": "out", "layer3": "aux"})
        head = small_deeplab_head(widths[3], n, channels=max(widths[3] // 2, 32), rates=(2, 4, 6))
        return SegmentationNet(getter, head, FCNHead(widths[2], n))

    return build


#: arch name -> ``builder(num_classes)``, for every name of :data:`ARCHS` (which says what each arch is).
BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "deeplabv3_r101_cirkd": cirkd_deeplabv3(101),
    "deeplabv3_r18_cirkd": cirkd_deeplabv3(18),
    "deeplabv3_r101": _deeplab_resnet(101),
    "deeplabv3_r50": _deeplab_resnet(50),
    "deeplabv3_r18": _deeplab_resnet(18),
    "pspnet_r18": _pspnet_r18,
    "deeplabv3_mbv3": _deeplab_mbv3,
    "deeplabv3_tiny_t": _deeplab_tiny(*TINY_TEACHER),
    "deeplabv3_tiny_s": _deeplab_tiny(*TINY_STUDENT),
}


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised ``arch`` with ``num_classes`` outputs (no weights downloaded)."""
    arch_spec(arch)  # an unknown name is a UserError listing the valid ones
    return BUILDERS[arch](num_classes)
