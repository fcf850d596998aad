"""``colorshapes``: a generated 20-class image set, the embedded default on which distillation can matter.

Why not digits: every CIFAR student reaches 98-99 % on scikit-learn's digits within a few epochs, so the
teacher has nothing to teach and the methods' differences are seed noise. ``colorshapes`` is built so that,
on the CPU budget of the default grid, the student is far from saturation while a teacher trained longer is
near the data set's ceiling, and so that a teacher's soft labels say more than the hard labels do:

* **Classes share parts.** A class is a *shape* (circle, ring, square, diamond, triangle) in a *hue family*
  (red, lime, cyan, violet): 5 x 4 = 20 classes. Every class has 3 neighbours with its shape and 4 with its
  hue, and some shapes resemble each other (a ring is a hollow circle, a diamond a turned square), so the
  similarity structure among classes — the "dark knowledge" of Hinton et al. (2015) — is rich and known.
* **Some images are genuinely ambiguous.** An image's hue is drawn around its family's centre with a
  standard deviation of :data:`HUE_SD` (0.06 of the colour wheel) while the families lie 0.25 apart, so
  about 4 % of the images show a hue past the half-way mark to the neighbouring family: their label is
  right, but the pixels favour another class. The best possible top-1 is therefore about 96 %, and for those
  images a good teacher's probabilities approach the true class posterior, which a one-hot label cannot
  carry — the regime in which Müller et al. (2019, "When does label smoothing help?") and Menon et al. (2021,
  "A statistical perspective on distillation") show that soft targets help.
* **The training set is small** (:data:`NUM_TRAIN` = 2560 images, 128 per class) **and the student's budget
  short**; the teacher is trained once for longer and cached. A student learning from a teacher's soft
  labels converges faster than one learning from hard labels (Stanton et al. 2021 find that students rarely
  match their teachers, yet still gain from them).

Nuisances that carry no class information: the object's position (±6 px), size (radius 5-8 px), colour
saturation and brightness, the background's grey level and colour cast, and pixel noise. Every shape is
mirror-symmetric about its vertical axis, so a horizontal flip keeps an image's class and the CIFAR
augmentation (pad-4 random crop, horizontal flip) applies unchanged.

Generation is vectorised numpy (well under a second for both splits), so nothing is cached on disk. It is
deterministic: the same seed gives the same bytes (only IEEE-exact operations — ``+ - * /``, ``sqrt``,
comparisons — and numpy's ``Generator`` streams are used). The split is fixed: the training set is drawn
from the stream ``(seed, 0)`` and the validation set from ``(seed, 1)``, with :data:`DATA_SEED` for the
benchmark; class counts are exactly balanced in each split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torchvision import transforms as T

from tasks.classification.datasets import (
    COLORSHAPES_CLASSES,
    COLORSHAPES_HUES,
    COLORSHAPES_IMAGE_SIZE,
    COLORSHAPES_MEAN,
    COLORSHAPES_SHAPES,
    COLORSHAPES_STD,
)
from tasks.classification.memory import MemoryImages

#: The class layout (shapes and hue families in label order, class names) and the image side are declared, without
#: torch, in :mod:`tasks.classification.datasets`; class ``shape * len(HUES) + hue`` is named ``"<hue> <shape>"``.
SHAPES = COLORSHAPES_SHAPES
HUES = COLORSHAPES_HUES
CLASSES = COLORSHAPES_CLASSES
NUM_CLASSES = len(CLASSES)

IMAGE_SIZE = COLORSHAPES_IMAGE_SIZE
NUM_TRAIN = 2560
NUM_VAL = 1000
#: The seed of the benchmark's data: change it and every result changes.
DATA_SEED = 0

#: Standard deviation of an image's hue around its family's centre (fraction of the wheel; families 0.25 apart).
HUE_SD = 0.06
#: Object radius range (px), centre jitter (±px), brightness above the background, pixel noise (std, 0..1 scale).
RADIUS = (5.0, 8.0)
JITTER = 6.0
CONTRAST = (0.5, 0.9)
NOISE = 0.04

#: Mean / std of the training split after ``ToTensor`` (declared in :mod:`tasks.classification.datasets`).
MEAN = COLORSHAPES_MEAN
STD = COLORSHAPES_STD


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (px, negative inside) of ``shape`` of radius ``r`` at offsets ``(dx, dy)``.

    ``dy`` grows downwards (image rows). The exact distance does not matter, only that the zero level set is
    the outline and the slope about 1 near it, so the 1-px anti-aliasing ramp below is even.
    """
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "ring":
        return np.abs(np.sqrt(dx * dx + dy * dy) - np.float32(0.72) * r) - np.float32(0.28) * r
    if shape == "square":
        return np.maximum(ax, ay) - np.float32(0.8) * r
    if shape == "diamond":
        return (ax + ay) * np.float32(0.7071) - np.float32(0.72) * r
    if shape == "triangle":  # pointing up: a flat base below the centre, two edges at ±30 degrees off vertical
        up, f = -dy, np.float32
        return np.maximum(f(-0.55) * r - up, ax * f(0.866) + up * f(0.5) - f(0.5) * r)
    raise ValueError(f"unknown shape {shape!r}")


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB (``colorsys.hsv_to_rgb`` for arrays), ``float32 [n, 3]``."""
    h6 = h * 6
    sector = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r = np.choose(sector, [v, q, p, p, t, v])
    g = np.choose(sector, [t, v, v, q, p, p])
    b = np.choose(sector, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def generate(n: int, seed: int | tuple[int, ...] | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``uint8 [n, 32, 32, 3]`` (HWC, as PIL and CIFAR keep them) and their labels ``int64 [n]``.

    Labels cycle through the classes and are then shuffled, so every class has ``n // 20`` or one more images.
    ``seed`` may be a tuple (numpy's ``SeedSequence`` mixes all of it): :func:`splits` uses ``(seed, split)``.
    """
    pixels, labels, _ = generate_with_hue(n, seed)
    return pixels, labels


def generate_with_hue(
    n: int,
    seed: int | tuple[int, ...] | list[int],
    radius: tuple[float, float] = RADIUS,
    jitter: float = JITTER,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`generate` plus each image's latent hue (``float64 [n]``, a fraction of the colour wheel): the one
    generator draw that makes a label ambiguous (:func:`hue_posterior` turns it into the Bayes posterior).

    ``radius`` (the shape's size range, pixels) and ``jitter`` (the largest offset of its centre) default to
    colorshapes' own; other values draw the same random numbers in the same order, so only the geometry changes.
    """
    rng = np.random.default_rng(seed)
    f32 = np.float32
    labels = np.arange(n, dtype=np.int64) % NUM_CLASSES
    rng.shuffle(labels)
    shape, family = labels // len(HUES), labels % len(HUES)

    size = IMAGE_SIZE
    grid = np.arange(size, dtype=f32) + f32(0.5)  # pixel centres
    background = rng.uniform(0.0, 0.35, n).astype(f32)
    cast = rng.uniform(-0.08, 0.08, (n, 3)).astype(f32)
    hue = np.mod(family / len(HUES) + rng.normal(0.0, HUE_SD, n), 1.0)
    value = np.minimum(background + rng.uniform(*CONTRAST, n), 1.0)
    colour = _hsv_to_rgb(hue, rng.uniform(0.5, 1.0, n), value)
    cx = (size / 2 + rng.uniform(-jitter, jitter, n)).astype(f32)
    cy = (size / 2 + rng.uniform(-jitter, jitter, n)).astype(f32)
    r = rng.uniform(*radius, n).astype(f32)
    noise = rng.normal(0.0, NOISE, (n, 3, size, size)).astype(f32)

    img = np.broadcast_to((background[:, None] + cast)[:, :, None, None], (n, 3, size, size)).copy()
    for s, name in enumerate(SHAPES):
        idx = np.flatnonzero(shape == s)
        if not len(idx):
            continue
        dx = grid[None, None, :] - cx[idx, None, None]
        dy = grid[None, :, None] - cy[idx, None, None]
        alpha = np.clip(f32(0.5) - _signed_distance(name, dx, dy, r[idx, None, None]), 0, 1)[:, None]
        img[idx] = img[idx] * (1 - alpha) + colour[idx, :, None, None] * alpha
    img += noise
    pixels = np.floor(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)), labels, hue


def hue_posterior(hue: np.ndarray) -> np.ndarray:
    """``p(hue family | latent hue)``, ``float64 [n, len(HUES)]``: the Bayes posterior of the generator.

    Family ``f`` draws its hue as ``(f / len(HUES) + N(0, HUE_SD)) mod 1``, so the likelihood of a hue is a wrapped
    normal around the family's centre (the terms one turn away are kept; further ones are below 1e-300) and the
    families are equally likely. The shape of an image carries no information about its hue.
    """
    h = np.asarray(hue, dtype=np.float64)[:, None]
    d = h - (np.arange(len(HUES)) / len(HUES))[None, :]
    log_lik = np.logaddexp.reduce(np.stack([-((d + k) ** 2) / (2 * HUE_SD**2) for k in (-1, 0, 1)]), axis=0)
    return np.exp(log_lik - np.logaddexp.reduce(log_lik, axis=1, keepdims=True))


def bayes_log_likelihood(labels: np.ndarray, hue: np.ndarray) -> np.ndarray:
    """``log p(label | shape, latent hue)`` per image (``float64 [n]``, <= 0): the log-probability an oracle that
    knows the generator's latent shape and hue gives each image's label. Minus its mean over a split is the lowest
    cross-entropy any classifier can expect there; a model's NLL minus it estimates the model's mean KL divergence
    from the Bayes posterior (the labels are draws from that posterior)."""
    post = hue_posterior(hue)
    return np.log(post[np.arange(len(labels)), np.asarray(labels) % len(HUES)])


def splits(seed: int = DATA_SEED) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The fixed ``(train, val)`` split: ``(images, labels)`` each, from the streams ``(seed, 0)`` and ``(seed, 1)``."""
    return generate(NUM_TRAIN, (seed, 0)), generate(NUM_VAL, (seed, 1))


def transform(train: bool, mean: tuple[float, float, float] = MEAN, std: tuple[float, float, float] = STD) -> Callable:
    """CIFAR's augmentation (pad-4 random crop, horizontal flip: every shape is mirror-symmetric) for training,
    none for validation; then ``ToTensor`` and the normalisation (this set's unless ``mean`` / ``std`` are given)."""
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if train:
        return T.Compose([T.RandomCrop(IMAGE_SIZE, padding=4), T.RandomHorizontalFlip(), *norm])
    return T.Compose(norm)


class ColorShapes(MemoryImages):
    """One split of ``colorshapes``, held in memory as ``uint8`` images (:class:`MemoryImages`: PIL transforms as for
    CIFAR-100, and the device-resident protocol of :mod:`tasks.classification.resident`).

    Attributes:
        data: ``uint8 [N, 32, 32, 3]`` images.
        targets: labels (0..19), ``shape * 4 + hue family``.
        classes: class names (:data:`CLASSES`).
        bayes_nll: the mean negative log-likelihood of the labels under the generator's Bayes posterior, on a split
            that carries it (``colorshapes-few``'s validation split; the task then reports ``excess_nll``).
    """

    bayes_nll: float | None = None

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform: Callable | None = None) -> None:
        super().__init__(data, targets, list(CLASSES), transform)


def build(augment: bool = True, seed: int = DATA_SEED) -> tuple[ColorShapes, ColorShapes]:
    """The train split (augmented when ``augment``) and the validation split."""
    (xtr, ytr), (xva, yva) = splits(seed)
    return ColorShapes(xtr, ytr, transform(train=augment)), ColorShapes(xva, yva, transform(train=False))


__all__ = [
    "CLASSES",
    "DATA_SEED",
    "HUES",
    "MEAN",
    "NUM_CLASSES",
    "NUM_TRAIN",
    "NUM_VAL",
    "SHAPES",
    "STD",
    "ColorShapes",
    "bayes_log_likelihood",
    "build",
    "generate",
    "generate_with_hue",
    "hue_posterior",
    "splits",
    "transform",
]
