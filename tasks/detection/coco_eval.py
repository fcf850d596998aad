"""COCO box AP with pycocotools: detections back to category ids and original pixels, then COCOeval.

The detector already returns boxes in the coordinates of the image it was given (torchvision's
transform undoes its own resize), and the loader gives original images, so only the label map and the
``xyxy -> xywh`` conversion remain.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

#: COCOeval's ``stats[0:6]`` in order, under the names :meth:`DetectionTask.evaluate` reports.
METRICS = ("bbox_AP", "AP50", "AP75", "APs", "APm", "APl")


def to_coco_results(
    outputs: Iterable[Mapping[str, torch.Tensor]], image_ids: Iterable[int], label_to_cat: Mapping[int, int]
) -> list[dict[str, Any]]:
    """torchvision detections (``boxes`` xyxy, ``labels``, ``scores``) -> COCO result dicts."""
    results = []
    for out, image_id in zip(outputs, image_ids, strict=True):
        boxes = out["boxes"].detach().cpu().tolist()
        for (x0, y0, x1, y1), lab, score in zip(boxes, out["labels"].tolist(), out["scores"].tolist(), strict=True):
            if lab not in label_to_cat:  # background or RetinaNet's unused channel 0
                continue
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(label_to_cat[lab]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    return results


def coco_box_ap(coco_gt: Any, results: list[dict[str, Any]], image_ids: list[int]) -> dict[str, float]:
    """Box AP/AP50/AP75/APs/APm/APl in percent over ``image_ids``.

    No detection at all gives zeros (pycocotools refuses an empty result list). A size range with no
    ground truth is ``nan`` (COCOeval's ``-1``: undefined, not zero).
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (float(v) * 100.0 if v >= 0 else math.nan) for k, v in zip(METRICS, ev.stats[:6], strict=True)}


@torch.no_grad()
def evaluate_detector(
    model: nn.Module, loader: Iterable, device: torch.device, coco_gt: Any, label_to_cat: Mapping[int, int]
) -> dict[str, float]:
    """Batched inference over ``loader`` (``(images, targets)`` batches), then :func:`coco_box_ap`."""
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    seen: list[int] = []
    try:
        for images, targets in loader:
            outputs = model([img.to(device, non_blocking=True) for img in images])
            ids = [int(t["image_id"]) for t in targets]
            results += to_coco_results(outputs, ids, label_to_cat)
            seen += ids
    finally:
        model.train(was_training)
    return coco_box_ap(coco_gt, results, seen)
