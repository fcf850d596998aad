"""The classification architecture table: names, input sizes and taps of every architecture, free of torch.

Planning a grid, listing architectures and refusing a misspelt name need the names and the tap specs of each
architecture, not the model: so every built-in entry here names its builder as ``"module:function"``
(:class:`LazyBuilder`), imported only when a model is built, and reads its taps' channels from the size tables
of :mod:`.configs` that the model files build from. :mod:`.zoo` (torch) builds, validates and registers models
into this same table; :mod:`.timm_archs` makes entries for ``timm/<model>`` names. The tap conventions
(``hint``, ``feat``, ``logits``) are described in :mod:`.zoo`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from methods.errors import unknown
from methods.taps import TapSpec
from tasks.classification.models.configs import (
    RESNET_CONFIGS,
    RESNETV2_CONFIGS,
    VGG_CFG,
    VGG_CONFIGS,
    WRN_CONFIGS,
    resnetv2_expansion,
    wrn_widths,
)

#: Prefix of the architecture names that are timm models.
TIMM_PREFIX = "timm/"
#: What makes the entry of a ``timm/<model>`` name (it needs timm and torch). Named, not imported: that module
#: builds :class:`Arch` entries from this one, and the table must stay free of torch.
TIMM_RESOLVER = "tasks.classification.models.timm_archs:timm_arch"


def resolve(target: str) -> Callable[..., Any]:
    """The function ``"module:function"`` names, importing its module now."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class LazyBuilder:
    """``function(*args, num_classes)`` with ``function`` given as ``"module:function"`` and imported on the
    first build, so that declaring an architecture imports neither torch nor its model file."""

    target: str
    args: tuple[Any, ...] = ()

    def __call__(self, num_classes: int) -> Any:
        return resolve(self.target)(*self.args, num_classes)


@dataclass(frozen=True)
class Arch:
    """One registry entry.

    Attributes:
        name: the CLI name.
        builder: ``builder(num_classes) -> nn.Module`` (freshly initialised, ``forward`` returns logits): a
            callable (what plugins register), a :class:`LazyBuilder`, or a ``"module:function"`` string.
        imagenet: True for ImageNet-resolution models (224x224), False for CIFAR ones (32x32).
        hint: (module path, channels, stride) of the hint tap.
        feat: (module path, channels, stride) of the feature tap.
        logits: module path of the classifier.
        size: the native input side when it is neither 32 nor 224 (plugins, timm models).
    """

    name: str
    builder: Callable[[int], Any] | str
    imagenet: bool
    hint: tuple[str, int, int]
    feat: tuple[str, int, int]
    logits: str
    size: int | None = None

    @property
    def input_size(self) -> int:
        return self.size or (224 if self.imagenet else 32)

    def build(self, num_classes: int) -> Any:
        """A fresh model with ``num_classes`` outputs (imports the builder's module, and torch, now)."""
        builder = LazyBuilder(self.builder) if isinstance(self.builder, str) else self.builder
        return builder(num_classes)


ARCHS: dict[str, Arch] = {}


def add_arch(arch: Arch) -> None:
    """Add ``arch`` to :data:`ARCHS` (a name registered twice is an error)."""
    if arch.name in ARCHS:
        raise ValueError(f"architecture {arch.name!r} registered twice")
    ARCHS[arch.name] = arch


def _model(module: str, function: str, *args: Any) -> LazyBuilder:
    return LazyBuilder(f"tasks.classification.models.{module}:{function}", args)


def _register_builtins() -> None:
    for name, (_, f) in RESNET_CONFIGS.items():
        add_arch(Arch(name, _model("resnet", "build", name), False, ("layer2", f[2], 2), ("layer3", f[3], 4), "fc"))
    for name in RESNETV2_CONFIGS:
        if name not in ("ResNet18", "ResNet50"):  # mdistiller's zoo lists only these two
            continue
        e = resnetv2_expansion(name)
        add_arch(Arch(name, _model("resnetv2", "build", name), False, ("layer2", 128 * e, 2), ("layer4", 512 * e, 8),
                      "linear"))  # fmt: skip
    for name in WRN_CONFIGS:
        w = wrn_widths(name)
        add_arch(Arch(name, _model("wrn", "build", name), False, ("block2", w[2], 2), ("relu", w[3], 4), "fc"))
    for name, letter in VGG_CONFIGS.items():
        c = VGG_CFG[letter]
        add_arch(Arch(name, _model("vgg", "build", name), False, ("relu2", c[2][-1], 4), ("relu4", c[4][-1], 8),
                      "classifier"))  # fmt: skip
    add_arch(Arch("MobileNetV2", _model("mobilenetv2", "mobile_half"), False, ("blocks.2", 16, 4), ("conv2", 1280, 16),
                  "classifier"))  # fmt: skip
    add_arch(Arch("ShuffleV1", _model("shufflenetv1", "shuffle_v1"), False, ("layer2", 480, 4), ("layer3", 960, 8),
                  "linear"))  # fmt: skip
    add_arch(Arch("ShuffleV2", _model("shufflenetv2", "shuffle_v2"), False, ("layer2", 232, 4), ("relu", 1024, 8),
                  "linear"))  # fmt: skip
    for name, width in (("resnet18", 1), ("resnet34", 1), ("resnet50", 4)):
        # torchvision's builder with no weights (nothing is downloaded; load files with ``load_weights``).
        add_arch(Arch(name, _model("zoo", "torchvision_model", name), True, ("layer3", 256 * width, 16),
                      ("layer4", 512 * width, 32), "fc"))  # fmt: skip
    add_arch(Arch("MobileNetV1", _model("mobilenetv1", "MobileNetV1"), True, ("model.11", 512, 16),
                  ("model.13", 1024, 32), "fc"))  # fmt: skip


_register_builtins()


def arch_names(imagenet: bool | None = None) -> list[str]:
    """Registered names, in registry order; ``imagenet`` filters ImageNet (True) or CIFAR (False) models."""
    return [n for n, a in ARCHS.items() if imagenet is None or a.imagenet == imagenet]


def is_timm(arch: str | None) -> bool:
    """Whether ``arch`` names a timm model (``timm/resnet18``): resolved on use, never listed."""
    return isinstance(arch, str) and arch.startswith(TIMM_PREFIX)


def get_arch(arch: str) -> Arch:
    """The registry entry of ``arch`` (or a ``timm/<model>`` name); :class:`UserError` naming valid ones if unknown.

    A ``timm/...`` name imports timm (and torch): its taps are read from a probe forward.
    """
    if arch in ARCHS:
        return ARCHS[arch]
    if is_timm(arch):
        return resolve(TIMM_RESOLVER)(arch)
    raise unknown("architecture", arch, ARCHS, "(or timm/<model> with timm installed)")


def tap_specs(arch: str, num_classes: int) -> dict[str, TapSpec]:
    """The ``hint``, ``feat`` and ``logits`` taps of ``arch``, without building or running it."""
    a = get_arch(arch)
    return {
        "hint": TapSpec("hint", a.hint[1], a.hint[2], ("hint",), a.hint[0]),
        "feat": TapSpec("feat", a.feat[1], a.feat[2], ("feature",), a.feat[0]),
        "logits": TapSpec("logits", num_classes, 0, ("logits",), a.logits),
    }
