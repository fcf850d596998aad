"""The detection task: Faster R-CNN / RetinaNet with FPN from two backends, COCO-format data, COCO box AP.

One :class:`~tasks.base.Task` contract, two backends, one file each:

* :mod:`tasks.detection.backend_torchvision` (models in :mod:`tasks.detection.models`): ``fasterrcnn_*``
  and ``retinanet_*``, always available;
* :mod:`tasks.detection.d2.backend`: ``d2_*`` archs built from detectron2 configs (model-zoo teachers,
  mdistiller's DKD setting), when detectron2 is installed. The arch name picks the backend: its
  ``d2_`` prefix. Without detectron2 the ``d2_*`` names are still listed and validated; using one is a
  ``UserError`` that says how to install detectron2 (checked when a grid is expanded, before anything runs).

What a backend module provides, under the same names: ``NAME``, ``build_model``, ``check_pair``,
``load_weights``, ``paired_forward`` and ``predict`` (detections in torchvision's format, for one shared
COCO evaluation); arch names, families and FPN levels come from tables that need no backend import
(:mod:`.models`, :mod:`.d2`). Both backends hand out the same taps:

* ``fpn.p2..p6`` (Faster R-CNN) / ``fpn.p3..p7`` (RetinaNet): the FPN maps, 256 channels, roles ``hint``
  and ``feature`` — so FitNet and DiffKD see the same tap names and strides on either backend;
* ``logits`` (Faster R-CNN only): the student's box-classifier logits on its *sampled* proposals, the
  teacher's box head scoring the very same boxes, and as target the class the student's sampler assigned
  (mdistiller's ``RCNNKD``). Column order is the backend's: torchvision puts the background first (0),
  detectron2 last (``K``); each backend's target follows its own logits.

Data (``build_data``) and evaluation are shared: the backend only maps batches into its model's input.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from methods.base import TapSpec, UserError
from methods.feature_norm import PKD_LEVEL_WEIGHT
from tasks.base import DataBundle, PairedOutput, Recipe, TapRecorder, Task, register_task
from tasks.detection import backend_torchvision as tv
from tasks.detection import d2
from tasks.detection import models as zoo
from tasks.detection.backend_torchvision import COCO_CATEGORY_IDS, teacher_box_logits
from tasks.detection.coco_eval import METRICS, evaluate_detector
from tasks.detection.data import CocoDetection, collate, ensure_shapes, find_split

__all__ = ["COCO_CATEGORY_IDS", "DetectionTask", "backend_for", "teacher_box_logits"]

#: train2017 images with at least one non-crowd box (torchvision's reference filter): 117,266.
COCO_TRAIN_IMAGES = 117_266

#: ``cpu`` preset (``shapes``, batch 8, lr :data:`CPU_LR`, one warm-up epoch: half an epoch diverged once).
#: Measured: a training step of batch 8 costs ~1.5 CPU-seconds (fasterrcnn_r18; mbv3s ~1.4, plus ~25% for fitnet,
#: ~50% for diffkd), so 4 epochs (decay after 3) keep each student job within a few minutes on 2 cores.
CPU_EPOCHS = 4
CPU_MILESTONES = (3,)
#: ``cpu`` preset teachers (trained once per grid and cached) train 3x longer, a 1x-shaped schedule (decays at 2/3
#: and 11/12): with the students' 4 epochs the fasterrcnn_r18 teacher scored *below* the vanilla mbv3s student
#: (60.5 vs 63.7 AP), which makes every distillation result meaningless.
CPU_TEACHER_EPOCHS = 12
CPU_TEACHER_MILESTONES = (8, 11)
#: ``cpu`` preset lr, both backends: the 1x preset's 0.02 at batch 16 scaled to batch 8 (Goyal et al.'s linear rule;
#: mdistiller's detectron2 solver uses 0.01 at batch 8 too). At 0.02 distilled students diverged on both backends
#: once the teacher was strong: detectron2's MobileNetV2 box logits grew past 400 within the warm-up (KD, DKD and
#: FitNet, 3 of 5 jobs), and torchvision's KD mbv3s student reached NaN RPN losses in its second epoch against the
#: 89-AP 12-epoch r18 teacher (vanilla survived).
CPU_LR = 0.01

#: methods that distil softmax class logits, which RetinaNet does not have.
LOGIT_METHODS = ("kd", "dkd")


def backend_for(arch: str) -> ModuleType:
    """The backend module of ``arch``: detectron2's for ``d2_*`` (``UserError`` if it is not installed)."""
    if d2.is_d2(arch):
        d2.entry(arch)
        d2.require(f"detection arch {arch!r}")
        from tasks.detection.d2 import backend

        return backend
    return tv


def _backend_of(model: nn.Module) -> ModuleType:
    """The backend that built ``model`` (a bare torchvision detector counts as torchvision's)."""
    if getattr(model, "det_backend", tv.NAME) == tv.NAME:
        return tv
    from tasks.detection.d2 import backend

    return backend


def _coco_recipe(student: str, epochs: int, milestones: tuple[int, ...]) -> Recipe:
    """1x-style schedules: milestones at 2/3 and 11/12, weight decay 1e-4, SGD momentum 0.9.

    torchvision archs: the mmdetection/detectron2 default, batch 16, lr 0.02 (RetinaNet 0.01), 500 warm-up
    iterations. ``d2_*`` archs: mdistiller's DKD detection solver (``detection/configs/DKD/*.yaml``), batch 8,
    lr 0.01, 180k iterations with decays at 120k and 160k (12.3, 8.2 and 10.9 epochs of train2017), and
    detectron2's 1000 warm-up iterations (``SOLVER.WARMUP_ITERS``, factor 0.001).
    """
    if d2.is_d2(student):
        batch, lr, warmup_iters = 8, 0.01, 1000
    else:
        batch, warmup_iters = 16, 500
        lr = 0.01 if zoo.family(student) == "retinanet" else 0.02
    iters_per_epoch = -(-COCO_TRAIN_IMAGES // batch)
    return Recipe(
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        weight_decay=1e-4,
        milestones=milestones,
        warmup_epochs=warmup_iters / iters_per_epoch,
        warmup_factor=0.001,
        num_workers=4,
    )


class DetectionTask(Task):
    """Object detection (see the module docstring for the backends, taps and the paired forward)."""

    name = "detection"
    datasets = ("shapes", "coco")
    default_dataset = "shapes"
    primary_metric = "bbox_AP"
    metrics = METRICS
    presets = ("1x", "2x", "cpu")
    eval_autocast = False  # box decoding in bf16 moves COCO boxes by pixels
    fixed_input_size = False  # images keep their aspect ratio

    # -- models ------------------------------------------------------------------------------
    def archs(self) -> list[str]:
        """torchvision's archs, then detectron2's ``d2_*`` (listed even when detectron2 is not installed)."""
        return [*tv.archs(), *d2.ARCHS]

    def check_names(self, dataset: str, *archs: str | None) -> None:
        """Also refuse ``d2_*`` archs up front when detectron2 is missing, with the install hint."""
        super().check_names(dataset, *archs)
        for arch in archs:
            if arch is not None and d2.is_d2(arch):
                d2.require(f"detection arch {arch!r}")

    def family(self, arch: str) -> str:
        """``"fasterrcnn"`` or ``"retinanet"`` (without importing detectron2)."""
        if d2.is_d2(arch):
            d2.entry(arch)
            return "fasterrcnn"
        return zoo.family(arch)

    def build_model(self, arch: str, num_classes: int, dataset: str) -> nn.Module:
        return backend_for(arch).build_model(arch, num_classes, dataset)

    def tap_specs(self, arch: str, num_classes: int, dataset: str) -> dict[str, TapSpec]:
        """FPN maps (256 channels) and, for Faster R-CNN, the box-classifier ``logits``; no forward pass."""
        family = self.family(arch)  # validates the name
        levels = d2.LEVELS if d2.is_d2(arch) else zoo.levels(arch)
        specs = {
            f"fpn.{level}": TapSpec(f"fpn.{level}", zoo.FPN_CHANNELS, stride, ("hint", "feature"), "backbone")
            for _key, level, stride in levels
        }
        if family == "fasterrcnn":
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
        """Refuse, from the names, pairs across backends or detector families (their heads cannot align)."""
        t_d2, s_d2 = d2.is_d2(teacher), d2.is_d2(student)
        if t_d2 != s_d2:
            names = {True: "detectron2", False: "torchvision"}
            raise UserError(
                f"pair {teacher}:{student} mixes detection backends ({names[t_d2]} teacher, {names[s_d2]} "
                "student); pair d2_* with d2_* or torchvision archs with torchvision archs"
            )
        t_family, s_family = self.family(teacher), self.family(student)
        if t_family != s_family:
            raise UserError(
                f"pair {teacher}:{student} mixes detector families ({t_family} teacher, {s_family} student); pair "
                "fasterrcnn_* with fasterrcnn_* or retinanet_* with retinanet_*"
            )

    def check_pair(self, student: nn.Module, teacher: nn.Module) -> None:
        """Refuse pairs whose FPN maps or box heads cannot be compared position by position."""
        s_be, t_be = _backend_of(student), _backend_of(teacher)
        if s_be is not t_be:
            raise UserError(f"teacher and student come from different detection backends ({t_be.NAME} vs {s_be.NAME})")
        s_be.check_pair(student, teacher)

    def load_weights(self, model: nn.Module, path: Path) -> None:
        """Strict load by the model's backend.

        torchvision: our checkpoints and torchvision's COCO files (91 raw-id rows cut to 81 labels).
        detectron2: model-zoo ``.pkl``/``.pth`` through detectron2's ``DetectionCheckpointer``, and ours.
        """
        _backend_of(model).load_weights(model, path)

    # -- data --------------------------------------------------------------------------------
    def build_data(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> DataBundle:
        """``shapes`` is generated on first use (under ``data_dir`` or the user cache); ``coco`` and any
        COCO-format set need ``data_dir`` (see :func:`~tasks.detection.data.find_split`); ``recipe.extra``
        may name ``train_ann``/``train_images``/``val_ann``/``val_images`` explicitly instead.

        Both backends read these batches (RGB images in ``[0, 1]``, ``xyxy`` boxes, labels ``1..K``).
        """
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
        """torchvision pairs (always available); detectron2's are named with ``--pairs`` (``d2.PAIRS``)."""
        if dataset == "shapes":
            return [zoo.PAIRS["cpu"]]
        return [zoo.PAIRS[k] for k in ("r101_r18", "r101_r50", "r50_mbv2")]

    # -- recipes and method defaults ---------------------------------------------------------
    def recipe(self, dataset: str, student: str, preset: str | None = None) -> Recipe:
        """``1x``/``2x`` (COCO; mdistiller's solver for ``d2_*``) and ``cpu`` (``shapes``, a CPU grid in minutes;
        lr :data:`CPU_LR`)."""
        preset = preset or ("cpu" if dataset == "shapes" else "1x")
        if preset == "1x":
            return _coco_recipe(student, 12, (8, 11))
        if preset == "2x":
            return _coco_recipe(student, 24, (16, 22))
        if preset == "cpu":
            return Recipe(
                epochs=CPU_EPOCHS,
                batch_size=8,
                lr=CPU_LR,
                weight_decay=1e-4,
                milestones=CPU_MILESTONES,
                warmup_epochs=1.0,
                warmup_factor=0.001,
                num_workers=0,
            )
        raise UserError(f"unknown detection recipe preset {preset!r}; valid: {', '.join(self.presets)}")

    def teacher_recipe(self, dataset: str, arch: str, preset: str | None = None) -> Recipe:
        """``cpu``: :data:`CPU_TEACHER_EPOCHS` with decays at :data:`CPU_TEACHER_MILESTONES`; COCO: the student's."""
        recipe = self.recipe(dataset, arch, preset)
        if (preset or ("cpu" if dataset == "shapes" else "1x")) == "cpu":
            return recipe.updated(epochs=CPU_TEACHER_EPOCHS, milestones=CPU_TEACHER_MILESTONES)
        return recipe

    def _pkd_weight(self, arch: str) -> float:
        """PKD's weight 6 for the *mean* over FPN levels (6 / levels on each level's term): mmrazor gives each of 4
        levels weight 6 against COCO-sized detector losses; summed over our 5 levels that started FitNet's and
        DiffKD's feature terms at 13x the detector's loss on ``shapes`` (and cost FitNet 14 AP), far past the
        small factor a distillation term should start at. The mean keeps PKD's scale per level of signal."""
        levels = d2.LEVELS if d2.is_d2(arch) else zoo.levels(arch)
        return PKD_LEVEL_WEIGHT / len(levels)

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        """Detection settings, the same on both backends; KD/DKD on RetinaNet are refused here with the reason.

        * ``kd``: T=1, all weights 1 (mdistiller has no detection KD; T=1 and weight 1 are its detection
          DKD settings, and DKD with alpha=beta=1 is KD).
        * ``dkd``: mdistiller ``detection/model/config.py``: alpha 1, beta 0.25, T 1, no warm-up; the
          detector losses keep weight 1 (``RCNNKD`` adds ``loss_dkd`` unweighted).
        * ``fitnet``: one regressor per FPN level (methods.fitnet shares one only across equal strides) and
          PKD's feature scaling (``feat_norm="pkd"``, :mod:`methods.feature_norm`): the mean over levels of
          ``6 * MSE(norm(reg(f_s)), norm(f_t)) / 2``, 6 being mmrazor's PKD Faster R-CNN weight (see
          :meth:`_pkd_weight` for why the mean, not mmrazor's sum). A raw
          MSE on two detectors' FPN maps depends on their activation scales (it started ~10x above the
          detector losses on ``shapes`` and cost FitNet 6 AP); CIFAR's weight 100 on a thin hint layer even more.
        * ``diffkd``: feature DiffKD on every FPN level, kernel 3, no AE, no logits, one module shared by all
          levels (the FPN levels share one feature space: RPN and RetinaNet heads are shared across levels, so
          one denoiser fits them all with a fifth of the parameters), with the same PKD scaling as FitNet
          (standardised maps, feature term weight 6 over the mean of levels; diffusion loss weight 1 as the official).
        """
        for arch in (teacher, student):
            if self.family(arch) == "retinanet" and method in LOGIT_METHODS:
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
            return {"feat_weight": self._pkd_weight(student), "ce_weight": 1.0, "shared": False, "feat_norm": "pkd"}
        if method == "diffkd":
            return {
                "use_ae": False,
                "distill_logits": False,
                "feat_kernel_size": 3,
                "share_levels": True,
                "feat_norm": "pkd",
                "kd_weight": self._pkd_weight(student),
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
        return _backend_of(student).paired_forward(student, teacher, images, targets)

    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        ds = getattr(loader, "dataset", None)
        while isinstance(ds, Subset):
            ds = ds.dataset
        if not isinstance(ds, CocoDetection):
            raise UserError("detection evaluation needs a loader over a COCO-format detection dataset")
        return evaluate_detector(model, loader, device, ds.coco, ds.label_to_cat, predict=_backend_of(model).predict)

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


register_task(DetectionTask())
