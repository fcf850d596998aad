"""Semantic segmentation, declared without torch: DeepLabV3 / PSPNet on Cityscapes, ADE20K and an embedded shapes set.

Where each method distills (the taps, all at output stride 8 for every model):

* ``feat`` — the backbone's last stage (ResNet ``layer4``, MobileNetV3's last conv): DiffKD's denoised feature,
  and FitNet's hint on the torchvision-layout and tiny archs (roles ``("hint", "feature")``). With a 2048-channel
  teacher DiffKD compresses the teacher feature with its linear autoencoder to 1024 channels
  (``teacher_channels // 2``, the official default, and the official ImageNet setting for a 2048-channel
  teacher) before the 3x3 diffusion model; the tiny CPU teacher (256 channels) needs none.
* ``hint`` — CIRKD's archs only (``*_cirkd``): FitNet's hint where CIRKD's FitNet takes it, the feature after the
  ASPP head's 3x3 conv-BN-ReLU-Dropout (``x_feat_after_aspp``, 128 channels for ResNet-18, 256 for ResNet-101);
  their ``feat`` tap is then DiffKD's only.
* ``logits`` — per-pixel class scores, flattened to ``[P, C]`` rows of the *valid* pixels with their
  labels ``target [P]``, so KD and DKD are the classification losses averaged over pixels.

Method defaults (``method_defaults``), all with ``ce_weight = 1.0`` since CE + aux are the task loss:

* KD: ``temperature = 1``, ``kd_weight = 1`` — CIRKD's ``--kd-temperature`` default 1.0 and its KD
  scripts' ``--lambda-kd 1``.
* DKD: no published segmentation recipe exists; we use mdistiller's only dense-prediction setting
  (its COCO detector config: ``alpha = 1``, ``beta = 0.25``, ``T = 1``, no warm-up), per-pixel rows being
  many and mostly easy like box-head rows.
* FitNet between CIRKD archs: CIRKD's FitNet as its script ran it (``train_scripts/train_kd/train_fitnet.sh``:
  ``--lambda-kd 1.0 --lambda-fitnet 10.``; ``losses/fitnet.py``: a bias-free 1x1 conv, MSE mean) — ``feat_weight
  = 10``, ``kd_weight = 1`` (T = 1), ``adapter = "conv"``, on the ``hint`` tap. Other archs keep diffbench's
  FitNet: ``feat_weight = 10`` (CIRKD's weight) on the backbone's last stage with mdistiller's ConvReg and no KD
  term — those archs are not CIRKD's, and no published FitNet setting exists for them.
* DiffKD: ``use_ae`` / ``ae_channels`` as above, ``distill_logits = False`` (feature MSE after
  denoising + diffusion + AE losses only), other weights the method's official 1.0.

Recipes: each preset is a source's recipe, named after it (:data:`PRESETS`); the default on Cityscapes and
ADE20K is CIRKD v1's, the recipe behind the published numbers shown beside them.

Architectures come from :mod:`.archs` and class tables from :mod:`.datasets`, both free of torch;
:mod:`tasks.segmentation.task` implements the task (losses, per-pixel KD rows, evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from methods.errors import unknown
from methods.taps import TapSpec
from tasks.recipe import Recipe
from tasks.segmentation import datasets as D
from tasks.segmentation.archs import ARCHS, OUTPUT_STRIDE, arch_spec
from tasks.spec import TaskSpec, register_spec

#: Weight of the FCN auxiliary head's cross-entropy (CIRKD's and PSPNet's 0.4), part of the task loss.
AUX_WEIGHT = 0.4

#: Per data set: classes, training-set size (for iterations -> epochs), crop, evaluation mode.
DATASETS: dict[str, dict[str, Any]] = {
    "cityscapes": {
        "classes": D.CITYSCAPES_CLASSES,
        "train_images": 2975,
        "crop": (512, 1024),
        "eval": {"mode": "whole"},
    },
    "ade20k": {
        "classes": D.ADE20K_CLASSES,
        "train_images": 20210,
        "crop": (512, 512),
        "eval": {"mode": "slide", "crop": (512, 512), "stride": (341, 341)},
    },
    "shapes": {
        "classes": D.SHAPES_CLASSES,
        "train_images": D.SHAPES_COUNTS["train"],
        "crop": D.SHAPES_SIZE,
        "eval": {"mode": "whole"},
    },
}

REAL_PAIRS = [
    ("deeplabv3_r101_cirkd", "deeplabv3_r18_cirkd"),  # CIRKD's models: the published 78.07 / 74.21 pair
    ("deeplabv3_r101", "deeplabv3_r18"),
    ("deeplabv3_r101", "pspnet_r18"),
    ("deeplabv3_r101", "deeplabv3_mbv3"),
    ("deeplabv3_r101", "deeplabv3_r50"),
]


def iterations_to_epochs(iterations: int, batch_size: int, images: int) -> int:
    """Epochs covering ``iterations`` steps of ``batch_size`` over ``images`` (loader drops the last batch)."""
    return math.ceil(iterations / (images // batch_size))


@dataclass(frozen=True)
class IterPreset:
    """An iteration-based recipe as its source ran it (SGD, momentum 0.9, poly power 0.9 in every source here).

    Attributes:
        iterations: training iterations (``Recipe.max_iters``; the poly schedule runs over them).
        batch: global batch (images per iteration over all GPUs).
        lr / weight_decay: SGD's, on every parameter.
        crop: training crop ``(H, W)``.
        eval: how the validation images are run (``{"mode": "whole"}`` or a sliding window).
        source: repository, commit and files the values are from, and what differs here.
    """

    iterations: int
    batch: int
    lr: float
    weight_decay: float
    crop: tuple[int, int]
    eval: dict[str, Any]
    source: str


_CIRKD = "winycg/CIRKD @91735ef39d37a8a15ba942ae011e98587ac0e71d"
_MMSEG = "open-mmlab/mmsegmentation"
_MMSEG_SCHEDULES = "46723a954397b5ca351b7910d4e36f54e071923b"
_SLIDE = {"mode": "slide", "crop": (512, 512), "stride": (341, 341)}
_SLIDE_NOTE = "; evaluation by 512x512 windows at stride 341 is diffbench's (mmseg's test_cfg not checked)"
_MMSEG_DIFF = ("; differs: poly down to 0 (mmseg PolyLR eta_min=1e-4), no PhotoMetricDistortion and no "
               "cat_max_ratio=0.75 in the random crop")  # fmt: skip

#: Recipe presets of Cityscapes and ADE20K: preset -> data set -> values (``shapes`` has its own ``cpu`` recipe).
PRESETS: dict[str, dict[str, IterPreset]] = {
    # CIRKD v1, the code behind the published 78.07 / 74.21 (README L50-58). Its teachers and baselines train with
    # train_baseline.py (L45 crop 512x1024, L53 aux 0.4, L55 batch 16, L59 40000 iterations, L61 lr 0.02, L63
    # momentum 0.9, L65 wd 1e-4, L256 poly 0.9), its students with train_kd.py / train_cirkd.py (the same values:
    # train_kd.py L52-72, L320 aux 0.4, L369 poly 0.9); no warm-up anywhere. The Cityscapes scripts
    # (train_scripts/train_baseline/citys/*.sh, train_kd/*.sh, train_cirkd/citys/*.sh) override none of them;
    # Cityscapes validation runs whole 1024x2048 images (train_kd.py L156-158).
    "cirkd": {
        "cityscapes": IterPreset(
            40000, 16, 0.02, 1e-4, (512, 1024), {"mode": "whole"},
            f"{_CIRKD} train_baseline.py L45-65, train_kd.py L52-72 (defaults; the Cityscapes scripts override none)",
        ),
        # ADE20K: CIRKD's ADE20K script overrides the crop to 512x512 (its baseline script leaves 512x1024);
        # validation on whole images at their own size (dataset/ade20k.py ADEDataValSet, batch 1).
        "ade20k": IterPreset(
            40000, 16, 0.02, 1e-4, (512, 512), {"mode": "whole"},
            f"{_CIRKD} train_scripts/train_cirkd/ade20k/deeplabv3_res18.sh (--batch-size 16 --crop-size 512 512 "
            "--lr 0.02 --max-iterations 40000), train_cirkd.py L71 wd 1e-4",
        ),
    },
    # mmsegmentation's DeepLabV3 schedules: SGD lr 0.01, momentum 0.9, wd 5e-4, PolyLR power 0.9, iteration-based
    # (configs/_base_/schedules/schedule_80k.py, schedule_160k.py @46723a954397b5ca351b7910d4e36f54e071923b);
    # batches from the config names (4 GPUs x 2 images on Cityscapes, x 4 on ADE20K).
    "mmseg-80k": {
        "cityscapes": IterPreset(
            80000, 8, 0.01, 5e-4, (512, 1024), {"mode": "whole"},
            f"{_MMSEG} @e663aca8a4aa15be6e2776224e1d542be86cd13b "
            "configs/deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py (4 GPUs x 2 images); "
            f"@{_MMSEG_SCHEDULES} configs/_base_/schedules/schedule_80k.py" + _MMSEG_DIFF,
        ),
        "ade20k": IterPreset(
            80000, 16, 0.01, 5e-4, (512, 512), _SLIDE,
            f"{_MMSEG} @e663aca8a4aa15be6e2776224e1d542be86cd13b "
            "configs/deeplabv3/deeplabv3_r101-d8_4xb4-80k_ade20k-512x512.py (4 GPUs x 4 images); "
            f"@{_MMSEG_SCHEDULES} configs/_base_/schedules/schedule_80k.py" + _MMSEG_DIFF + _SLIDE_NOTE,
        ),
    },
    "mmseg-160k": {
        "ade20k": IterPreset(
            160000, 16, 0.01, 5e-4, (512, 512), _SLIDE,
            f"{_MMSEG} @cb927a48db49362bea67adda9b8c4c210a78a0ff "
            "configs/deeplabv3/deeplabv3_r101-d8_4xb4-160k_ade20k-512x512.py (4 GPUs x 4 images); "
            f"@{_MMSEG_SCHEDULES} configs/_base_/schedules/schedule_160k.py" + _MMSEG_DIFF + _SLIDE_NOTE,
        ),
    },
}  # fmt: skip

#: The preset a data set trains with unless one is named.
DEFAULT_PRESET = {"cityscapes": "cirkd", "ade20k": "cirkd", "shapes": "cpu"}


class SegmentationSpec(TaskSpec):
    """Semantic segmentation (the module docstring says why its taps and defaults; :mod:`.task` has the losses)."""

    name: ClassVar[str] = "segmentation"
    implementation: ClassVar[str] = "tasks.segmentation.task:SegmentationTask"
    sync_bn_default: ClassVar[bool] = True  # the published Cityscapes/ADE20K setting (8 GPUs x 2 images, SyncBN)
    datasets: ClassVar[tuple[str, ...]] = ("shapes", "cityscapes", "ade20k")
    default_dataset: ClassVar[str] = "shapes"
    primary_metric: ClassVar[str] = "mIoU"
    metrics: ClassVar[tuple[str, ...]] = ("mIoU", "pixel_acc")
    presets: ClassVar[tuple[str, ...]] = (*PRESETS, "cpu")

    # -- models ------------------------------------------------------------------------------
    def archs(self) -> list[str]:
        return list(ARCHS)

    def tap_specs(self, arch: str, num_classes: int, dataset: str) -> dict[str, TapSpec]:
        spec = arch_spec(arch)
        logits = TapSpec("logits", num_classes, 0, ("logits",))
        if not spec.hint_module:
            feat = TapSpec("feat", spec.feat_channels, OUTPUT_STRIDE, ("hint", "feature"), spec.feat_module)
            return {"feat": feat, "logits": logits}
        return {
            "feat": TapSpec("feat", spec.feat_channels, OUTPUT_STRIDE, ("feature",), spec.feat_module),
            "hint": TapSpec("hint", spec.hint_channels, OUTPUT_STRIDE, ("hint",), spec.hint_module),
            "logits": logits,
        }

    def default_pairs(self, dataset: str) -> list[tuple[str, str]]:
        self._dataset(dataset)
        if dataset == "shapes":
            return [("deeplabv3_tiny_t", "deeplabv3_tiny_s")]
        return list(REAL_PAIRS)

    def smallest_pair(self, dataset: str) -> tuple[str, str] | None:
        """Cityscapes and ADE20K: DeepLabV3-R101 -> DeepLabV3-MobileNetV3 (every real pair has an R101 teacher)."""
        return super().smallest_pair(dataset) if dataset == "shapes" else ("deeplabv3_r101", "deeplabv3_mbv3")

    def default_num_classes(self, dataset: str) -> int:
        return len(self._dataset(dataset)["classes"])

    # -- data --------------------------------------------------------------------------------
    @staticmethod
    def _dataset(dataset: str) -> dict[str, Any]:
        try:
            return DATASETS[dataset]
        except KeyError:
            raise unknown("segmentation dataset", dataset, DATASETS) from None

    # -- recipes and method defaults ---------------------------------------------------------
    def recipe(self, dataset: str, student: str, preset: str | None = None) -> Recipe:
        """The preset's recipe on ``dataset`` (default :data:`DEFAULT_PRESET`): :data:`PRESETS` on Cityscapes and
        ADE20K, iteration-based (``max_iters``, the epochs only cover them), or the ``cpu`` recipe on shapes."""
        cfg = self._dataset(dataset)
        if dataset == "shapes":
            if preset not in (None, "cpu"):
                raise unknown("recipe preset for shapes", preset, ("cpu",))
            return self._cpu_recipe(student)
        valid = [name for name, per in PRESETS.items() if dataset in per]
        preset = preset or DEFAULT_PRESET[dataset]
        if preset not in valid:
            raise unknown(f"recipe preset for {dataset}", preset, valid)
        p = PRESETS[preset][dataset]
        epochs = iterations_to_epochs(p.iterations, p.batch, cfg["train_images"])
        return Recipe(
            epochs=epochs,
            batch_size=p.batch,
            lr=p.lr,
            momentum=0.9,
            weight_decay=p.weight_decay,
            schedule="poly",
            poly_power=0.9,
            eval_every=max(epochs // 10, 1),
            num_workers=8,
            max_iters=p.iterations,
            extra={
                "crop_size": p.crop,
                "aux_weight": AUX_WEIGHT,
                "train_images": cfg["train_images"],
                "eval": p.eval,
            },
        )

    @staticmethod
    def _cpu_recipe(arch: str) -> Recipe:
        """shapes on two CPU cores: teacher 40 epochs, students 16 (50 steps of 8 images per epoch).

        Measured with a minimal loop (torch 2 threads, ``num_workers=0``; data loading is ~0.5 ms per image):
        on two pinned cores of the GPU host, 7.5 s/epoch teacher, 4.4 vanilla, 4.6 KD, 8.8 DiffKD, i.e.
        ~5 + 1.2 + 1.2 + 2.4 = ~10 minutes for teacher + vanilla + kd + diffkd. The teacher reached 74.5 mIoU
        (vanilla student ~67-68), on this data set where colour is a 70% cue and shape must settle the rest.
        """
        teacher = arch == "deeplabv3_tiny_t"
        epochs = 40 if teacher else 16
        return Recipe(
            epochs=epochs,
            batch_size=8,
            lr=0.02,
            momentum=0.9,
            weight_decay=5e-4,
            schedule="poly",
            poly_power=0.9,
            eval_every=max(epochs // 4, 1),
            num_workers=0,
            extra={
                "crop_size": D.SHAPES_SIZE,
                "aux_weight": AUX_WEIGHT,
                "train_images": D.SHAPES_COUNTS["train"],
                "eval": {"mode": "whole"},
            },
        )

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        if method == "kd":
            return {"temperature": 1.0, "kd_weight": 1.0, "ce_weight": 1.0}
        if method == "dkd":
            return {"alpha": 1.0, "beta": 0.25, "temperature": 1.0, "warmup": 0, "ce_weight": 1.0}
        if method == "fitnet":
            if arch_spec(teacher).hint_module and arch_spec(student).hint_module:
                # CIRKD's FitNet (train_fitnet.sh: --lambda-kd 1.0 --lambda-fitnet 10.; losses/fitnet.py: bias-free
                # 1x1 conv; --kd-temperature 1.0) on the post-ASPP hint tap.
                return {"feat_weight": 10.0, "kd_weight": 1.0, "kd_temperature": 1.0, "adapter": "conv",
                        "ce_weight": 1.0}  # fmt: skip
            # diffbench's FitNet on the backbone's last stage (ConvReg, no KD term), at CIRKD's weight 10.
            return {"feat_weight": 10.0, "ce_weight": 1.0}
        if method == "diffkd":
            channels = arch_spec(teacher).feat_channels
            use_ae = channels > 512
            return {
                "use_ae": use_ae,
                "ae_channels": channels // 2 if use_ae else None,
                "distill_logits": False,
                "ce_weight": 1.0,
            }
        return {}


register_spec(SegmentationSpec())
