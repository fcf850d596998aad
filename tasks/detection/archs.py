"""The torchvision detector table, free of torch: arch names, families, backbones, pairs and FPN levels.

What the detection spec needs to list, check and tap architectures (and what :mod:`.models` builds them from),
without importing torchvision. The FPN levels are the taps: Faster R-CNN has ``P2``-``P5`` plus the max-pooled
``P6`` (strides 4-64), RetinaNet ``P3``-``P5`` plus ``P6``/``P7`` (strides 8-128); :mod:`.models` says why.
"""

from __future__ import annotations

from methods.errors import unknown

#: arch name -> (detector family, backbone name).
ARCHS: dict[str, tuple[str, str]] = {
    "fasterrcnn_r101": ("fasterrcnn", "resnet101"),
    "fasterrcnn_r50": ("fasterrcnn", "resnet50"),
    "fasterrcnn_r34": ("fasterrcnn", "resnet34"),
    "fasterrcnn_r18": ("fasterrcnn", "resnet18"),
    "fasterrcnn_mbv2": ("fasterrcnn", "mobilenet_v2"),
    "fasterrcnn_mbv3": ("fasterrcnn", "mobilenet_v3_large"),
    "fasterrcnn_mbv3s": ("fasterrcnn", "mobilenet_v3_small"),
    "retinanet_r101": ("retinanet", "resnet101"),
    "retinanet_r50": ("retinanet", "resnet50"),
    "retinanet_r18": ("retinanet", "resnet18"),
}

#: Teacher -> student presets. The three Faster R-CNN pairs are the DKD paper's COCO pairs (and
#: mdistiller's ``DKD-R18-R101``, ``DKD-R50-R101``, ``DKD-MV2-R50`` configs); RetinaNet R101->R50 is
#: the usual one-stage pair; ``cpu`` is the small pair of the embedded ``shapes`` default.
PAIRS: dict[str, tuple[str, str]] = {
    "r101_r18": ("fasterrcnn_r101", "fasterrcnn_r18"),
    "r101_r50": ("fasterrcnn_r101", "fasterrcnn_r50"),
    "r50_mbv2": ("fasterrcnn_r50", "fasterrcnn_mbv2"),
    "retina_r101_r50": ("retinanet_r101", "retinanet_r50"),
    "cpu": ("fasterrcnn_r18", "fasterrcnn_mbv3s"),
}

FPN_CHANNELS = 256
#: torchvision's FPN output keys -> our level names, with strides.
RCNN_LEVELS: tuple[tuple[str, str, int], ...] = (
    ("0", "p2", 4),
    ("1", "p3", 8),
    ("2", "p4", 16),
    ("3", "p5", 32),
    ("pool", "p6", 64),
)
RETINA_LEVELS: tuple[tuple[str, str, int], ...] = (
    ("0", "p3", 8),
    ("1", "p4", 16),
    ("2", "p5", 32),
    ("p6", "p6", 64),
    ("p7", "p7", 128),
)


def family(arch: str) -> str:
    """``"fasterrcnn"`` or ``"retinanet"``; ``UserError`` for an unknown arch."""
    return entry(arch)[0]


def entry(arch: str) -> tuple[str, str]:
    """``(family, backbone name)`` of ``arch``; ``UserError`` listing the valid names otherwise."""
    if arch not in ARCHS:
        raise unknown("detection arch", arch, ARCHS)
    return ARCHS[arch]


def levels(arch: str) -> tuple[tuple[str, str, int], ...]:
    """``(torchvision key, level name, stride)`` of each FPN level of ``arch``."""
    return RCNN_LEVELS if family(arch) == "fasterrcnn" else RETINA_LEVELS
