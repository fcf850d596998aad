"""The detection task: torchvision Faster R-CNN / RetinaNet with FPN, COCO-format data, COCO box AP.

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
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset
from torchvision.models.detection.roi_heads import fastrcnn_loss

from methods.base import TapSpec, UserError
from tasks.base import DataBundle, PairedOutput, Recipe, TapRecorder, Task, load_state_dict_file, register_task
from tasks.detection import models as zoo
from tasks.detection.coco_eval import METRICS, evaluate_detector
from tasks.detection.data import CocoDetection, collate, ensure_shapes, find_split

#: COCO's 80 category ids (sorted): torchvision's COCO weights use them directly as labels (91 rows).
COCO_CATEGORY_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)  # fmt: skip

#: train2017 images with at least one non-crowd box (torchvision's reference filter): 117,266.
COCO_TRAIN_IMAGES = 117_266

#: ``cpu`` preset (``shapes``, batch 8, lr 0.02, one warm-up epoch: half an epoch diverged once).
#: Measured: fasterrcnn_r18 reaches ~23 AP after 2 epochs and ~44 after 3 at constant lr (fasterrcnn_mbv3s
#: ~29 and ~40); a training step of batch 8 costs ~1.5 CPU-seconds (r18; mbv3s ~1.4, plus ~25% for fitnet,
#: ~50% for diffkd), so 4 epochs (decay after 3) keep teacher + vanilla + fitnet + diffkd students within
#: ~15 minutes on 2 cores.
CPU_EPOCHS = 4
CPU_MILESTONES = (3,)

#: methods that distil softmax class logits, which RetinaNet does not have.
LOGIT_METHODS = ("kd", "dkd")


def _coco_recipe(student: str, epochs: int, milestones: tuple[int, ...]) -> Recipe:
    """mmdetection/detectron2 1x-style schedule: batch 16, SGD 0.02 (RetinaNet 0.01), 500 warm-up iterations."""
    batch = 16
    iters_per_epoch = -(-COCO_TRAIN_IMAGES // batch)
    lr = 0.01 if zoo.family(student) == "retinanet" else 0.02
    return Recipe(
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        weight_decay=1e-4,
        milestones=milestones,
        warmup_epochs=500 / iters_per_epoch,
        warmup_factor=0.001,
        num_workers=4,
    )


class DetectionTask(Task):
    """Object detection (see the module docstring for the taps and the paired forward)."""

    name = "detection"
    datasets = ("shapes", "coco")
    default_dataset = "shapes"
    primary_metric = "bbox_AP"
    metrics = METRICS
    presets = ("1x", "2x", "cpu")

    # -- models ------------------------------------------------------------------------------
    def archs(self) -> list[str]:
        return list(zoo.ARCHS)

    def build_model(self, arch: str, num_classes: int, dataset: str) -> nn.Module:
        return zoo.build_detector(arch, num_classes, dataset)

    def tap_specs(self, arch: str, num_classes: int, dataset: str) -> dict[str, TapSpec]:
        specs = {
            f"fpn.{level}": TapSpec(f"fpn.{level}", zoo.FPN_CHANNELS, stride, ("hint", "feature"), "backbone")
            for _key, level, stride in zoo.levels(arch)
        }
        if zoo.family(arch) == "fasterrcnn":
            specs["logits"] = TapSpec("logits", num_classes, 0, ("logits",), "roi_heads.box_predictor.cls_score")
        return specs

    def attach_taps(self, model: nn.Module, arch: str, num_classes: int, dataset: str) -> TapRecorder:
        """No hooks: :meth:`paired_forward` fills every tap itself (FPN dict, box-head rows).

        The module paths of the specs are still validated, so a model that is not ``arch`` is refused.
        """
        modules = dict(model.named_modules())
        for spec in self.tap_specs(arch, num_classes, dataset).values():
            if spec.module not in modules:
                raise UserError(f"tap {spec.name!r}: module {spec.module!r} not found; is this model a {arch}?")
        rec = TapRecorder(model, {})
        model.tap_recorder = rec
        return rec

    def check_arch_pair(self, teacher: str, student: str) -> None:
        """Faster R-CNN and RetinaNet have different FPN levels and heads: refuse mixed pairs up front."""
        t_family, s_family = zoo.family(teacher), zoo.family(student)
        if t_family != s_family:
            raise UserError(
                f"pair {teacher}:{student} mixes detector families ({t_family} teacher, {s_family} student); pair "
                "fasterrcnn_* with fasterrcnn_* or retinanet_* with retinanet_*"
            )

    def check_pair(self, student: nn.Module, teacher: nn.Module) -> None:
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
        s_head, t_head = _box_predictor(student), _box_predictor(teacher)
        if (s_head is None) != (t_head is None):
            raise UserError("teacher and student must both be Faster R-CNN or both RetinaNet")
        if s_head is not None and s_head.cls_score.out_features != t_head.cls_score.out_features:
            raise UserError(
                f"teacher and student box heads have different class counts ({t_head.cls_score.out_features} vs "
                f"{s_head.cls_score.out_features})"
            )

    def load_weights(self, model: nn.Module, path: Path) -> None:
        """Strict load; a torchvision COCO file (91 label rows) is also accepted by an 81-class COCO model.

        torchvision labels COCO boxes with their raw category ids (1..90, 91 rows with gaps); we use
        contiguous labels 1..80. When that is the only mismatch, the rows of the 80 real categories are
        picked out (classifier rows, and the 4 box-regression rows per class) and the load stays strict.
        """
        try:
            load_state_dict_file(model, path)
        except UserError:
            state = _remap_coco91(model, path)
            if state is None:
                raise
            model.load_state_dict(state, strict=True)

    # -- data --------------------------------------------------------------------------------
    def build_data(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> DataBundle:
        """``shapes`` is generated on first use (under ``data_dir`` or the user cache); ``coco`` and any
        COCO-format set need ``data_dir`` (see :func:`~tasks.detection.data.find_split`); ``recipe.extra``
        may name ``train_ann``/``train_images``/``val_ann``/``val_images`` explicitly instead."""
        extra = dict(recipe.extra)
        if dataset == "shapes":
            root = ensure_shapes(data_dir)
        elif dataset == "coco":
            if data_dir is None and "train_ann" not in extra:
                raise UserError(
                    "dataset 'coco' needs --data-dir: a folder with annotations/instances_{train,val}2017.json "
                    "and train2017/, val2017/ (or any COCO-format json + image folder pair)"
                )
            root = Path(data_dir) if data_dir is not None else Path(".")
            if not root.is_dir():
                raise UserError(f"data folder {str(root)!r} does not exist")
        else:
            raise UserError(f"unknown detection dataset {dataset!r}; valid: {', '.join(self.datasets)}")

        def split(name: str) -> tuple[Path, Path]:
            if f"{name}_ann" in extra:
                return Path(extra[f"{name}_ann"]), Path(extra[f"{name}_images"])
            return find_split(root, name)

        train = CocoDetection(*split("train"), train=True)
        val = CocoDetection(*split("val"), train=False, categories=train.cat_ids)
        if len(train) == 0:
            raise UserError("the detection training split has no image with a box")
        return DataBundle(
            train,
            val,
            len(train.cat_ids) + 1,
            collate,
            {
                "classes": train.class_names,
                "num_train": len(train),
                "num_val": len(val),
                "num_classes": "foreground classes + 1 (background, label 0)",
            },
        )

    def default_num_classes(self, dataset: str) -> int:
        """Classes including the background: 3 shapes + 1, COCO's 80 + 1."""
        return {"shapes": 4, "coco": 81}.get(dataset, 81)

    def default_pairs(self, dataset: str) -> list[tuple[str, str]]:
        if dataset == "shapes":
            return [zoo.PAIRS["cpu"]]
        return [zoo.PAIRS[k] for k in ("r101_r18", "r101_r50", "r50_mbv2")]

    # -- recipes and method defaults ---------------------------------------------------------
    def recipe(self, dataset: str, student: str, preset: str | None = None) -> Recipe:
        """``1x``/``2x`` (COCO) and ``cpu`` (``shapes``, measured to fit a CPU grid in minutes)."""
        preset = preset or ("cpu" if dataset == "shapes" else "1x")
        if preset == "1x":
            return _coco_recipe(student, 12, (8, 11))
        if preset == "2x":
            return _coco_recipe(student, 24, (16, 22))
        if preset == "cpu":
            return Recipe(
                epochs=CPU_EPOCHS,
                batch_size=8,
                lr=0.02,
                weight_decay=1e-4,
                milestones=CPU_MILESTONES,
                warmup_epochs=1.0,
                warmup_factor=0.001,
                num_workers=0,
            )
        raise UserError(f"unknown detection recipe preset {preset!r}; valid: {', '.join(self.presets)}")

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        """Detection settings; KD/DKD on RetinaNet are refused here with the reason.

        * ``kd``: T=1, all weights 1 (mdistiller has no detection KD; T=1 and weight 1 are its detection
          DKD settings, and DKD with alpha=beta=1 is KD).
        * ``dkd``: mdistiller ``detection/model/config.py``: alpha 1, beta 0.25, T 1, no warm-up; the
          detector losses keep weight 1 (``RCNNKD`` adds ``loss_dkd`` unweighted).
        * ``fitnet``: one regressor per FPN level (methods.fitnet shares one only across equal strides), MSE
          weight 1 per level: an FPN level is 256
          channels of O(1) activations, so a per-element MSE is already on the detector losses' scale,
          where CIFAR's weight 100 (on a single thin hint layer) would swamp them.
        * ``diffkd``: feature DiffKD on every FPN level, kernel 3, MSE, no AE, no logits, one module
          shared by all levels (the FPN levels share one feature space: RPN and RetinaNet heads are
          shared across levels, so one denoiser fits them all with a fifth of the parameters).
        """
        for arch in (teacher, student):
            if zoo.family(arch) == "retinanet" and method in LOGIT_METHODS:
                raise UserError(
                    f"method {method!r} distils softmax class logits, but RetinaNet's classifier is sigmoid-based "
                    f"({arch!r} scores every class independently, with no background class); use fitnet or "
                    "diffkd on retinanet pairs, or a fasterrcnn_* pair for kd/dkd"
                )
        if method == "kd":
            return {"temperature": 1.0, "ce_weight": 1.0, "kd_weight": 1.0}
        if method == "dkd":
            return {"alpha": 1.0, "beta": 0.25, "temperature": 1.0, "ce_weight": 1.0, "warmup": 0}
        if method == "fitnet":
            return {"feat_weight": 1.0, "ce_weight": 1.0, "shared": False}
        if method == "diffkd":
            return {
                "use_ae": False,
                "distill_logits": False,
                "feat_kernel_size": 3,
                "share_levels": True,
                "kd_weight": 1.0,
                "diff_weight": 1.0,
                "ae_weight": 1.0,
                "ce_weight": 1.0,
            }
        return {}

    # -- training and evaluation -------------------------------------------------------------
    def paired_forward(
        self, student: nn.Module, teacher: nn.Module | None, batch: Any, device: torch.device
    ) -> PairedOutput:
        images, targets = batch
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
        if teacher is not None:
            teacher.eval()
        if _box_predictor(student) is not None:
            return _rcnn_paired(student, teacher, images, targets)
        return _retina_paired(student, teacher, images, targets)

    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        ds = getattr(loader, "dataset", None)
        while isinstance(ds, Subset):
            ds = ds.dataset
        if not isinstance(ds, CocoDetection):
            raise UserError("detection evaluation needs a loader over a COCO-format detection dataset")
        return evaluate_detector(model, loader, device, ds.coco, ds.label_to_cat)

    def synthetic_batch(
        self, batch_size: int, num_classes: int, device: torch.device, dataset: str | None = None, **_: Any
    ) -> Any:
        """Random images with 1-5 random boxes each: 128x128 (``shapes``) or COCO's typical 480x640."""
        g = torch.Generator().manual_seed(0)
        h, w = (480, 640) if dataset == "coco" else (128, 128)
        images, targets = [], []
        for _i in range(batch_size):
            n = int(torch.randint(1, 6, (), generator=g))
            xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
            wh = (0.1 + 0.2 * torch.rand(n, 2, generator=g)) * torch.tensor([w, h])
            boxes = torch.cat([xy, xy + wh], 1)
            labels = torch.randint(1, max(num_classes, 2), (n,), generator=g)
            images.append(torch.rand(3, h, w, generator=g).to(device))
            targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
        return images, targets


def _box_predictor(model: nn.Module) -> nn.Module | None:
    heads = getattr(model, "roi_heads", None)
    return getattr(heads, "box_predictor", None)


def _fpn_taps(arch_levels: Iterable[tuple[str, str, int]], features: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {f"fpn.{level}": features[key] for key, level, _stride in arch_levels if key in features}


def _level_keys(model: nn.Module) -> list[tuple[str, str, int]]:
    arch = getattr(model, "det_arch", None)
    if arch is not None:
        return list(zoo.levels(arch))
    fam = zoo.RCNN_LEVELS if _box_predictor(model) is not None else zoo.RETINA_LEVELS
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


def _remap_coco91(model: nn.Module, path: Path) -> dict[str, torch.Tensor] | None:
    """The checkpoint at ``path`` with its 91 COCO label rows cut to 81, or ``None`` if that does not apply."""
    from tasks.base import extract_state_dict

    try:
        state = extract_state_dict(torch.load(path, map_location="cpu", weights_only=False))
    except Exception:  # noqa: BLE001 - the strict loader already reported unreadable files
        return None
    if state is None:
        return None
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
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


register_task(DetectionTask())
