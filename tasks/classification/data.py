"""Classification data sets: CIFAR-100, ImageNet, the embedded ``colorshapes`` default, digits and synthetic tensors.

Every data set yields ``(image, label)`` with ``image`` a normalised ``float32`` tensor ``[3, H, W]``
and ``label`` a Python ``int``, so one classification model and one collate function serve them all.

* ``cifar100`` reads the official *python version* archive (``cifar-100-python/{train,test,meta}``
  pickles) itself rather than through ``torchvision.datasets.CIFAR100``: torchvision checks the
  files' md5 sums, which refuses any re-packed or test copy, and its errors are not one-line
  :class:`~methods.base.UserError` messages. Augmentation and normalisation are mdistiller's /
  RepDistiller's, so teachers trained there and students trained here see the same pixels.
* ``imagenet`` is the usual ``train/`` + ``val/`` class-folder layout (``ImageFolder``) with the
  torchvision reference transforms.
* ``colorshapes`` is a generated 20-class set (a shape in a hue family; :mod:`tasks.classification.colorshapes`
  says how and why): offline, deterministic, and hard enough on a CPU budget that a teacher is well ahead of
  its student.
* ``colorshapes-few`` is colorshapes with larger objects where the students learn from a few labelled images per
  class while their teacher learned from all 128 (:mod:`tasks.classification.colorshapes_few`): the recipe's
  ``extra`` (``labelled_per_class``, ``repeat``) selects the students' split, the teacher's recipe has none.
* ``digits`` is scikit-learn's bundled 8x8 digits, upsampled to CIFAR's 32x32 RGB shape, so the
  CIFAR architectures run offline with no files at all (every student saturates at ~99 %: a smoke test).
* ``synthetic`` is random tensors, deterministic per index, for throughput runs.

The in-memory sets (``cifar100``, ``colorshapes``, ``colorshapes-few``, ``digits``, ``synthetic``) also implement the
device-resident protocol of :mod:`tasks.classification.resident` (``resident_data()`` and ``resident_transform``),
read from each split's own transform, so training can keep their images on the device and augment them there in
batches.

Entry point: :func:`build_datasets`; per-dataset facts: :data:`DATASETS`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from methods.errors import UserError, unknown
from tasks.classification import colorshapes, colorshapes_few
from tasks.classification.datasets import (
    CIFAR100_DIR,
    CIFAR100_FILES,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    expected_layout,
)
from tasks.classification.datasets import find_cifar100_root as _find_cifar100_root
from tasks.classification.memory import MemoryImages
from tasks.classification.resident import ResidentTransform

# -- constants ---------------------------------------------------------------------------------
# The normalisation constants, CIFAR-100's file names and the per-dataset facts (DATASETS) are known without
# torch: they live in tasks.classification.datasets, which the task's spec reads too.

#: The digits split: stratified, 20 % validation, fixed seed so every run sees the same images.
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

#: Default sizes of the synthetic splits.
SYNTHETIC_TRAIN = 512
SYNTHETIC_VAL = 128


class ClassificationData(NamedTuple):
    """What :func:`build_datasets` returns; unpacks as ``train, val, num_classes, info``."""

    train: Dataset
    val: Dataset
    num_classes: int
    info: dict[str, Any]


# -- transforms --------------------------------------------------------------------------------


def cifar100_transform(train: bool) -> Callable:
    """mdistiller's CIFAR-100 transform: pad-4 random crop and flip for training, none for test."""
    norm = [T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)]
    if train:
        return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *norm])
    return T.Compose(norm)


def imagenet_transform(train: bool, image_size: int = 224, resize_size: int | None = None) -> Callable:
    """torchvision reference transforms: RandomResizedCrop + flip, or Resize + CenterCrop.

    ``resize_size`` defaults to ``image_size / 0.875`` (256 for 224), the usual crop ratio.
    """
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train:
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *norm])
    resize = resize_size if resize_size is not None else int(round(image_size / 0.875))
    return T.Compose([T.Resize(resize), T.CenterCrop(image_size), *norm])


def digits_transform(train: bool) -> Callable:
    """Digits arrive as [0, 1] tensors: a light pad-2 crop for training (no flip: it would change
    the digit), then normalisation. Padding happens before normalising so it is background (0)."""
    norm = T.Normalize(DIGITS_MEAN, DIGITS_STD)
    if train:
        return T.Compose([T.RandomCrop(32, padding=2), norm])
    return norm


# -- CIFAR-100 ---------------------------------------------------------------------------------


def _str_keys(obj: dict) -> dict[str, Any]:
    """Keys as ``str``: the archive was pickled by Python 2, so ``encoding='bytes'`` gives bytes keys
    while ``encoding='latin1'`` (or a Python-3 re-pickle) gives str keys. Accept both."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(
            f"cifar100: {path} is not a readable pickle ({type(err).__name__}: {err}); "
            "expected a file of the official python-version archive"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"cifar100: {path} holds a {type(obj).__name__}, expected a dict with 'data' and 'fine_labels'")
    return _str_keys(obj)


def _decode(names: Sequence[Any]) -> list[str]:
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


class CIFAR100Pickle(MemoryImages):
    """One split of the official CIFAR-100 python archive.

    The pickle's ``data`` is ``uint8 [N, 3072]``: each row is the red plane, then green, then blue,
    each 32x32 row-major. Images are kept as ``[N, 32, 32, 3]`` and handed to the transform as PIL
    images, exactly as torchvision's ``CIFAR100`` does, so the same transforms apply.

    Attributes:
        data: ``uint8 [N, 32, 32, 3]`` images.
        targets: fine labels (0..99).
        classes: fine label names from ``meta``.
    """

    def __init__(self, file: Path, classes: list[str], transform: Callable | None = None) -> None:
        entry = _load_pickle(file)
        if "data" not in entry or "fine_labels" not in entry:
            raise UserError(
                f"cifar100: {file} has keys {sorted(entry)}; expected 'data' and 'fine_labels' "
                "(the CIFAR-100 python-version format; CIFAR-10's 'labels' is not CIFAR-100)"
            )
        data = np.asarray(entry["data"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or not np.issubdtype(data.dtype, np.integer):
            raise UserError(f"cifar100: {file} 'data' is {data.dtype} {list(data.shape)}; expected uint8 [N, 3072]")
        if data.size and (data.min() < 0 or data.max() > 255):
            raise UserError(f"cifar100: {file} 'data' has values outside 0..255")
        labels = [int(v) for v in entry["fine_labels"]]
        if len(labels) != len(data):
            raise UserError(f"cifar100: {file} has {len(data)} images but {len(labels)} fine_labels")
        if labels and (min(labels) < 0 or max(labels) >= len(classes)):
            raise UserError(f"cifar100: {file} has fine_labels outside 0..{len(classes) - 1}")
        super().__init__(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels, classes, transform)

    @classmethod
    def from_arrays(
        cls, data: np.ndarray, targets: Sequence[int], classes: list[str], transform: Callable | None = None
    ) -> CIFAR100Pickle:
        """A split from in-memory ``uint8 [N, 32, 32, 3]`` images (benchmarks, generated data), no file read."""
        obj = cls.__new__(cls)
        MemoryImages.__init__(obj, data, targets, classes, transform)
        return obj


def _build_cifar100(data_dir: Path, augment: bool) -> ClassificationData:
    root = _find_cifar100_root(data_dir)
    meta = _load_pickle(root / "meta")
    if "fine_label_names" not in meta:
        raise UserError(f"cifar100: {root / 'meta'} has keys {sorted(meta)}; expected 'fine_label_names'")
    classes = _decode(meta["fine_label_names"])
    if len(classes) != 100:
        raise UserError(f"cifar100: {root / 'meta'} names {len(classes)} fine classes; CIFAR-100 has 100")
    train = CIFAR100Pickle(root / "train", classes, cifar100_transform(train=augment))
    val = CIFAR100Pickle(root / "test", classes, cifar100_transform(train=False))
    info = _info("cifar100", root, train, val, 32, CIFAR100_MEAN, CIFAR100_STD, classes)
    return ClassificationData(train, val, len(classes), info)


# -- ImageNet ----------------------------------------------------------------------------------


def _image_folder(split_dir: Path, transform: Callable) -> Any:
    from torchvision.datasets import ImageFolder

    subdirs = [p for p in split_dir.iterdir() if p.is_dir()]
    if not subdirs:
        hint = (
            " (it holds loose files: sort the validation images into one folder per class, e.g. with valprep.sh)"
            if any(p.is_file() for p in split_dir.iterdir())
            else ""
        )
        raise UserError(f"imagenet: {split_dir} has no class folders; expected one sub-folder per class{hint}")
    try:
        return ImageFolder(str(split_dir), transform=transform)
    except FileNotFoundError as err:  # a class folder without any image
        raise UserError(f"imagenet: {split_dir}: {str(err).strip()}") from None


def _build_imagenet(data_dir: Path, augment: bool, image_size: int, resize_size: int | None) -> ClassificationData:
    for split in ("train", "val"):
        if not (data_dir / split).is_dir():
            raise UserError(
                f"imagenet: {data_dir} has no {split}/ folder; {expected_layout('imagenet')}"
            )
    train = _image_folder(data_dir / "train", imagenet_transform(augment, image_size, resize_size))
    val = _image_folder(data_dir / "val", imagenet_transform(False, image_size, resize_size))
    if train.classes != val.classes:
        only_t = sorted(set(train.classes) - set(val.classes))
        only_v = sorted(set(val.classes) - set(train.classes))
        raise UserError(
            f"imagenet: {data_dir} train/ and val/ class folders differ ({len(train.classes)} vs {len(val.classes)}; "
            f"only in train: {', '.join(only_t[:5]) or '-'}; only in val: {', '.join(only_v[:5]) or '-'})"
        )
    info = _info("imagenet", data_dir, train, val, image_size, IMAGENET_MEAN, IMAGENET_STD, list(train.classes))
    return ClassificationData(train, val, len(train.classes), info)


# -- digits ------------------------------------------------------------------------------------


def digits_images() -> tuple[torch.Tensor, np.ndarray]:
    """All 1797 digits as ``float32 [N, 1, 32, 32]`` in [0, 1] and their labels.

    The 8x8 images hold counts 0..16; dividing by 16 maps them to [0, 1], and bilinear upsampling
    (``align_corners=False``, a convex combination) keeps them there.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = torch.nn.functional.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    return big.contiguous(), np.asarray(bunch.target, dtype=np.int64)


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fixed stratified 80/20 split (``train_test_split`` with a fixed seed)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    tr, va = train_test_split(
        idx, test_size=DIGITS_VAL_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED, shuffle=True
    )
    return np.sort(tr), np.sort(va)


class DigitsDataset(Dataset):
    """A split of the upsampled digits; ``indices`` are positions in ``load_digits()``."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, indices: np.ndarray, transform: Callable) -> None:
        self.images = images[torch.as_tensor(indices)]
        self.targets = [int(labels[i]) for i in indices]
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index].expand(3, -1, -1).clone()
        return self.transform(img), self.targets[index]

    # device-resident protocol (tasks/classification/resident.py)
    def resident_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``float32 [N, 1, 32, 32]`` images in [0, 1] (grey: broadcast to RGB on the device) and labels."""
        return self.images, torch.as_tensor(self.targets)

    @property
    def resident_transform(self) -> ResidentTransform | None:
        """The crop + normalisation of :func:`digits_transform`, on 3 channels as :meth:`__getitem__` gives."""
        return ResidentTransform.from_torchvision(self.transform, uint8=False, channels=3)


def _build_digits(augment: bool) -> ClassificationData:
    images, labels = digits_images()
    tr, va = digits_split(labels)
    train = DigitsDataset(images, labels, tr, digits_transform(train=augment))
    val = DigitsDataset(images, labels, va, digits_transform(train=False))
    info = _info("digits", None, train, val, 32, DIGITS_MEAN, DIGITS_STD, [str(i) for i in range(10)])
    return ClassificationData(train, val, 10, info)


# -- colorshapes ------------------------------------------------------------------------------


def _build_colorshapes(augment: bool) -> ClassificationData:
    train, val = colorshapes.build(augment)
    d = DATASETS["colorshapes"]
    info = _info("colorshapes", None, train, val, d.image_size, d.mean, d.std, list(colorshapes.CLASSES))
    return ClassificationData(train, val, d.num_classes, info)


def _build_colorshapes_few(augment: bool, labelled_per_class: int | None, repeat: int | None) -> ClassificationData:
    for what, v in (("labelled_per_class", labelled_per_class), ("repeat", repeat)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise UserError(f"colorshapes-few: {what} must be a positive integer, got {v!r}")
    per_class_max = colorshapes.NUM_TRAIN // colorshapes.NUM_CLASSES
    if labelled_per_class is not None and labelled_per_class > per_class_max:
        raise UserError(f"colorshapes-few: labelled_per_class {labelled_per_class} is more than the {per_class_max} "
                        "images per class of the training split")
    train, val = colorshapes_few.build(augment, labelled_per_class, repeat or 1)
    d = DATASETS["colorshapes-few"]
    info = _info("colorshapes-few", None, train, val, d.image_size, d.mean, d.std, list(colorshapes.CLASSES))
    info.update(labelled_per_class=labelled_per_class, repeat=repeat or 1, bayes_nll=val.bayes_nll)
    return ClassificationData(train, val, d.num_classes, info)


# -- synthetic ---------------------------------------------------------------------------------


class SyntheticDataset(Dataset):
    """``n`` random ``N(0, 1)`` images ``[3, S, S]`` with uniform random labels.

    Item ``i`` is drawn from its own generator seeded with ``(seed, split, i)``, so it is the same in
    every epoch, worker and process without storing anything.
    """

    def __init__(self, n: int, image_size: int, num_classes: int, seed: int = 0, split: int = 0) -> None:
        self.n, self.image_size, self.num_classes = n, image_size, num_classes
        self.seed, self.split = seed, split

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        # numpy's SeedSequence mixes the whole (seed, split, index) tuple; torch's CPU generator would
        # keep only the low 32 bits of a packed seed, so different seeds could give the same images.
        rng = np.random.default_rng([self.seed, self.split, index])
        img = torch.from_numpy(rng.standard_normal((3, self.image_size, self.image_size), dtype=np.float32))
        return img, int(rng.integers(self.num_classes))

    # device-resident protocol (tasks/classification/resident.py): no transform, the items as they are
    resident_transform = ResidentTransform()

    def resident_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item materialised once (``float32 [n, 3, S, S]``, 12 KB per 32x32 image) and its label."""
        items = [self[i] for i in range(self.n)]
        size = self.image_size
        images = torch.stack([img for img, _ in items]) if items else torch.zeros(0, 3, size, size)
        return images, torch.tensor([label for _, label in items], dtype=torch.int64)


def _build_synthetic(
    image_size: int | None, num_classes: int | None, num_train: int | None, num_val: int | None, seed: int
) -> ClassificationData:
    d = DATASETS["synthetic"]
    size = d.image_size if image_size is None else image_size
    k = d.num_classes if num_classes is None else num_classes
    n_tr = SYNTHETIC_TRAIN if num_train is None else num_train
    n_va = SYNTHETIC_VAL if num_val is None else num_val
    for what, v in (("image_size", size), ("num_classes", k), ("num_train", n_tr), ("num_val", n_va)):
        if v < 1:
            raise UserError(f"synthetic: {what} must be a positive integer, got {v}")
    if seed < 0:
        raise UserError(f"synthetic: seed must be >= 0, got {seed}")
    train = SyntheticDataset(n_tr, size, k, seed, split=0)
    val = SyntheticDataset(n_va, size, k, seed, split=1)
    info = _info("synthetic", None, train, val, size, d.mean, d.std, None)
    return ClassificationData(train, val, k, info)


# -- entry point -------------------------------------------------------------------------------


def _info(
    name: str,
    root: Path | None,
    train: Dataset,
    val: Dataset,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    classes: list[str] | None,
) -> dict[str, Any]:
    return {
        "dataset": name,
        "root": str(root) if root is not None else None,
        "image_size": image_size,
        "num_train": len(train),
        "num_val": len(val),
        "mean": tuple(mean),
        "std": tuple(std),
        "class_names": classes,
    }


def build_datasets(
    name: str,
    data_dir: str | Path | None = None,
    *,
    augment: bool = True,
    image_size: int | None = None,
    resize_size: int | None = None,
    num_classes: int | None = None,
    num_train: int | None = None,
    num_val: int | None = None,
    seed: int = 0,
    labelled_per_class: int | None = None,
    repeat: int | None = None,
) -> ClassificationData:
    """Build the train and validation sets of ``name``.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: the data folder (``cifar100``: the folder holding ``cifar-100-python/`` or that
            folder itself; ``imagenet``: the folder holding ``train/`` and ``val/``); ignored by
            the embedded sets (``colorshapes``, ``colorshapes-few``, ``digits``, ``synthetic``).
        augment: apply the training augmentation to the train split (the validation split is never
            augmented). ``False`` gives the deterministic evaluation transform on both.
        image_size: ``imagenet``: crop size (default 224); ``synthetic``: image side (default 32).
        resize_size: ``imagenet`` validation resize (default ``image_size / 0.875``).
        num_classes, num_train, num_val, seed: ``synthetic`` only.
        labelled_per_class, repeat: ``colorshapes-few`` only: the students' split (``None``: every training image
            once, the teacher's split).

    Returns:
        ``(train, val, num_classes, info)`` as a :class:`ClassificationData`; ``num_classes`` is the
        number of classes actually found (an ImageNet subset has fewer than 1000).

    Raises:
        UserError: unknown ``name``, a missing ``data_dir``, or a missing or malformed data folder.
    """
    if name not in DATASETS:
        raise unknown("classification dataset", name, DATASETS)
    if name == "synthetic":
        return _build_synthetic(image_size, num_classes, num_train, num_val, seed)
    if name == "digits":
        return _build_digits(augment)
    if name == "colorshapes":
        return _build_colorshapes(augment)
    if name == "colorshapes-few":
        return _build_colorshapes_few(augment, labelled_per_class, repeat)
    if data_dir is None:
        raise UserError(f"{name}: needs a data directory (--data-dir); {DATASETS[name].description}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"{name}: data directory {root} does not exist or is not a folder; {expected_layout(name)}")
    if name == "cifar100":
        return _build_cifar100(root, augment)
    size = DATASETS["imagenet"].image_size if image_size is None else image_size
    return _build_imagenet(root, augment, size, resize_size)


def dataset_names() -> list[str]:
    """Names :func:`build_datasets` accepts."""
    return list(DATASETS)


__all__ = [
    "CIFAR100_DIR",
    "CIFAR100_FILES",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR100Pickle",
    "ClassificationData",
    "DatasetInfo",
    "DigitsDataset",
    "SyntheticDataset",
    "build_datasets",
    "cifar100_transform",
    "dataset_names",
    "digits_images",
    "digits_split",
    "digits_transform",
    "imagenet_transform",
]
