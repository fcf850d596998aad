"""Device-resident classification data against torchvision's PIL path (tasks/classification/resident.py).

The references are torchvision's own functional ops on PIL images (pad, crop, hflip, to_tensor, normalize),
and the facts of its random transforms: ``RandomCrop(32, padding=4)`` draws each of the 81 offsets with
equal probability, ``RandomHorizontalFlip()`` flips half the images. Data are tiny CIFAR-100 pickles in the
official format, the real digits and the synthetic set.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy import stats
from torch.utils.data import Dataset
from torchvision import transforms as T

from methods.base import UserError
from tasks.base import get_task
from tasks.classification.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DIGITS_MEAN,
    DIGITS_STD,
    CIFAR100Pickle,
    build_datasets,
    cifar100_transform,
)
from tasks.classification.resident import ResidentLoader, ResidentTransform, augment_batch, supports

CLASSES = [f"class{i}" for i in range(100)]


def _write_cifar(root: Path, train: np.ndarray, test: np.ndarray, train_labels=None, test_labels=None) -> Path:
    """The official python-version archive layout: protocol-2 pickles with bytes keys, channel-major rows."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, imgs, labels in (("train", train, train_labels), ("test", test, test_labels)):
        n = len(imgs)
        fine = list(labels) if labels is not None else [i % 100 for i in range(n)]
        entry = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split} batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": imgs.transpose(0, 3, 1, 2).reshape(n, 3072),  # [N, 32, 32, 3] -> R plane, G, B
        }
        with (folder / split).open("wb") as f:
            pickle.dump(entry, f, protocol=2)
    with (folder / "meta").open("wb") as f:
        pickle.dump({b"fine_label_names": [c.encode() for c in CLASSES],
                     b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}, f, protocol=2)
    return root


def _random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """12 training images with unique labels 0..11 (a label names its image), 5 test images."""
    root = _write_cifar(tmp_path_factory.mktemp("cifar"), _random_images(12, 0), _random_images(5, 1))
    return build_datasets("cifar100", root)


def _pil_reference(img: np.ndarray, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """What ``cifar100_transform(train=True)`` gives for these draws, spelt with torchvision's functional ops."""
    pil = TF.crop(TF.pad(Image.fromarray(img), 4, fill=0), dy, dx, 32, 32)
    if flip:
        pil = TF.hflip(pil)
    return TF.normalize(TF.to_tensor(pil), CIFAR100_MEAN, CIFAR100_STD)


def _candidates(img: np.ndarray) -> torch.Tensor:
    """All 162 outputs the PIL path can give for ``img``: ``[9, 9, 2, 3, 32, 32]``."""
    return torch.stack([torch.stack([torch.stack([_pil_reference(img, dy, dx, f) for f in (False, True)])
                                     for dx in range(9)]) for dy in range(9)])


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


# -- the protocol ------------------------------------------------------------------------------


def test_transforms_read_from_the_datasets(cifar):
    assert cifar.train.resident_transform == ResidentTransform(
        crop=(32, 32), padding=(4, 4, 4, 4), flip_p=0.5, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    assert cifar.val.resident_transform == ResidentTransform(mean=CIFAR100_MEAN, std=CIFAR100_STD)
    digits = build_datasets("digits")
    assert digits.train.resident_transform == ResidentTransform(
        crop=(32, 32), padding=(2, 2, 2, 2), channels=3, mean=DIGITS_MEAN, std=DIGITS_STD)
    assert build_datasets("synthetic").train.resident_transform == ResidentTransform()


def test_supports(cifar):
    assert supports(cifar.train) and supports(cifar.val)
    assert supports(build_datasets("digits").train) and supports(build_datasets("synthetic", num_train=4).train)

    class Plain(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.zeros(3, 32, 32), 0

    assert not supports(Plain())
    data = cifar.train.data
    # steps the device path does not reproduce: the data set must stay on the PIL path
    for transform in (
        T.Compose([T.ColorJitter(0.4), T.ToTensor()]),
        T.Compose([T.RandomCrop(32, padding=4, padding_mode="reflect"), T.ToTensor()]),
        T.Compose([T.RandomCrop(32, padding=4, pad_if_needed=True), T.ToTensor()]),
        T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4), T.ToTensor()]),  # flip before crop
        T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]),  # no ToTensor: PIL images out
    ):
        assert not supports(CIFAR100Pickle.from_arrays(data, cifar.train.targets, CLASSES, transform)), transform
    with pytest.raises(ValueError, match="cannot be made device-resident"):
        ResidentLoader(Plain(), 1, "cpu", train=False, generator=None)


def test_cifar_stays_uint8_on_the_device(cifar):
    loader = ResidentLoader(cifar.train, 4, "cpu", train=True, generator=torch.Generator().manual_seed(0))
    assert loader.images.dtype == torch.uint8 and loader.images.shape == (12, 3, 32, 32)
    assert loader.dataset is cifar.train


# -- pixel identity ----------------------------------------------------------------------------


def test_every_crop_and_flip_is_pixel_identical_to_pil(cifar):
    """All 81 offsets x 2 flips, every image: bit-identical to torchvision (same op order, float32)."""
    images, _ = cifar.train.resident_data()
    tf = cifar.train.resident_transform
    n = len(images)
    for dy in range(9):
        for dx in range(9):
            for flip in (False, True):
                out = augment_batch(images, torch.full((n,), dy), torch.full((n,), dx), torch.full((n,), flip), tf)
                assert out.dtype == torch.float32 and out.shape == (n, 3, 32, 32) and out.is_contiguous()
                for i in range(n):
                    assert torch.equal(out[i], _pil_reference(cifar.train.data[i], dy, dx, flip)), (i, dy, dx, flip)


def test_mixed_draws_in_one_batch_and_channels_last(cifar):
    images, _ = cifar.train.resident_data()
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 9, (12,), generator=g), torch.randint(0, 9, (12,), generator=g)
    flip = torch.rand(12, generator=g) < 0.5
    out = augment_batch(images, dy, dx, flip, cifar.train.resident_transform, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    for i in range(12):
        assert torch.equal(out[i], _pil_reference(cifar.train.data[i], int(dy[i]), int(dx[i]), bool(flip[i])))


def test_digits_crop_is_pixel_identical_to_its_tensor_transform():
    digits = build_datasets("digits").train
    images, _ = digits.resident_data()
    images = images[:6]
    tf = digits.resident_transform
    for dy in range(5):
        for dx in range(5):
            no_flip = torch.zeros(6, dtype=torch.bool)
            out = augment_batch(images, torch.full((6,), dy), torch.full((6,), dx), no_flip, tf)
            for i in range(6):
                ref = TF.crop(TF.pad(images[i].expand(3, -1, -1).clone(), 2, fill=0), dy, dx, 32, 32)
                assert torch.equal(out[i], TF.normalize(ref, DIGITS_MEAN, DIGITS_STD)), (i, dy, dx)


def test_training_batches_are_pil_outputs_of_their_labelled_images(cifar):
    """Black box: every image the loader yields is one of the 162 PIL outputs of the image its label names."""
    cands = [_candidates(img) for img in cifar.train.data]
    loader = ResidentLoader(cifar.train, 5, "cpu", train=True, generator=torch.Generator().manual_seed(1))
    assert len(loader) == 2
    seen = []
    for _ in range(3):
        for x, y in loader:
            assert x.shape == (5, 3, 32, 32) and y.dtype == torch.int64
            for img, label in zip(x, y.tolist(), strict=True):
                match = (cands[label] == img).flatten(3).all(-1)
                assert match.any(), label
                seen.append(label)
    assert set(seen) <= set(range(12)) and len(seen) == 30


# -- distribution ------------------------------------------------------------------------------


def _position_coded_image() -> np.ndarray:
    """R = row + 1, G = column + 1 (never 0, so padding is told apart), B = 200."""
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[..., 0] = np.arange(1, 33)[:, None]
    img[..., 1] = np.arange(1, 33)[None, :]
    img[..., 2] = 200
    return img


def test_crop_offsets_uniform_over_81_positions_and_flip_rate_half(tmp_path):
    n = 400
    imgs = np.broadcast_to(_position_coded_image(), (n, 32, 32, 3)).copy()
    ds = build_datasets("cifar100", _write_cifar(tmp_path, imgs, imgs[:4])).train
    loader = ResidentLoader(ds, 50, "cpu", train=True, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    counts = np.zeros((9, 9), dtype=np.int64)
    flips = total = 0
    for _ in range(25):  # 10,000 draws, ~123 per cell
        for x, _y in loader:
            v = ((x * std + mean) * 255).round().long()  # back to the uint8 values
            r, g = v[:, 0, 16, 16], v[:, 1, 16, 16]  # the centre pixel is never padding
            flip = v[:, 1, 16, 17] < g  # columns count down in a mirrored crop
            # output (16, 16) is padded pixel (dy + 16, dx + 16), or (dy + 16, dx + 15) when mirrored
            dy = r - 1 - 12
            dx = torch.where(flip, g - 1 - 11, g - 1 - 12)
            assert dy.min() >= 0 and dy.max() <= 8 and dx.min() >= 0 and dx.max() <= 8
            np.add.at(counts, (dy.numpy(), dx.numpy()), 1)
            flips += int(flip.sum())
            total += len(flip)
    assert total == 10_000 and (counts > 0).all()
    assert stats.chisquare(counts.ravel()).pvalue > 1e-4  # fixed seed: deterministic, threshold only loose
    assert stats.binomtest(flips, total, 0.5).pvalue > 1e-4
    # the decoder itself: one unflipped, uncropped-at-4 image reads back (4, 4)
    ref = _pil_reference(imgs[0], 4, 4, False)
    v = ((ref * std[0] + mean[0]) * 255).round().long()
    assert (int(v[0, 16, 16]) - 13, int(v[1, 16, 16]) - 13) == (4, 4)


# -- determinism and resume --------------------------------------------------------------------


def _loader(ds, seed_or_gen, **kw) -> ResidentLoader:
    g = seed_or_gen if isinstance(seed_or_gen, torch.Generator) else torch.Generator().manual_seed(seed_or_gen)
    return ResidentLoader(ds, kw.pop("batch_size", 4), "cpu", train=True, generator=g, **kw)


def _same(a, b) -> bool:
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in pairs)


def test_same_generator_state_gives_the_same_batches(cifar):
    rng_before = torch.get_rng_state()
    a, b = _loader(cifar.train, 7), _loader(cifar.train, 7)
    assert _same(_epoch(a), _epoch(b))
    assert not _same(_epoch(_loader(cifar.train, 7)), _epoch(_loader(cifar.train, 8)))
    assert torch.equal(torch.get_rng_state(), rng_before)  # no global RNG drawn


def test_restoring_the_generator_after_epoch_one_replays_epoch_two(cifar):
    run = _loader(cifar.train, 0)
    epoch1, epoch2 = _epoch(run), _epoch(run)
    assert not _same(epoch1, epoch2)  # a new permutation and new crops each epoch

    g = torch.Generator().manual_seed(0)
    crashed = _loader(cifar.train, g)
    assert _same(_epoch(crashed), epoch1)
    state = g.get_state()  # what the training loop checkpoints at the epoch's end
    del crashed
    resumed_gen = torch.Generator()
    resumed_gen.set_state(state)
    assert _same(_epoch(_loader(cifar.train, resumed_gen)), epoch2)


# -- sharding ----------------------------------------------------------------------------------


def test_ranks_partition_the_single_process_epoch(tmp_path):
    n, world, per_rank_batch = 100, 3, 8
    ds = build_datasets("cifar100", _write_cifar(tmp_path, _random_images(n, 2), _random_images(4, 3))).train
    single = _epoch(_loader(ds, 5, batch_size=per_rank_batch * world))
    ranks = [_epoch(_loader(ds, 5, batch_size=per_rank_batch, rank=r, world_size=world)) for r in range(world)]
    assert len(single) == 4 and all(len(r) == 4 for r in ranks)  # 100 // 3 = 33 per rank: 4 full batches of 8
    labels = [torch.cat([y for _, y in r]).tolist() for r in ranks]
    assert all(len(set(a) & set(b)) == 0 for i, a in enumerate(labels) for b in labels[i + 1:])  # disjoint
    assert sorted(sum(labels, [])) == sorted(torch.cat([y for _, y in single]).tolist())  # 96 of 100, 4 dropped
    for k, (x, y) in enumerate(single):
        # batch k of the ranks together is batch k of one process, with the very same crops and flips
        images = {int(label): img for label, img in zip(y, x, strict=True)}
        for r in range(world):
            xr, yr = ranks[r][k]
            assert all(torch.equal(images[int(label)], img) for label, img in zip(yr, xr, strict=True))
        assert sorted(torch.cat([ranks[r][k][1] for r in range(world)]).tolist()) == sorted(y.tolist())


def test_evaluation_shards_keep_every_image_once(cifar):
    for world in (1, 2, 5):
        got = []
        for r in range(world):
            loader = ResidentLoader(cifar.train, 2, "cpu", train=False, generator=None, drop_last=False,
                                    rank=r, world_size=world)
            batches = _epoch(loader)
            assert len(loader) == len(batches)
            got += torch.cat([y for _, y in batches]).tolist()
        assert sorted(got) == list(range(12))


# -- evaluation: normalisation only, sequential -----------------------------------------------


@pytest.mark.parametrize("name", ["cifar100", "digits", "synthetic"])
def test_validation_equals_the_dataset_items(name, cifar):
    val = cifar.val if name == "cifar100" else build_datasets(name, num_val=7).val if name == "synthetic" \
        else build_datasets(name).val
    loader = ResidentLoader(val, 3, "cpu", train=False, generator=None, drop_last=False)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == -(-len(val) // 3)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    items = [val[i] for i in range(len(val))]
    assert torch.equal(x, torch.stack([img for img, _ in items]))  # bit-identical to the PIL / tensor path
    assert y.tolist() == [label for _, label in items]


def test_validation_with_a_training_transform_is_not_augmented(cifar):
    """``train=False`` never augments: the same images as the PIL path without its random steps."""
    loader = ResidentLoader(cifar.train, 12, "cpu", train=False, generator=None, channels_last=True)
    (x, y), = _epoch(loader)
    assert x.is_contiguous(memory_format=torch.channels_last)
    ref = torch.stack([TF.normalize(TF.to_tensor(Image.fromarray(img)), CIFAR100_MEAN, CIFAR100_STD)
                       for img in cifar.train.data])
    assert torch.equal(x, ref) and y.tolist() == list(range(12))


def test_synthetic_training_shuffles_without_augmenting():
    ds = build_datasets("synthetic", num_train=10).train
    (x, y), = _epoch(ResidentLoader(ds, 10, "cpu", train=True, generator=torch.Generator().manual_seed(0)))
    items = [ds[i] for i in range(10)]
    order = [next(i for i, (img, _) in enumerate(items) if torch.equal(img, xi)) for xi in x]
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert y.tolist() == [items[i][1] for i in order]


# -- the task's hook ---------------------------------------------------------------------------


def test_task_hook(cifar):
    task = get_task("classification")
    assert set(task.resident_datasets) == {"cifar100", "colorshapes", "colorshapes-few", "digits", "synthetic"}
    train = task.resident_loader(cifar.train, 5, device=torch.device("cpu"), train=True,
                                 generator=torch.Generator().manual_seed(0), world_size=2, rank=1)
    assert isinstance(train, ResidentLoader) and len(train) == 1 and train.drop_last  # 6 per rank: one batch
    val = task.resident_loader(cifar.val, 2, device=torch.device("cpu"), train=False, generator=None)
    assert len(val) == 3 and sum(len(y) for _, y in val) == 5  # the short last batch is kept
    jitter = CIFAR100Pickle.from_arrays(cifar.train.data, cifar.train.targets, CLASSES,
                                        T.Compose([T.ColorJitter(0.4), *cifar100_transform(True).transforms]))
    with pytest.raises(UserError, match="--data-pipeline pil"):
        task.resident_loader(jitter, 5, device=torch.device("cpu"), train=True, generator=torch.Generator())
