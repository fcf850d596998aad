"""Segmentation metrics from a confusion matrix: per-class IoU, mIoU and pixel accuracy.

Everything is accumulated into one ``[K, K]`` confusion matrix (rows: ground truth, columns:
prediction) over the whole validation set, then turned into metrics once — the protocol of the
Cityscapes scripts and mmsegmentation, where IoU is a ratio of *dataset-wide* pixel counts, not a
mean of per-image IoUs.

Conventions:

* pixels labelled ``ignore_index`` (255) are dropped before counting;
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``;
* a class absent from both the ground truth and the predictions (``TP + FP + FN == 0``) has an
  undefined IoU (NaN) and is *excluded* from the mean, as mmsegmentation's ``nanmean`` does. A class
  that is predicted but never present has IoU 0 and does count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Count (ground truth, prediction) pairs with one ``torch.bincount``.

    Args:
        pred: predicted class per pixel, any shape, integer.
        target: ground-truth class per pixel, same shape; ``ignore_index`` pixels are skipped.
        num_classes: ``K``.
        ignore_index: label value to skip.

    Returns:
        ``[K, K]`` int64 matrix, ``m[g, p]`` = pixels of class ``g`` predicted as ``p``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target labels must lie in [0, {num_classes}) or equal {ignore_index}")
    idx = target * num_classes + pred
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def confusion_counts(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """:func:`confusion_matrix` without a device sync: ``K * K + 1`` counts on the inputs' device.

    The last count is the pixels whose label is neither a class nor ``ignore_index`` (a data bug the
    caller checks once, after summing every batch); the first ``K * K`` reshape to the confusion matrix.
    """
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    valid = (target >= 0) & (target < num_classes)
    idx = torch.where(valid, target * num_classes + pred, num_classes * num_classes)
    return torch.bincount(idx, minlength=num_classes * num_classes + 1)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """IoU of each class as a fraction; NaN where the class is absent from truth and prediction."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = tp / union
    iou[union == 0] = float("nan")
    return iou


def segmentation_metrics(conf: torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``mIoU``, ``pixel_acc`` and ``IoU.<class>`` in percent from a confusion matrix.

    Classes absent from both ground truth and prediction are reported as NaN and left out of the mean.
    """
    k = conf.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}-class confusion matrix")
    iou = iou_per_class(conf)
    present = ~torch.isnan(iou)
    total = conf.sum()
    out = {
        "mIoU": float(iou[present].mean() * 100) if present.any() else float("nan"),
        "pixel_acc": float(conf.diag().sum().double() / total * 100) if total > 0 else float("nan"),
    }
    for name, value in zip(names, iou.tolist(), strict=True):
        out[f"IoU.{name}"] = value * 100
    return out
