"""Detection recipe presets and COCO method defaults against the official values, stated here as facts with their
sources (repository @ commit, file, lines). One test per preset; a value that could not be read at its source is
marked UNVERIFIED where it is asserted.
"""

from __future__ import annotations

import pytest

from bench.engine.loop import lr_factor, training_epochs
from tasks.detection import recipes
from tasks.spec import task_spec

TASK = task_spec("detection")
#: train2017 images with at least one box (both backends' training set): iterations per epoch follow from it.
COCO_IMAGES = 117_266


def _iters(batch: int) -> int:
    return -(-COCO_IMAGES // batch)


def test_torchvision_1x_is_mmdetections_schedule_1x() -> None:
    """open-mmlab/mmdetection @178134968e460a4c16a21c6681d03c70d6357e1c ``configs/_base_/schedules/schedule_1x.py``:
    ``max_epochs=12``; ``LinearLR(start_factor=0.001, by_epoch=False, begin=0, end=500)``;
    ``MultiStepLR(milestones=[8, 11], gamma=0.1)``; ``SGD(lr=0.02, momentum=0.9, weight_decay=0.0001)``.
    Batch 16 = ``batch_size=2`` per GPU (``configs/_base_/datasets/coco_detection.py`` @05ddf943) x 8 GPUs
    (the 8 GPUs: UNVERIFIED, mmdetection's model-zoo convention). RetinaNet: ``lr=0.01``
    (``configs/retinanet/retinanet_r50_fpn_1x_coco.py`` @394f7580b6649d8c8a23eebc525196c51a37ddcc)."""
    for arch in ("fasterrcnn_r18", "fasterrcnn_mbv2"):
        r = TASK.recipe("coco", arch, "1x")
        assert (r.epochs, r.milestones, r.gamma, r.lr) == (12, (8, 11), 0.1, 0.02)
        assert (r.momentum, r.weight_decay) == (0.9, 1e-4)
        assert (r.batch_size, r.warmup_factor, r.max_iters, r.iter_milestones) == (16, 0.001, None, ())
        assert r.warmup_epochs * _iters(16) == pytest.approx(500)
        assert TASK.recipe("coco", arch) == r  # the COCO default
    assert TASK.recipe("coco", "retinanet_r50", "1x") == TASK.recipe("coco", "fasterrcnn_r50", "1x").updated(lr=0.01)


def test_torchvision_2x_is_mmdetections_schedule_2x() -> None:
    """open-mmlab/mmdetection @0673dac9c085b248350fec5c5b0b9fd8e3b5d9ca ``configs/_base_/schedules/schedule_2x.py``
    (a 2.x version): ``_base_ = './schedule_1x.py'``, ``lr_config = dict(step=[16, 22])``, ``total_epochs = 24``.
    The 3.x file mmrazor's PKD configs inherit (``..._2x_coco.py`` L1-5 @90c7af1) is UNVERIFIED here."""
    r = TASK.recipe("coco", "fasterrcnn_r50", "2x")
    assert (r.epochs, r.milestones) == (24, (16, 22))
    assert r == TASK.recipe("coco", "fasterrcnn_r50", "1x").updated(epochs=24, milestones=(16, 22))
    assert TASK.recipe("coco", "retinanet_r50", "2x").lr == 0.01


def test_d2_1x_is_mdistillers_detectron2_solver_exactly() -> None:
    """megvii-research/mdistiller @a08d46f10d6102bd6e3f258ca5ac880b020ea259 ``detection/configs/DKD/DKD-R18-R101.yaml``
    L28-34 (the same in ``DKD-R50-R101.yaml``, ``DKD-MV2-R50.yaml`` L24-30): ``IMS_PER_BATCH: 8``, ``BASE_LR: 0.01``,
    ``MAX_ITER: 180000``, ``STEPS: [120000, 160000]``; detectron2's defaults for the rest
    (facebookresearch/detectron2 @02b5c4e295e990042a714712c21dc79b731e8833 ``detectron2/config/defaults.py``:
    ``WARMUP_ITERS = 1000`` L550, ``WARMUP_FACTOR = 1.0 / 1000`` L549, linear; ``GAMMA = 0.1`` L543;
    ``MOMENTUM = 0.9`` L534; ``WEIGHT_DECAY = 0.0001`` L538; ``WarmupMultiStepLR`` decays at ``iteration >= step``)."""
    for arch in ("d2_faster_rcnn_R_18_FPN", "d2_faster_rcnn_R_50_FPN", "d2_faster_rcnn_MV2_FPN"):
        r = TASK.recipe("coco", arch, "1x")
        assert (r.batch_size, r.lr, r.momentum, r.weight_decay, r.gamma) == (8, 0.01, 0.9, 1e-4, 0.1)
        assert (r.max_iters, r.iter_milestones, r.milestones) == (180_000, (120_000, 160_000), ())
        assert TASK.recipe("coco", arch) == r
    iters = _iters(8)
    assert r.warmup_epochs * iters == pytest.approx(1000) and r.warmup_factor == 0.001
    assert (r.epochs - 1) * iters < 180_000 <= r.epochs * iters  # the epochs only cover the iterations
    assert training_epochs(r, iters) == 13  # 12.28 epochs of train2017, the last one cut at iteration 180,000
    # the schedule the training loop runs: detectron2's warm-up from 0.001, then x0.1 at 120k and at 160k
    assert lr_factor(r, 0, iters) == pytest.approx(0.001)
    assert lr_factor(r, 1000, iters) == pytest.approx(1.0)
    assert lr_factor(r, 119_999, iters) == 1.0 and lr_factor(r, 120_000, iters) == pytest.approx(0.1)
    assert lr_factor(r, 159_999, iters) == pytest.approx(0.1) and lr_factor(r, 160_000, iters) == pytest.approx(0.01)


def test_d2_2x_is_diffbenchs_own() -> None:
    """No source: mdistiller publishes no longer schedule. mdistiller's solver (batch 8, lr 0.01, 1000 warm-up
    iterations) over mmdetection's 2x epochs (24, decays at 16 and 22)."""
    r = TASK.recipe("coco", "d2_faster_rcnn_R_18_FPN", "2x")
    assert (r.epochs, r.milestones, r.batch_size, r.lr, r.max_iters) == (24, (16, 22), 8, 0.01, None)
    assert r.warmup_epochs * _iters(8) == pytest.approx(1000)


def test_cpu_is_diffbenchs_own_shapes_schedule() -> None:
    """No source: the embedded ``shapes`` set's CPU schedule (:mod:`tasks.detection.recipes` says what was
    measured). Students 4 epochs (decay after 3), teachers 12 (decays at 8 and 11), batch 8, lr 0.01, both backends."""
    for arch in ("fasterrcnn_mbv3s", "d2_faster_rcnn_MV2_FPN"):
        r = TASK.recipe("shapes", arch)
        assert (r.epochs, r.milestones, r.batch_size, r.lr, r.warmup_epochs) == (4, (3,), 8, 0.01, 1.0)
        assert r == TASK.recipe("coco", arch, "cpu") == recipes.cpu()
    t = TASK.teacher_recipe("shapes", "fasterrcnn_r18")
    assert (t.epochs, t.milestones) == (12, (8, 11))
    assert TASK.teacher_recipe("coco", "d2_faster_rcnn_R_101_FPN") == TASK.recipe("coco", "d2_faster_rcnn_R_101_FPN")


def test_pkd_on_coco_is_mmrazors() -> None:
    """open-mmlab/mmrazor @90c7af1fdf35a606a2fceaaeb4b6be2f0dac4eb7:
    ``configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py`` L23-41: ``PKDLoss(loss_weight=6)``
    on neck outputs ``data_idx`` 0-3 (P2-P5; P6 not distilled), one loss entry each, summed by mmengine; no connector
    (so FitNet compares the FPN maps without an adapter).
    ``pkd_fpn_retina_x101_retina_r50_2x_coco.py`` L12-16: ``loss_weight=10`` on ``data_idx`` 0-3 of P3-P7 (P3-P6)."""
    rcnn = {"fasterrcnn_r101": "fasterrcnn_r50", "d2_faster_rcnn_R_101_FPN": "d2_faster_rcnn_R_18_FPN"}
    for teacher, student in rcnn.items():
        f = TASK.method_defaults("fitnet", "coco", teacher, student)
        d = TASK.method_defaults("diffkd", "coco", teacher, student)
        p2_p5 = ["fpn.p2", "fpn.p3", "fpn.p4", "fpn.p5"]
        assert (f["feat_weight"], f["taps"], f["feat_norm"], f["adapter"]) == (6.0, p2_p5, "pkd", "none")
        assert (d["kd_weight"], d["taps"], d["feat_norm"]) == (6.0, f["taps"], "pkd")
    f = TASK.method_defaults("fitnet", "coco", "retinanet_r101", "retinanet_r50")
    d = TASK.method_defaults("diffkd", "coco", "retinanet_r101", "retinanet_r50")
    p3_p6 = ["fpn.p3", "fpn.p4", "fpn.p5", "fpn.p6"]
    assert (f["feat_weight"], f["taps"]) == (d["kd_weight"], d["taps"]) == (10.0, p3_p6)
    # shapes is diffbench's own choice: 6 over the mean of all 5 levels, every level distilled
    s = TASK.method_defaults("fitnet", "shapes", "fasterrcnn_r18", "fasterrcnn_mbv3s")
    assert s["feat_weight"] == pytest.approx(6.0 / 5) and "taps" not in s and "adapter" not in s
