"""The detectron2 detection backend: models from detectron2 configs, its checkpoints, mdistiller's ``RCNNKD`` pairing.

Imported only when a ``d2_*`` arch is used (see :mod:`tasks.detection.d2` for the arch table). The
functions mirror :mod:`tasks.detection.backend_torchvision`, so the detection task has one contract.

**Models.** ``build_model`` merges, in order: detectron2's defaults (``get_cfg``) plus mdistiller's
``MODEL.MOBILENETV2`` keys, the arch's yaml in ``configs/`` (whose ``_BASE_: "zoo:..."`` is detectron2's
model-zoo config read by path from the installed package), the dataset overlay (``configs/shapes.yaml``)
and ``ROI_HEADS.NUM_CLASSES``. The result is detectron2's own ``GeneralizedRCNN``, so model-zoo files
load into it unchanged (``load_weights`` and students' ``load_init``: detectron2's ``DetectionCheckpointer``, made
strict, in :mod:`.weights`).

**Input.** Batches are the detection task's (RGB ``[0, 1]`` images at their original size, boxes
``xyxy`` with labels ``1..K``), shared with the torchvision backend. Each image is resized like
detectron2's ``ResizeShortestEdge`` (``INPUT.MIN_SIZE_TRAIN`` sampled per image, ``MAX_SIZE_TRAIN``;
the ``*_TEST`` sizes for evaluation), scaled to 0-255 and put in the model's own ``INPUT.FORMAT``
(``BGR`` for model-zoo models, ``RGB`` for mdistiller's R18); the model then subtracts its own
``PIXEL_MEAN`` and divides by ``PIXEL_STD``, as detectron2 does. Teacher and student get the same resized
pixels, each in its own format and normalisation, so their FPN maps cover the same image.
(mdistiller's ``teacher_preprocess_image`` normalises the student's RGB image with the teacher's BGR-ordered
mean before swapping channels, which shifts the R101 teacher's B and R inputs by about 20 in the R18
pair; here every model gets exactly the input it was trained on.)

**Classes.** detectron2 numbers foreground classes ``0..K-1`` and puts the background *last* (index
``K``), while torchvision puts it first. Labels ``1..K`` of the batch become ``gt_classes = label - 1``;
the ``logits`` tap has detectron2's column order and the target is detectron2's ``gt_classes`` of each
sampled proposal (``K`` = background), so target and logits agree. KD and DKD need nothing else: they
compare rows column by column and use the target column only. Detections are mapped back to labels
``1..K`` for COCO evaluation.

**Paired forward** (mdistiller's ``RCNNKD``): the student's backbone, RPN and ``label_and_sample_proposals``,
its box head on the sampled proposals (its detector losses are detectron2's own ``FastRCNNOutputLayers.losses``),
and the teacher's backbone and box head scoring the *same* proposals (``forward_pure_roi_head``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from methods.base import UserError
from tasks.base import PairedOutput
from tasks.detection.d2 import LEVELS, entry

with warnings.catch_warnings():
    # detectron2's layers script a few helpers when imported, which this torch reports as deprecated.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    import detectron2
    from detectron2.config import CfgNode, get_cfg
    from detectron2.data.transforms import ResizeShortestEdge
    from detectron2.modeling import build_model as d2_build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage
    from detectron2.utils.tracing import is_fx_tracing

    from tasks.detection.d2 import mobilenetv2

    # the backend's weights functions live in their own module (re-exported under the contract's names)
    from tasks.detection.d2.weights import load_init as load_init
    from tasks.detection.d2.weights import load_weights as load_weights

# detectron2's anchor generator calls torch.meshgrid without ``indexing`` (its "ij" default is what it means).
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)


def _ask_fx_once_quietly() -> None:
    """detectron2's ROI pooler asks torch.fx whether it is tracing; this torch logs a notice meant for tracing code
    the first time anyone asks. Ask once here with that logger quiet, so runs do not print it."""
    log = logging.getLogger("torch.fx._symbolic_trace")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        is_fx_tracing()
    finally:
        log.setLevel(level)


_ask_fx_once_quietly()

NAME = "detectron2"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: ``_BASE_`` prefix of our yaml files for a config of detectron2's model zoo, read by path.
ZOO_PREFIX = "zoo:"
FORMATS = ("BGR", "RGB")


def zoo_config_dir() -> Path:
    """``detectron2/model_zoo/configs`` inside the installed package (what ``model_zoo.get_config_file`` reads)."""
    return Path(detectron2.__file__).resolve().parent / "model_zoo" / "configs"


def _merge_yaml(cfg: CfgNode, path: Path) -> None:
    """Merge ``path`` into ``cfg``, its ``_BASE_`` first (``zoo:`` = detectron2's model zoo, else relative)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"detectron2 config {str(path)!r} cannot be read: {err}") from None
    base = data.pop("_BASE_", None)
    if base is not None:
        if base.startswith(ZOO_PREFIX):
            name = base[len(ZOO_PREFIX) :]
            zoo_file = zoo_config_dir() / name
            if not zoo_file.is_file():
                raise UserError(
                    f"{path.name}: detectron2's model-zoo config {name!r} is not in {zoo_file.parent} "
                    "(is this detectron2 installed with its model_zoo/configs?)"
                )
            cfg.merge_from_file(str(zoo_file))
        else:
            _merge_yaml(cfg, path.parent / base)
    cfg.merge_from_other_cfg(CfgNode(data))


def load_config(arch: str, num_classes: int, dataset: str, init: str | None = None) -> CfgNode:
    """The frozen detectron2 config of ``arch`` for ``dataset`` with ``num_classes`` (background included);
    ``init="random"`` adds ``configs/random_init.yaml`` (trainable BatchNorm, nothing frozen)."""
    if num_classes < 2:
        raise UserError(f"detection needs num_classes >= 2 (background + at least one class), got {num_classes}")
    cfg = get_cfg()
    mobilenetv2.add_mobilenetv2_config(cfg)
    _merge_yaml(cfg, CONFIG_DIR / entry(arch).config)
    overlay = CONFIG_DIR / f"{dataset}.yaml"
    if overlay.is_file():
        _merge_yaml(cfg, overlay)
    if init == "random":
        _merge_yaml(cfg, CONFIG_DIR / "random_init.yaml")
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes - 1  # detectron2 counts foreground classes only
    cfg.MODEL.DEVICE = "cpu"  # the training loop moves the model
    cfg.MODEL.WEIGHTS = ""  # weights come from load_weights, never from a URL
    if cfg.INPUT.FORMAT not in FORMATS:
        raise UserError(f"{arch}: INPUT.FORMAT {cfg.INPUT.FORMAT!r} is not supported; valid: {', '.join(FORMATS)}")
    cfg.freeze()
    return cfg


# -- the backend's functions (same names as backend_torchvision) -----------------------------------------
def build_model(arch: str, num_classes: int, dataset: str, init: str | None = None) -> nn.Module:
    """detectron2's ``GeneralizedRCNN`` for ``arch``, with ``det_arch``, ``det_backend`` and its ``d2_cfg``
    (``init="random"``: trainable BatchNorm and no frozen stage, see :func:`load_config`)."""
    cfg = load_config(arch, num_classes, dataset, init)
    model = d2_build_model(cfg)
    model.det_arch = arch
    model.det_backend = NAME
    model.d2_cfg = cfg
    return model


def _input_settings(model: nn.Module) -> dict[str, Any]:
    i = model.d2_cfg.INPUT
    return {
        "MIN_SIZE_TRAIN": tuple(i.MIN_SIZE_TRAIN),
        "MIN_SIZE_TRAIN_SAMPLING": i.MIN_SIZE_TRAIN_SAMPLING,
        "MAX_SIZE_TRAIN": i.MAX_SIZE_TRAIN,
        "MIN_SIZE_TEST": i.MIN_SIZE_TEST,
        "MAX_SIZE_TEST": i.MAX_SIZE_TEST,
    }


def check_pair(student: nn.Module, teacher: nn.Module) -> None:
    """Both detectron2 R-CNNs with the same resizing, padding, FPN levels and classes.

    Input format and pixel normalisation may differ (each model normalises its own copy of the pixels,
    as in mdistiller's R18-R101 pair), the resized image may not.
    """
    for m, who in ((student, "student"), (teacher, "teacher")):
        if getattr(m, "det_backend", None) != NAME:
            raise UserError(f"the {who} is not a detectron2 detector; pair d2_* archs with d2_* archs")
    s_in, t_in = _input_settings(student), _input_settings(teacher)
    for key, value in s_in.items():
        if t_in[key] != value:
            raise UserError(
                f"teacher and student detectors resize differently (INPUT.{key}: student {value} vs teacher "
                f"{t_in[key]}); build both for the same dataset so their FPN maps refer to the same pixels"
            )
    s_bb, t_bb = student.backbone, teacher.backbone
    if (s_bb.size_divisibility, s_bb.padding_constraints) != (t_bb.size_divisibility, t_bb.padding_constraints):
        raise UserError(
            f"teacher and student pad their images differently (size_divisibility {t_bb.size_divisibility} vs "
            f"{s_bb.size_divisibility})"
        )
    s_out = {k: (v.channels, v.stride) for k, v in s_bb.output_shape().items()}
    t_out = {k: (v.channels, v.stride) for k, v in t_bb.output_shape().items()}
    if s_out != t_out:
        raise UserError(f"teacher and student FPNs differ (student {s_out}, teacher {t_out})")
    s_k, t_k = student.roi_heads.num_classes, teacher.roi_heads.num_classes
    if s_k != t_k:
        raise UserError(f"teacher and student box heads have different class counts ({t_k + 1} vs {s_k + 1})")


# -- batches -> detectron2 inputs ---------------------------------------------------------------------------
def resized_shape(model: nn.Module, height: int, width: int, train: bool) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge`` of the model's config (train: a sampled short edge per image)."""
    i = model.d2_cfg.INPUT
    if train:
        sizes, max_size = i.MIN_SIZE_TRAIN, i.MAX_SIZE_TRAIN
        if i.MIN_SIZE_TRAIN_SAMPLING == "range":
            short = int(np.random.randint(sizes[0], sizes[1] + 1))
        else:
            short = int(np.random.choice(sizes))
    else:
        short, max_size = i.MIN_SIZE_TEST, i.MAX_SIZE_TEST
    if short == 0:  # detectron2: size 0 disables resizing
        return height, width
    return ResizeShortestEdge.get_output_shape(height, width, short, max_size)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[3,H,W]`` in ``[0,1]`` -> bilinear resize -> 0-255 (detectron2's pixel range), still RGB."""
    x = image.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    return x * 255.0


def _in_format(model: nn.Module, rgb255: torch.Tensor) -> torch.Tensor:
    return rgb255.flip(0) if model.d2_cfg.INPUT.FORMAT == "BGR" else rgb255


def _gt_instances(target: Mapping[str, torch.Tensor], size: tuple[int, int], scale: tuple[float, float]) -> Instances:
    """Ground truth in detectron2's classes (``label - 1``) and in the resized image's pixels."""
    sx, sy = scale
    boxes = target["boxes"].float() * torch.tensor([sx, sy, sx, sy], device=target["boxes"].device)
    inst = Instances(size)
    inst.gt_boxes = Boxes(boxes.reshape(-1, 4))
    inst.gt_classes = target["labels"].long() - 1
    return inst


def _inputs(
    images: list[torch.Tensor], targets: list[Mapping[str, torch.Tensor]] | None, shape_of: nn.Module, train: bool
) -> tuple[list[torch.Tensor], list[Instances] | None, list[tuple[int, int]]]:
    """Resized 0-255 RGB images, their ground truth and their original ``(height, width)``."""
    pixels, gts, original = [], [] if targets is not None else None, []
    for k, img in enumerate(images):
        h, w = int(img.shape[-2]), int(img.shape[-1])
        nh, nw = resized_shape(shape_of, h, w, train)
        pixels.append(_resize(img, (nh, nw)))
        original.append((h, w))
        if targets is not None:
            gts.append(_gt_instances(targets[k], (nh, nw), (nw / w, nh / h)))
    return pixels, gts, original


def model_inputs(model: nn.Module, pixels: list[torch.Tensor], original: list[tuple[int, int]]) -> list[dict]:
    """detectron2's per-image input dicts: ``image`` in the model's format, and the size to answer in."""
    return [
        {"image": _in_format(model, x), "height": h, "width": w} for x, (h, w) in zip(pixels, original, strict=True)
    ]


def box_predictions(heads: nn.Module, features: Mapping[str, torch.Tensor], proposals: list[Instances]) -> Any:
    """``(scores [R, K+1], deltas)`` of a ``StandardROIHeads`` for given proposals (mdistiller's
    ``forward_pure_roi_head``)."""
    feats = [features[f] for f in heads.box_in_features]
    x = heads.box_pooler(feats, [p.proposal_boxes for p in proposals])
    return heads.box_predictor(heads.box_head(x))


def _fpn_taps(features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"fpn.{level}": features[key] for key, level, _ in LEVELS if key in features}


def paired_forward(
    student: nn.Module,
    teacher: nn.Module | None,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
) -> PairedOutput:
    """mdistiller's ``RCNNKD.forward`` (see the module docstring); detectron2's losses by their names."""
    pixels, gts, original = _inputs(images, targets, student, train=True)
    with EventStorage():  # detectron2's heads log statistics into the current storage
        s_images = student.preprocess_image(model_inputs(student, pixels, original))
        features = student.backbone(s_images.tensor)
        try:
            proposals, rpn_losses = student.proposal_generator(s_images, features, gts)
        except FloatingPointError:  # "Predicted boxes or scores contain Inf/NaN. Training has diverged."
            return _diverged(student, teacher, features, pixels, original)
        heads = student.roi_heads
        sampled = heads.label_and_sample_proposals(proposals, gts)
        predictions = box_predictions(heads, features, sampled)
        det_losses = heads.box_predictor.losses(predictions, sampled)
    target = torch.cat([p.gt_classes for p in sampled])
    s_taps = {**_fpn_taps(features), "logits": predictions[0]}
    t_taps: dict[str, torch.Tensor] = {}
    if teacher is not None:
        with torch.no_grad():
            t_features = _teacher_features(teacher, pixels, original)
            t_taps = {**_fpn_taps(t_features), "logits": box_predictions(teacher.roi_heads, t_features, sampled)[0]}
    return PairedOutput({**rpn_losses, **det_losses}, s_taps, t_taps, target, len(images))


def _teacher_features(teacher: nn.Module, pixels: list[torch.Tensor], original: list[tuple[int, int]]) -> Any:
    return teacher.backbone(teacher.preprocess_image(model_inputs(teacher, pixels, original)).tensor)


def _diverged(
    student: nn.Module,
    teacher: nn.Module | None,
    features: Mapping[str, torch.Tensor],
    pixels: list[torch.Tensor],
    original: list[tuple[int, int]],
) -> PairedOutput:
    """A diverged student, answered the way the torchvision backend's NaNs are: non-finite losses.

    detectron2's RPN refuses non-finite proposals with ``FloatingPointError`` in training. Raising it would
    crash the job (and be retried) where a torchvision job fails for good with "loss is nan"; so the step
    returns NaN losses still attached to the student's graph, its FPN taps and zero box rows (whose KD/DKD
    terms are NaN too), and the training loop fails the job with that reason.
    """
    nan = sum(f.sum() for f in features.values()) * float("nan")
    losses = dict.fromkeys(("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"), nan)
    rows = features["p2"].new_zeros((0, student.roi_heads.num_classes + 1))
    target = torch.zeros(0, dtype=torch.long, device=rows.device)
    t_taps: dict[str, torch.Tensor] = {}
    if teacher is not None:
        with torch.no_grad():
            t_taps = {**_fpn_taps(_teacher_features(teacher, pixels, original)), "logits": rows.clone()}
    return PairedOutput(losses, {**_fpn_taps(features), "logits": rows + nan}, t_taps, target, len(pixels))


def predict(model: nn.Module, images: list[torch.Tensor]) -> list[Mapping[str, torch.Tensor]]:
    """Detections at the images' own size in torchvision's format (labels ``1..K``; background dropped)."""
    pixels, _, original = _inputs(images, None, model, train=False)
    outputs = model(model_inputs(model, pixels, original))
    results = []
    for out in outputs:
        inst = out["instances"]
        results.append({"boxes": inst.pred_boxes.tensor, "labels": inst.pred_classes + 1, "scores": inst.scores})
    return results
