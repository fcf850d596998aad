"""The detectron2 detection backend: arch table and install check (this module never imports detectron2).

detectron2 is optional: no package registry serves it, users build it from source. Everything here is
importable without it, so ``import tasks``, the torchvision backend, ``diffbench --help`` and
``diffbench list archs`` keep working; using a ``d2_*`` arch without detectron2 is one ``UserError``
line that says how to install it. The backend itself (configs, models, paired forward) lives in
:mod:`tasks.detection.d2.backend` and is imported on first use.

Architectures are Faster R-CNN FPN models built from detectron2 configs: each ``d2_*`` arch names a
yaml file shipped in ``configs/`` that ``_BASE_``\\ s onto detectron2's own model-zoo config (read by
path from the installed package, never through ``detectron2.model_zoo``, which needs ``pkg_resources``)
or adds mdistiller's student settings (``detection/configs/DKD/*.yaml``):

* ``d2_faster_rcnn_R_101_FPN``: model zoo ``COCO-Detection/faster_rcnn_R_101_FPN_3x`` (mdistiller's R101 teacher);
* ``d2_faster_rcnn_R_50_FPN``: model zoo ``faster_rcnn_R_50_FPN_3x`` (MV2's teacher, R101's R50 student);
* ``d2_faster_rcnn_R_18_FPN``: mdistiller's R18 student (ResNet depth 18, ``RES2_OUT_CHANNELS`` 64, RGB
  input with the ImageNet std);
* ``d2_faster_rcnn_MV2_FPN``: mdistiller's MobileNetV2 FPN student (its checkpoint keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.errors import UserError, unknown

#: Every arch name of this backend starts with it: it is how the detection task picks the backend.
PREFIX = "d2_"

INSTALL_HINT = (
    "build it from source: pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git' "
    "(see the README's detectron2 section)"
)


@dataclass(frozen=True)
class D2Arch:
    """One ``d2_*`` architecture: the yaml file it is built from and what it is."""

    config: str
    backbone: str
    about: str


ARCHS: dict[str, D2Arch] = {
    "d2_faster_rcnn_R_101_FPN": D2Arch(
        "faster_rcnn_R_101_FPN.yaml", "resnet101", "model zoo faster_rcnn_R_101_FPN_3x (42.0 box AP)"
    ),
    "d2_faster_rcnn_R_50_FPN": D2Arch(
        "faster_rcnn_R_50_FPN.yaml", "resnet50", "model zoo faster_rcnn_R_50_FPN_3x (40.2 box AP)"
    ),
    "d2_faster_rcnn_R_18_FPN": D2Arch("faster_rcnn_R_18_FPN.yaml", "resnet18", "mdistiller's R18 FPN student"),
    "d2_faster_rcnn_MV2_FPN": D2Arch(
        "faster_rcnn_MV2_FPN.yaml", "mobilenet_v2", "mdistiller's MobileNetV2 FPN student"
    ),
}

#: Teacher -> student presets: mdistiller's three DKD detection pairs (``DKD-R18-R101``,
#: ``DKD-R50-R101``, ``DKD-MV2-R50``) and ``cpu``, the small pair for the embedded ``shapes`` set.
PAIRS: dict[str, tuple[str, str]] = {
    "r101_r18": ("d2_faster_rcnn_R_101_FPN", "d2_faster_rcnn_R_18_FPN"),
    "r101_r50": ("d2_faster_rcnn_R_101_FPN", "d2_faster_rcnn_R_50_FPN"),
    "r50_mv2": ("d2_faster_rcnn_R_50_FPN", "d2_faster_rcnn_MV2_FPN"),
    "cpu": ("d2_faster_rcnn_R_18_FPN", "d2_faster_rcnn_MV2_FPN"),
}

#: detectron2's FPN outputs ``(key, tap level name, stride)``: ``p6`` is the max-pooled top level. The tap
#: names and strides are the torchvision backend's, so FitNet and DiffKD work unchanged.
LEVELS: tuple[tuple[str, str, int], ...] = (
    ("p2", "p2", 4),
    ("p3", "p3", 8),
    ("p4", "p4", 16),
    ("p5", "p5", 32),
    ("p6", "p6", 64),
)


def is_d2(arch: str) -> bool:
    """Whether ``arch`` names a detectron2-backend architecture (by its prefix)."""
    return arch.startswith(PREFIX)


def available() -> bool:
    """Whether detectron2 can be imported here (checked on every call, so a test can hide it)."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def require(what: str) -> None:
    """``UserError`` saying how to install detectron2, unless it is importable."""
    if not available():
        raise UserError(f"{what} needs detectron2, which is not installed; {INSTALL_HINT}")


def entry(arch: str) -> D2Arch:
    """The table entry of ``arch``; ``UserError`` listing the valid names otherwise."""
    if arch not in ARCHS:
        raise unknown("detectron2 arch", arch, ARCHS)
    return ARCHS[arch]
