"""timm models as classification architectures: ``timm/<model name>`` (only when timm is installed).

timm is an optional dependency (``pip install 'diffbench[timm]'``); nothing here imports it before a
``timm/...`` name is used. The three taps come from timm's own description of the model, read once per
name from a probe forward at the model's default input size (timm's ``pretrained_cfg["input_size"]``):

* ``feat`` — what ``forward_features`` returns: the map the classifier head pools (DiffKD's feature tap).
  The hook sits on the outermost module that produced that very tensor (``layer4`` of a ResNet, ``bn2``
  of an EfficientNet). Models whose features are token sequences (ViTs) have no such map and are refused.
* ``hint`` — FitNet's hint: the ``feature_info`` stage at stride 16 (the one the ImageNet zoo uses),
  else the stage before the last.
* ``logits`` — ``get_classifier()``, which must produce the model's output.

Channels and strides are measured on the probe, not copied from ``feature_info``. Weights are never
downloaded (``pretrained=False``); a timm checkpoint loads as a teacher file like any other state dict.
"""

from __future__ import annotations

import difflib
import functools

import torch
from torch import nn

from methods.errors import UserError
from tasks.classification.models.arch import TIMM_PREFIX, Arch

#: Classes of the probe model (taps other than the logits do not depend on it).
_PROBE_CLASSES = 10


def _timm():
    try:
        import timm
    except ImportError:
        raise UserError(
            "timm/... architectures need timm, which is not installed: pip install 'diffbench[timm]' (or timm)"
        ) from None
    return timm


def _builder(model_name: str):
    def build(num_classes: int) -> nn.Module:
        return _timm().create_model(model_name, pretrained=False, num_classes=num_classes)

    return build


@functools.cache
def timm_arch(arch: str) -> Arch:
    """The zoo entry of ``timm/<model name>``; :class:`UserError` for an unknown or untappable model."""
    timm = _timm()
    model_name = arch.removeprefix(TIMM_PREFIX)
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        raise UserError(f"unknown timm model {model_name!r}; close: {', '.join(close) or '(none)'} "
                        "(`python -c 'import timm; print(timm.list_models())'` lists them)")  # fmt: skip
    torch_state = torch.random.get_rng_state()
    try:
        model = _builder(model_name)(_PROBE_CLASSES).eval()
    finally:
        torch.random.set_rng_state(torch_state)  # probing must not move the caller's random stream
    size = int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])
    names = {id(m): n for n, m in model.named_modules() if n}
    fired: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: fired.append((names[id(mod)], out)))
             for n, m in model.named_modules() if n]  # fmt: skip
    try:
        with torch.no_grad():
            feats = model.forward_features(torch.zeros(1, 3, size, size))
            logits = model.forward_head(feats)
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise UserError(f"{arch}: forward_features gives {shape}, not an [N, C, H, W] feature map (a token model?); "
                        "diffbench's feature taps need a convolutional model")  # fmt: skip
    # Hooks fire inner modules first: the last one that returned this very tensor is the outermost (the stage).
    feat_module = next((n for n, out in reversed(fired) if out is feats), None)
    head = model.get_classifier()
    logits_module = names.get(id(head))
    if feat_module is None or logits_module is None or not any(n == logits_module and torch.equal(out, logits)
                                                               for n, out in fired):  # fmt: skip
        raise UserError(f"{arch}: its features or logits do not come out of one module each; cannot tap it")
    outputs = {n: out for n, out in fired if isinstance(out, torch.Tensor)}
    stages = [f for f in getattr(model, "feature_info", []) or [] if f.get("module") in outputs]
    stage = next((f for f in stages if f.get("reduction") == 16), stages[-2] if len(stages) > 1 else None)
    if stage is None or outputs[stage["module"]].ndim != 4:
        raise UserError(f"{arch}: timm's feature_info names no earlier stage to use as the hint tap")
    hint = outputs[stage["module"]]
    return Arch(
        arch,
        _builder(model_name),
        size >= 224,
        (stage["module"], hint.shape[1], size // hint.shape[-1]),
        (feat_module, feats.shape[1], size // feats.shape[-1]),
        logits_module,
        None if size in (32, 224) else size,
    )
