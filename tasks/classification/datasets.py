"""What is known about each classification data set without reading it, free of torch.

The class counts, image sizes and normalisation constants of every data set (:data:`DATASETS`), the files of
CIFAR-100's archive and where to find them (:func:`find_cifar100_root`), and the class layout of the generated
``colorshapes`` set. The task's spec answers ``default_num_classes`` and fingerprints a data folder from these
alone; :mod:`tasks.classification.data` (torch, torchvision) builds the data sets from the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from methods.errors import UserError

# -- normalisation -----------------------------------------------------------------------------

#: CIFAR-100 per-channel mean / std of the training set, as mdistiller and RepDistiller use them
#: (``mdistiller/dataset/cifar100.py``).
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: tuple[float, float, float] = (0.2675, 0.2565, 0.2761)

#: ImageNet mean / std of torchvision's reference scripts and pretrained weights.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Mean / std of the upsampled, [0, 1]-scaled digits *training split* (grey, so equal per channel);
#: ``tests/tasks/test_classification_data.py`` recomputes them from the data.
DIGITS_MEAN: tuple[float, float, float] = (0.3054,) * 3
DIGITS_STD: tuple[float, float, float] = (0.3237,) * 3

# -- colorshapes: the class layout (tasks.classification.colorshapes generates the images) -------

#: Shapes, in label order; all mirror-symmetric left-right (a horizontal flip keeps the class).
COLORSHAPES_SHAPES: tuple[str, ...] = ("circle", "ring", "square", "diamond", "triangle")
#: Hue families, in label order; family ``i`` is centred at hue ``i / len(HUES)`` on the colour wheel.
COLORSHAPES_HUES: tuple[str, ...] = ("red", "lime", "cyan", "violet")
#: Class ``shape * len(HUES) + hue``, named ``"<hue> <shape>"``.
COLORSHAPES_CLASSES: tuple[str, ...] = tuple(f"{h} {s}" for s in COLORSHAPES_SHAPES for h in COLORSHAPES_HUES)
COLORSHAPES_IMAGE_SIZE = 32
#: Mean / std of the training split after ``ToTensor`` (``tests/tasks/test_classification_colorshapes.py``
#: recomputes them from the data).
COLORSHAPES_MEAN: tuple[float, float, float] = (0.2106, 0.2102, 0.2117)
COLORSHAPES_STD: tuple[float, float, float] = (0.1726, 0.1775, 0.1758)
#: ``colorshapes-few`` (:mod:`tasks.classification.colorshapes_few`): labelled images per class its students train
#: on, and how often each is shown per epoch (640 images an epoch).
COLORSHAPES_FEW_LABELLED_PER_CLASS = 16
COLORSHAPES_FEW_REPEAT = 640 // (COLORSHAPES_FEW_LABELLED_PER_CLASS * len(COLORSHAPES_CLASSES))
#: Mean / std of ``colorshapes-few``'s training split (``tests/tasks/test_classification_colorshapes_few.py``).
COLORSHAPES_FEW_MEAN: tuple[float, float, float] = (0.2835, 0.2843, 0.2839)
COLORSHAPES_FEW_STD: tuple[float, float, float] = (0.2435, 0.2537, 0.2506)

# -- CIFAR-100 files ---------------------------------------------------------------------------

#: Files the official CIFAR-100 python archive extracts to.
CIFAR100_DIR = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")


def find_cifar100_root(data_dir: Path) -> Path:
    """``data_dir`` may be the folder holding ``cifar-100-python/`` or that folder itself."""
    for cand in (data_dir / CIFAR100_DIR, data_dir):
        if all((cand / f).is_file() for f in CIFAR100_FILES):
            return cand
    cand = data_dir / CIFAR100_DIR if (data_dir / CIFAR100_DIR).is_dir() else data_dir
    missing = next(f for f in CIFAR100_FILES if not (cand / f).is_file())
    raise UserError(f"cifar100: {data_dir} has no {CIFAR100_DIR}/{missing} pickle; {expected_layout('cifar100')}")


def expected_layout(dataset: str) -> str:
    """The folder layout ``--data-dir`` must have for ``dataset``, as the end of an error line (``""`` for data sets
    that need no folder): the same words whether the folder is missing, empty or incomplete."""
    if dataset == "cifar100":
        return f"expected the official python-version archive extracted ({CIFAR100_DIR}/{{{','.join(CIFAR100_FILES)}}})"
    if dataset == "imagenet":
        return "expected train/ and val/ with one sub-folder per class"
    return ""


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a data set that are known without reading it.

    Attributes:
        name: CLI name.
        num_classes: classes of the full data set (``synthetic``: the default, configurable).
        image_size: side of the square images the model sees (``imagenet``: the crop).
        mean / std: the normalisation constants applied after ``ToTensor``.
        needs_data_dir: whether ``data_dir`` must be given.
        configurable: whether ``num_classes`` / ``image_size`` may be overridden.
        description: one line for ``--help`` and logs.
    """

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    needs_data_dir: bool
    configurable: bool
    description: str


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            name="cifar100",
            num_classes=100,
            image_size=32,
            mean=CIFAR100_MEAN,
            std=CIFAR100_STD,
            needs_data_dir=True,
            configurable=False,
            description="CIFAR-100, official python archive (cifar-100-python/{train,test,meta})",
        ),
        DatasetInfo(
            name="imagenet",
            num_classes=1000,
            image_size=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            needs_data_dir=True,
            configurable=False,
            description="ImageNet-1k, train/ and val/ class folders",
        ),
        DatasetInfo(
            name="colorshapes",
            num_classes=len(COLORSHAPES_CLASSES),
            image_size=COLORSHAPES_IMAGE_SIZE,
            mean=COLORSHAPES_MEAN,
            std=COLORSHAPES_STD,
            needs_data_dir=False,
            configurable=False,
            description="generated 20-class shapes in 4 hue families, 2560 train / 1000 val (embedded, no files)",
        ),
        DatasetInfo(
            name="colorshapes-few",
            num_classes=len(COLORSHAPES_CLASSES),
            image_size=COLORSHAPES_IMAGE_SIZE,
            mean=COLORSHAPES_FEW_MEAN,
            std=COLORSHAPES_FEW_STD,
            needs_data_dir=False,
            configurable=False,
            description="colorshapes with larger objects; students see a few labelled images per class, the "
            "teacher all 2560 (embedded, no files)",
        ),
        DatasetInfo(
            name="digits",
            num_classes=10,
            image_size=32,
            mean=DIGITS_MEAN,
            std=DIGITS_STD,
            needs_data_dir=False,
            configurable=False,
            description="scikit-learn's bundled 8x8 digits upsampled to 32x32 RGB (embedded, no files)",
        ),
        DatasetInfo(
            name="synthetic",
            num_classes=100,
            image_size=32,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            needs_data_dir=False,
            configurable=True,
            description="random N(0, 1) images with random labels, deterministic per index (for speed runs)",
        ),
    )
}
