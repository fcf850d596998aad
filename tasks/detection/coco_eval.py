"""COCO box AP with pycocotools: detections back to category ids and original pixels, then COCOeval.

The detector already returns boxes in the coordinates of the image it was given (torchvision's
transform undoes its own resize, detectron2's ``detector_postprocess`` too), and the loader gives original
images, so only the label map and the ``xyxy -> xywh`` conversion remain. Both detection backends go
through :func:`evaluate_detector`, so they report the same metric names.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from tasks.base import gather_lists
from tasks.detection.spec import METRICS  # COCOeval's stats[0:6] in order, declared with the task (torch-free)


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


#: ``predict(model, images) -> detections``: images are the loader's ``[3,H,W]`` tensors in ``[0,1]`` (already on
#: the device); each detection dict has torchvision's keys (``boxes`` xyxy in the image's pixels, ``labels`` with
#: the background at 0, ``scores``).
Predictor = Callable[[nn.Module, list[torch.Tensor]], list[Mapping[str, torch.Tensor]]]


def torchvision_predict(model: nn.Module, images: list[torch.Tensor]) -> list[Mapping[str, torch.Tensor]]:
    """A torchvision detector already answers in the format :data:`Predictor` asks for."""
    return model(images)


@torch.no_grad()
def evaluate_detector(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    coco_gt: Any,
    label_to_cat: Mapping[int, int],
    predict: Predictor = torchvision_predict,
) -> dict[str, float]:
    """Batched inference over ``loader`` (``(images, targets)`` batches), then :func:`coco_box_ap`.

    ``predict`` adapts a backend's detector to torchvision's output format (the detectron2 backend maps
    its ``Instances`` and its class indices), so both backends share this loop and the metric names.
    """
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    seen: list[int] = []
    try:
        for images, targets in loader:
            outputs = predict(model, [img.to(device, non_blocking=True) for img in images])
            ids = [int(t["image_id"]) for t in targets]
            results += to_coco_results(outputs, ids, label_to_cat)
            seen += ids
    finally:
        model.train(was_training)
    # Data-parallel evaluation: every rank scored a disjoint shard; COCOeval needs all detections at once.
    return coco_box_ap(coco_gt, gather_lists(results), gather_lists(seen))
