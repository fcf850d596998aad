"""Segmentation metrics against confusion matrices and IoUs computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.segmentation.metrics import confusion_matrix, iou_per_class, segmentation_metrics

# A 3-class example, ignore = 255. Pixels (gt, pred):
#   gt  = 0 0 0 1 1 2 2 2 255 255
#   pred= 0 0 1 1 2 2 2 0   1   2
# Counting the 8 valid pixels by hand, rows = gt, cols = pred:
#   gt 0: pred 0 twice, pred 1 once           -> [2, 1, 0]
#   gt 1: pred 1 once, pred 2 once            -> [0, 1, 1]
#   gt 2: pred 2 twice, pred 0 once           -> [1, 0, 2]
GT = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 255, 255])
PRED = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
CONF = torch.tensor([[2, 1, 0], [0, 1, 1], [1, 0, 2]])
# IoU_c = TP / (TP + FP + FN):
#   class 0: TP 2, FN 1 (gt0->1), FP 1 (gt2->0)     -> 2/4
#   class 1: TP 1, FN 1 (gt1->2), FP 1 (gt0->1)     -> 1/3
#   class 2: TP 2, FN 1 (gt2->0), FP 1 (gt1->2)     -> 2/4
IOU = [2 / 4, 1 / 3, 2 / 4]
PIXEL_ACC = 5 / 8


def test_confusion_matrix_by_hand_with_ignore():
    conf = confusion_matrix(PRED, GT, 3)
    assert torch.equal(conf, CONF)
    # ignored pixels never count, whatever they are predicted as
    assert int(conf.sum()) == 8


def test_confusion_matrix_any_shape():
    conf = confusion_matrix(PRED.view(2, 5), GT.view(2, 5), 3)
    assert torch.equal(conf, CONF)


def test_metrics_by_hand():
    m = segmentation_metrics(CONF, ["a", "b", "c"])
    assert m["IoU.a"] == pytest.approx(100 * IOU[0])
    assert m["IoU.b"] == pytest.approx(100 * IOU[1])
    assert m["IoU.c"] == pytest.approx(100 * IOU[2])
    assert m["mIoU"] == pytest.approx(100 * sum(IOU) / 3)
    assert m["pixel_acc"] == pytest.approx(100 * PIXEL_ACC)


def test_absent_class_is_nan_and_excluded_from_mean():
    # Same pixels, but a 4-class problem: class 3 is neither in gt nor predicted.
    conf = confusion_matrix(PRED, GT, 4)
    iou = iou_per_class(conf)
    assert math.isnan(float(iou[3]))
    m = segmentation_metrics(conf)
    assert math.isnan(m["IoU.3"])
    assert m["mIoU"] == pytest.approx(100 * sum(IOU) / 3)


def test_predicted_but_absent_class_counts_as_zero():
    # class 1 is predicted once but never in the ground truth: IoU 0, and it lowers the mean.
    gt = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 0, 1])
    m = segmentation_metrics(confusion_matrix(pred, gt, 2))
    assert m["IoU.0"] == pytest.approx(75.0)
    assert m["IoU.1"] == 0.0
    assert m["mIoU"] == pytest.approx(37.5)
    assert m["pixel_acc"] == pytest.approx(75.0)


def test_label_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([0]), torch.tensor([3]), 3)
