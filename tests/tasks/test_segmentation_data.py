"""Segmentation data: label tables, transforms and loaders on tiny files in the real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from methods.base import UserError
from tasks.base import Recipe
from tasks.segmentation import data as D
from tasks.segmentation.task import SegmentationTask

# The official Cityscapes table (cityscapesscripts/helpers/labels.py), trainId of ids 0..33, typed out
# independently of the package: 7 road, 8 sidewalk, 11 building, 12 wall, 13 fence, 17 pole,
# 19 traffic light, 20 traffic sign, 21 vegetation, 22 terrain, 23 sky, 24 person, 25 rider, 26 car,
# 27 truck, 28 bus, 31 train, 32 motorcycle, 33 bicycle; everything else ignored.
CITYSCAPES_TRAIN_IDS = [
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255,
    5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18,
]  # fmt: skip


def test_cityscapes_all_ids():
    lut = D.make_lut(D.CITYSCAPES_ID_TO_TRAINID)
    ids = np.arange(34, dtype=np.uint8)
    assert D.map_labels(ids, lut).tolist() == CITYSCAPES_TRAIN_IDS
    assert lut[7] == 0 and lut[26] == 13 and lut[0] == 255 and lut[33] == 18
    # 255 stays ignored; -1 (license plate) read into a wider integer image is ignored too
    assert D.map_labels(np.array([255], dtype=np.uint8), lut).tolist() == [255]
    assert D.map_labels(np.array([-1, 26], dtype=np.int32), lut).tolist() == [255, 13]
    # every train id 0..18 is hit exactly once
    assert sorted(t for t in CITYSCAPES_TRAIN_IDS if t != 255) == list(range(19))
    assert len(D.CITYSCAPES_CLASSES) == 19 and D.CITYSCAPES_CLASSES[13] == "car"


def test_ade20k_mapping():
    lut = D.ade20k_lut()
    got = D.map_labels(np.array([0, 1, 2, 150, 151, 255], dtype=np.uint8), lut).tolist()
    assert got == [255, 0, 1, 149, 255, 255]
    assert len(D.ADE20K_CLASSES) == 150 and D.ADE20K_CLASSES[0] == "wall" and D.ADE20K_CLASSES[-1] == "flag"


def test_train_transform_pads_with_ignore_and_keeps_alignment():
    # Image red channel encodes the label, so image and label must move together.
    lbl = torch.randint(0, 4, (16, 24))
    img = (lbl * 60).to(torch.uint8)[None].repeat(3, 1, 1)
    x, y = D.train_transform(img, lbl, crop=(16, 24), scale=(1.0, 1.0))
    assert x.shape == (3, 16, 24) and y.shape == (16, 24)
    red = (x[0] * D.STD[0] + D.MEAN[0]) * 255
    assert torch.allclose(red, y.float() * 60, atol=1e-3)
    # Half size: the 8x12 content lands in a 16x24 crop, the rest is padding labelled ignore.
    torch.manual_seed(0)
    x, y = D.train_transform(img, lbl, crop=(16, 24), scale=(0.5, 0.5))
    assert int((y != 255).sum()) == 8 * 12
    assert torch.all(x[:, y == 255] == 0)  # padded image is 0 = the mean colour after normalisation


def test_collate_pads_different_sizes():
    a = (torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.long))
    b = (torch.ones(3, 6, 3), torch.ones(6, 3, dtype=torch.long))
    imgs, lbls, sizes = D.collate([a, b])
    assert imgs.shape == (2, 3, 6, 5) and lbls.shape == (2, 6, 5)
    assert sizes.tolist() == [[4, 5], [6, 3]]
    assert int((lbls[0] == 255).sum()) == 6 * 5 - 4 * 5
    assert int((lbls[1] == 255).sum()) == 6 * 5 - 6 * 3


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _write_cityscapes(root: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 34, (16, 32)).astype(np.uint8)
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("frankfurt",))):
        for city in cities:
            for k in range(2):
                stem = f"{city}_{k:06d}_000019"
                _png(
                    root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                    rng.integers(0, 255, (16, 32, 3), dtype=np.uint8),
                )
                _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    return ids


def _recipe(crop: tuple[int, int]) -> Recipe:
    return Recipe(epochs=1, batch_size=2, lr=0.01, extra={"crop_size": crop})


def test_cityscapes_loader(tmp_path):
    ids = _write_cityscapes(tmp_path)
    bundle = SegmentationTask().build_data("cityscapes", tmp_path, _recipe((8, 16)))
    assert bundle.num_classes == 19
    assert len(bundle.train) == 4 and len(bundle.val) == 2
    x, y = bundle.val[0]
    assert x.shape == (3, 16, 32)
    expected = np.array(CITYSCAPES_TRAIN_IDS)[ids]
    assert y.numpy().tolist() == expected.tolist()
    x, y = bundle.train[0]
    assert x.shape == (3, 8, 16) and y.shape == (8, 16) and y.dtype == torch.long
    assert set(y.unique().tolist()) <= set(range(19)) | {255}
    imgs, lbls, _ = bundle.collate_fn([bundle.train[i] for i in range(2)])
    assert imgs.shape == (2, 3, 8, 16)


def test_ade20k_loader_both_roots(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    ann = np.arange(0, 151, dtype=np.uint8)[:150].reshape(10, 15)
    for split in ("training", "validation"):
        for k in range(2):
            Image.fromarray(np.full((10, 15, 3), 100, np.uint8)).save(_mk(base / "images" / split / f"ADE_{k}.jpg"))
            _png(base / "annotations" / split / f"ADE_{k}.png", ann)
    task = SegmentationTask()
    for root in (tmp_path, base):
        bundle = task.build_data("ade20k", root, _recipe((8, 8)))
        assert bundle.num_classes == 150
        _, y = bundle.val[1]
        assert y.numpy().tolist() == np.where(ann == 0, 255, ann.astype(int) - 1).tolist()
        assert bundle.val.eval_cfg["mode"] == "slide"


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_missing_or_malformed_folders_are_user_errors(tmp_path):
    task = SegmentationTask()
    with pytest.raises(UserError, match="needs --data-dir"):
        task.build_data("cityscapes", None, _recipe((8, 8)))
    with pytest.raises(UserError, match="leftImg8bit"):
        task.build_data("cityscapes", tmp_path, _recipe((8, 8)))
    with pytest.raises(UserError, match="ADEChallengeData2016"):
        task.build_data("ade20k", tmp_path, _recipe((8, 8)))
    with pytest.raises(UserError, match="unknown segmentation dataset"):
        task.build_data("voc", tmp_path, _recipe((8, 8)))
    # an image whose label file is missing
    _write_cityscapes(tmp_path)
    next((tmp_path / "gtFine" / "val").glob("*/*.png")).unlink()
    with pytest.raises(UserError, match="has no label"):
        task.build_data("cityscapes", tmp_path, _recipe((8, 8)))
    # an empty split
    empty = tmp_path / "empty"
    for d in ("leftImg8bit/train", "gtFine/train", "leftImg8bit/val", "gtFine/val"):
        (empty / d).mkdir(parents=True)
    with pytest.raises(UserError, match="no \\*_leftImg8bit.png"):
        task.build_data("cityscapes", empty, _recipe((8, 8)))


def test_shapes_written_once_deterministic_and_read_through_cityscapes_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "SHAPES_COUNTS", {"train": 6, "val": 3})
    root = D.ensure_shapes(tmp_path / "a")
    imgs = sorted((root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    assert len(imgs) == 6
    lbl = np.asarray(Image.open(root / "gtFine" / "train" / "shapes" / "shapes_000000_gtFine_labelIds.png"))
    assert lbl.shape == D.SHAPES_SIZE and set(np.unique(lbl)) <= {0, 1, 2, 3, 4}
    # reused, not rewritten
    mtime = imgs[0].stat().st_mtime_ns
    assert D.ensure_shapes(tmp_path / "a") == root and imgs[0].stat().st_mtime_ns == mtime
    # same seed -> identical files elsewhere
    other = D.ensure_shapes(tmp_path / "b")
    assert (other / imgs[0].relative_to(root)).read_bytes() == imgs[0].read_bytes()
    bundle = SegmentationTask().build_data("shapes", tmp_path / "a", _recipe(D.SHAPES_SIZE))
    assert bundle.num_classes == 4 and len(bundle.train) == 6 and len(bundle.val) == 3
    _, y = bundle.val[0]
    raw = np.asarray(Image.open(root / "gtFine" / "val" / "shapes" / "shapes_000000_gtFine_labelIds.png"))
    assert y.numpy().tolist() == np.where(raw == 0, 255, raw.astype(int) - 1).tolist()
