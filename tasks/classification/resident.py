"""Device-resident data for in-memory classification data sets.

A per-sample PIL ``DataLoader`` spends ~100 µs of Python per CIFAR image: far more than a small CIFAR network
needs on a GPU, and the reason a CIFAR job is data-bound. Data sets that fit in memory (CIFAR-100, digits,
synthetic, the generated ones) instead live on the training device once — CIFAR as ``uint8`` (150 MB for
the 50k training images, not 600 MB of floats) — and :class:`ResidentLoader` draws, augments and
normalises whole batches there with a handful of tensor ops.

Equivalence with the PIL path (``tests/tasks/test_classification_resident.py`` checks all of it):

* For the same crop offset and flip decision, the output equals the torchvision transform's pixel for
  pixel, bit for bit: padding is zero padding of the raw image, ``uint8`` is scaled exactly as ``ToTensor``
  does (``float32`` then ``/ 255``) and normalised exactly as ``Normalize`` does (``- mean`` then ``/ std``,
  in ``float32``), in the same order.
* The random draws have the same distribution: ``RandomCrop``'s offsets uniform over every position of the
  crop in the padded image (81 for CIFAR's pad-4 32x32), ``RandomHorizontalFlip``'s flip with probability
  ``p``; the epoch order is a uniform random permutation, as ``shuffle=True``.
* All draws of an epoch come from the loader's CPU ``torch.Generator``, in a fixed order (permutation,
  row offsets, column offsets, flips; one value per sample each), when the epoch's iteration starts, and
  reach the device in one small copy. A training loop that saves ``generator.get_state()`` at an epoch's
  end and restores it after a crash replays exactly the same batches. No global RNG is touched.

**Data-parallel sharding** (``rank`` / ``world_size``, like ``DistributedSampler``): every rank draws the
*same* epoch permutation (the generators must be seeded alike) and takes the strided positions
``rank, rank + world_size, ...``; ``batch_size`` is the per-rank batch. With ``drop_last=True`` (training)
the remainder is *dropped* so every rank has the same number of full batches, and batch ``k`` of the ranks
together is exactly batch ``k`` of a one-process loader with batch ``batch_size * world_size`` — the same
samples with the same crops and flips, since a sample's draws belong to its epoch position, not its rank.
With ``drop_last=False`` (evaluation) nothing is dropped or duplicated: every sample is on exactly one
rank, so summed metric counts are exact, but ranks may differ by one sample (and one batch).

**Protocol** a data set implements to be made resident (duck-typed; :func:`supports` checks it):

``resident_data() -> tuple[Tensor, Tensor]``
    all images ``[N, C, H, W]`` — ``uint8`` 0..255 (scaled by 1/255 like ``ToTensor``) or ``float32``
    (used as they are, like a tensor handed to ``Normalize``) — and their labels, ``int64 [N]``, in index
    order. Host tensors are fine; the loader moves them to the device once.
``resident_transform -> ResidentTransform | None``
    the augmentation and normalisation the device applies (an attribute or a property). ``None`` means the
    data set's transform has a step the device cannot reproduce, and the caller falls back to the PIL
    ``DataLoader``. :meth:`ResidentTransform.from_torchvision` derives it from a torchvision pipeline, so a
    data set whose ``transform`` changes is never silently mis-augmented.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import transforms as T


@dataclass(frozen=True)
class ResidentTransform:
    """The batched equivalent of ``[RandomCrop] -> [RandomHorizontalFlip] -> [ToTensor] -> [Normalize]``.

    Attributes:
        crop: ``(h, w)`` of the random crop taken from the padded image; ``None``: no crop.
        padding: ``(left, top, right, bottom)`` constant padding before the crop (only with ``crop``).
        fill: the padding value, in the images' own scale (0..255 for ``uint8``).
        flip_p: probability of a horizontal flip (after the crop, as torchvision orders them).
        channels: broadcast single-channel images to this many channels (grey to RGB, as
            ``DigitsDataset`` does before its transform); ``None``: keep the images' channels.
        mean / std: per-channel normalisation after scaling; ``None``: no normalisation.
    """

    crop: tuple[int, int] | None = None
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    fill: float = 0.0
    flip_p: float = 0.0
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def augments(self) -> bool:
        """Whether training batches need random draws beyond the permutation."""
        return self.crop is not None or self.flip_p > 0

    @classmethod
    def from_torchvision(cls, transform: Any, uint8: bool, channels: int | None = None) -> ResidentTransform | None:
        """Read a torchvision pipeline into a :class:`ResidentTransform`, or ``None`` if it has other steps.

        Accepted (each optional, in this order, exact classes only so a subclass with other behaviour is
        refused): ``RandomCrop`` with constant, non-negative padding and a scalar fill, no
        ``pad_if_needed``; ``RandomHorizontalFlip``; ``ToTensor`` — required when ``uint8`` (the data set
        hands PIL images to the transform) and refused otherwise; ``Normalize``.

        Args:
            transform: a ``T.Compose``, a single transform, or ``None``.
            uint8: whether the images are ``uint8`` (PIL images in the data set's own path).
            channels: see :attr:`channels`.
        """
        if transform is None:
            steps: list[Any] = []
        elif type(transform) is T.Compose:
            steps = list(transform.transforms)
        else:
            steps = [transform]
        fields: dict[str, Any] = {"channels": channels}
        i = 0

        def at(kind: type) -> bool:
            return i < len(steps) and type(steps[i]) is kind

        if at(T.RandomCrop):
            rc = steps[i]
            padding = _ltrb(rc.padding)
            if (padding is None or rc.pad_if_needed or rc.padding_mode != "constant"
                    or not isinstance(rc.fill, numbers.Number)):
                return None
            fields.update(crop=(int(rc.size[0]), int(rc.size[1])), padding=padding, fill=float(rc.fill))
            i += 1
        if at(T.RandomHorizontalFlip):
            fields["flip_p"] = float(steps[i].p)
            i += 1
        if uint8:
            if not at(T.ToTensor):
                return None
            i += 1
        if at(T.Normalize):
            norm = steps[i]
            fields.update(mean=tuple(float(v) for v in norm.mean), std=tuple(float(v) for v in norm.std))
            i += 1
        return cls(**fields) if i == len(steps) else None


def _ltrb(padding: Any) -> tuple[int, int, int, int] | None:
    """torchvision's padding argument as ``(left, top, right, bottom)``; ``None`` if negative or malformed."""
    if padding is None:
        return (0, 0, 0, 0)
    if isinstance(padding, numbers.Integral):
        p = (int(padding),) * 4
    elif isinstance(padding, Sequence) and len(padding) in (1, 2, 4) and all(
        isinstance(v, numbers.Integral) for v in padding
    ):
        v = [int(x) for x in padding]
        p = (v[0],) * 4 if len(v) == 1 else (v[0], v[1], v[0], v[1]) if len(v) == 2 else (v[0], v[1], v[2], v[3])
    else:
        return None
    return p if min(p) >= 0 else None


def supports(dataset: Any) -> bool:
    """Whether ``dataset`` implements the resident protocol (see the module docstring) for its transform."""
    if not callable(getattr(dataset, "resident_data", None)):
        return False
    return getattr(dataset, "resident_transform", None) is not None


class _Augmenter:
    """Crop + flip of a batch as one gather, shared by :class:`ResidentLoader` and :func:`augment_batch`.

    The batch is zero-padded and stacked with its mirror image (``[B, 2, C, Hp, Wp]``); every output row
    is then a run of ``w`` contiguous elements of that buffer, starting at
    ``slot(b, flip) + c * Hp * Wp + (dy + i) * Wp + x0`` (``x0 = dx``, or ``Wp - w - dx`` in the mirror),
    so one ``index_select`` over an ``unfold`` view gathers the whole batch. Per-pixel advanced indexing
    or ``torch.where`` with a flipped copy cost 10-30x more on a CPU and would miss the 20x target.
    """

    def __init__(self, shape: Sequence[int], tf: ResidentTransform, device: torch.device) -> None:
        c, h_in, w_in = (int(v) for v in shape)
        left, top, right, bottom = tf.padding if tf.crop is not None else (0, 0, 0, 0)
        self.pad = (left, right, top, bottom)  # F.pad's order: last dim first
        self.fill = tf.fill
        self.hp, self.wp = h_in + top + bottom, w_in + left + right
        self.h, self.w = tf.crop if tf.crop is not None else (h_in, w_in)
        if self.h > self.hp or self.w > self.wp or self.h < 1 or self.w < 1:
            raise ValueError(f"crop {self.h}x{self.w} does not fit the padded {self.hp}x{self.wp} images")
        self.rows, self.cols = self.hp - self.h + 1, self.wp - self.w + 1  # offsets torchvision draws from
        self.flip_p = tf.flip_p
        self.c = c
        self.plane = c * self.hp * self.wp
        rows = torch.arange(c).view(c, 1) * (self.hp * self.wp) + torch.arange(self.h).view(1, self.h) * self.wp
        self.row_starts = rows.view(1, -1).to(device)

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row offsets, column offsets and flips for ``n`` samples, as ``RandomCrop`` / ``RandomHorizontalFlip``."""
        zeros = torch.zeros(n, dtype=torch.int64)
        dy = torch.randint(0, self.rows, (n,), generator=generator) if self.rows > 1 else zeros
        dx = torch.randint(0, self.cols, (n,), generator=generator) if self.cols > 1 else zeros
        flip = torch.rand(n, generator=generator) < self.flip_p if self.flip_p > 0 else zeros.bool()
        return dy, dx, flip

    def offsets(self, slot: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Start of each sample's crop in the stacked buffer; ``slot`` is its position in its batch."""
        if self.flip_p > 0:
            base = (slot * 2 + flip.long()) * self.plane
            x0 = torch.where(flip, self.wp - self.w - dx, dx)
        else:
            base, x0 = slot * self.plane, dx
        return base + dy * self.wp + x0

    def __call__(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Crop (and mirror) ``x [b, C, H, W]``; ``offsets [b]`` from :meth:`offsets`, on ``x``'s device."""
        b = x.shape[0]
        if any(self.pad):
            x = F.pad(x, self.pad, value=self.fill)
        if self.flip_p > 0:
            x = torch.stack((x, x.flip(3)), dim=1)
        starts = (offsets.view(b, 1) + self.row_starts).view(-1)
        return x.reshape(-1).unfold(0, self.w, 1).index_select(0, starts).view(b, self.c, self.h, self.w)


class _Finisher:
    """``ToTensor`` scaling, grey-to-RGB broadcast, ``Normalize`` and the output memory format."""

    def __init__(self, tf: ResidentTransform, device: torch.device, channels_last: bool) -> None:
        self.channels = tf.channels
        self.mean = self.std = None
        if tf.mean is not None and tf.std is not None:
            self.mean = torch.tensor(tf.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(tf.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: a fresh batch (never a view of the resident images: ops below may work in place)."""
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255)  # ToTensor: float32, then / 255
        if self.channels is not None and x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        if self.mean is not None:
            x = x.sub(self.mean).div_(self.std)  # Normalize: (x - mean) / std, out of place after expand
        return x.contiguous(memory_format=self.memory_format)


def augment_batch(
    images: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: torch.Tensor,
    transform: ResidentTransform,
    channels_last: bool = False,
) -> torch.Tensor:
    """Augment and normalise ``images [B, C, H, W]`` with given draws, as :class:`ResidentLoader` does.

    For tests and tools that need to pick the draws (the loader draws its own from its generator).

    Args:
        images: ``uint8`` or ``float32`` images, on any device.
        dy / dx: crop offsets in the padded image (``int64 [B]``; zeros when the transform has no crop).
        flip: ``bool [B]`` horizontal flips (ignored when the transform has no flip).
        transform: what to apply.
        channels_last: output memory format.
    """
    device = images.device
    x = images.clone()
    if transform.augments:
        aug = _Augmenter(images.shape[1:], transform, device)
        slot = torch.arange(images.shape[0])
        x = aug(x, aug.offsets(slot, dy.cpu().long(), dx.cpu().long(), flip.cpu().bool()).to(device))
    return _Finisher(transform, device, channels_last)(x)


class ResidentLoader:
    """Batches of a resident data set, drawn, augmented and normalised on ``device``.

    Iterates like a ``DataLoader`` over ``(images float32 [B, C, h, w], labels int64 [B])``, both on
    ``device``. Training epochs (``train=True``) are shuffled and augmented; otherwise the order is
    sequential and only normalisation applies. Sharding and determinism: see the module docstring.

    Attributes:
        dataset: the wrapped data set (evaluation code reads ``loader.dataset``).
        batch_size: the per-rank batch.
        transform: the data set's :class:`ResidentTransform`.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device: torch.device | str,
        train: bool,
        generator: torch.Generator | None,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if not supports(dataset):
            raise ValueError(f"{type(dataset).__name__} cannot be made device-resident (see tasks.classification"
                             ".resident.supports); use a DataLoader")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        if train and generator is None:
            raise ValueError("a training ResidentLoader needs a generator (its draws must be resumable)")
        self.dataset = dataset
        self.batch_size, self.train, self.generator = batch_size, train, generator
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.device = torch.device(device)
        self.transform: ResidentTransform = dataset.resident_transform  # type: ignore[attr-defined]
        images, labels = dataset.resident_data()  # type: ignore[attr-defined]
        if images.ndim != 4 or images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"resident_data() images must be uint8 or float32 [N, C, H, W], got "
                             f"{images.dtype} {list(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"resident_data() gave {images.shape[0]} images but labels of shape {list(labels.shape)}")
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(self.device)
        self.num_samples = int(images.shape[0])
        self._augment = _Augmenter(images.shape[1:], self.transform, self.device) if self.transform.augments else None
        self._finish = _Finisher(self.transform, self.device, channels_last)

    def _positions(self) -> torch.Tensor:
        """This rank's epoch positions, trimmed to its batches."""
        n, w = self.num_samples, self.world_size
        pos = torch.arange(self.rank, (n // w) * w if self.drop_last else n, w)
        return pos[: len(self) * self.batch_size]

    def __len__(self) -> int:
        n, w = self.num_samples, self.world_size
        per_rank = n // w if self.drop_last else len(range(self.rank, n, w))
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        augment = self._augment if self.train else None
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        pos = self._positions()
        plan = [order[pos]]
        if augment is not None:
            dy, dx, flip = augment.draw(n, self.generator)  # type: ignore[arg-type]
            slot = torch.arange(len(pos)) % self.batch_size
            plan.append(augment.offsets(slot, dy[pos], dx[pos], flip[pos]))
        plan_dev = torch.stack(plan).to(self.device)  # the epoch's one host-to-device copy
        for start in range(0, len(pos), self.batch_size):
            rows = plan_dev[:, start : start + self.batch_size]
            x = self.images.index_select(0, rows[0])
            if augment is not None:
                x = augment(x, rows[1])
            yield self._finish(x), self.labels.index_select(0, rows[0])


__all__ = ["ResidentLoader", "ResidentTransform", "augment_batch", "supports"]
