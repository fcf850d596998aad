"""The generated ``colorshapes`` set (tasks/classification/colorshapes.py): determinism, the fixed split, the
facts of its design (balance, shapes, colours), the device-resident path, and a tiny training run of its preset."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
import pytest
import torch
from scipy import stats

from bench.jobs.grid import expand, grid_from_preset
from tasks.base import get_task
from tasks.classification import colorshapes as cs
from tasks.classification.data import DATASETS, build_datasets
from tasks.classification.resident import ResidentLoader, ResidentTransform, supports


@pytest.fixture(scope="module")
def data():
    return build_datasets("colorshapes", augment=False)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


# -- determinism and the split ------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes():
    x1, y1 = cs.generate(100, 7)
    x2, y2 = cs.generate(100, 7)
    assert _digest(x1) == _digest(x2) and np.array_equal(y1, y2)
    x3, y3 = cs.generate(100, 8)
    assert _digest(x3) != _digest(x1)
    assert (x3 != x1).mean() > 0.5  # not a near copy: most pixels differ
    assert not np.array_equal(y3, y1)


def test_split_is_fixed_and_disjoint(data):
    again = build_datasets("colorshapes", augment=True)  # augmentation changes the transform, not the images
    assert _digest(again.train.data) == _digest(data.train.data) and again.train.targets == data.train.targets
    assert _digest(again.val.data) == _digest(data.val.data) and again.val.targets == data.val.targets
    # the two splits come from different streams: no image of one is an image of the other
    train_images = {img.tobytes() for img in data.train.data}
    assert len(train_images) == cs.NUM_TRAIN  # no duplicates inside the split either
    assert not any(img.tobytes() in train_images for img in data.val.data)
    # and the split is the benchmark's seed, through the public generator
    (xtr, ytr), (xva, yva) = cs.splits(cs.DATA_SEED)
    assert np.array_equal(xtr, data.train.data) and np.array_equal(xva, data.val.data)
    assert _digest(cs.generate(cs.NUM_VAL, (cs.DATA_SEED, 1))[0]) == _digest(data.val.data)


def test_sizes_balance_dtypes_and_metadata(data):
    train, val, k, info = data
    assert k == cs.NUM_CLASSES == 20 == DATASETS["colorshapes"].num_classes
    assert train.data.shape == (2560, 32, 32, 3) and val.data.shape == (1000, 32, 32, 3)
    assert train.data.dtype == np.uint8 and val.data.dtype == np.uint8
    assert np.bincount(train.targets, minlength=k).tolist() == [128] * 20  # exactly balanced
    assert np.bincount(val.targets, minlength=k).tolist() == [50] * 20
    assert info["class_names"][cs.HUES.index("cyan") + 4 * cs.SHAPES.index("ring")] == "cyan ring"
    assert len(set(cs.CLASSES)) == 20
    x, label = val[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == val.targets[3]
    # the data set is not saturated with one colour or blank: the pixels use the range
    assert train.data.min() == 0 and train.data.max() == 255


def test_normalisation_constants_are_the_training_split(data):
    x = data.train.data.astype(np.float64) / 255.0
    assert cs.MEAN == pytest.approx(tuple(x.mean(axis=(0, 1, 2))), abs=1e-3)
    assert cs.STD == pytest.approx(tuple(x.std(axis=(0, 1, 2))), abs=1e-3)


def test_generation_needs_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cs.generate(20, 0)
    assert not any(tmp_path.iterdir())


# -- the design's facts -------------------------------------------------------------------------


def _mask(shape: str, size: int = 64, r: float = 20.0) -> np.ndarray:
    g = np.arange(size, dtype=np.float32) + np.float32(0.5)
    c = np.float32(size / 2)
    d = cs._signed_distance(shape, g[None, :] - c, g[:, None] - c, np.float32(r))
    return np.clip(0.5 - d, 0, 1)


@pytest.mark.parametrize("shape", cs.SHAPES)
def test_every_shape_is_mirror_symmetric_so_a_flip_keeps_the_class(shape):
    m = _mask(shape)
    assert m.sum() > 100
    np.testing.assert_allclose(m, m[:, ::-1], atol=1e-5)


def test_shape_areas_follow_their_geometry():
    r = 20.0
    expected = {
        "circle": np.pi * r**2,
        "ring": np.pi * ((1.0 * r) ** 2 - (0.44 * r) ** 2),  # radii 0.72r ± 0.28r
        "square": (1.6 * r) ** 2,
        "diamond": 2 * (0.72 * r / 0.7071) ** 2,  # |x| + |y| <= a: area 2 a^2
        "triangle": (1.55 * r) ** 2 / np.sqrt(3),  # apex r above the centre, base 0.55r below; half-width h tan 30
    }
    for shape, area in expected.items():
        assert _mask(shape, 96, r).sum() == pytest.approx(area, rel=0.03), shape
    # the similar pairs are genuinely similar in area, the designed confusions
    assert _mask("circle").sum() > _mask("ring").sum()


def test_hsv_conversion_matches_colorsys():
    rng = np.random.default_rng(0)
    h, s, v = rng.uniform(0, 1, (3, 200))
    ours = cs._hsv_to_rgb(h, s, v)
    ref = np.array([colorsys.hsv_to_rgb(*hsv) for hsv in zip(h, s, v, strict=True)])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_label_encodes_shape_and_hue_family():
    """The object's mean colour (pixels far from the background) has the hue of its family, up to the designed
    overlap: a hue beyond half-way to the next family happens with probability 2 * (1 - Phi(0.125 / HUE_SD))."""
    x, y = cs.generate(400, 3)
    hits = 0
    for img, label in zip(x.astype(np.float64) / 255, y, strict=True):
        bg = np.median(img.reshape(-1, 3), axis=0)
        fg = np.abs(img - bg).sum(axis=2) > 0.35
        r, g, b = img[fg].mean(axis=0)
        hue = colorsys.rgb_to_hsv(r, g, b)[0]
        centre = (label % len(cs.HUES)) / len(cs.HUES)
        dist = min(abs(hue - centre), 1 - abs(hue - centre))
        hits += dist < 0.125
    p_inside = 2 * stats.norm.cdf(0.125 / cs.HUE_SD) - 1  # ~0.963
    assert hits / len(y) == pytest.approx(p_inside, abs=0.05)


# -- device-resident path and the task ----------------------------------------------------------


def test_resident_capable_and_equal_to_the_pil_path(data):
    train = build_datasets("colorshapes").train
    assert supports(train) and supports(data.val)
    assert train.resident_transform == ResidentTransform(
        crop=(32, 32), padding=(4, 4, 4, 4), flip_p=0.5, mean=cs.MEAN, std=cs.STD)
    images, labels = data.val.resident_data()
    assert images.dtype == torch.uint8 and images.shape == (1000, 3, 32, 32) and labels.dtype == torch.int64
    loader = ResidentLoader(data.val, 64, "cpu", train=False, generator=None, drop_last=False)
    x, y = next(iter(loader))
    for i in (0, 17, 63):
        assert torch.equal(x[i], data.val[i][0]) and int(y[i]) == data.val[i][1]


def test_task_declares_colorshapes_resident_with_its_own_recipe():
    task = get_task("classification")
    assert "colorshapes" in task.resident_datasets and "colorshapes" in task.presets
    assert task.default_pairs("colorshapes") == [("resnet20", "resnet8")]
    assert task.recipe("colorshapes", "resnet8").epochs == 6  # the preset follows the data set
    assert task.method_defaults("dkd", "colorshapes", "resnet20", "resnet8")["warmup"] == 1
    assert "warmup" not in task.method_defaults("dkd", "digits", "resnet20", "resnet8")  # DKD's own 20: unchanged


def test_colorshapes_grid_preset_is_the_old_default_with_three_seeds():
    jobs = expand(grid_from_preset("colorshapes"))
    assert len(jobs) == 1 + 5 * 3
    teacher, students = jobs[0], jobs[1:]
    assert teacher.role == "teacher" and teacher.dataset == "colorshapes" and teacher.student == "resnet20"
    assert {j.recipe["epochs"] for j in jobs} == {6} and {j.recipe["batch_size"] for j in jobs} == {32}
    assert sorted({j.seed for j in students}) == [0, 1, 2]
    assert all(j.recipe["data_pipeline"] == "device" for j in jobs)  # in memory: resident on the CPU too


def test_tiny_training_run_of_the_preset(tmp_path):
    from bench.engine.loop import run_job
    from bench.jobs.spec import resolve_job

    common = {"task": "classification", "dataset": "colorshapes", "preset": "colorshapes",
              "recipe_overrides": {"epochs": 1, "max_steps": 2, "batch_size": 16}}
    teacher = run_job(resolve_job(student="resnet8", role="teacher", **common), tmp_path, device="cpu",
                      log=lambda m: None)
    student = resolve_job(student="resnet8", teacher="resnet8", method="kd",
                          teacher_ref=f"file:{teacher.student_path}", **common)
    res = run_job(student, tmp_path, device="cpu", log=lambda m: None)
    assert res.status == "FINISHED"
    assert 0.0 <= res.metrics["last_top1"] <= 100.0 and "teacher_top1" in res.metrics
    assert res.history and res.history[-1]["epoch"] == 1


def test_plain_diffbench_run_is_the_default_grid(tmp_path):
    from typer.testing import CliRunner

    from bench.cli.app import app

    runner = CliRunner()
    plain = runner.invoke(app, ["run", "--dry-run", "--output", str(tmp_path)])
    assert plain.exit_code == 0, plain.output
    assert "16 jobs" in plain.output  # teacher + 3 seeds x (vanilla, kd, dkd, fitnet, diffkd)
    fewer = runner.invoke(app, ["run", "--dry-run", "--methods", "kd", "--output", str(tmp_path)])
    assert "7 jobs" in fewer.output  # still the default grid: flags adjust it
    own = runner.invoke(app, ["run", "--dry-run", "--pairs", "resnet20:resnet8", "--output", str(tmp_path)])
    assert "6 jobs" in own.output  # a grid of one's own starts from one seed
    assert not any(tmp_path.iterdir())
