"""Semantic segmentation task with torch: DeepLabV3 / PSPNet on Cityscapes, ADE20K and an embedded shapes set.

What the task declares (data sets, recipes, pairs, taps, method defaults) is in :mod:`.spec`, free of torch;
this module builds the models and data, runs the paired forward and evaluates.

**Per-pixel KD resolution — a choice.** The logits rows are taken *before upsampling*, at stride 8, and
the label map is downsampled to that grid by nearest neighbour (the pixel at each cell's top-left
corner) to mark ignored cells and give DKD its target class. This is what CIRKD's ``CriterionKD``
does (it distills the head output before interpolation) and it is 64x cheaper than full resolution; the
bilinear upsampling after it has no parameters, so stride-8 logits carry the same information. One
deviation from CIRKD, which distills every pixel: cells labelled ignore (255) are excluded, so the
teacher's guesses on void regions are not imitated.

Task losses (``PairedOutput.losses``): ``seg`` = cross-entropy of the bilinearly upsampled logits
against the full-resolution labels, ignore index 255; ``aux`` = ``0.4 x`` the same for the FCN auxiliary
head on ``layer3`` when the model has one (CIRKD's and PSPNet's 0.4 — the weight is part of the task
loss, so it is already applied here).

Evaluation: argmax of the full-resolution logits, a confusion matrix over the whole validation set,
then ``mIoU`` / ``pixel_acc`` / ``IoU.<class>`` in percent (see ``metrics.py``: classes absent from both
prediction and ground truth are NaN and excluded from the mean). Per preset: Cityscapes whole image
(1024x2048, CIRKD's protocol), ADE20K sliding window 512x512 with stride 341 (mmsegmentation's), shapes
whole image.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from methods.errors import UserError, unknown
from tasks.base import DataBundle, PairedOutput, Recipe, Task, all_reduce_sum
from tasks.segmentation import data as D
from tasks.segmentation.metrics import confusion_counts, segmentation_metrics
from tasks.segmentation.models import build_model
from tasks.segmentation.pretrained import load_init
from tasks.segmentation.spec import AUX_WEIGHT, SegmentationSpec


def upsample(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear upsampling of logits to the label size (``align_corners=False``, torchvision's)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def downsample_labels(labels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Nearest-neighbour label map at ``size`` (``[N, H, W]`` int64 -> ``[N, h, w]``)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def pixel_rows(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = D.IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Valid-pixel rows of ``logits`` ``[N, C, h, w]`` against ``labels`` ``[N, H, W]``.

    Returns ``(rows [P, C], target [P], mask [N, h, w])`` where the labels were downsampled to the
    logits' grid by nearest neighbour and ``mask`` marks the cells whose label is not ``ignore_index``.
    """
    lbl = downsample_labels(labels, logits.shape[-2:])
    mask = lbl != ignore_index
    return logits.permute(0, 2, 3, 1)[mask], lbl[mask], mask


def full_res_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's main logits upsampled to the input size."""
    return upsample(model(images)["out"], images.shape[-2:])


def slide_logits(
    model: nn.Module, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Sliding-window inference (mmsegmentation's ``slide_inference``): average overlapping windows.

    Windows of ``crop`` move by ``stride``; the last row/column of windows is shifted back to end at the
    border, so every pixel is covered and no window is padded. A window larger than the image shrinks to
    the image, making this identical to whole-image inference in that case.
    """
    n, _, h, w = images.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    sh, sw = stride
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    total: torch.Tensor | None = None
    count = images.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            out = full_res_logits(model, images[:, :, y1:y2, x1:x2])
            if total is None:
                total = images.new_zeros(n, out.shape[1], h, w)
            total[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    assert total is not None
    return total / count


class SegmentationTask(SegmentationSpec, Task):
    """Semantic segmentation: the models, data, paired forward and evaluation of :class:`SegmentationSpec`."""

    # -- models ------------------------------------------------------------------------------
    def build_model(self, arch: str, num_classes: int, dataset: str, init: str | None = None) -> nn.Module:
        return build_model(arch, num_classes)

    def load_init(self, model: nn.Module, arch: str, path: Path) -> str:
        """A whole model, or the arch's ImageNet backbone (torchvision's or CIRKD's files; :mod:`.pretrained`)."""
        return load_init(model, arch, path)

    # -- data --------------------------------------------------------------------------------
    def build_data(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> DataBundle:
        cfg = self._dataset(dataset)
        crop = tuple(recipe.extra.get("crop_size", cfg["crop"]))
        eval_cfg = dict(recipe.extra.get("eval", cfg["eval"]))
        if dataset == "shapes":
            root = D.ensure_shapes(Path(data_dir) if data_dir is not None else None)
            lut, splits, finder = D.make_lut(D.SHAPES_ID_TO_TRAINID), ("train", "val"), D.cityscapes_pairs
        else:
            if data_dir is None:
                raise UserError(f"dataset {dataset!r} needs --data-dir pointing at its root folder")
            root = Path(data_dir)
            if not root.is_dir():
                raise UserError(f"data_dir {str(root)!r} for {dataset!r} is not a folder")
            if dataset == "cityscapes":
                lut, splits, finder = D.make_lut(D.CITYSCAPES_ID_TO_TRAINID), ("train", "val"), D.cityscapes_pairs
            else:
                lut, splits, finder = D.ade20k_lut(), ("training", "validation"), D.ade20k_pairs
        classes = cfg["classes"]
        train = D.SegmentationFolder(finder(root, splits[0]), lut, classes, crop=crop)
        val = D.SegmentationFolder(finder(root, splits[1]), lut, classes, eval_cfg=eval_cfg)
        info = {
            "root": str(root),
            "train_images": len(train),
            "val_images": len(val),
            "crop": list(crop),
            "eval": eval_cfg,
            "classes": list(classes),
        }
        return DataBundle(train=train, val=val, num_classes=len(classes), collate_fn=D.collate, info=info)

    def eval_view(self, train: Dataset, val: Dataset) -> Dataset:
        """The training images as the validation split reads its own: whole, normalised, its evaluation mode."""
        view = copy.copy(train)
        view.crop = None
        view.eval_cfg = dict(getattr(val, "eval_cfg", {"mode": "whole"}))
        return view

    # -- training and evaluation -------------------------------------------------------------
    def paired_forward(
        self, student: nn.Module, teacher: nn.Module | None, batch: Any, device: torch.device
    ) -> PairedOutput:
        images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        student.train()
        s_out = student(images)
        s_taps = _pop_taps(student)
        size = labels.shape[-2:]
        losses = {"seg": F.cross_entropy(upsample(s_out["out"], size), labels, ignore_index=D.IGNORE_INDEX)}
        if "aux" in s_out:
            aux = F.cross_entropy(upsample(s_out["aux"], size), labels, ignore_index=D.IGNORE_INDEX)
            losses["aux"] = AUX_WEIGHT * aux
        s_rows, target, mask = pixel_rows(s_out["out"], labels)
        s_taps["logits"] = s_rows
        t_taps: dict[str, torch.Tensor] = {}
        if teacher is not None:
            teacher.eval()
            with torch.no_grad():
                t_out = teacher(images)
            t_taps = _pop_taps(teacher)
            if t_out["out"].shape[-2:] != s_out["out"].shape[-2:]:
                raise UserError(
                    f"teacher logits {tuple(t_out['out'].shape[-2:])} and student logits "
                    f"{tuple(s_out['out'].shape[-2:])} are on different grids; both must have output stride 8"
                )
            t_taps["logits"] = t_out["out"].permute(0, 2, 3, 1)[mask]
        return PairedOutput(losses, s_taps, t_taps, target, images.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        dataset = getattr(loader, "dataset", None)
        eval_cfg = getattr(dataset, "eval_cfg", {"mode": "whole"})
        names = getattr(dataset, "class_names", None)
        was_training = model.training
        model.eval()
        counts: torch.Tensor | None = None  # on the device, read once at the end
        try:
            for batch in loader:
                images, labels = batch[0].to(device), batch[1].to(device)
                sizes = batch[2].tolist() if len(batch) > 2 else [list(images.shape[-2:])] * images.shape[0]
                if all(tuple(s) == tuple(images.shape[-2:]) for s in sizes):
                    pairs = [(self.predict(model, images, eval_cfg), labels)]
                else:  # padded batch of different sizes: each image on its own extent
                    pairs = [
                        (self.predict(model, images[i : i + 1, :, :h, :w], eval_cfg), labels[i : i + 1, :h, :w])
                        for i, (h, w) in enumerate(sizes)
                    ]
                for logits, lbl in pairs:
                    part = confusion_counts(logits.argmax(1), lbl, logits.shape[1], D.IGNORE_INDEX)
                    counts = part if counts is None else counts + part
                if hasattr(model, "tap_recorder"):
                    model.tap_recorder.pop()  # hooks fire in eval too; do not keep the tensors
        finally:
            model.train(was_training)
        if counts is None:  # a rank whose shard is empty still joins the sum (it needs the class count)
            if not names:
                raise UserError("segmentation evaluation got an empty validation set (or fewer images than workers)")
            counts = torch.zeros(len(names) ** 2 + 1, dtype=torch.int64, device=device)
        counts = all_reduce_sum(counts).cpu()  # over every rank's shard
        if not int(counts.sum()):
            raise UserError("segmentation evaluation got an empty validation set")
        k = int(round((counts.numel() - 1) ** 0.5))
        if int(counts[-1]):
            raise UserError(f"segmentation labels outside [0, {k}) that are not the ignore value {D.IGNORE_INDEX}")
        conf = counts[:-1].reshape(k, k)
        if names is not None and len(names) != conf.shape[0]:
            names = None
        return segmentation_metrics(conf, names)

    @staticmethod
    def predict(model: nn.Module, images: torch.Tensor, eval_cfg: dict[str, Any] | None = None) -> torch.Tensor:
        """Full-resolution logits, whole image or sliding window as ``eval_cfg`` says."""
        cfg = eval_cfg or {"mode": "whole"}
        if cfg.get("mode", "whole") == "whole":
            return full_res_logits(model, images)
        if cfg["mode"] == "slide":
            return slide_logits(model, images, tuple(cfg["crop"]), tuple(cfg["stride"]))
        raise unknown("segmentation eval mode", cfg["mode"], ("whole", "slide"))

    def synthetic_batch(self, batch_size: int, num_classes: int, device: torch.device, **_: Any) -> Any:
        """Random images and labels (10% ignore) at the real crop: 512x1024 for 19 classes (Cityscapes),
        512x512 for 150 (ADE20K), the shapes size otherwise."""
        h, w = {19: (512, 1024), 150: (512, 512)}.get(num_classes, D.SHAPES_SIZE)
        g = torch.Generator().manual_seed(0)
        images = torch.randn(batch_size, 3, h, w, generator=g)
        labels = torch.randint(0, num_classes, (batch_size, h, w), generator=g)
        labels[torch.rand(batch_size, h, w, generator=g) < 0.1] = D.IGNORE_INDEX
        return images.to(device), labels.to(device)


def _pop_taps(model: nn.Module) -> dict[str, torch.Tensor]:
    rec = getattr(model, "tap_recorder", None)
    return rec.pop() if rec is not None else {}

