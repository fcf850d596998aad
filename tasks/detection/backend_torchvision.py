"""The torchvision detection backend: Faster R-CNN / RetinaNet with FPN (models in :mod:`.models`).

The paired forward reimplements ``GeneralizedRCNN.forward``'s training path step by step (transform ->
backbone -> RPN -> ``select_training_samples`` -> box head -> ``fastrcnn_loss``) so it can hand out
what a method needs without touching torchvision's models:

* ``fpn.pN`` taps: the backbone's FPN maps (roles ``hint`` and ``feature``), read from the
  ``OrderedDict`` the backbone returns (a forward hook would only see that dict);
* ``logits`` (Faster R-CNN only): the student's box-classifier logits on its *sampled* proposals, the
  teacher's box head scoring the very same boxes on the teacher's FPN maps, and as target the labels the
  student's sampler assigned (0 = background), like mdistiller's ``RCNNKD`` does for DKD.

Both detectors see the student's transformed batch: ``check_pair`` guarantees identical transforms,
and reusing one ``ImageList`` also keeps multi-scale training (a random ``min_size`` per batch) aligned.

Every function here has a namesake in :mod:`tasks.detection.d2.backend`; the task picks the module by
arch name (``d2_*`` -> detectron2) or by the model's ``det_backend`` attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.roi_heads import fastrcnn_loss

from methods.base import UserError
from tasks.base import PairedOutput, frozen_bn_counters, key_mismatch, read_state_dict_file
from tasks.detection import models as zoo

NAME = "torchvision"

#: COCO's 80 category ids (sorted): torchvision's COCO weights use them directly as labels (91 rows).
COCO_CATEGORY_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)  # fmt: skip


def archs() -> list[str]:
    return list(zoo.ARCHS)


def build_model(arch: str, num_classes: int, dataset: str, init: str | None = None) -> nn.Module:
    """torchvision's detector for ``arch`` (``init="random"``: plain BatchNorm, nothing frozen; see
    :func:`~tasks.detection.models.build_detector`)."""
    model = zoo.build_detector(arch, num_classes, dataset, init)
    model.det_backend = NAME
    return model


def check_pair(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse pairs whose FPN maps or box heads cannot be compared position by position."""
    st, tt = student.transform, teacher.transform
    for attr in ("min_size", "max_size", "image_mean", "image_std", "size_divisible", "fixed_size"):
        a, b = getattr(st, attr, None), getattr(tt, attr, None)
        if (tuple(a) if isinstance(a, list | tuple) else a) != (tuple(b) if isinstance(b, list | tuple) else b):
            raise UserError(
                f"teacher and student detectors use different input transforms ({attr}: student {a} vs "
                f"teacher {b}); build both for the same dataset so their FPN maps refer to the same pixels"
            )
    s_lv, t_lv = zoo.fpn_level_names(student), zoo.fpn_level_names(teacher)
    s_ch, t_ch = student.backbone.out_channels, teacher.backbone.out_channels
    if s_lv != t_lv or s_ch != t_ch:
        raise UserError(
            f"teacher and student FPNs differ (student levels {s_lv} x {s_ch} channels, teacher {t_lv} x "
            f"{t_ch}); pair detectors of the same family (fasterrcnn_* with fasterrcnn_*, retinanet_* with "
            "retinanet_*)"
        )
    s_head, t_head = box_predictor(student), box_predictor(teacher)
    if (s_head is None) != (t_head is None):
        raise UserError("teacher and student must both be Faster R-CNN or both RetinaNet")
    if s_head is not None and s_head.cls_score.out_features != t_head.cls_score.out_features:
        raise UserError(
            f"teacher and student box heads have different class counts ({t_head.cls_score.out_features} vs "
            f"{s_head.cls_score.out_features})"
        )


def load_weights(model: nn.Module, path: Path) -> None:
    """Strict load; a torchvision COCO file (91 label rows) is also accepted by an 81-class COCO model.

    torchvision labels COCO boxes with their raw category ids (1..90, 91 rows with gaps); we use
    contiguous labels 1..80. When that is the only mismatch, the rows of the 80 real categories are
    picked out (classifier rows, and the 4 box-regression rows per class) and the load stays strict.
    A file trained with plain BatchNorm (a COCO teacher a grid trained from random weights) loads into the
    frozen-BatchNorm model a teacher is built as: its ``num_batches_tracked`` counters are the only extra keys
    (:func:`~tasks.base.frozen_bn_counters`).
    """
    counters = frozen_bn_counters(model)
    state = {k: v for k, v in read_state_dict_file(path).items() if k not in counters}
    # a plain BatchNorm's missing counter is filled in by torch (files without version metadata)
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked") or k in state}
    why = key_mismatch(own, state)
    if why:
        remapped = _remap_coco91(own, state)
        if remapped is None:
            raise UserError(f"checkpoint {str(path)!r} does not fit {getattr(model, 'det_arch', 'this model')}: {why}")
        state = remapped
    model.load_state_dict(state, strict=True)


#: Top-level modules of torchvision's detectors: a file with any of them is a whole detector.
_DETECTOR_PREFIXES = ("backbone.", "rpn.", "roi_heads.", "head.")
#: What an ImageNet classification file holds beyond a detector's backbone body: torchvision's classifiers
#: (``resnet*``: ``fc.weight``/``fc.bias``; ``mobilenet_v2``/``v3``: ``classifier.*``).
_CLASSIFIERS = ("fc.", "classifier.")


def load_init(model: nn.Module, arch: str, path: Path) -> str:
    """A student's starting weights: a whole detector (ours, torchvision's COCO files: :func:`load_weights`) or an
    ImageNet classification backbone in torchvision's layout, loaded into the detector's backbone body.

    The backbone file must hold every tensor of the body (``conv1.weight``, ``bn1.*``, ``layer1.0...`` for ResNets;
    ``features.*`` for MobileNets, the body's own keys under ``features.``) and nothing else but the classifier
    (``fc.*`` / ``classifier.*``) and, for MobileNets, the ``features`` blocks after the last one the FPN reads (the
    detector returns stages 1-4, so e.g. ``mobilenet_v3_small``'s ``features.10``-``12`` are not part of it); the FPN
    and heads keep their initialisation (torchvision's ``weights_backbone``). Anything else is a :class:`UserError`
    naming missing and unexpected keys.
    """
    state = read_state_dict_file(path)
    if any(k.startswith(_DETECTOR_PREFIXES) for k in state):
        load_weights(model, path)
        return "the whole detector"
    name = zoo.entry(arch)[1]
    body = model.backbone.body
    prefix = "features." if name.startswith("mobilenet") else ""
    counters = {prefix + k for k in frozen_bn_counters(body)}
    state = {k: v for k, v in state.items() if k not in counters}
    # a plain BatchNorm's missing counter is filled in by torch itself (BatchNorm's _load_from_state_dict, for files
    # without version metadata); whether torchvision's released files carry the counters is UNVERIFIED
    own = {prefix + k: v for k, v in body.state_dict().items()
           if not k.endswith("num_batches_tracked") or prefix + k in state}  # fmt: skip
    last = max((int(n) for n, _ in body.named_children() if n.isdigit()), default=None)

    def unused(key: str) -> bool:
        index = key.split(".")[1] if prefix and key.startswith(prefix) else ""
        return key.startswith(_CLASSIFIERS) or (last is not None and index.isdigit() and int(index) > last)

    why = key_mismatch(own, state, unused)
    if why:
        raise UserError(f"checkpoint {str(path)!r} is neither a whole {arch} detector nor an ImageNet {name} "
                        f"backbone in torchvision's layout: {why}")  # fmt: skip
    body.load_state_dict({k[len(prefix) :]: state[k] for k in own}, strict=True)
    return f"ImageNet backbone (torchvision {name} layout), {len(own)} tensors"


def paired_forward(
    student: nn.Module,
    teacher: nn.Module | None,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
) -> PairedOutput:
    """Student (train mode) and teacher (eval, no grad) on the same batch, already on the device."""
    if box_predictor(student) is not None:
        return _rcnn_paired(student, teacher, images, targets)
    return _retina_paired(student, teacher, images, targets)


def predict(model: nn.Module, images: list[torch.Tensor]) -> list[Mapping[str, torch.Tensor]]:
    """Detections in torchvision's format (what :func:`~tasks.detection.coco_eval.evaluate_detector` reads)."""
    return model(images)


def box_predictor(model: nn.Module) -> nn.Module | None:
    heads = getattr(model, "roi_heads", None)
    return getattr(heads, "box_predictor", None)


def _fpn_taps(
    arch_levels: Iterable[tuple[str, str, int]], features: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return {f"fpn.{level}": features[key] for key, level, _stride in arch_levels if key in features}


def _level_keys(model: nn.Module) -> list[tuple[str, str, int]]:
    arch = getattr(model, "det_arch", None)
    if arch is not None:
        return list(zoo.levels(arch))
    fam = zoo.RCNN_LEVELS if box_predictor(model) is not None else zoo.RETINA_LEVELS
    return list(fam)


def _rcnn_paired(
    student: nn.Module, teacher: nn.Module | None, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> PairedOutput:
    """``GeneralizedRCNN.forward`` (train path) + the teacher's box head on the student's sampled boxes."""
    image_list, targets = student.transform(images, targets)
    features = student.backbone(image_list.tensors)
    proposals, rpn_losses = student.rpn(image_list, features, targets)
    heads = student.roi_heads
    proposals, _matched, labels, regression_targets = heads.select_training_samples(proposals, targets)
    box_feats = heads.box_head(heads.box_roi_pool(features, proposals, image_list.image_sizes))
    class_logits, box_regression = heads.box_predictor(box_feats)
    loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
    losses = {**rpn_losses, "loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
    s_taps = {**_fpn_taps(_level_keys(student), features), "logits": class_logits}
    t_taps: dict[str, torch.Tensor] = {}
    if teacher is not None:
        with torch.no_grad():
            t_features = teacher.backbone(image_list.tensors)
            t_taps = {
                **_fpn_taps(_level_keys(teacher), t_features),
                "logits": teacher_box_logits(teacher, t_features, proposals, image_list.image_sizes),
            }
    return PairedOutput(losses, s_taps, t_taps, torch.cat(labels), len(images))


def teacher_box_logits(
    teacher: nn.Module, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_sizes: list[tuple[int, int]]
) -> torch.Tensor:
    """The teacher's box-classifier logits for given boxes (one row per box, images concatenated)."""
    heads = teacher.roi_heads
    feats = heads.box_head(heads.box_roi_pool(features, [b.detach() for b in boxes], image_sizes))
    return heads.box_predictor(feats)[0]


def _retina_paired(
    student: nn.Module, teacher: nn.Module | None, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> PairedOutput:
    """``RetinaNet.forward`` (train path); RetinaNet has no softmax logits, so only FPN taps."""
    image_list, targets = student.transform(images, targets)
    features = student.backbone(image_list.tensors)
    feats = list(features.values())
    head_outputs = student.head(feats)
    anchors = student.anchor_generator(image_list, feats)
    losses = student.compute_loss(targets, head_outputs, anchors)
    s_taps = _fpn_taps(_level_keys(student), features)
    t_taps: dict[str, torch.Tensor] = {}
    if teacher is not None:
        with torch.no_grad():
            t_taps = _fpn_taps(_level_keys(teacher), teacher.backbone(image_list.tensors))
    return PairedOutput(dict(losses), s_taps, t_taps, None, len(images))


def _remap_coco91(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state`` with its 91 COCO label rows cut to 81 for a model whose state dict is ``own``, or ``None`` if that
    does not apply."""
    if set(state) != set(own):
        return None
    rows = torch.tensor([0, *COCO_CATEGORY_IDS])
    out = dict(state)
    for key, value in state.items():
        want = own[key].shape
        if value.shape == want:
            continue
        if key.startswith("roi_heads.box_predictor.cls_score.") and value.shape[0] == 91 and want[0] == 81:
            out[key] = value[rows]
        elif key.startswith("roi_heads.box_predictor.bbox_pred.") and value.shape[0] == 364 and want[0] == 324:
            out[key] = value.reshape(91, 4, *value.shape[1:])[rows].reshape(324, *value.shape[1:])
        elif key.startswith("head.classification_head.cls_logits.") and value.shape[0] % 91 == 0:
            anchors = value.shape[0] // 91
            if want[0] != anchors * 81:
                return None
            out[key] = value.reshape(anchors, 91, *value.shape[1:])[:, rows].reshape(anchors * 81, *value.shape[1:])
        else:
            return None
    return out
