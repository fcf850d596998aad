"""Classification data: tiny files in the real on-disk formats, read back pixel by pixel."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from methods.base import UserError
from tasks.classification.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_datasets,
    cifar100_transform,
    digits_images,
)

N_TRAIN, N_TEST = 10, 4


def _undo(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised [3, H, W] tensor back to 0..255."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (x * s + m) * 255.0


def _cifar_images(n: int, seed: int) -> np.ndarray:
    """``uint8 [n, 3, 32, 32]``; image 0 is solid R=10, G=120, B=250 to pin the channel order."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    imgs[0, 0], imgs[0, 1], imgs[0, 2] = 10, 120, 250
    return imgs


def _write_cifar(root: Path, str_keys: bool = False) -> dict[str, np.ndarray]:
    """Write train/test/meta like the official archive: dicts pickled with protocol 2, bytes keys."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    k = (lambda s: s) if str_keys else (lambda s: s.encode())
    out = {}
    for split, n, seed in (("train", N_TRAIN, 0), ("test", N_TEST, 1)):
        imgs = _cifar_images(n, seed)
        fine = [(7 * i + 3 + seed) % 100 for i in range(n)]
        entry = {
            k("filenames"): [f"img_{i}.png".encode() for i in range(n)],
            k("batch_label"): f"{split} batch 1 of 1".encode(),
            k("fine_labels"): fine,
            k("coarse_labels"): [f // 5 for f in fine],
            k("data"): imgs.reshape(n, 3072),  # channel-major rows, as in the archive
        }
        with (folder / split).open("wb") as f:
            pickle.dump(entry, f, protocol=2)
        out[split] = imgs
        out[split + "_labels"] = np.array(fine)
    meta = {
        k("fine_label_names"): [f"class{i}".encode() for i in range(100)],
        k("coarse_label_names"): [f"super{i}".encode() for i in range(20)],
    }
    with (folder / "meta").open("wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out


# -- metadata ----------------------------------------------------------------------------------


def test_datasets_metadata():
    assert {n: (d.num_classes, d.image_size) for n, d in DATASETS.items() if n != "synthetic"} == {
        "cifar100": (100, 32),
        "imagenet": (1000, 224),
        "colorshapes": (20, 32),
        "colorshapes-few": (20, 32),
        "digits": (10, 32),
    }
    assert DATASETS["synthetic"].configurable and not DATASETS["cifar100"].configurable


def test_normalisation_constants():
    # mdistiller / RepDistiller (mdistiller/dataset/cifar100.py) and torchvision's ImageNet values.
    assert CIFAR100_MEAN == (0.5071, 0.4867, 0.4408)
    assert CIFAR100_STD == (0.2675, 0.2565, 0.2761)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


# -- CIFAR-100 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar100_reads_pixels_and_labels(tmp_path, str_keys):
    written = _write_cifar(tmp_path, str_keys=str_keys)
    train, val, k, info = build_datasets("cifar100", tmp_path, augment=False)
    assert (len(train), len(val), k) == (N_TRAIN, N_TEST, 100)
    assert info["num_train"] == N_TRAIN and info["class_names"][:2] == ["class0", "class1"]
    assert [val[i][1] for i in range(N_TEST)] == written["test_labels"].tolist()
    assert [train[i][1] for i in range(N_TRAIN)] == written["train_labels"].tolist()
    for split, ds in (("train", train), ("test", val)):
        x, _ = ds[3]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        back = _undo(x, CIFAR100_MEAN, CIFAR100_STD)
        # ToTensor divides by 255 exactly, so the written uint8 values come back to float precision.
        torch.testing.assert_close(back, torch.from_numpy(written[split][3]).float(), atol=1e-3, rtol=0)


def test_cifar100_channel_order(tmp_path):
    _write_cifar(tmp_path)
    _, val, _, _ = build_datasets("cifar100", tmp_path)
    back = _undo(val[0][0], CIFAR100_MEAN, CIFAR100_STD)
    assert back[:, 5, 7].round().tolist() == [10.0, 120.0, 250.0]
    # A single pixel of the red plane lands at (row, col) of channel 0, not somewhere else.
    written = _cifar_images(N_TEST, 1)
    x = _undo(val[2][0], CIFAR100_MEAN, CIFAR100_STD)
    assert round(x[0, 1, 2].item()) == written[2, 0, 1, 2]
    assert round(x[2, 31, 0].item()) == written[2].reshape(3072)[2 * 1024 + 31 * 32 + 0]


def test_cifar100_accepts_inner_folder(tmp_path):
    _write_cifar(tmp_path)
    train, val, k, info = build_datasets("cifar100", tmp_path / "cifar-100-python")
    assert (len(train), len(val), k) == (N_TRAIN, N_TEST, 100)
    assert info["root"].endswith("cifar-100-python")


def test_cifar100_augmentation_is_pad4_crop_and_flip(tmp_path):
    written = _write_cifar(tmp_path)
    train, val, _, _ = build_datasets("cifar100", tmp_path, augment=True)
    img = torch.from_numpy(written["train"][4]).float()
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))  # zero padding, as RandomCrop(padding=4)
    candidates = [
        c
        for dy in range(9)
        for dx in range(9)
        for c in (padded[:, dy : dy + 32, dx : dx + 32], padded[:, dy : dy + 32, dx : dx + 32].flip(-1))
    ]
    torch.manual_seed(0)
    seen_changed = False
    for _ in range(6):
        back = _undo(train[4][0], CIFAR100_MEAN, CIFAR100_STD)
        assert any(torch.allclose(back, c, atol=1e-3) for c in candidates)
        seen_changed |= not torch.allclose(back, img, atol=1e-3)
    assert seen_changed  # it does augment
    # mdistiller's recipe exactly: RandomCrop(32, padding=4) then RandomHorizontalFlip(p=0.5).
    crop, flip = train.transform.transforms[:2]
    assert type(crop).__name__ == "RandomCrop" and crop.size == (32, 32) and crop.padding == 4
    assert type(flip).__name__ == "RandomHorizontalFlip" and flip.p == 0.5
    # Validation is never augmented.
    assert [type(t).__name__ for t in val.transform.transforms] == ["ToTensor", "Normalize"]
    assert [type(t).__name__ for t in cifar100_transform(False).transforms] == ["ToTensor", "Normalize"]


def test_cifar100_missing_folder(tmp_path):
    with pytest.raises(UserError, match="cifar-100-python/train pickle") as e:
        build_datasets("cifar100", tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        build_datasets("cifar100", tmp_path / "nope")
    with pytest.raises(UserError, match="data directory"):
        build_datasets("cifar100", None)


def test_cifar100_missing_meta(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(UserError, match="cifar-100-python/meta pickle"):
        build_datasets("cifar100", tmp_path)


def test_cifar100_wrong_keys(tmp_path):
    _write_cifar(tmp_path)
    bad = tmp_path / "cifar-100-python" / "train"
    with bad.open("wb") as f:  # CIFAR-10's layout: 'labels' instead of 'fine_labels'
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(UserError, match="expected 'data' and 'fine_labels'") as e:
        build_datasets("cifar100", tmp_path)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_cifar100_not_a_pickle(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="not a readable pickle"):
        build_datasets("cifar100", tmp_path)


def test_cifar100_bad_shapes_and_labels(tmp_path):
    _write_cifar(tmp_path)
    bad = tmp_path / "cifar-100-python" / "train"
    for entry, msg in (
        ({b"data": np.zeros((2, 1024), np.uint8), b"fine_labels": [0, 1]}, r"expected uint8 \[N, 3072\]"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0]}, "2 images but 1 fine_labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}, r"outside 0\.\.99"),
    ):
        with bad.open("wb") as f:
            pickle.dump(entry, f, protocol=2)
        with pytest.raises(UserError, match=msg):
            build_datasets("cifar100", tmp_path)


# -- ImageNet ----------------------------------------------------------------------------------

COLOURS = {("n01", 0): (10, 120, 250), ("n01", 1): (200, 30, 60), ("n02", 0): (0, 255, 128), ("n02", 1): (77, 5, 9)}


def _write_imagenet(root: Path, classes=("n01", "n02"), val_classes=None) -> None:
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for c in names:
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (12, 10), COLOURS.get((c, i), (1, 2, 3))).save(root / split / c / f"{c}_{i}.png")


def test_imagenet_folders(tmp_path):
    _write_imagenet(tmp_path)
    train, val, k, info = build_datasets("imagenet", tmp_path, image_size=8, resize_size=10)
    assert (len(train), len(val), k) == (4, 4, 2)
    assert info["class_names"] == ["n01", "n02"] and info["image_size"] == 8
    assert [val[i][1] for i in range(4)] == [0, 0, 1, 1]
    assert train[0][0].shape == (3, 8, 8) and val[0][0].shape == (3, 8, 8)
    # Solid images stay solid under resize and crop: each channel reads back its written value.
    for i, key in enumerate(sorted(COLOURS)):
        back = _undo(val[i][0], IMAGENET_MEAN, IMAGENET_STD)
        for ch, v in enumerate(COLOURS[key]):
            torch.testing.assert_close(back[ch], torch.full((8, 8), float(v)), atol=1e-3, rtol=0)


def test_imagenet_default_transform_sizes():
    from tasks.classification.data import imagenet_transform

    val_t = imagenet_transform(False)
    assert [type(t).__name__ for t in val_t.transforms] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert val_t.transforms[0].size == 256 and val_t.transforms[1].size == (224, 224)
    train_t = imagenet_transform(True)
    assert [type(t).__name__ for t in train_t.transforms][:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert train_t.transforms[0].size == (224, 224)


@pytest.mark.parametrize("missing", ["train", "val"])
def test_imagenet_missing_split(tmp_path, missing):
    _write_imagenet(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / missing)
    with pytest.raises(UserError, match=f"has no {missing}/ folder") as e:
        build_datasets("imagenet", tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_imagenet_mismatched_classes(tmp_path):
    _write_imagenet(tmp_path, classes=("n01", "n02"), val_classes=("n01", "n03"))
    with pytest.raises(UserError, match="only in train: n02; only in val: n03"):
        build_datasets("imagenet", tmp_path, image_size=8)


def test_imagenet_flat_val_and_empty_class(tmp_path):
    _write_imagenet(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "val")
    (tmp_path / "val").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.png")
    with pytest.raises(UserError, match="no class folders.*loose files"):
        build_datasets("imagenet", tmp_path, image_size=8)
    shutil.rmtree(tmp_path / "val")
    _write_imagenet(tmp_path / "x")
    (tmp_path / "x" / "val" / "n02" / "n02_0.png").unlink()
    (tmp_path / "x" / "val" / "n02" / "n02_1.png").unlink()
    with pytest.raises(UserError, match="no valid file for the classes n02") as e:
        build_datasets("imagenet", tmp_path / "x", image_size=8)
    assert "\n" not in str(e.value)


# -- digits ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return build_datasets("digits", augment=False)


def test_digits_split_sizes_and_stratification(digits):
    from sklearn.datasets import load_digits

    y = load_digits().target
    train, val, k, info = digits
    n_val = math.ceil(0.2 * len(y))  # sklearn rounds the test share up
    assert (len(y), len(val), len(train), k) == (1797, n_val, 1797 - n_val, 10)
    assert not set(train.indices) & set(val.indices)
    counts = np.bincount(y, minlength=10)
    val_counts = np.bincount(np.array(val.targets), minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * counts) <= 1)  # stratified
    assert val.targets == [int(y[i]) for i in val.indices]


def test_digits_pixels_follow_bilinear_upsampling(digits):
    from sklearn.datasets import load_digits

    small = load_digits().images / 16.0
    _, val, _, _ = digits
    i = 5
    x, label = val[i]
    assert x.shape == (3, 32, 32) and label == load_digits().target[val.indices[i]]
    img = small[val.indices[i]]
    back = _undo(x, DIGITS_MEAN, DIGITS_STD) / 255.0
    assert torch.equal(back[0], back[1]) and torch.equal(back[1], back[2])  # grey repeated to RGB
    # align_corners=False, scale 4: output 1 samples input coordinate -0.125 (clamped to 0),
    # output 17 samples 3.875 = 0.125 * in[3] + 0.875 * in[4] along each axis.
    assert back[0, 1, 1].item() == pytest.approx(img[0, 0], abs=1e-5)
    w = np.array([0.125, 0.875])
    assert back[0, 17, 17].item() == pytest.approx(w @ img[3:5, 3:5] @ w, abs=1e-5)


def test_digits_deterministic_and_constants(digits):
    again = build_datasets("digits", augment=False)
    assert np.array_equal(again.val.indices, digits.val.indices)
    assert torch.equal(again.train[7][0], digits.train[7][0])
    images, _ = digits_images()
    tr = images[torch.as_tensor(digits.train.indices)]
    assert DIGITS_MEAN[0] == pytest.approx(tr.mean().item(), abs=1e-3)
    assert DIGITS_STD[0] == pytest.approx(tr.std().item(), abs=1e-3)


def test_digits_train_augmentation_is_a_shift():
    train = build_datasets("digits", augment=True).train
    base = train.images[0, 0]
    padded = torch.nn.functional.pad(base, (2, 2, 2, 2))
    torch.manual_seed(1)
    for _ in range(4):
        back = _undo(train[0][0], DIGITS_MEAN, DIGITS_STD)[0] / 255.0
        assert any(
            torch.allclose(back, padded[dy : dy + 32, dx : dx + 32], atol=1e-5) for dy in range(5) for dx in range(5)
        )


# -- synthetic and names -----------------------------------------------------------------------


def test_synthetic_shapes_and_determinism():
    train, val, k, info = build_datasets("synthetic", image_size=16, num_classes=7, num_train=5, num_val=3)
    assert (len(train), len(val), k, info["image_size"]) == (5, 3, 7, 16)
    x, y = train[4]
    assert x.shape == (3, 16, 16) and 0 <= y < 7
    again = build_datasets("synthetic", image_size=16, num_classes=7, num_train=5, num_val=3)
    assert torch.equal(again.train[4][0], x) and again.train[4][1] == y
    assert not torch.equal(train[0][0], train[1][0]) and not torch.equal(train[0][0], val[0][0])
    assert not torch.equal(build_datasets("synthetic", image_size=16, seed=1).train[4][0], x)
    labels = {build_datasets("synthetic", num_classes=3, num_train=60).train[i][1] for i in range(60)}
    assert labels == {0, 1, 2}
    with pytest.raises(IndexError):
        train[5]
    d = build_datasets("synthetic")
    assert (len(d.train), d.num_classes, d.train[0][0].shape) == (512, 100, (3, 32, 32))
    with pytest.raises(UserError, match="num_classes must be a positive integer"):
        build_datasets("synthetic", num_classes=0)


def test_unknown_dataset_lists_valid():
    valid = "cifar100, imagenet, colorshapes, colorshapes-few, digits"
    match = f"unknown classification dataset 'cifar10'; did you mean 'cifar100'\\? valid: {valid}"
    with pytest.raises(UserError, match=match):
        build_datasets("cifar10", "/tmp")
