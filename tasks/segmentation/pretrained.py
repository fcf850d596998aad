"""A segmentation student's starting weights (``--student-checkpoint ARCH=FILE``): whole model or ImageNet backbone.

The published segmentation settings start the student from an ImageNet-pretrained backbone (CIRKD's scripts pass
``--student-pretrained-base resnet18-imagenet.pth``), so besides a whole model (diffbench's own files, CIRKD's
trained models for its archs) :func:`load_init` accepts the backbone files people have, in the layout of the
arch's backbone (:data:`~tasks.segmentation.archs.INIT_LAYOUTS`):

* ``torchvision-resnet`` (``deeplabv3_r18/r50/r101``, ``pspnet_r18``): torchvision's ``resnet*`` files, keys
  ``conv1.weight [64, 3, 7, 7]``, ``bn1.*``, ``layer1..4.*`` and ``fc.*``, into ``model.backbone``;
* ``torchvision-mobilenet`` (``deeplabv3_mbv3``): torchvision's ``mobilenet_v3_large`` file, ``features.*`` into
  ``model.backbone``, ``classifier.*`` left over;
* ``cirkd-resnet`` (``*_cirkd``): CIRKD's deep-stem file (``conv1.weight [64, 3, 3, 3]``, ``conv2``, ``conv3``,
  ``bn1..bn3``, ``layer1.0.downsample``...), into CIRKD's ``model.pretrained``.

Every key of the backbone must be in the file with its shape, and nothing but the classifier may be left over;
otherwise a :class:`UserError` names the missing, unexpected and wrong-shape keys. This is stricter than CIRKD's
own loader (``models/base_models/resnet.py`` L248-257 keeps the file's keys that the model has and silently leaves
the others at random), on purpose: a file of the wrong layout then fails loudly instead of training from a
half-initialised backbone. BatchNorm's ``num_batches_tracked`` counters may be absent (older torch files lack
them); they start at the model's value, as ``nn.BatchNorm2d`` itself does for such files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from methods.errors import UserError
from tasks.base import key_mismatch, read_state_dict_file
from tasks.segmentation.archs import INIT_LAYOUTS, arch_spec


def _counters_filled(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the BatchNorm counters it lacks taken from ``own``."""
    missing = {k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **missing}


def _layout_hint(layout: str, state: dict[str, torch.Tensor]) -> str:
    """A sentence naming the likely mix-up when a ResNet file of the other stem was given, else ``""``."""
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        return ""
    if layout == "cirkd-resnet" and tuple(conv1.shape[-2:]) == (7, 7):
        return (
            " It looks like a torchvision ResNet (7x7 conv1): CIRKD's archs have a deep 3x3 stem and take "
            "CIRKD's resnet18-imagenet.pth; torchvision files fit deeplabv3_r18 and the other torchvision archs."
        )
    if layout == "torchvision-resnet" and "conv3.weight" in state:
        return (
            " It looks like CIRKD's deep-stem ResNet (conv1/conv2/conv3): it fits deeplabv3_r18_cirkd, "
            "not the torchvision-layout archs."
        )
    return ""


def load_init(model: nn.Module, arch: str, path: Path | str) -> str:
    """Load ``arch``'s starting weights from ``path`` into ``model``; return what was loaded, for the job's log.

    A whole model (every key of ``model``) loads as it is; otherwise the file must be the ImageNet backbone of the
    arch's layout (module docstring). ``UserError`` naming the keys when it is neither.
    """
    state = read_state_dict_file(path)
    own = model.state_dict()
    whole = key_mismatch(own, _counters_filled(own, state))
    if whole is None:
        model.load_state_dict(_counters_filled(own, state), strict=True)
        return "the whole model"
    name = arch_spec(arch).init_layout
    if not name:
        raise UserError(f"checkpoint {str(path)!r} does not fit {arch}: {whole}")
    layout = INIT_LAYOUTS[name]
    backbone: nn.Module = getattr(model, layout["module"])
    prefix, classifier = layout["prefix"], layout["classifier"]
    if all(k.startswith(layout["module"] + ".") for k in state):  # the backbone saved from inside a model
        state = {k.removeprefix(layout["module"] + "."): v for k, v in state.items()}
    mine = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    others = sorted(k for k in state if not k.startswith(prefix))
    bb_own = backbone.state_dict()
    mine = _counters_filled(bb_own, mine)
    why = key_mismatch(bb_own, mine, lambda k: (prefix + k).startswith(classifier))
    unexpected = [k for k in others if not k.startswith(classifier)]
    if unexpected:
        extra = f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})"
        why = f"{why}; {extra}" if why else extra
    if why:
        top = {n for n, _ in model.named_children()}
        if any(k.split(".", 1)[0] in top for k in state):  # meant as a whole model: say why that failed
            raise UserError(f"checkpoint {str(path)!r} does not fit {arch} as a whole model: {whole}")
        raise UserError(
            f"checkpoint {str(path)!r} is neither a whole {arch} nor its backbone in the {layout['what']} layout: "
            f"{why}.{_layout_hint(name, state)}"
        )
    backbone.load_state_dict({k: v for k, v in mine.items() if k in bb_own}, strict=True)
    left = sorted(k for k in state if (k.removeprefix(prefix) not in bb_own) or not k.startswith(prefix))
    rest = f"; left over: {', '.join(left)}" if left else ""
    what = f"the ImageNet backbone ({layout['what']}) into {layout['module']}, {len(bb_own)} tensors"
    return f"{what}{rest}; heads random"
