"""Segmentation data: Cityscapes and ADE20K in their published layouts, plus an embedded shapes set.

Layouts read (nothing is downloaded):

* **Cityscapes** ``<root>/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png`` with
  ``<root>/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png``; label ids are mapped to the 19
  train ids of the official table (``cityscapesscripts/helpers/labels.py``), everything else to 255.
* **ADE20K** (SceneParsing 2016) ``<root>/ADEChallengeData2016/images/{training,validation}/*.jpg``
  with ``annotations/.../*.png``; value 0 ("other") is ignored (255) and ``k`` becomes ``k - 1``
  (mmsegmentation's ``reduce_zero_label``). ``<root>`` may also be the ``ADEChallengeData2016`` folder.
* **shapes** (the embedded default): generated scenes of circles, rectangles and triangles on a
  textured background, written once (fixed seed) to a cache folder *in the Cityscapes layout* and read
  back by the same loader with its own id table — so the offline default exercises the real code path.

Training transforms follow CIRKD / mmsegmentation: random rescale by a factor in [0.5, 2.0]
(bilinear image, nearest label), ImageNet normalisation, pad to the crop (image 0 = mean colour,
label 255), random crop, horizontal flip with p = 0.5. Evaluation images are only normalised; how
they are run (whole image or sliding window) is the val set's ``eval_cfg``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F
from torch.utils.data import Dataset

from methods.errors import UserError

# The label tables live in tasks.segmentation.datasets (free of torch, for the task's spec); kept importable here.
from tasks.segmentation.datasets import ADE20K_CLASSES as ADE20K_CLASSES
from tasks.segmentation.datasets import CITYSCAPES_CLASSES as CITYSCAPES_CLASSES
from tasks.segmentation.datasets import CITYSCAPES_ID_TO_TRAINID as CITYSCAPES_ID_TO_TRAINID
from tasks.segmentation.datasets import IGNORE_INDEX, SHAPES_COUNTS, SHAPES_SIZE
from tasks.segmentation.datasets import SHAPES_CLASSES as SHAPES_CLASSES
from tasks.segmentation.datasets import SHAPES_ID_TO_TRAINID as SHAPES_ID_TO_TRAINID

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: Version of the generated shapes scenes: part of the cache folder's name, so a changed generator writes a new one.
SHAPES_VERSION = "v2"


def make_lut(id_to_trainid: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 lookup table id -> train id; unknown ids (and ``-1``, stored as 255) -> 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, t in id_to_trainid.items():
        if 0 <= i < 256:
            lut[i] = t if 0 <= t < 255 else IGNORE_INDEX
    return lut


def ade20k_lut() -> np.ndarray:
    """0 -> 255 (ignored "other"), k -> k - 1 for k in 1..150; anything above 150 -> 255."""
    return make_lut({0: 255, **{k: k - 1 for k in range(1, 151)}})


def map_labels(label: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply ``lut`` to an integer label image."""
    if label.dtype != np.uint8:
        label = label.astype(np.int64) & 0xFF  # -1 (license plate) -> 255
    return lut[label]


# -- transforms ------------------------------------------------------------------------------------
def normalize(img: torch.Tensor) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> float, ImageNet mean/std."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (img.float() / 255.0 - mean) / std


def train_transform(
    img: torch.Tensor,
    label: torch.Tensor,
    crop: tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, normalise, pad with ignore, random crop, horizontal flip.

    Args:
        img: uint8 ``[3, H, W]``.
        label: int64 ``[H, W]`` train ids.
        crop: ``(height, width)`` of the output.
        scale: range of the random rescale factor.
        generator: torch RNG (the DataLoader seeds torch's default one per worker).
    """
    r = torch.rand(3, generator=generator)
    s = scale[0] + float(r[0]) * (scale[1] - scale[0])
    h, w = img.shape[-2:]
    nh, nw = max(int(h * s + 0.5), 1), max(int(w * s + 0.5), 1)
    x = F.interpolate(normalize(img)[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    y = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    ph, pw = max(crop[0] - nh, 0), max(crop[1] - nw, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
        y = F.pad(y, (0, pw, 0, ph), value=IGNORE_INDEX)
    hh, ww = x.shape[-2:]
    top = int(torch.randint(0, hh - crop[0] + 1, (1,), generator=generator))
    left = int(torch.randint(0, ww - crop[1] + 1, (1,), generator=generator))
    x = x[:, top : top + crop[0], left : left + crop[1]]
    y = y[top : top + crop[0], left : left + crop[1]]
    if r[2] < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    return x.contiguous(), y.contiguous()


# -- data set --------------------------------------------------------------------------------------
class SegmentationFolder(Dataset):
    """(image, label) file pairs -> ``(float image [3,H,W], int64 train-id label [H,W])``.

    Args:
        pairs: ``(image_path, label_path)`` tuples.
        lut: label id -> train id table (:func:`make_lut`).
        class_names: one name per train id.
        crop: training crop ``(H, W)``; ``None`` for evaluation (normalise only).
        eval_cfg: how :meth:`Task.evaluate` runs this set: ``{"mode": "whole"}`` or
            ``{"mode": "slide", "crop": (h, w), "stride": (h, w)}``.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        lut: np.ndarray,
        class_names: Sequence[str],
        crop: tuple[int, int] | None = None,
        scale: tuple[float, float] = (0.5, 2.0),
        eval_cfg: dict[str, Any] | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.lut = lut
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.crop = tuple(crop) if crop is not None else None
        self.scale = scale
        self.eval_cfg = dict(eval_cfg or {"mode": "whole"})

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 image ``[3, H, W]`` and int64 train-id label ``[H, W]`` of pair ``i``, untransformed."""
        img_path, lbl_path = self.pairs[i]
        try:
            with Image.open(img_path) as im:
                img = np.asarray(im.convert("RGB"), dtype=np.uint8)
            with Image.open(lbl_path) as lb:
                lbl = np.asarray(lb)
        except OSError as err:
            raise UserError(f"cannot read segmentation sample {str(img_path)!r} / {str(lbl_path)!r}: {err}") from None
        if lbl.ndim != 2:
            raise UserError(f"label {str(lbl_path)!r} must be a single-channel id image, got shape {lbl.shape}")
        if lbl.shape != img.shape[:2]:
            raise UserError(f"label {str(lbl_path)!r} is {lbl.shape}, its image is {img.shape[:2]}")
        img_t = torch.from_numpy(img.copy()).permute(2, 0, 1)
        lbl_t = torch.from_numpy(map_labels(lbl, self.lut).astype(np.int64))
        return img_t, lbl_t

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lbl = self.load(i)
        if self.crop is None:
            return normalize(img), lbl
        return train_transform(img, lbl, self.crop, self.scale)


def collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack samples, padding to the largest one (image 0, label 255) when sizes differ (ADE20K val).

    Returns ``(images [B,3,H,W], labels [B,H,W], sizes [B,2])``; ``sizes`` holds each sample's own
    ``(h, w)`` so evaluation can run every image on its true extent (padding would leak into the global
    pooling of ASPP / PSP heads).
    """
    h = max(x.shape[-2] for x, _ in batch)
    w = max(x.shape[-1] for x, _ in batch)
    imgs = torch.zeros(len(batch), 3, h, w)
    lbls = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.long)
    sizes = torch.tensor([tuple(x.shape[-2:]) for x, _ in batch], dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        imgs[i, :, : x.shape[-2], : x.shape[-1]] = x
        lbls[i, : y.shape[-2], : y.shape[-1]] = y
    return imgs, lbls, sizes


# -- layouts ---------------------------------------------------------------------------------------
def cityscapes_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Matched (image, ``labelIds``) paths of a Cityscapes-layout ``split``; ``UserError`` if absent."""
    img_dir = root / "leftImg8bit" / split
    gt_dir = root / "gtFine" / split
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise UserError(
                f"Cityscapes folder {str(d)!r} not found; expected <root>/leftImg8bit/{split}/<city>/ "
                f"and <root>/gtFine/{split}/<city>/ under data_dir {str(root)!r}"
            )
    pairs = []
    for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        lbl = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not lbl.is_file():
            raise UserError(f"Cityscapes image {str(img)!r} has no label {str(lbl)!r}")
        pairs.append((img, lbl))
    if not pairs:
        raise UserError(f"no *_leftImg8bit.png images under {str(img_dir)!r}/<city>/")
    return pairs


def ade20k_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """Matched (jpg, png) paths of an ADE20K ``split`` (``training`` / ``validation``)."""
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    img_dir, ann_dir = base / "images" / split, base / "annotations" / split
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise UserError(
                f"ADE20K folder {str(d)!r} not found; expected <root>/ADEChallengeData2016/images/{split}/ "
                f"and annotations/{split}/ under data_dir {str(root)!r}"
            )
    pairs = []
    for img in sorted(img_dir.glob("*.jpg")):
        lbl = ann_dir / f"{img.stem}.png"
        if not lbl.is_file():
            raise UserError(f"ADE20K image {str(img)!r} has no annotation {str(lbl)!r}")
        pairs.append((img, lbl))
    if not pairs:
        raise UserError(f"no .jpg images in {str(img_dir)!r}")
    return pairs


# -- shapes generator ------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """diffbench's cache folder (:func:`tasks.cache.cache_dir`: ``$DIFFBENCH_CACHE`` or the XDG default)."""
    from tasks.cache import cache_dir

    return cache_dir()


#: Typical colour of each shape class (circle reddish, rectangle greenish, triangle bluish). A shape takes
#: a jittered version of it with probability :data:`SHAPES_COLOUR_CUE`, else a uniformly random colour, so
#: colour is a strong but imperfect cue and the shape itself must settle the rest.
SHAPES_PALETTE = {1: (200, 60, 60), 2: (60, 190, 70), 3: (70, 80, 210)}
SHAPES_COLOUR_CUE = 0.7


def _draw_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """One scene: a smooth muted background with noise and 1-4 shapes; returns (image, label ids)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(70, 180, 3), rng.uniform(70, 180, 3)
    t = (xx / w * np.cos(rng.uniform(0, 2 * np.pi)) + yy / h * np.sin(rng.uniform(0, 2 * np.pi)) + 1) / 2
    bg = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    ids = Image.new("L", (w, h), 1)  # id 1 = background
    d_img, d_ids = ImageDraw.Draw(img), ImageDraw.Draw(ids)
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(1, 4))  # 1 circle, 2 rectangle, 3 triangle
        r = float(rng.uniform(9, 24))
        cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        if kind == 1:
            geom: Any = [cx - r, cy - r, cx + r, cy + r]
            draw = "ellipse"
        elif kind == 2:
            a, b = r * rng.uniform(0.6, 1.0), r * rng.uniform(0.6, 1.0)
            geom, draw = [cx - a, cy - b, cx + a, cy + b], "rectangle"
        else:
            rot = rng.uniform(0, 2 * np.pi)
            geom = [
                (cx + r * math.cos(rot + k * 2 * math.pi / 3), cy + r * math.sin(rot + k * 2 * math.pi / 3))
                for k in range(3)
            ]
            draw = "polygon"
        if rng.random() < SHAPES_COLOUR_CUE:
            colour = tuple(int(np.clip(c + rng.integers(-40, 41), 0, 255)) for c in SHAPES_PALETTE[kind])
        else:
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        getattr(d_img, draw)(geom, fill=colour)
        getattr(d_ids, draw)(geom, fill=kind + 1, outline=0)  # one-pixel void outline
    arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), ids


def write_shapes(
    root: Path, counts: dict[str, int] | None = None, size: tuple[int, int] = SHAPES_SIZE, seed: int = 0
) -> None:
    """Write the shapes set to ``root`` in the Cityscapes layout (city folder ``shapes``)."""
    counts = counts or SHAPES_COUNTS
    for split_i, (split, n) in enumerate(sorted(counts.items())):
        rng = np.random.default_rng([seed, split_i])
        img_dir = root / "leftImg8bit" / split / "shapes"
        gt_dir = root / "gtFine" / split / "shapes"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, ids = _draw_scene(rng, size)
            img.save(img_dir / f"shapes_{i:06d}_leftImg8bit.png")
            ids.save(gt_dir / f"shapes_{i:06d}_gtFine_labelIds.png")


def ensure_shapes(cache: Path | None = None) -> Path:
    """The shapes set's folder, generated on first use (atomically, so parallel jobs do not collide)."""
    root = (cache or default_cache_dir()) / f"segmentation_shapes_{SHAPES_VERSION}"
    if (root / ".complete").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".shapes-", dir=root.parent))
    try:
        write_shapes(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(root)
        except OSError:  # another job finished first
            if not (root / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
