"""Detection recipe presets, free of torch, each with the source its values come from.

``1x`` and ``2x`` are the COCO schedules the papers' codebases ran: mmdetection's for torchvision's archs (PKD's
students are mmdetection detectors) and mdistiller's detectron2 solver for the ``d2_*`` archs (the DKD paper's
COCO table). ``cpu`` is diffbench's own small schedule for the embedded ``shapes`` set and cites no paper.
Sources are pinned to a commit; a value that could not be read at its source is marked UNVERIFIED.
"""

from __future__ import annotations

import math

from tasks.detection import archs as tv_archs
from tasks.detection import d2
from tasks.recipe import Recipe

#: train2017 images with at least one non-crowd box (torchvision's reference filter, the set both backends read).
COCO_TRAIN_IMAGES = 117_266

# -- mmdetection (torchvision archs) -------------------------------------------------------------------------------
#: mmdetection 3.x ``configs/_base_/schedules/schedule_1x.py`` (open-mmlab/mmdetection
#: @178134968e460a4c16a21c6681d03c70d6357e1c): ``max_epochs=12``; ``LinearLR(start_factor=0.001, by_epoch=False,
#: end=500)``; ``MultiStepLR(milestones=[8, 11], gamma=0.1)``; ``SGD(lr=0.02, momentum=0.9, weight_decay=0.0001)``.
MMDET_1X = {"epochs": 12, "milestones": (8, 11), "lr": 0.02, "warmup_iters": 500, "warmup_factor": 0.001}
#: mmdetection ``configs/_base_/schedules/schedule_2x.py`` (open-mmlab/mmdetection
#: @0673dac9c085b248350fec5c5b0b9fd8e3b5d9ca, a 2.x version): ``_base_ = './schedule_1x.py'``,
#: ``lr_config = dict(step=[16, 22])``, ``total_epochs = 24`` (the rest as 1x). The 3.x file (used by mmrazor's PKD
#: ``..._2x_coco.py`` configs) is UNVERIFIED here: its repository was too large to fetch and no 3.x copy is stored.
MMDET_2X = {**MMDET_1X, "epochs": 24, "milestones": (16, 22)}
#: mmdetection's RetinaNet lr: ``configs/retinanet/retinanet_r50_fpn_1x_coco.py`` (open-mmlab/mmdetection
#: @394f7580b6649d8c8a23eebc525196c51a37ddcc) ``optimizer=dict(type='SGD', lr=0.01, ...)``; mmrazor's PKD RetinaNet
#: config sets the same (``pkd_fpn_retina_x101_retina_r50_2x_coco.py`` L19 @90c7af1).
MMDET_RETINANET_LR = 0.01
#: Batch 16: mmdetection's ``train_dataloader batch_size=2`` per GPU (``configs/_base_/datasets/coco_detection.py``
#: @05ddf943435721757059ae4dc1eb4dbf5c1bf6ac) on the 8 GPUs its lr 0.02 is set for (the 8 GPUs: UNVERIFIED, the
#: convention of mmdetection's model-zoo tables, not read in a config).
MMDET_BATCH = 16

# -- mdistiller's detectron2 solver (d2_* archs) -------------------------------------------------------------------
#: megvii-research/mdistiller @a08d46f10d6102bd6e3f258ca5ac880b020ea259 ``detection/configs/DKD/DKD-R18-R101.yaml``
#: L28-34 (the same solver in ``DKD-R50-R101.yaml``, ``DKD-MV2-R50.yaml`` L24-30 and the ReviewKD configs):
#: ``IMS_PER_BATCH: 8``, ``BASE_LR: 0.01``, ``MAX_ITER: 180000``, ``STEPS: [120000, 160000]``. Everything else is
#: detectron2's default (facebookresearch/detectron2 @02b5c4e295e990042a714712c21dc79b731e8833
#: ``detectron2/config/defaults.py``): ``WARMUP_ITERS = 1000`` (L550), ``WARMUP_FACTOR = 1.0 / 1000`` (L549, linear),
#: ``GAMMA = 0.1`` (L543), ``MOMENTUM = 0.9`` (L534), ``WEIGHT_DECAY = 0.0001`` (L538).
MDISTILLER_D2 = {"batch_size": 8, "lr": 0.01, "max_iters": 180_000, "iter_milestones": (120_000, 160_000),
                 "warmup_iters": 1000, "warmup_factor": 0.001}  # fmt: skip

# -- cpu (diffbench's own, shapes) -----------------------------------------------------------------------------------
#: ``cpu`` preset (``shapes``, batch 8, lr :data:`CPU_LR`, one warm-up epoch: half an epoch diverged once).
#: Measured: a training step of batch 8 costs ~1.5 CPU-seconds (fasterrcnn_r18; mbv3s ~1.4, plus ~25% for fitnet,
#: ~50% for diffkd), so 4 epochs (decay after 3) keep each student job within a few minutes on 2 cores.
CPU_EPOCHS = 4
CPU_MILESTONES = (3,)
#: ``cpu`` preset teachers (trained once per grid and cached) train 3x longer, a 1x-shaped schedule (decays at 2/3
#: and 11/12): with the students' 4 epochs the fasterrcnn_r18 teacher scored *below* the vanilla mbv3s student
#: (60.5 vs 63.7 AP), which makes every distillation result meaningless.
CPU_TEACHER_EPOCHS = 12
CPU_TEACHER_MILESTONES = (8, 11)
#: ``cpu`` preset lr, both backends: the 1x preset's 0.02 at batch 16 scaled to batch 8 (Goyal et al.'s linear rule;
#: mdistiller's detectron2 solver uses 0.01 at batch 8 too). At 0.02 distilled students diverged on both backends
#: once the teacher was strong: detectron2's MobileNetV2 box logits grew past 400 within the warm-up (KD, DKD and
#: FitNet, 3 of 5 jobs), and torchvision's KD mbv3s student reached NaN RPN losses in its second epoch against the
#: 89-AP 12-epoch r18 teacher (vanilla survived).
CPU_LR = 0.01


def iters_per_epoch(batch: int) -> int:
    """Iterations of one train2017 epoch at ``batch`` (the last batch partial)."""
    return -(-COCO_TRAIN_IMAGES // batch)


def mmdet(student: str, schedule: dict) -> Recipe:
    """mmdetection's ``1x``/``2x`` (:data:`MMDET_1X`, :data:`MMDET_2X`) at batch :data:`MMDET_BATCH`, RetinaNet's lr
    :data:`MMDET_RETINANET_LR`."""
    lr = MMDET_RETINANET_LR if tv_archs.family(student) == "retinanet" else schedule["lr"]
    return Recipe(
        epochs=schedule["epochs"],
        batch_size=MMDET_BATCH,
        lr=lr,
        weight_decay=1e-4,
        momentum=0.9,
        milestones=schedule["milestones"],
        warmup_epochs=schedule["warmup_iters"] / iters_per_epoch(MMDET_BATCH),
        warmup_factor=schedule["warmup_factor"],
        num_workers=4,
    )


def mdistiller_1x() -> Recipe:
    """mdistiller's solver exactly (:data:`MDISTILLER_D2`): 180k iterations with decays at 120k and 160k; ``epochs``
    only has to cover them (13 epochs of train2017 at batch 8: 12.3 are trained, the last one cut short)."""
    s = MDISTILLER_D2
    per_epoch = iters_per_epoch(s["batch_size"])
    return Recipe(
        epochs=math.ceil(s["max_iters"] / per_epoch),
        batch_size=s["batch_size"],
        lr=s["lr"],
        weight_decay=1e-4,
        momentum=0.9,
        max_iters=s["max_iters"],
        iter_milestones=s["iter_milestones"],
        warmup_epochs=s["warmup_iters"] / per_epoch,
        warmup_factor=s["warmup_factor"],
        num_workers=4,
    )


def d2_2x() -> Recipe:
    """``2x`` for ``d2_*`` archs, diffbench's own (mdistiller publishes no longer schedule): mdistiller's solver
    (batch 8, lr 0.01, 1000 warm-up iterations) over mmdetection's 2x epochs (24, decays at 16 and 22)."""
    s = MDISTILLER_D2
    per_epoch = iters_per_epoch(s["batch_size"])
    return Recipe(
        epochs=MMDET_2X["epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        weight_decay=1e-4,
        momentum=0.9,
        milestones=MMDET_2X["milestones"],
        warmup_epochs=s["warmup_iters"] / per_epoch,
        warmup_factor=s["warmup_factor"],
        num_workers=4,
    )


def cpu() -> Recipe:
    """diffbench's ``cpu`` preset for ``shapes`` (no published source; see the constants for what was measured)."""
    return Recipe(
        epochs=CPU_EPOCHS,
        batch_size=8,
        lr=CPU_LR,
        weight_decay=1e-4,
        milestones=CPU_MILESTONES,
        warmup_epochs=1.0,
        warmup_factor=0.001,
        num_workers=0,
    )


def preset(name: str, student: str) -> Recipe | None:
    """The recipe of preset ``name`` for ``student`` (``None`` for an unknown name: the spec refuses it)."""
    if name == "cpu":
        return cpu()
    if name == "1x":
        return mdistiller_1x() if d2.is_d2(student) else mmdet(student, MMDET_1X)
    if name == "2x":
        return d2_2x() if d2.is_d2(student) else mmdet(student, MMDET_2X)
    return None
