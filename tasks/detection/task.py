"""The detection task: Faster R-CNN / RetinaNet with FPN from two backends, COCO-format data, COCO box AP.

One :class:`~tasks.base.Task` contract, two backends, one file each:

* :mod:`tasks.detection.backend_torchvision` (models in :mod:`tasks.detection.models`): ``fasterrcnn_*``
  and ``retinanet_*``, always available;
* :mod:`tasks.detection.d2.backend`: ``d2_*`` archs built from detectron2 configs (model-zoo teachers,
  mdistiller's DKD setting), when detectron2 is installed. The arch name picks the backend: its
  ``d2_`` prefix. Without detectron2 the ``d2_*`` names are still listed and validated; using one is a
  ``UserError`` that says how to install detectron2 (checked when a grid is expanded, before anything runs).

What a backend module provides, under the same names: ``NAME``, ``build_model``, ``check_pair``,
``load_weights``, ``load_init``, ``paired_forward`` and ``predict`` (detections in torchvision's format, for one shared
COCO evaluation). Arch names, families, FPN levels, the taps both backends hand out, recipes and method
defaults are declared, without torch, in :mod:`.spec`.

Data (``build_data``) and evaluation are shared: the backend only maps batches into its model's input.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from methods.errors import UserError, unknown
from tasks.base import DataBundle, PairedOutput, Recipe, TapRecorder, Task
from tasks.detection import backend_torchvision as tv
from tasks.detection import d2
from tasks.detection.backend_torchvision import COCO_CATEGORY_IDS, teacher_box_logits
from tasks.detection.coco_eval import evaluate_detector
from tasks.detection.data import CocoDetection, collate, ensure_shapes, find_split
from tasks.detection.spec import DetectionSpec

__all__ = ["COCO_CATEGORY_IDS", "DetectionTask", "backend_for", "teacher_box_logits"]


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


class DetectionTask(DetectionSpec, Task):
    """Object detection: the models, data, paired forward and evaluation of :class:`DetectionSpec` (see the
    module docstring for the backends)."""

    # -- models ------------------------------------------------------------------------------
    def build_model(self, arch: str, num_classes: int, dataset: str, init: str | None = None) -> nn.Module:
        """The backend's detector; on COCO ``init="random"`` builds it with trainable BatchNorm and no frozen stage
        instead of the fine-tuning setup (see :meth:`~tasks.detection.spec.DetectionSpec.check_init`)."""
        return backend_for(arch).build_model(arch, num_classes, dataset, init)

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
        Either also loads a file trained with plain BatchNorm into frozen BatchNorm (a COCO teacher a grid trained
        from random weights, built as teachers are: in the fine-tuning setup).
        """
        _backend_of(model).load_weights(model, path)

    def load_init(self, model: nn.Module, arch: str, path: Path) -> str:
        """A student's starting weights, by the model's backend: a whole detector or an ImageNet backbone.

        torchvision: whole-detector files (ours, torchvision's COCO files) and ImageNet classification files in
        torchvision's layout, into the backbone body. detectron2: whole detectors, MSRA's Caffe2-named and
        ``convert-torchvision-to-d2.py`` ImageNet backbones through detectron2's ``DetectionCheckpointer``, and the
        student's part of mdistiller's combined teacher+student files. Each says what it loaded.
        """
        return _backend_of(model).load_init(model, arch, path)

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
            raise unknown("detection dataset", dataset, self.datasets)

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

    def eval_view(self, train: Dataset, val: Dataset) -> Dataset:
        """The training images without the random flip (the boxes the training split keeps)."""
        view = copy.copy(train)
        view.train = False
        return view

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

