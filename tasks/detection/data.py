"""Detection data in COCO format: a loader for any COCO-style json + image folder, and ``shapes``.

COCO category ids are sparse (1..90 for the 80 COCO classes); detectors want contiguous labels, so
the dataset maps the sorted category ids to ``1..K`` (0 is the background) and keeps the inverse map
for evaluation. Training follows torchvision's reference and detectron2: crowd boxes and degenerate
boxes are dropped and images left without a box are skipped; validation keeps every image so the
COCO evaluation sees the whole split.

``shapes`` is the embedded default: a few hundred 128x128 images of circles, squares and triangles
in several colours and sizes, generated once from a fixed seed and written to disk *in COCO format*
(``annotations/instances_{train,val}2017.json`` + ``{train,val}2017/``), so the same loader and the
same pycocotools evaluation run on it as on COCO.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from methods.base import UserError

SHAPES_CLASSES = ("circle", "square", "triangle")
SHAPES_VERSION = 1  # bump when the generator changes, so stale caches are regenerated
_SHAPES_COLOURS = ((220, 40, 40), (40, 170, 60), (50, 80, 220), (230, 200, 40), (200, 60, 200), (40, 200, 200))


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Detection batches are lists: images differ in size and carry different numbers of boxes."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def find_split(data_dir: Path, split: str) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of ``split`` in a COCO-style folder.

    Accepts COCO 2017's layout (``annotations/instances_train2017.json`` + ``train2017/``) and the same
    without the year (``annotations/instances_train.json`` + ``train/``).
    """
    data_dir = Path(data_dir)
    for name in (f"{split}2017", split):
        ann, images = data_dir / "annotations" / f"instances_{name}.json", data_dir / name
        if ann.is_file() and images.is_dir():
            return ann, images
    raise UserError(
        f"no COCO {split} split in {str(data_dir)!r}: expected annotations/instances_{split}2017.json with a "
        f"{split}2017/ image folder (or instances_{split}.json with {split}/)"
    )


class CocoDetection(Dataset):
    """Images and targets from a COCO-style annotation file.

    Args:
        ann_file: the ``instances_*.json``.
        image_root: folder the ``file_name`` of each image is relative to.
        train: drop crowd/degenerate boxes and images left without boxes; random horizontal flip.
        categories: the category ids to map to ``1..K`` (default: this file's, sorted), so a val split
            can share the train split's label map.

    Each item is ``(image [3,H,W] float in [0,1], {"boxes" [N,4] xyxy, "labels" [N], "image_id"})``,
    in the original image's pixel coordinates.
    """

    def __init__(self, ann_file: Path, image_root: Path, train: bool, categories: list[int] | None = None) -> None:
        from pycocotools.coco import COCO

        try:
            with _quiet():
                self.coco = COCO(str(ann_file))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"annotation file {str(ann_file)!r} is not valid COCO json: {err}") from None
        if "annotations" not in self.coco.dataset or "categories" not in self.coco.dataset:
            raise UserError(
                f"annotation file {str(ann_file)!r} lacks 'annotations' or 'categories' (not detection json)"
            )
        self.image_root = Path(image_root)
        self.train = train
        _check_annotations(self.coco.dataset["annotations"], ann_file)
        _check_images(self.coco.dataset.get("images", []), self.image_root, ann_file)
        self.cat_ids: list[int] = list(categories) if categories is not None else sorted(self.coco.getCatIds())
        if not self.cat_ids:
            raise UserError(f"annotation file {str(ann_file)!r} defines no categories")
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.label_to_cat = {i + 1: c for i, c in enumerate(self.cat_ids)}
        self.class_names = [self.coco.cats[c]["name"] if c in self.coco.cats else str(c) for c in self.cat_ids]
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if len(self._boxes(i)[0])]
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def _boxes(self, image_id: int) -> tuple[list[list[float]], list[int]]:
        """Valid boxes (xyxy) and labels; crowd boxes are kept out of training, as in every reference."""
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0) or ann["category_id"] not in self.cat_to_label:
                continue
            x, y, w, h = ann["bbox"]
            if w <= 1e-3 or h <= 1e-3:  # degenerate: torchvision's detectors assert on them
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_to_label[ann["category_id"]])
        return boxes, labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_root / info["file_name"]
        try:
            with Image.open(path) as img:
                image = pil_to_tensor(img.convert("RGB")).float().div_(255.0)
        except OSError as err:
            raise UserError(f"image {str(path)!r} cannot be read: {err}") from None
        boxes, labels = self._boxes(image_id)
        box_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if box_t.numel():  # clip to the image, as COCO boxes sometimes overhang by a fraction
            box_t[:, 0::2] = box_t[:, 0::2].clamp(0, image.shape[-1])
            box_t[:, 1::2] = box_t[:, 1::2].clamp(0, image.shape[-2])
            keep = (box_t[:, 2] > box_t[:, 0]) & (box_t[:, 3] > box_t[:, 1])
            box_t, labels = box_t[keep], [lab for lab, k in zip(labels, keep.tolist(), strict=True) if k]
        label_t = torch.tensor(labels, dtype=torch.int64)
        if self.train and torch.rand(()).item() < 0.5:  # torchvision reference: RandomHorizontalFlip(0.5)
            image = image.flip(-1)
            box_t = torch.stack(
                [image.shape[-1] - box_t[:, 2], box_t[:, 1], image.shape[-1] - box_t[:, 0], box_t[:, 3]], 1
            )
        return image, {"boxes": box_t, "labels": label_t, "image_id": image_id}


def _check_annotations(annotations: list[Any], ann_file: Path) -> None:
    """Every box is four numbers: a malformed one is named (file and annotation id) before any job starts."""
    for ann in annotations:
        box = ann.get("bbox") if isinstance(ann, dict) else None
        ok = isinstance(box, list | tuple) and len(box) == 4 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in box
        )
        if not ok:
            ident = ann.get("id", "?") if isinstance(ann, dict) else "?"
            raise UserError(
                f"annotation file {str(ann_file)!r}: annotation id {ident} has bbox {box!r}; expected "
                "[x, y, width, height] (four numbers)"
            )


def _check_images(images: list[Any], root: Path, ann_file: Path) -> None:
    """Every image the json lists exists under ``root`` (a missing one would kill a DataLoader worker later)."""
    missing = [img.get("file_name") for img in images if not (root / str(img.get("file_name"))).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) listed in {str(ann_file)!r} are missing from {root} "
            f"(e.g. {', '.join(map(str, missing[:3]))})"
        )


class _quiet:
    """Silence pycocotools' prints (``loading annotations...``) so logs stay one line per event."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self._ctx = contextlib.redirect_stdout(io.StringIO())
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


# -- the embedded "shapes" set ---------------------------------------------------------------------
def default_shapes_dir() -> Path:
    """``<cache>/shapes-det`` (:func:`tasks.cache.cache_dir`): generated once, reused by every run."""
    from tasks.cache import cache_dir

    return cache_dir() / "shapes-det"


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, size: float, colour: tuple) -> list[float]:
    """Draw one shape; return its tight box ``[x0, y0, x1, y1]`` in pixel-edge coordinates."""
    r = size / 2
    if kind == "circle":
        xy = [cx - r, cy - r, cx + r, cy + r]
        draw.ellipse(xy, fill=colour)
        return xy
    if kind == "square":
        xy = [cx - r, cy - r, cx + r, cy + r]
        draw.rectangle(xy, fill=colour)
        return xy
    pts = [(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)]
    draw.polygon(pts, fill=colour)
    return [cx - r, cy - r, cx + r, cy + r * 0.8]


def make_shapes(root: Path, num_train: int = 384, num_val: int = 96, size: int = 128, seed: int = 0) -> None:
    """Write the ``shapes`` set to ``root`` in COCO 2017 layout.

    Each image has 1-4 non-overlapping shapes (10-48 px) on a noisy grey background; the class is the
    shape, never the colour, so detectors must learn form. Deterministic for a given seed (PNG is
    lossless, so the pixels on disk are the generated ones).
    """
    rng = random.Random(seed)
    root = Path(root)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES_CLASSES)]
    ann_id = 1
    for split, count, offset in (("train", num_train, 0), ("val", num_val, num_train)):
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for k in range(count):
            image_id = offset + k + 1
            grey = rng.randint(90, 170)
            img = Image.new("RGB", (size, size), (grey, grey, grey))
            px = img.load()
            for _ in range(size * size // 16):  # sparse pixel noise, cheap and seeded
                x, y = rng.randrange(size), rng.randrange(size)
                v = max(0, min(255, grey + rng.randint(-40, 40)))
                px[x, y] = (v, v, v)
            draw = ImageDraw.Draw(img)
            placed: list[list[float]] = []
            for _ in range(rng.randint(1, 4)):
                for _try in range(20):
                    s = rng.uniform(10, 48)
                    cx, cy = rng.uniform(s / 2 + 1, size - s / 2 - 1), rng.uniform(s / 2 + 1, size - s / 2 - 1)
                    box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
                    if all(_disjoint(box, b) for b in placed):
                        break
                else:
                    continue
                kind = rng.choice(SHAPES_CLASSES)
                colour = rng.choice(_SHAPES_COLOURS)
                x0, y0, x1, y1 = _draw_shape(draw, kind, cx, cy, s, colour)
                placed.append(box)
                w, h = round(x1 - x0, 2), round(y1 - y0, 2)
                anns.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": SHAPES_CLASSES.index(kind) + 1,
                        "bbox": [round(x0, 2), round(y0, 2), w, h],
                        "area": round(w * h, 2) if kind != "circle" else round(math.pi * w * h / 4, 2),
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
            name = f"{image_id:06d}.png"
            img.save(folder / name)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        doc = {"images": images, "annotations": anns, "categories": categories, "info": {"seed": seed}}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(doc))


def _disjoint(a: list[float], b: list[float], gap: float = 2.0) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def ensure_shapes(root: Path | None = None, **kwargs: Any) -> Path:
    """Generate ``shapes`` into ``root`` unless a complete copy of this version is already there.

    Written to a temporary sibling and renamed, with a ``READY`` marker last, so concurrent jobs and
    interrupted runs never see half a data set.
    """
    root = Path(root) if root is not None else default_shapes_dir()
    marker = root / "READY"
    want = json.dumps({"version": SHAPES_VERSION, **{k: kwargs[k] for k in sorted(kwargs)}})
    if marker.is_file() and marker.read_text() == want:
        return root
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make_shapes(tmp, **kwargs)
    (tmp / "READY").write_text(want)
    if marker.is_file() and marker.read_text() == want:  # another job finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # lost a race with another job: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return root
