"""The classification model zoo: one registry of architecture names, builders and tap specs.

CIFAR names are those of mdistiller's ``cifar_model_dict`` (and the DKD/DiffKD tables); ImageNet names
are torchvision's builders (``resnet18``, ``resnet34``, ``resnet50``) plus ``MobileNetV1`` (mdistiller's
definition). Each architecture declares three taps, computed without a forward pass:

* ``hint`` — FitNet's hint layer, mdistiller's ``feats[2]`` (``FITNET.HINT_LAYER = 2``). For the
  ImageNet models the hint is the stride-16 map (torchvision ``layer3``, MobileNetV1 ``model.11``):
  mdistiller ships no ImageNet FitNet config, and its ``feats[2]`` would be a stride-8 map for its
  ResNets but a stride-16 one for MobileNetV1, which would misalign the ResNet50 -> MobileNetV1 pair.
* ``feat`` — the map the global average pool reduces (last stage, post-activation): what DiffKD
  denoises. It equals mdistiller's ``feats[-1]`` except for three models whose ``feats[-1]`` is not
  that map: WRNs (``relu`` after the final BN, the tap DiffKD's own code uses for ``wrn_40_x``),
  MobileNetV2 (the 1280-channel head ``conv2``, like DiffKD's ``features.18`` on torchvision's
  MobileNetV2) and ShuffleV2 (the 1024-channel head ``relu``).
* ``logits`` — the classifier's output.

Strides are relative to the model's native input: 32x32 for CIFAR models, 224x224 for ImageNet ones.

The table itself (:data:`ARCHS`, :class:`Arch`, :func:`arch_names`, :func:`get_arch`, :func:`tap_specs`) lives in
:mod:`.arch`, free of torch, and is re-exported here; this module adds what needs torch: :func:`build`,
:func:`validate_taps` and :func:`register_arch`.

Architectures from outside diffbench register with :func:`register_arch` (a decorator in the style of
timm's ``@register_model``, declaring the builder's taps beside it); a plugin module that uses it is
imported through the ``diffbench.archs`` entry point group or ``--import`` (:mod:`bench.jobs.plugins`). When
timm is installed, every timm model is an architecture too, as ``timm/<model name>`` (:func:`timm_arch`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from methods.errors import UserError
from tasks.base import TapRecorder
from tasks.classification.models.arch import (
    ARCHS,
    TIMM_PREFIX,
    Arch,
    LazyBuilder,
    add_arch,
    arch_names,
    get_arch,
    is_timm,
    tap_specs,
)

__all__ = [
    "ARCHS",
    "TIMM_PREFIX",
    "Arch",
    "Builder",
    "LazyBuilder",
    "arch_names",
    "build",
    "get_arch",
    "is_timm",
    "register_arch",
    "tap_specs",
    "torchvision_model",
    "validate_taps",
]

#: ``builder(num_classes) -> nn.Module``, what :func:`register_arch` decorates.
Builder = Callable[[int], nn.Module]


def register_arch(
    name: str | None = None,
    *,
    hint: tuple[str, int, int],
    feat: tuple[str, int, int],
    logits: str,
    input_size: int = 32,
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(num_classes) -> nn.Module`` as a classification architecture.

    Like timm's ``@register_model``, the decorated function is returned unchanged and its name is the
    architecture's name unless ``name`` is given; unlike it, the taps are declared here, beside the
    builder, because methods build their adapters from them without running the model. Check them once
    with :func:`validate_taps` (shapes, and that ``feat`` is the map the classifier pools)::

        @register_arch(hint=("layer2", 64, 8), feat=("layer3", 128, 16), logits="fc", input_size=64)
        def tiny_net(num_classes: int) -> nn.Module: ...

    Args:
        name: the CLI name (default: the function's name); a name taken already is an error.
        hint: (module path, channels, stride) of FitNet's hint tap.
        feat: (module path, channels, stride) of the map global pooling averages (DiffKD's feature tap).
        logits: module path of the classifier, whose output must be the model's output.
        input_size: the native input side the strides refer to.
    """

    def decorate(builder: Builder) -> Builder:
        add_arch(Arch(name or builder.__name__, builder, input_size >= 224, tuple(hint), tuple(feat), logits,
                      None if input_size in (32, 224) else input_size))  # fmt: skip
        return builder

    return decorate


def torchvision_model(name: str, num_classes: int) -> nn.Module:
    """torchvision's builder ``name`` with no weights (nothing is downloaded; load files with ``load_weights``)."""
    import torchvision

    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)


def build(arch: str, num_classes: int) -> nn.Module:
    """A freshly initialised ``arch`` with ``num_classes`` outputs; ``forward(x)`` returns the logits."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    return get_arch(arch).build(num_classes)


def validate_taps(
    arch: str, num_classes: int = 10, input_size: int | None = None, model: nn.Module | None = None
) -> dict[str, tuple[int, ...]]:
    """Hook the taps of ``arch`` on a model, run a small batch and check every tap against its spec.

    Checks, for each tap, the channels and ``H = W = input_size / stride``; that the ``logits`` tap is
    the model's output; and that the ``feat`` tap is the map global pooling averages
    (``classifier(feat.mean((2, 3))) == logits``). Raises ``RuntimeError`` naming the failing tap.

    Args:
        arch: a registered name.
        num_classes: classes of the model built when ``model`` is not given.
        input_size: image side; defaults to the native size (32 CIFAR, 224 ImageNet) the strides refer to.
        model: an already built ``arch`` to check instead of a fresh one (it is put in eval mode).

    Returns:
        The captured shapes by tap name.
    """
    a = get_arch(arch)
    size = input_size or a.input_size
    model = (model if model is not None else build(arch, num_classes)).eval()
    head = model.get_submodule(a.logits)
    specs = tap_specs(arch, head.out_features if isinstance(head, nn.Linear) else head[-1].out_features)
    rec = TapRecorder(model, {n: s.module for n, s in specs.items()})
    batch = 1 if a.imagenet else 2
    try:
        with torch.no_grad():
            logits = model(torch.randn(batch, 3, size, size))
            taps = rec.pop()
            pooled = head(taps["feat"].mean((2, 3)))
    finally:
        rec.remove()
    if not torch.equal(taps["logits"], logits):
        raise RuntimeError(f"{arch}: the logits tap {specs['logits'].module!r} is not the model's output")
    shapes = {n: tuple(t.shape) for n, t in taps.items()}
    for name, spec in specs.items():
        got = shapes[name]
        want = (batch, spec.channels)
        if spec.stride:
            want += (size // spec.stride, size // spec.stride)
        if got != want:
            raise RuntimeError(f"{arch}: tap {name!r} ({spec.module}) has shape {got}, spec says {want}")
    # Untrained deep nets can have huge activations: compare relative to the logits' scale.
    if not torch.allclose(pooled, logits, rtol=1e-4, atol=1e-5 * (1.0 + logits.abs().max().item())):
        raise RuntimeError(f"{arch}: classifier(pooled 'feat' tap {specs['feat'].module!r}) is not the logits")
    return shapes
