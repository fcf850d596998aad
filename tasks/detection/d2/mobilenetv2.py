"""mdistiller's MobileNetV2 FPN backbone for detectron2 (``detection/model/backbone/mobilenetv2.py`` + ``fpn.py``).

Written from the architecture, not copied: MobileNetV2 (Sandler et al. 2018, width 1.0) without its
1280-channel head, returning four stages for an FPN. Module names follow mdistiller's so its
checkpoints (``pretrained/mv2-r50.pth`` and students trained with it) load strictly:

* ``features.0``: ``Sequential(conv 3x3 s2, norm, ReLU6)``;
* ``features.1..17``: inverted residual blocks, each ``conv = Sequential(...)`` of ``[pw, norm, ReLU6,]
  dw, norm, ReLU6, pw-linear, norm`` (the first block has no expansion, hence no first three);
* the outputs ``m2..m5`` are the last block of the 24-, 32-, 96- and 320-channel groups (strides 4, 8,
  16, 32), so the FPN's levels line up with a ResNet teacher's ``res2..res5``.

Norms come from :func:`detectron2.layers.get_norm` (mdistiller's default ``FrozenBN``; ``BN`` on the
embedded ``shapes`` set, which trains from scratch). ``MODEL.BACKBONE.FREEZE_AT`` freezes like
mdistiller's: ``>= 1`` the stem, then every block while its stage counter (2 up to and including the
``m2`` group, +1 after each named group) is ``<= FREEZE_AT``. mdistiller's DKD config uses 0.
"""

from __future__ import annotations

import math

import torch
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

#: ``(expansion t, channels c, blocks n, first stride s, output name)`` per group, width multiplier 1.
SETTINGS: tuple[tuple[int, int, int, int, str], ...] = (
    (1, 16, 1, 1, ""),
    (6, 24, 2, 2, "m2"),
    (6, 32, 3, 2, "m3"),
    (6, 64, 4, 2, ""),
    (6, 96, 3, 1, "m4"),
    (6, 160, 3, 2, ""),
    (6, 320, 1, 1, "m5"),
)
STEM_CHANNELS = 32
#: the ``MODEL.BACKBONE.NAME`` of ``configs/faster_rcnn_MV2_FPN.yaml``.
BACKBONE_NAME = "diffbench_mobilenetv2_fpn_backbone"


def add_mobilenetv2_config(cfg: CfgNode) -> None:
    """mdistiller's ``add_distillation_cfg`` keys for the backbone: ``MODEL.MOBILENETV2.{OUT_FEATURES,NORM}``."""
    if "MOBILENETV2" not in cfg.MODEL:
        cfg.MODEL.MOBILENETV2 = CfgNode()
        cfg.MODEL.MOBILENETV2.OUT_FEATURES = ["m2"]
        cfg.MODEL.MOBILENETV2.NORM = "FrozenBN"


def _freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad = False
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear); identity shortcut when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int, norm: str) -> None:
        super().__init__()
        hidden = round(inp * expand)
        self.use_shortcut = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), get_norm(norm, hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            get_norm(norm, hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            get_norm(norm, oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


class MobileNetV2(Backbone):
    """The bottom-up part: ``features`` (stem + 17 blocks), returning the named stages asked for.

    Args:
        out_features: subset of ``m2..m5``.
        norm: a :func:`detectron2.layers.get_norm` name (``FrozenBN``, ``BN``, ...).
        freeze_at: mdistiller's freezing rule (see the module docstring).
        in_channels: input channels (3).
    """

    def __init__(self, out_features: list[str], norm: str = "FrozenBN", freeze_at: int = 0, in_channels: int = 3):
        super().__init__()
        if not norm:
            raise ValueError("MobileNetV2 needs a norm layer (MODEL.MOBILENETV2.NORM)")
        stem = nn.Sequential(
            nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, 1, bias=False),
            get_norm(norm, STEM_CHANNELS),
            nn.ReLU6(inplace=True),
        )
        layers: list[nn.Module] = [_freeze(stem) if freeze_at >= 1 else stem]
        names = [""]  # output name of each entry of ``features`` ("" = not an output)
        self._out_feature_channels: dict[str, int] = {}
        self._out_feature_strides: dict[str, int] = {}
        channels, stride, stage = STEM_CHANNELS, 2, 2
        for expand, width, blocks, first_stride, name in SETTINGS:
            stride *= first_stride
            for i in range(blocks):
                block = InvertedResidual(channels, width, first_stride if i == 0 else 1, expand, norm)
                layers.append(_freeze(block) if stage <= freeze_at else block)
                channels = width
                last = i == blocks - 1
                names.append(name if last else "")
                if name and last:
                    self._out_feature_channels[name] = width
                    self._out_feature_strides[name] = stride
                    stage += 1
        unknown = sorted(set(out_features) - set(self._out_feature_channels))
        if unknown:
            raise ValueError(f"MobileNetV2 has no stage {unknown}; valid: {', '.join(self._out_feature_channels)}")
        self._out_features = list(out_features)
        self._names = names
        self.features = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        """mdistiller's init: He-normal over fan-out for convs, BN to identity (FrozenBN starts there)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for layer, name in zip(self.features, self._names, strict=True):
            x = layer(x)
            if name in self._out_features:
                out[name] = x
        return out


def diffbench_mobilenetv2_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """mdistiller's ``build_mobilenetv2_fpn_backbone``: MobileNetV2 + detectron2's FPN with a max-pooled P6.

    Registered under its own name (detectron2 registers by ``__name__``), so importing mdistiller's
    detection package beside diffbench cannot clash with it.
    """
    bottom_up = MobileNetV2(
        cfg.MODEL.MOBILENETV2.OUT_FEATURES,
        cfg.MODEL.MOBILENETV2.NORM,
        cfg.MODEL.BACKBONE.FREEZE_AT,
        input_shape.channels,
    )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


if BACKBONE_NAME not in BACKBONE_REGISTRY:  # a re-import must not register twice (the registry refuses)
    BACKBONE_REGISTRY.register(diffbench_mobilenetv2_fpn_backbone)
