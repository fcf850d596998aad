"""Image classification, declared without torch: CIFAR-100 (mdistiller's zoo), ImageNet, colorshapes(-few), digits,
synthetic.

Recipes follow the papers: mdistiller's CIFAR-100 recipe (SGD 0.9, batch 64, 240 epochs, lr 0.05 or
0.01 for MobileNetV2/ShuffleNet students, ×0.1 at 150/180/210, wd 5e-4) and the standard ImageNet
one (100 epochs, step 30/60/90, wd 1e-4, batch 256 lr 0.1 or batch 512 lr 0.2; mdistiller's), and
``imagenet-diffkd``, DiffKD's official B1 recipe, which differs in its optimizer: Nesterov SGD and no
weight decay on biases and BatchNorm weights. A fair table runs every method with one of them.
``colorshapes-few`` (the embedded default), ``colorshapes`` (the default until it was shown to measure convergence
speed) and ``digits`` have small CPU recipes that train in minutes; ``colorshapes-few`` trains its teacher with a
recipe of its own (all 2560 labels, 12 epochs) and its students on 16 labelled images per class
(:mod:`tasks.classification.colorshapes_few` says why).

Method defaults per data set: KD T=4, CE 0.1 / KD 0.9 on CIFAR-style data and T=1, 0.5 / 0.5 on
ImageNet (mdistiller); DKD's per-pair β, T and warm-up from :func:`dkd_defaults`;
DiffKD's autoencoder as the official ImageNet (B1) config has it (1024-channel latent); on CIFAR-style
data none for teachers of ≤ 256 channels, and a 256-channel latent for wider ones (vgg13, ResNet50) —
our assumption, the width the official code distils directly, since no official CIFAR config exists.
DKD's warm-up is counted in epochs: mdistiller ramps it over 20 of its 240 CIFAR epochs (1/12 of training);
on the 6-epoch ``colorshapes`` recipe the same fraction is half an epoch, so it is 1 epoch there (as in
mdistiller's ImageNet configs) — with 20 the DKD term would never reach full weight; on the 24-epoch
``colorshapes-few`` student recipe 1/12 is 2 epochs.

Everything here is known from names alone (architectures from :mod:`.models.arch`, data-set facts from
:mod:`.datasets`); :mod:`tasks.classification.task` implements it with torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from methods.errors import UserError, unknown
from methods.taps import TapSpec
from tasks.classification.datasets import (
    CIFAR100_FILES,
    COLORSHAPES_FEW_LABELLED_PER_CLASS,
    COLORSHAPES_FEW_REPEAT,
    DATASETS,
    expected_layout,
    find_cifar100_root,
)
from tasks.classification.models import arch as arch_table
from tasks.recipe import Recipe
from tasks.spec import TaskSpec, fingerprint_files, register_spec

#: Students that mdistiller trains with lr 0.01 instead of 0.05 on CIFAR-100.
_LOW_LR_STUDENTS = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}

#: Teacher→student pairs of the CIFAR-100 tables (RepDistiller / mdistiller / DiffKD).
CIFAR100_PAIRS = [
    ("resnet56", "resnet20"),
    ("resnet110", "resnet32"),
    ("resnet32x4", "resnet8x4"),
    ("wrn_40_2", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"),
    ("vgg13", "vgg8"),
    ("resnet32x4", "ShuffleV1"),
    ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"),
    ("vgg13", "MobileNetV2"),
    ("ResNet50", "MobileNetV2"),
]
IMAGENET_PAIRS = [("resnet34", "resnet18"), ("resnet50", "MobileNetV1")]
#: The embedded sets: small CIFAR ResNets that train on 2 CPU cores in minutes.
DIGITS_PAIRS = [("resnet20", "resnet8")]
COLORSHAPES_PAIRS = [("resnet20", "resnet8")]
#: DKD warm-up (epochs) on the embedded colorshapes sets: mdistiller's 1/12 of training, at least 1 (see above).
DKD_WARMUP = {"colorshapes": 1, "colorshapes-few": 2}

#: DiffKD: the latent width of the autoencoder in the official ImageNet (B1) configs.
DIFFKD_AE_CHANNELS = 1024
#: DiffKD: teachers whose feature tap is at most this wide are distilled without the autoencoder.
DIFFKD_AE_THRESHOLD = 256


# -- DKD: mdistiller's per-pair settings ---------------------------------------------------------
# Experiment configs of mdistiller, not part of the method: they give method_defaults its DKD values per pair
# and data set (detection and segmentation declare theirs inline).
#: mdistiller's ``CFG.DKD.BETA``: the NCKD weight of every pair its configs do not override.
DEFAULT_BETA = 8.0

#: Per-pair ``beta`` as mdistiller's configs ship them, keyed by ``(dataset, teacher, student)`` in our
#: architecture names. Sources: ``configs/cifar100/dkd/*.yaml`` (a file without ``DKD.BETA`` uses
#: :data:`DEFAULT_BETA`) and ``configs/imagenet/{r34_r18,r50_mv1}/dkd.yaml`` (mdistiller a08d46f). Its first
#: commit named the MobileNetV1 folder ``r50_mv2`` by mistake; commit fae6658 ("fix typo") renamed it, so
#: there is no ImageNet MobileNetV2 DKD config.
DKD_BETAS: dict[tuple[str, str, str], float] = {
    ("cifar100", "resnet56", "resnet20"): 2.0,  # res56_res20.yaml
    ("cifar100", "resnet110", "resnet32"): 2.0,  # res110_res32.yaml
    ("cifar100", "resnet32x4", "resnet8x4"): 8.0,  # res32x4_res8x4.yaml (default)
    ("cifar100", "wrn_40_2", "wrn_16_2"): 6.0,  # wrn40_2_wrn_16_2.yaml
    ("cifar100", "wrn_40_2", "wrn_40_1"): 6.0,  # wrn40_2_wrn_40_1.yaml
    ("cifar100", "vgg13", "vgg8"): 6.0,  # vgg13_vgg8.yaml
    ("cifar100", "vgg13", "MobileNetV2"): 6.0,  # vgg13_mv2.yaml
    ("cifar100", "ResNet50", "MobileNetV2"): 8.0,  # res50_mv2.yaml (default)
    ("cifar100", "resnet32x4", "ShuffleV1"): 8.0,  # res32x4_shuv1.yaml (default)
    ("cifar100", "resnet32x4", "ShuffleV2"): 8.0,  # res32x4_shuv2.yaml (default)
    # wrn40_2_shuv1.yaml sets no DKD.BETA, so mdistiller trains this pair with the default 8.0.
    ("cifar100", "wrn_40_2", "ShuffleV1"): 8.0,
    ("imagenet", "resnet34", "resnet18"): 0.5,  # r34_r18/dkd.yaml
    ("imagenet", "resnet50", "MobileNetV1"): 2.0,  # r50_mv1/dkd.yaml
}

#: Dataset-wide defaults that differ from CIFAR's. ImageNet: ``T=1``, ``WARMUP=1`` in both
#: mdistiller ImageNet configs. COCO: mdistiller's ``detection/model/config.py`` (``KD.DKD``: alpha 1,
#: beta 0.25, T 1, applied to box-head logits without any warm-up).
DATASET_DEFAULTS: dict[str, dict[str, float]] = {
    "imagenet": {"temperature": 1.0, "warmup": 1},
    "coco": {"beta": 0.25, "temperature": 1.0, "warmup": 0},
}


def dkd_beta(teacher: str, student: str, dataset: str) -> float:
    """The NCKD weight ``beta`` mdistiller uses for this pair (``DEFAULT_BETA`` when it sets none)."""
    key = (dataset, teacher, student)
    if key in DKD_BETAS:
        return DKD_BETAS[key]
    return float(DATASET_DEFAULTS.get(dataset, {}).get("beta", DEFAULT_BETA))


def dkd_defaults(teacher: str, student: str, dataset: str) -> dict[str, float]:
    """``beta`` plus the dataset's ``temperature``/``warmup`` overrides, ready for ``method_defaults``."""
    out = {k: v for k, v in DATASET_DEFAULTS.get(dataset, {}).items() if k != "beta"}
    out["beta"] = dkd_beta(teacher, student, dataset)
    return out


class ClassificationSpec(TaskSpec):
    """Top-1/top-5 classification with mdistiller's CIFAR zoo and torchvision's ImageNet models (declarations)."""

    name = "classification"
    implementation = "tasks.classification.task:ClassificationTask"
    datasets = ("colorshapes", "colorshapes-few", "digits", "cifar100", "imagenet", "synthetic")
    default_dataset = "colorshapes-few"
    primary_metric = "top1"
    #: ``loss`` is the mean NLL (nats); ``excess_nll`` (colorshapes-few only) is it minus the generator's Bayes NLL, an
    #: estimate of the mean KL divergence from the Bayes posterior: both lower-is-better, a few hundredths apart.
    metrics = ("top1", "top5", "loss", "excess_nll")
    lower_is_better = ("loss", "excess_nll")
    metric_decimals = {"loss": 3, "excess_nll": 3}
    presets = ("cifar100", "imagenet", "imagenet-b512", "imagenet-diffkd", "colorshapes", "colorshapes-few", "digits",
               "smoke")  # fmt: skip
    #: in-memory data sets whose splits implement the protocol of :mod:`tasks.classification.resident`.
    resident_datasets = ("cifar100", "colorshapes", "colorshapes-few", "digits", "synthetic")

    # -- models ------------------------------------------------------------------------------
    def archs(self) -> list[str]:
        return arch_table.arch_names()

    def check_names(self, dataset: str, *archs: str | None) -> None:
        """Also accept ``timm/<model>`` names (never listed: resolved, or refused in one line, by the zoo)."""
        super().check_names(dataset, *(None if arch_table.is_timm(a) else a for a in archs))
        for arch in filter(arch_table.is_timm, archs):
            arch_table.get_arch(arch)

    def tap_specs(self, arch: str, num_classes: int, dataset: str) -> dict[str, TapSpec]:
        return arch_table.tap_specs(arch, num_classes)

    # -- data --------------------------------------------------------------------------------
    def data_fingerprint(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> str:
        """CIFAR-100: its three pickles (wherever they are); ImageNet: the train/ and val/ class folders."""
        if data_dir is None or dataset not in ("cifar100", "imagenet"):
            return super().data_fingerprint(dataset, data_dir, recipe)
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            layout = expected_layout(dataset)
            raise UserError(f"{dataset}: data directory {root} does not exist or is not a folder; {layout}")
        if dataset == "cifar100":
            pickles = find_cifar100_root(root)
            return f"cifar100:{fingerprint_files(*(pickles / f for f in CIFAR100_FILES))}"
        splits = [root / s for s in ("train", "val") if (root / s).is_dir()]
        return f"imagenet:{fingerprint_files(*splits) if splits else fingerprint_files(root)}"

    def default_num_classes(self, dataset: str) -> int:
        if dataset not in DATASETS:
            raise unknown("dataset", dataset, DATASETS)
        return DATASETS[dataset].num_classes

    def default_pairs(self, dataset: str) -> list[tuple[str, str]]:
        pairs = {"cifar100": CIFAR100_PAIRS, "imagenet": IMAGENET_PAIRS, "colorshapes": COLORSHAPES_PAIRS,
                 "colorshapes-few": COLORSHAPES_PAIRS}
        return pairs.get(dataset, DIGITS_PAIRS)

    def smallest_pair(self, dataset: str) -> tuple[str, str] | None:
        """ImageNet: resnet50 -> MobileNetV1 (25.6 M + 4.2 M parameters; resnet34 -> resnet18: 21.8 M + 11.7 M);
        elsewhere the first default pair (CIFAR-100: resnet56 -> resnet20, 0.86 M + 0.28 M, the smallest)."""
        return ("resnet50", "MobileNetV1") if dataset == "imagenet" else super().smallest_pair(dataset)

    # -- recipes -----------------------------------------------------------------------------
    preset_datasets = {"cifar100": ("cifar100",), "imagenet": ("imagenet",), "imagenet-b512": ("imagenet",),
                       "imagenet-diffkd": ("imagenet",), "colorshapes": ("colorshapes",),
                       "colorshapes-few": ("colorshapes-few",), "digits": ("digits",),
                       "smoke": ("digits", "synthetic")}  # fmt: skip
    preset_sources = {
        "cifar100": "megvii-research/mdistiller@a08d46f: configs/cifar100/*.yaml (SOLVER; lr 0.01 for the "
        "MobileNetV2/ShuffleNet students as in configs/cifar100/dkd/*.yaml), mdistiller/engine/cfg.py",
        "imagenet": "the batch-256 form of imagenet-b512 (lr scaled with the batch: 512/0.2 -> 256/0.1, Goyal et al.); "
        "no paper in published.csv ran exactly this one",
        "imagenet-b512": "megvii-research/mdistiller@a08d46f: configs/imagenet/{r34_r18,r50_mv1}/{kd,dkd}.yaml "
        "(SOLVER, lines 14-22)",
        "imagenet-diffkd": "hunto/image_classification_sota@6cb1441 (DiffKD's submodule): configs/strategies/distill/"
        "diffkd/diffkd_b1.yaml, lib/utils/optim.py (Nesterov, no weight decay on 1-D parameters)",
        "colorshapes": "diffbench's embedded data set (tasks/classification/colorshapes.py); no paper",
        "colorshapes-few": "diffbench's embedded few-label set (tasks/classification/colorshapes_few.py); no paper",
        "digits": "diffbench's embedded smoke-test data set (scikit-learn's digits); no paper",
        "smoke": "diffbench: one epoch, to check the machinery; no paper",
    }

    def recipe(self, dataset: str, student: str, preset: str | None = None) -> Recipe:
        preset = preset or {"cifar100": "cifar100", "imagenet": "imagenet", "synthetic": "smoke",
                            "colorshapes": "colorshapes", "colorshapes-few": "colorshapes-few"}.get(dataset, "digits")
        if preset == "cifar100":
            return Recipe(epochs=240, batch_size=64, lr=0.01 if student in _LOW_LR_STUDENTS else 0.05,
                          weight_decay=5e-4, milestones=(150, 180, 210), num_workers=4)
        if preset == "imagenet-diffkd":
            # DiffKD's official B1 recipe (image_classification_sota configs/strategies/distill/diffkd/diffkd_b1.yaml,
            # lib/utils/optim.py, tools/train.py): 8 GPUs x 32, SGD lr 0.1 *Nesterov*, wd 1e-4 but none on biases and
            # 1-D (BN) parameters, x0.1 every 30 epochs, 100 epochs, no warm-up. Any method can run with it.
            return Recipe(epochs=100, batch_size=256, lr=0.1, weight_decay=1e-4, nesterov=True, weight_decay_1d=False,
                          milestones=(30, 60, 90), num_workers=8)
        if preset in ("imagenet", "imagenet-b512"):
            big = preset == "imagenet-b512"
            return Recipe(epochs=100, batch_size=512 if big else 256, lr=0.2 if big else 0.1, weight_decay=1e-4,
                          milestones=(30, 60, 90), num_workers=8)
        if preset == "colorshapes":
            # 2560 training images, 80 steps of 32 per epoch: on a CPU an image costs about the same in a batch of 32
            # or 64, and twice the updates learn faster. Short on purpose, so the default grid (3 seeds) takes minutes
            # on 2 cores: in 6 epochs resnet20 reaches the set's ~96 % ceiling and resnet8 does not (~70-80 %).
            return Recipe(epochs=6, batch_size=32, lr=0.05, weight_decay=5e-4, milestones=(4, 5), num_workers=0)
        if preset == "colorshapes-few":
            # The students of colorshapes-few: 320 labelled images shown twice an epoch (640, 40 steps of 16), 24
            # epochs (960 steps, 15 360 images, the colorshapes recipe's count). lr 0.025 is the colorshapes recipe's
            # 0.05 at batch 32 scaled linearly to batch 16 (DKD's beta 8 diverges at lr 0.2); evaluated every 4 epochs.
            # channels_last: a resnet8 training step on one CPU thread takes 1.7 ms per image instead of 2.6 (measured).
            split = {"labelled_per_class": COLORSHAPES_FEW_LABELLED_PER_CLASS, "repeat": COLORSHAPES_FEW_REPEAT}
            return Recipe(epochs=24, batch_size=16, lr=0.025, weight_decay=5e-4, milestones=(16, 20), eval_every=4,
                          num_workers=0, channels_last=True, extra=split)
        if preset == "digits":
            # 1437 training images, 22 steps of 64 per epoch: a few seconds per epoch on 2 cores.
            return Recipe(epochs=12, batch_size=64, lr=0.05, weight_decay=5e-4, milestones=(8, 11), num_workers=0)
        if preset == "smoke":
            return Recipe(epochs=1, batch_size=32, lr=0.05, weight_decay=5e-4, num_workers=0)
        raise unknown("classification recipe preset", preset, self.presets)

    def teacher_recipe(self, dataset: str, arch: str, preset: str | None = None) -> Recipe:
        """``colorshapes-few``'s teacher learns from every label of the training split with the colorshapes recipe
        run twice as long (12 epochs of 2560, batch 32, lr 0.05, decays at 8 and 10; no ``extra``, so the whole
        split). Other data sets and presets: the student's recipe."""
        if dataset == "colorshapes-few" and preset in (None, "colorshapes-few"):
            return Recipe(epochs=12, batch_size=32, lr=0.05, weight_decay=5e-4, milestones=(8, 10), num_workers=0,
                          channels_last=True)
        return self.recipe(dataset, arch, preset)

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        imagenet = dataset == "imagenet"
        if method == "kd":
            return {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5} if imagenet else {}
        if method == "dkd":
            out = dkd_defaults(teacher, student, dataset)
            return {**out, "warmup": DKD_WARMUP[dataset]} if dataset in DKD_WARMUP else out  # see the module docstring
        if method == "diffkd":
            if imagenet:  # official B1 config: AE with a 1024-channel latent (even for R34's 512 channels)
                return {"use_ae": True, "ae_channels": DIFFKD_AE_CHANNELS}
            if arch_table.tap_specs(teacher, 1)["feat"].channels > DIFFKD_AE_THRESHOLD:
                return {"use_ae": True, "ae_channels": DIFFKD_AE_THRESHOLD}
            return {"use_ae": False}
        return {}


register_spec(ClassificationSpec())
