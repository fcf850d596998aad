"""The segmentation architecture table, free of torch: what each arch is, without building it.

Names, head families, the backbone map the ``feat`` tap sits on (module path and channels), FitNet's hint when
it is elsewhere, whether an FCN auxiliary head is trained, which ImageNet backbone files a student can start from,
and the output stride every model shares. The task's spec lists, checks and taps architectures and picks DiffKD's
autoencoder from this table alone; :mod:`.models` and :mod:`.cirkd` build each arch from the same entries (their
docstrings say how the models reach output stride 8).

Two families of layouts: torchvision's (``deeplabv3_r18`` etc.: torchvision ResNets / MobileNetV3 with
torchvision's heads, so torchvision's ImageNet files load into the backbone) and CIRKD's (``*_cirkd``: CIRKD v1's
deep-stem ``ResNetV1b`` and its own ASPP head, module for module, so CIRKD's ``resnet18-imagenet.pth`` and its
trained teachers load strictly; the published Cityscapes numbers 78.07 / 74.21 are of these models).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.errors import unknown

#: Spatial reduction of every backbone's last stage and of the logits.
OUTPUT_STRIDE = 8


@dataclass(frozen=True)
class ArchSpec:
    """What the task needs to know about an architecture without building it.

    Attributes:
        family: the head, ``"deeplabv3"`` or ``"pspnet"``.
        feat_module: module path of the backbone's last stage (the ``feat`` tap).
        feat_channels: its channels.
        aux: whether the model has an FCN auxiliary head on the stage before the last (trained with weight 0.4).
        description: one line for listings.
        hint_module / hint_channels: FitNet's hint when it is not the ``feat`` tap (``""``: the ``feat`` tap is
            both the hint and DiffKD's feature). CIRKD's FitNet hints on the feature after the ASPP head's
            3x3 conv-BN-ReLU-Dropout (``x_feat_after_aspp``), so its archs get a separate ``hint`` tap there.
        init_layout: the ImageNet backbone files :meth:`~tasks.segmentation.task.SegmentationTask.load_init`
            accepts besides whole models (:data:`INIT_LAYOUTS`); ``""``: whole models only.
    """

    family: str
    feat_module: str
    feat_channels: int
    aux: bool
    description: str
    hint_module: str = ""
    hint_channels: int = 0
    init_layout: str = ""


#: Backbone file layouts a student can start from (``--student-checkpoint ARCH=FILE``): where the backbone sits in
#: the model, which file keys are a classifier that may be left over, and what the file is.
INIT_LAYOUTS: dict[str, dict[str, str]] = {
    "torchvision-resnet": {
        "module": "backbone", "prefix": "", "classifier": "fc.",
        "what": "torchvision ImageNet ResNet (e.g. resnet18-f37072fd.pth)",
    },
    "torchvision-mobilenet": {
        "module": "backbone", "prefix": "features.", "classifier": "classifier.",
        "what": "torchvision ImageNet MobileNetV3-Large (features.*)",
    },
    "cirkd-resnet": {
        "module": "pretrained", "prefix": "", "classifier": "fc.",
        "what": "CIRKD's deep-stem ImageNet ResNet (resnet18-imagenet.pth, resnet101-imagenet.pth)",
    },
}  # fmt: skip

#: (widths, blocks per stage) of the tiny CPU-preset backbones (:class:`~tasks.segmentation.models.TinyResNet`).
TINY_TEACHER = ((32, 64, 128, 256), (2, 2, 2, 2))
TINY_STUDENT = ((16, 32, 64, 128), (1, 1, 1, 1))

ARCHS: dict[str, ArchSpec] = {
    # CIRKD v1 (winycg/CIRKD @91735ef39d37a8a15ba942ae011e98587ac0e71d, models/deeplabv3.py, models/segbase.py,
    # models/base_models/resnet.py): resnet18_v1s / resnet101_v1s, ASPP 128 / 256 channels, hint after the ASPP.
    "deeplabv3_r101_cirkd": ArchSpec(
        "deeplabv3", "pretrained.layer4", 2048, True, "DeepLabV3, CIRKD's deep-stem dilated ResNet-101 (teacher)",
        hint_module="head.block.3", hint_channels=256, init_layout="cirkd-resnet",
    ),
    "deeplabv3_r18_cirkd": ArchSpec(
        "deeplabv3", "pretrained.layer4", 512, True, "DeepLabV3, CIRKD's deep-stem dilated ResNet-18",
        hint_module="head.block.3", hint_channels=128, init_layout="cirkd-resnet",
    ),
    "deeplabv3_r101": ArchSpec(
        "deeplabv3", "backbone.layer4", 2048, True, "DeepLabV3, dilated ResNet-101 (teacher)",
        init_layout="torchvision-resnet",
    ),
    "deeplabv3_r50": ArchSpec(
        "deeplabv3", "backbone.layer4", 2048, True, "DeepLabV3, dilated ResNet-50", init_layout="torchvision-resnet",
    ),
    "deeplabv3_r18": ArchSpec(
        "deeplabv3", "backbone.layer4", 512, True, "DeepLabV3, dilated ResNet-18", init_layout="torchvision-resnet",
    ),
    "pspnet_r18": ArchSpec(
        "pspnet", "backbone.layer4", 512, True, "PSPNet, dilated ResNet-18", init_layout="torchvision-resnet",
    ),
    # No auxiliary head: CIRKD trains its mobile students without one.
    "deeplabv3_mbv3": ArchSpec(
        "deeplabv3", "backbone.16", 960, False, "DeepLabV3, MobileNetV3-Large at stride 8",
        init_layout="torchvision-mobilenet",
    ),
    "deeplabv3_tiny_t": ArchSpec(
        "deeplabv3", "backbone.layer4", TINY_TEACHER[0][3], True, "tiny DeepLabV3 teacher (CPU preset)"
    ),
    "deeplabv3_tiny_s": ArchSpec(
        "deeplabv3", "backbone.layer4", TINY_STUDENT[0][3], True, "tiny DeepLabV3 student (CPU preset)"
    ),
}  # fmt: skip


def arch_spec(arch: str) -> ArchSpec:
    """The table entry of ``arch``; ``UserError`` listing the valid names otherwise."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise unknown("segmentation arch", arch, sorted(ARCHS)) from None
