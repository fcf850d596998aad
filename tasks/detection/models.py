"""Detector zoo: torchvision Faster R-CNN and RetinaNet with FPN over ResNet and MobileNet backbones.

Every model is built with ``weights=None, weights_backbone=None``: nothing is ever downloaded. Teacher
weights come from files (torchvision's COCO state dicts or our own checkpoints) via the task's
``load_weights``.

Conventions kept from torchvision so its COCO weight files load strictly:

* ``num_classes`` counts the background (index 0), exactly like torchvision's ``num_classes=91``;
  RetinaNet keeps the unused channel 0 too.
* On ``coco`` the backbones use :class:`~torchvision.ops.FrozenBatchNorm2d` (the layout of every
  torchvision/detectron2 detection checkpoint: no ``num_batches_tracked``) and freeze the stem and
  ``layer1`` (``trainable_layers=3``), the torchvision default for fine-tuning pretrained backbones.
  A model that will train from random weights there (``init="random"``) gets plain BatchNorm and trains
  every layer instead. On the embedded ``shapes`` set detectors always train from scratch, so they use
  plain BatchNorm and train every layer (torchvision's own choice when no pretrained weights are given).

The arch, pair and level tables are in :mod:`.archs` (free of torch, for the task's spec) and re-exported
here. The FPN levels are the taps. Faster R-CNN uses the four ResNet stages (``P2``-``P5``, strides 4-32)
plus the max-pooled ``P6`` (stride 64), torchvision's keys ``"0".."3","pool"``; MobileNets return
four stages too (``returned_layers=[1, 2, 3, 4]``, strides 4-32), so a MobileNet student's FPN lines
up level by level with a ResNet teacher's (as in mdistiller's MV2-R50 pair, whose MobileNetV2 FPN
uses ``m2..m5``). RetinaNet follows ``retinanet_resnet50_fpn``: ``P3``-``P5`` plus ``P6``/``P7``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor, mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from methods.errors import UserError
from tasks.detection.archs import (
    ARCHS,
    FPN_CHANNELS,
    PAIRS,
    RCNN_LEVELS,
    RETINA_LEVELS,
    entry,
    family,
    levels,
)

#: The torch-free tables (:mod:`.archs`) stay importable from here.
__all__ = [
    "ARCHS",
    "CONFIGS",
    "FPN_CHANNELS",
    "PAIRS",
    "RCNN_LEVELS",
    "RETINA_LEVELS",
    "DetectorConfig",
    "build_detector",
    "config_for",
    "entry",
    "family",
    "fpn_level_names",
    "levels",
]

@dataclass(frozen=True)
class DetectorConfig:
    """Per-dataset detector settings: the input transform and the sampler sizes.

    ``coco`` keeps torchvision's defaults (800/1333, 512 RoIs per image, 1024-d box head). ``shapes``
    (128-pixel images, objects of 10-48 pixels) shrinks the transform, the anchors (one octave per
    level from 16 instead of 32, so P2 still sees the smallest objects) and the samplers so a CPU
    trains it in minutes.
    """

    min_size: int = 800
    max_size: int = 1333
    anchor_base: int = 32
    rpn_batch_size_per_image: int = 256
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    representation_size: int = 1024
    frozen_bn: bool = True
    trainable_layers: int | None = None  # None: torchvision's default for pretrained backbones


CONFIGS: dict[str, DetectorConfig] = {
    "coco": DetectorConfig(),
    "shapes": DetectorConfig(
        min_size=128,
        max_size=128,
        anchor_base=16,
        rpn_batch_size_per_image=128,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=128,
        representation_size=256,
        frozen_bn=False,
    ),
}


def config_for(dataset: str) -> DetectorConfig:
    """Detector settings of ``dataset`` (user data sets in COCO format use the ``coco`` settings)."""
    return CONFIGS.get(dataset, CONFIGS["coco"])


def _backbone(arch: str, cfg: DetectorConfig) -> nn.Module:
    fam, name = entry(arch)
    norm: type[nn.Module] = FrozenBatchNorm2d if cfg.frozen_bn else nn.BatchNorm2d
    if name.startswith("resnet"):
        body = resnet.__dict__[name](weights=None, norm_layer=norm)
        trainable = cfg.trainable_layers if cfg.trainable_layers is not None else (3 if cfg.frozen_bn else 5)
        if fam == "retinanet":
            return _resnet_fpn_extractor(body, trainable, [2, 3, 4], LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS))
        return _resnet_fpn_extractor(body, trainable, [1, 2, 3, 4], LastLevelMaxPool())
    # MobileNets: 6 "stages" in torchvision's count; 3 trainable is its pretrained default.
    trainable = cfg.trainable_layers if cfg.trainable_layers is not None else (3 if cfg.frozen_bn else 6)
    return mobilenet_backbone(
        backbone_name=name,
        weights=None,
        fpn=True,
        norm_layer=norm,
        trainable_layers=trainable,
        returned_layers=[1, 2, 3, 4],
        extra_blocks=LastLevelMaxPool(),
    )


def build_detector(arch: str, num_classes: int, dataset: str, init: str | None = None) -> nn.Module:
    """Build ``arch`` for ``num_classes`` classes *including* the background.

    ``init="random"`` (the model trains from random weights): plain BatchNorm and every layer trained, whatever the
    data set's fine-tuning setup; ``None`` / ``"file"``: the data set's setup (:data:`CONFIGS`).
    The result is a plain torchvision ``FasterRCNN``/``RetinaNet`` whose state dict has torchvision's
    key names, with a ``det_arch`` attribute for the task's checks.
    """
    fam, _ = entry(arch)
    if num_classes < 2:
        raise UserError(f"detection needs num_classes >= 2 (background + at least one class), got {num_classes}")
    cfg = config_for(dataset)
    if init == "random" and cfg.frozen_bn:
        cfg = replace(cfg, frozen_bn=False, trainable_layers=None)
    backbone = _backbone(arch, cfg)
    common: dict[str, Any] = {"min_size": cfg.min_size, "max_size": cfg.max_size}
    base = cfg.anchor_base
    if fam == "fasterrcnn":
        anchors = AnchorGenerator(tuple((base * 2**i,) for i in range(5)), ((0.5, 1.0, 2.0),) * 5)
        rep = cfg.representation_size
        model: nn.Module = FasterRCNN(
            backbone,
            num_classes=None,
            rpn_anchor_generator=anchors,
            box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, rep),
            box_predictor=FastRCNNPredictor(rep, num_classes),
            rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
            rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
            box_batch_size_per_image=cfg.box_batch_size_per_image,
            **common,
        )
    else:
        # retinanet_resnet50_fpn's anchors: 3 scales per octave, 3 ratios, from 32 (8 on P3) up.
        sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (base * 2**i for i in range(5)))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        model = RetinaNet(backbone, num_classes, anchor_generator=anchors, **common)
    model.det_arch = arch
    return model


def fpn_level_names(model: nn.Module) -> list[str]:
    """The output keys of a detector's FPN backbone, read from its structure (no forward pass)."""
    backbone = model.backbone
    keys = list(OrderedDict.fromkeys(backbone.body.return_layers.values()))
    extra = backbone.fpn.extra_blocks
    if isinstance(extra, LastLevelMaxPool):
        keys.append("pool")
    elif isinstance(extra, LastLevelP6P7):
        keys += ["p6", "p7"]
    return keys
