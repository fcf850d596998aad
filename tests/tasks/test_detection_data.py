"""Detection data: COCO json loading, COCOeval known answers, the generated ``shapes`` set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from methods.base import UserError
from tasks.base import Recipe, get_task
from tasks.detection.coco_eval import coco_box_ap, evaluate_detector, to_coco_results
from tasks.detection.data import CocoDetection, collate, ensure_shapes, find_split, make_shapes


def write_coco(root: Path, split: str = "val2017") -> Path:
    """Three images (100x120, 80x90, 64x64), sparse category ids 3 and 7, a crowd box, an empty image."""
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    sizes = {1: (120, 100), 2: (90, 80), 3: (64, 64)}  # id -> (w, h)
    for i, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (i * 40, 0, 0)).save(root / split / f"{i}.png")
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 10, 60, 80], "area": 4800, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [30, 30, 40, 40], "area": 1600, "iscrowd": 1},
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 1},
    ]
    doc = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in sizes.items()],
        "annotations": anns,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_loading_maps_ids_and_skips_crowd(tmp_path: Path) -> None:
    ann = write_coco(tmp_path)
    train = CocoDetection(ann, tmp_path / "val2017", train=True)
    val = CocoDetection(ann, tmp_path / "val2017", train=False)
    assert train.cat_to_label == {3: 1, 7: 2} and val.label_to_cat == {1: 3, 2: 7}
    # image 3 has only a crowd box: no training box left, so training skips it; validation keeps it
    assert train.ids == [1, 2] and val.ids == [1, 2, 3]
    torch.manual_seed(0)
    image, target = val[0]
    assert image.shape == (3, 100, 120) and image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert target["boxes"].tolist() == [[10, 20, 40, 60], [50, 10, 110, 90]]  # xywh -> xyxy
    assert target["labels"].tolist() == [1, 2]
    _, target2 = val[1]  # the crowd box of image 2 is dropped, the normal one kept
    assert target2["labels"].tolist() == [2] and target2["boxes"].shape == (1, 4)
    _, target3 = val[2]
    assert target3["boxes"].shape == (0, 4) and target3["labels"].shape == (0,)


def test_training_flip_mirrors_boxes(tmp_path: Path) -> None:
    ann = write_coco(tmp_path)
    ds = CocoDetection(ann, tmp_path / "val2017", train=True)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        _, t = ds[0]
        seen.add(tuple(t["boxes"][0].tolist()))
    # width 120: [10, 20, 40, 60] mirrors to [80, 20, 110, 60]
    assert seen == {(10.0, 20.0, 40.0, 60.0), (80.0, 20.0, 110.0, 60.0)}


def test_find_split_and_bad_folders(tmp_path: Path) -> None:
    write_coco(tmp_path, "val2017")
    assert find_split(tmp_path, "val") == (tmp_path / "annotations/instances_val2017.json", tmp_path / "val2017")
    with pytest.raises(UserError, match="instances_train2017.json"):
        find_split(tmp_path, "train")
    task = get_task("detection")
    with pytest.raises(UserError, match="needs --data-dir"):
        task.build_data("coco", None, Recipe(epochs=1, batch_size=2, lr=0.1))
    bad = tmp_path / "annotations" / "instances_bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid COCO"):
        CocoDetection(bad, tmp_path, train=False)


def test_build_data_from_explicit_json_pair(tmp_path: Path) -> None:
    ann = write_coco(tmp_path)
    extra = {"train_ann": ann, "train_images": tmp_path / "val2017", "val_ann": ann, "val_images": tmp_path / "val2017"}
    bundle = get_task("detection").build_data("coco", None, Recipe(epochs=1, batch_size=2, lr=0.1, extra=extra))
    assert bundle.num_classes == 3  # two categories + background
    images, targets = bundle.collate_fn([bundle.val[0], bundle.val[2]])
    assert isinstance(images, list) and [tuple(i.shape) for i in images] == [(3, 100, 120), (3, 64, 64)]
    assert len(targets) == 2 and targets[1]["boxes"].shape == (0, 4)


def gt_as_predictions(ds: CocoDetection, image_id: int) -> dict[str, torch.Tensor]:
    _, t = ds[ds.ids.index(image_id)]
    return {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}


def test_cocoeval_perfect_predictions_score_100(tmp_path: Path) -> None:
    ann = write_coco(tmp_path)
    ds = CocoDetection(ann, tmp_path / "val2017", train=False)
    outs = [gt_as_predictions(ds, i) for i in ds.ids]
    res = to_coco_results(outs, ds.ids, ds.label_to_cat)
    assert {r["category_id"] for r in res} == {3, 7}  # labels mapped back to the sparse category ids
    assert res[0]["bbox"] == [10, 20, 30, 40]  # back to xywh
    m = coco_box_ap(ds.coco, res, ds.ids)
    assert (
        m["bbox_AP"] == pytest.approx(100.0) and m["AP50"] == pytest.approx(100.0) and m["AP75"] == pytest.approx(100)
    )
    # GT areas 1200, 4800, 400: all "medium" (32^2..96^2) except... 400 is small (< 32^2 = 1024)
    assert m["APs"] == pytest.approx(100.0) and m["APm"] == pytest.approx(100.0) and math.isnan(m["APl"])


def test_cocoeval_iou_062_counts_for_three_of_ten_thresholds(tmp_path: Path) -> None:
    ann = write_coco(tmp_path)
    ds = CocoDetection(ann, tmp_path / "val2017", train=False)
    outs = []
    for i in ds.ids:
        o = gt_as_predictions(ds, i)
        b = o["boxes"].clone()
        b[:, 3] = b[:, 1] + 0.62 * (b[:, 3] - b[:, 1])  # same box, 62% of its height: IoU 0.62
        outs.append({**o, "boxes": b})
    m = coco_box_ap(ds.coco, to_coco_results(outs, ds.ids, ds.label_to_cat), ds.ids)
    # matched at IoU thresholds .50, .55, .60 only -> AP = 3/10 of 100; AP50 = 100, AP75 = 0
    assert m["AP50"] == pytest.approx(100.0) and m["AP75"] == pytest.approx(0.0)
    assert m["bbox_AP"] == pytest.approx(30.0)


def test_cocoeval_no_detections_is_zero(tmp_path: Path) -> None:
    ann = write_coco(tmp_path)
    ds = CocoDetection(ann, tmp_path / "val2017", train=False)
    assert coco_box_ap(ds.coco, [], ds.ids) == dict.fromkeys(("bbox_AP", "AP50", "AP75", "APs", "APm", "APl"), 0.0)


class OracleDetector(nn.Module):
    """Returns the ground truth of each image, recognised by its size; label 0 boxes must be ignored."""

    def __init__(self, by_size: dict[tuple[int, int], dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.by_size = by_size
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert not self.training
        outs = []
        for img in images:
            o = self.by_size[tuple(img.shape[-2:])]
            outs.append(
                {
                    "boxes": torch.cat([o["boxes"], torch.tensor([[0.0, 0.0, 5.0, 5.0]])]),
                    "labels": torch.cat([o["labels"], torch.tensor([0])]),
                    "scores": torch.cat([o["scores"], torch.tensor([0.99])]),
                }
            )
        return outs


def test_task_evaluate_runs_batched_inference(tmp_path: Path) -> None:
    ann = write_coco(tmp_path)
    ds = CocoDetection(ann, tmp_path / "val2017", train=False)
    oracle = OracleDetector({tuple(ds[k][0].shape[-2:]): gt_as_predictions(ds, i) for k, i in enumerate(ds.ids)})
    oracle.train()
    metrics = get_task("detection").evaluate(
        oracle, DataLoader(ds, batch_size=2, collate_fn=collate), torch.device("cpu")
    )
    assert metrics["bbox_AP"] == pytest.approx(100.0)
    assert oracle.training  # the mode is restored
    assert set(get_task("detection").metrics) <= set(metrics)
    # the same through evaluate_detector directly
    assert evaluate_detector(oracle, DataLoader(ds, batch_size=3, collate_fn=collate), torch.device("cpu"),
                             ds.coco, ds.label_to_cat)["AP50"] == pytest.approx(100.0)  # fmt: skip


def test_shapes_is_deterministic_valid_coco(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    make_shapes(tmp_path / "a", num_train=6, num_val=3)
    make_shapes(tmp_path / "b", num_train=6, num_val=3)
    for split in ("train2017", "val2017"):
        ja = (tmp_path / "a" / "annotations" / f"instances_{split}.json").read_text()
        jb = (tmp_path / "b" / "annotations" / f"instances_{split}.json").read_text()
        assert ja == jb
        for f in sorted((tmp_path / "a" / split).iterdir()):
            assert f.read_bytes() == (tmp_path / "b" / split / f.name).read_bytes()
    coco = COCO(str(tmp_path / "a" / "annotations" / "instances_train2017.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "square", "triangle"]
    assert len(coco.getImgIds()) == 6
    val = json.loads((tmp_path / "a" / "annotations" / "instances_val2017.json").read_text())
    ids = [a["id"] for a in coco.dataset["annotations"] + val["annotations"]]
    assert len(ids) == len(set(ids))  # annotation ids unique across splits
    assert not {i["id"] for i in val["images"]} & set(coco.getImgIds())
    for ann in coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 8 and h >= 8
        img = Image.open(tmp_path / "a" / "train2017" / coco.imgs[ann["image_id"]]["file_name"]).convert("RGB")
        r, g, b = img.getpixel((int(x + w / 2), int(y + h / 2)))
        assert max(r, g, b) - min(r, g, b) > 50  # the box centre lies on a coloured shape, not the grey ground


def test_ensure_shapes_generates_once(tmp_path: Path) -> None:
    root = ensure_shapes(tmp_path / "shapes", num_train=4, num_val=2)
    ann = root / "annotations" / "instances_train2017.json"
    stamp = ann.stat().st_mtime_ns
    assert ensure_shapes(tmp_path / "shapes", num_train=4, num_val=2) == root
    assert ann.stat().st_mtime_ns == stamp  # reused, not regenerated
    ds = CocoDetection(*find_split(root, "train"), train=True)
    assert len(ds) == 4 and ds.class_names == ["circle", "square", "triangle"]
