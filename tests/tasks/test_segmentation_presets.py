"""Each segmentation recipe preset equals its source, stated here as facts with where they are written.

CIRKD v1 = winycg/CIRKD @91735ef39d37a8a15ba942ae011e98587ac0e71d, the code behind the published Cityscapes numbers
(README L50-58: teacher 78.07, ResNet-18 baseline 74.21 mIoU). mmsegmentation = open-mmlab/mmsegmentation:
``configs/_base_/schedules/schedule_{80k,160k}.py`` @46723a954397b5ca351b7910d4e36f54e071923b and the DeepLabV3
config names (``4xb2`` = 4 GPUs x 2 images, ``4xb4`` = 4 x 4).
"""

from __future__ import annotations

import math

import pytest

from methods.errors import UserError
from tasks.segmentation.spec import DEFAULT_PRESET, PRESETS
from tasks.spec import task_spec

CITYSCAPES_TRAIN, ADE20K_TRAIN = 2975, 20210


@pytest.fixture(scope="module")
def spec():
    return task_spec("segmentation")


def _common(r, iterations, batch, images):
    """SGD momentum 0.9, poly 0.9 from the first iteration, exactly ``iterations`` steps, epochs that cover them."""
    assert r.max_iters == iterations and r.schedule == "poly" and r.poly_power == 0.9
    assert r.momentum == 0.9 and not r.nesterov and r.weight_decay_1d and r.warmup_epochs == 0
    assert r.batch_size == batch and r.epochs == math.ceil(iterations / (images // batch))
    assert r.extra["aux_weight"] == 0.4


def test_cirkd_cityscapes(spec):
    # CIRKD v1 train_kd.py: L52 --crop-size [512, 1024], L62 --batch-size 16, L66 --max-iterations 40000,
    # L68 --lr 0.02, L70 --momentum 0.9, L72 --weight-decay 1e-4, L320 aux 0.4, L369 poly 0.9 (no warm-up);
    # train_scripts/train_cirkd/citys/deeplabv3_res18.sh overrides none of them; validation on whole 1024x2048 images.
    r = spec.recipe("cityscapes", "deeplabv3_r18_cirkd")
    _common(r, 40000, 16, CITYSCAPES_TRAIN)
    assert r.lr == 0.02 and r.weight_decay == 1e-4
    assert tuple(r.extra["crop_size"]) == (512, 1024) and r.extra["eval"] == {"mode": "whole"}
    assert r == spec.recipe("cityscapes", "deeplabv3_r18_cirkd", "cirkd")
    assert "91735ef39d37a8a15ba942ae011e98587ac0e71d" in PRESETS["cirkd"]["cityscapes"].source


def test_cirkd_ade20k(spec):
    # CIRKD v1 train_scripts/train_cirkd/ade20k/deeplabv3_res18.sh: --batch-size 16 --crop-size 512 512 --lr 0.02
    # --max-iterations 40000; train_kd.py L72 wd 1e-4; ADEDataValSet: whole images, one at a time.
    r = spec.recipe("ade20k", "deeplabv3_r18_cirkd")
    _common(r, 40000, 16, ADE20K_TRAIN)
    assert r.lr == 0.02 and r.weight_decay == 1e-4
    assert tuple(r.extra["crop_size"]) == (512, 512) and r.extra["eval"] == {"mode": "whole"}
    assert "train_cirkd/ade20k/deeplabv3_res18.sh" in PRESETS["cirkd"]["ade20k"].source


def test_mmseg_80k_cityscapes(spec):
    # mmsegmentation deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py: 4 GPUs x 2 images, crop 512x1024,
    # schedule_80k.py: SGD lr 0.01, momentum 0.9, weight_decay 0.0005, PolyLR power 0.9, max_iters 80000.
    r = spec.recipe("cityscapes", "deeplabv3_r18", "mmseg-80k")
    _common(r, 80000, 8, CITYSCAPES_TRAIN)
    assert r.lr == 0.01 and r.weight_decay == 5e-4 and tuple(r.extra["crop_size"]) == (512, 1024)
    assert "eta_min" in PRESETS["mmseg-80k"]["cityscapes"].source  # the one schedule difference is stated


def test_mmseg_80k_ade20k(spec):
    # mmsegmentation deeplabv3_r101-d8_4xb4-80k_ade20k-512x512.py: 4 GPUs x 4 images, crop 512x512; schedule_80k.py.
    r = spec.recipe("ade20k", "deeplabv3_r18", "mmseg-80k")
    _common(r, 80000, 16, ADE20K_TRAIN)
    assert r.lr == 0.01 and r.weight_decay == 5e-4 and tuple(r.extra["crop_size"]) == (512, 512)


def test_mmseg_160k_ade20k(spec):
    # mmsegmentation deeplabv3_r101-d8_4xb4-160k_ade20k-512x512.py; schedule_160k.py: max_iters 160000.
    r = spec.recipe("ade20k", "deeplabv3_r18", "mmseg-160k")
    _common(r, 160000, 16, ADE20K_TRAIN)
    assert r.lr == 0.01 and r.weight_decay == 5e-4


def test_cpu_shapes_keeps_its_recipe(spec):
    # diffbench's own CPU recipe (its job hashes are pinned in tests/bench/test_pinned_hashes.py).
    s, t = spec.recipe("shapes", "deeplabv3_tiny_s"), spec.recipe("shapes", "deeplabv3_tiny_t")
    assert (s.epochs, t.epochs, s.batch_size, s.lr, s.weight_decay, s.max_iters) == (16, 40, 8, 0.02, 5e-4, None)
    assert s.schedule == "poly" and s.eval_every == 4 and t.eval_every == 10


def test_every_preset_names_its_source_and_the_defaults_are_cirkds(spec):
    assert set(spec.presets) == {*PRESETS, "cpu"}
    for per in PRESETS.values():
        for p in per.values():
            repo, _, rest = p.source.partition(" @")  # repository, commit, files
            assert repo in ("winycg/CIRKD", "open-mmlab/mmsegmentation") and (".py" in rest or ".sh" in rest), p
    assert DEFAULT_PRESET == {"cityscapes": "cirkd", "ade20k": "cirkd", "shapes": "cpu"}
    with pytest.raises(UserError, match="valid: cirkd, mmseg-80k$"):
        spec.recipe("cityscapes", "deeplabv3_r18", "mmseg-160k")
    with pytest.raises(UserError, match="valid: cpu"):
        spec.recipe("shapes", "deeplabv3_tiny_s", "cirkd")
