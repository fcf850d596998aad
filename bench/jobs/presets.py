"""Named grids (``diffbench run --preset NAME``): what each expands to, and where its values come from.

Two kinds:

* :data:`GRID_PRESETS`: diffbench's own grids (the embedded default, a smoke test, one task each);
* :data:`PAPER_PRESETS` (``--preset paper:<name>``): one published table each, run as the paper ran it — its pairs,
  methods, recipe (the task's preset that cites the paper's config file), seeds and student initialisation. The
  weights the paper started from are files the user supplies (``--teacher-checkpoint`` / ``--student-checkpoint``):
  a paper preset names each one and refuses to start without it, because a table reproduced from other teachers is
  another table. Where a paper does not state a setting, the preset's ``notes`` say so and what it does instead.

Sources are pinned to the commits the facts were read at (``megvii-research/mdistiller`` a08d46f, ``hunto/DiffKD``
904a465 with ``hunto/image_classification_sota`` 6cb1441, ``winycg/CIRKD`` 91735ef (v1), ``hunto/DIST_KD`` 2418f18,
``facebookresearch/detectron2`` 02b5c4e, ``open-mmlab/mmrazor`` 90c7af1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from methods.errors import unknown

#: Named grids. ``default`` is what ``diffbench run`` with no arguments runs.
GRID_PRESETS: dict[str, dict[str, Any]] = {
    # colorshapes-few (tasks/classification/colorshapes_few.py), resnet20 -> resnet8, 3 seeds: the teacher learned
    # from all 2560 labels with its own longer recipe, its students see 16 per class; top-1 and the excess NLL over the
    # Bayes posterior (README, "What the default can and cannot tell").
    "default": {"task": "classification", "dataset": "colorshapes-few", "seeds": 3},
    "colorshapes-few": {"task": "classification", "dataset": "colorshapes-few", "seeds": 3},
    # colorshapes (tasks/classification/colorshapes.py), the default before colorshapes-few: teacher and students learn
    # from the same 2560 labels in 6 epochs; the vanilla student is unconverged, so every method merely speeds it up.
    "colorshapes": {"task": "classification", "dataset": "colorshapes", "seeds": 3},
    # one pair (the data set's smallest), one seed, one epoch, whatever --task/--dataset say (GridSpec.smoke).
    "smoke": {"task": "classification", "dataset": "digits", "preset": "smoke", "smoke": True},
    "cifar100": {"task": "classification", "dataset": "cifar100", "preset": "cifar100"},
    "imagenet": {"task": "classification", "dataset": "imagenet", "preset": "imagenet"},
    "detection": {"task": "detection"},
    "segmentation": {"task": "segmentation"},
}

#: The prefix of paper presets on the command line.
PAPER_PREFIX = "paper:"

_CIFAR_TEACHERS_FROM = "mdistiller's released CIFAR-100 teachers (cifar_teachers.tar)"
_TV_FROM = "torchvision's ImageNet weights (download.pytorch.org/models)"


@dataclass(frozen=True)
class PaperPreset:
    """One published table as a grid.

    Attributes:
        title: the paper and table.
        source: the configuration files the grid mirrors (repository @ commit: path).
        grid: :class:`~bench.jobs.grid.GridSpec` fields (task, dataset, pairs, methods, seeds, preset, sets, recipe).
        teachers: arch → the file the paper's teacher is (each must be given with ``--teacher-checkpoint``);
            ``teachers_from`` says where such files come from.
        students: arch → the file the paper's student starts from (``--student-checkpoint``); empty when the
            paper's students start from random weights; ``students_from`` says where they come from.
        notes: settings the paper does not state, and what the preset does instead.
    """

    title: str
    source: str
    grid: dict[str, Any]
    teachers: dict[str, str] = field(default_factory=dict)
    teachers_from: str = ""
    students: dict[str, str] = field(default_factory=dict)
    students_from: str = ""
    notes: tuple[str, ...] = ()


_CIFAR_PAIRS = (
    ("resnet56", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"), ("vgg13", "vgg8"), ("resnet32x4", "ShuffleV1"), ("resnet32x4", "ShuffleV2"),
    ("wrn_40_2", "ShuffleV1"), ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"),
)  # fmt: skip
_CIFAR_TEACHERS = {a: f"cifar_teachers/{a}_vanilla/ckpt_epoch_240.pth"
                   for a in dict.fromkeys(t for t, _ in _CIFAR_PAIRS)}  # fmt: skip
_IMAGENET_PAIRS = (("resnet34", "resnet18"), ("resnet50", "MobileNetV1"))
_CIRKD_PAIR = (("deeplabv3_r101_cirkd", "deeplabv3_r18_cirkd"),)
_SEEDS_NOTE = ("the paper does not say how many runs each number averages; the preset runs {n} seeds so the report "
               "can judge each cell (reproduced / below / above; --seeds changes it)")  # fmt: skip

PAPER_PRESETS: dict[str, PaperPreset] = {
    "dkd-cifar100": PaperPreset(
        title="DKD (Zhao et al., CVPR 2022), CIFAR-100 tables: KD, FitNet and DKD over 11 teacher-student pairs",
        source="megvii-research/mdistiller@a08d46f: configs/cifar100/{kd,fitnet,vanilla}.yaml, configs/cifar100/dkd/"
        "*.yaml, mdistiller/engine/cfg.py",
        grid={"task": "classification", "dataset": "cifar100", "pairs": _CIFAR_PAIRS,
              "methods": ("kd", "fitnet", "dkd"), "seeds": 3, "preset": "cifar100"},
        teachers=_CIFAR_TEACHERS,
        teachers_from=_CIFAR_TEACHERS_FROM,
        notes=(_SEEDS_NOTE.format(n=3),
               "mdistiller ships KD/FitNet configs for resnet32x4->resnet8x4 only; the other pairs use the same "
               "method settings and the pair's lr (0.01 for MobileNetV2/ShuffleNet students), as its DKD configs do"),
    ),  # fmt: skip
    "dkd-imagenet": PaperPreset(
        title="DKD (Zhao et al., CVPR 2022), ImageNet table: KD and DKD on ResNet34->ResNet18 and "
        "ResNet50->MobileNetV1",
        source="megvii-research/mdistiller@a08d46f: configs/imagenet/{r34_r18,r50_mv1}/{kd,dkd}.yaml (batch 512, "
        "lr 0.2, 100 epochs)",
        grid={"task": "classification", "dataset": "imagenet", "pairs": _IMAGENET_PAIRS, "methods": ("kd", "dkd"),
              "seeds": 3, "preset": "imagenet-b512"},
        teachers={"resnet34": "resnet34-333f7ec4.pth", "resnet50": "resnet50-19c8e357.pth"},
        teachers_from=f"{_TV_FROM}, the files mdistiller's models/imagenet/resnet.py names",
        notes=(_SEEDS_NOTE.format(n=3),),
    ),  # fmt: skip
    "diffkd-imagenet": PaperPreset(
        title="DiffKD (Huang et al., NeurIPS 2023), ImageNet B1 setting: ResNet34->ResNet18 and ResNet50->MobileNetV1",
        source="hunto/image_classification_sota@6cb1441 (DiffKD's submodule): configs/strategies/distill/diffkd/"
        "diffkd_b1.yaml, lib/models/losses/kd_loss.py, lib/utils/optim.py",
        grid={"task": "classification", "dataset": "imagenet", "pairs": _IMAGENET_PAIRS,
              "methods": ("kd", "dkd", "diffkd"), "seeds": 3, "preset": "imagenet-diffkd"},
        teachers={"resnet34": "resnet34-b627a593.pth", "resnet50": "resnet50-0676ba61.pth"},
        teachers_from=f"{_TV_FROM}: tv_resnet34 and tv_resnet50 (IMAGENET1K_V1) in DiffKD's config",
        notes=(_SEEDS_NOTE.format(n=3),
               "KD and DKD run with DiffKD's B1 recipe here, so the three methods share one recipe; their published "
               "ImageNet numbers (mdistiller's batch-512 recipe) are then shown only with --published always"),
    ),  # fmt: skip
    "diffkd-cifar100": PaperPreset(
        title="DiffKD (Huang et al., NeurIPS 2023), CIFAR-100 (appendix): DiffKD with mdistiller's CIFAR-100 recipe",
        source="DiffKD publishes no CIFAR-100 configuration (hunto/DiffKD has none; requests for one went unanswered); "
        "the recipe is "
        "megvii-research/mdistiller@a08d46f configs/cifar100/*.yaml",
        grid={"task": "classification", "dataset": "cifar100", "pairs": _CIFAR_PAIRS, "methods": ("kd", "diffkd"),
              "seeds": 3, "preset": "cifar100"},
        teachers=_CIFAR_TEACHERS,
        teachers_from=_CIFAR_TEACHERS_FROM,
        notes=(_SEEDS_NOTE.format(n=3),
               "not stated by the paper: the CIFAR-100 recipe (mdistiller's is used), whether the autoencoder is used "
               "(diffbench: none for teachers of <= 256 channels, a 256-channel latent for wider ones) and the loss "
               "weights (the official ImageNet weights, all 1)"),
    ),  # fmt: skip
    "dkd-coco": PaperPreset(
        title="DKD (Zhao et al., CVPR 2022), COCO table: KD, FitNet and DKD on Faster R-CNN FPN (detectron2)",
        source="megvii-research/mdistiller@a08d46f: detection/configs/Base-Distillation.yaml, detection/configs/DKD/"
        "DKD-{R18-R101,R50-R101,MV2-R50}.yaml, detection/model/config.py",
        grid={"task": "detection", "dataset": "coco",
              "pairs": (("d2_faster_rcnn_R_101_FPN", "d2_faster_rcnn_R_18_FPN"),
                        ("d2_faster_rcnn_R_101_FPN", "d2_faster_rcnn_R_50_FPN"),
                        ("d2_faster_rcnn_R_50_FPN", "d2_faster_rcnn_MV2_FPN")),
              "methods": ("kd", "fitnet", "dkd"), "seeds": 2, "preset": "1x"},
        teachers={"d2_faster_rcnn_R_101_FPN": "faster_rcnn_R_101_FPN_3x/model_final_f6e8b1.pkl",
                  "d2_faster_rcnn_R_50_FPN": "faster_rcnn_R_50_FPN_3x/model_final_280758.pkl"},
        teachers_from="detectron2's model zoo (COCO-Detection), as mdistiller's detection README says",
        students={"d2_faster_rcnn_R_18_FPN": "r18-r101.pth", "d2_faster_rcnn_R_50_FPN": "R-50.pkl",
                  "d2_faster_rcnn_MV2_FPN": "mv2-r50.pth"},
        students_from="ImageNet-pretrained backbones: ReviewKD's release files (r18-r101.pth, mv2-r50.pth: student and "
        "teacher in one file) or detectron2's ImageNetPretrained/MSRA/R-50.pkl",
        notes=("COCO runs cost GPU-days: the preset runs 2 seeds, the fewest that let the report judge a cell",
               "mdistiller has no KD or FitNet detection code: those columns run diffbench's detection KD and FitNet "
               "(see the detection task's method defaults); the published KD/FitNet numbers come from the DKD "
               "paper's table, whose FitNet variant is not documented"),
    ),  # fmt: skip
    "cirkd-cityscapes": PaperPreset(
        title="CIRKD (Yang et al., CVPR 2022), Cityscapes: DeepLabV3-ResNet101 -> DeepLabV3-ResNet18, with KD and "
        "FitNet as CIRKD's scripts run them",
        source="winycg/CIRKD@91735ef (v1): train_kd.py, train_scripts/train_kd/train_fitnet.sh, "
        "models/deeplabv3.py, models/base_models/resnet.py",
        grid={"task": "segmentation", "dataset": "cityscapes", "pairs": _CIRKD_PAIR, "methods": ("kd", "fitnet"),
              "seeds": 2},
        teachers={"deeplabv3_r101_cirkd": "deeplabv3_resnet101_citys_best_model.pth"},
        teachers_from="CIRKD's trained teacher (its README's download link)",
        students={"deeplabv3_r18_cirkd": "resnet18-imagenet.pth"},
        students_from="CIRKD's ImageNet ResNet-18 backbone (its README's download link)",
        notes=("Cityscapes runs cost GPU-hours per seed: the preset runs 2 seeds, the fewest that let the report "
               "judge a cell",),
    ),  # fmt: skip
    "diffkd-cityscapes": PaperPreset(
        title="DiffKD (Huang et al., NeurIPS 2023), Cityscapes: DeepLabV3-ResNet101 -> DeepLabV3-ResNet18",
        source="not published in the DiffKD repository (hunto/DiffKD ships no segmentation code; its authors point to "
        "an external archive); its authors' segmentation code is hunto/DIST_KD@2418f18 segmentation/ (train_kd.py), "
        "based on winycg/CIRKD",
        grid={"task": "segmentation", "dataset": "cityscapes", "pairs": _CIRKD_PAIR, "methods": ("kd", "diffkd"),
              "seeds": 2, "recipe": {"weight_decay": 5e-4}},
        teachers={"deeplabv3_r101_cirkd": "deeplabv3_resnet101_citys_best_model.pth"},
        teachers_from="CIRKD's trained teacher (its README's download link)",
        students={"deeplabv3_r18_cirkd": "resnet18-imagenet.pth"},
        students_from="CIRKD's ImageNet ResNet-18 backbone (its README's download link)",
        notes=("not stated anywhere reachable: DiffKD's segmentation recipe and loss weights; the preset takes "
               "DIST_KD's CIRKD fork (weight decay 5e-4, the rest CIRKD's) and DiffKD's official loss weights (1)",
               "the published 76.24 mIoU is listed for Cityscapes *test* by an aggregator; the preset evaluates on "
               "val, so no published number is shown beside it"),
    ),  # fmt: skip
    "diffkd-coco": PaperPreset(
        title="DiffKD (Huang et al., NeurIPS 2023), COCO: Faster R-CNN FPN ResNet101 -> ResNet50, 2x",
        source="not published (hunto/DiffKD ships no detection code); its authors' detection code is MasKD's "
        "mmrazor setting (hunto/DIST_KD README), whose Faster R-CNN comparison is open-mmlab/mmrazor@90c7af1 "
        "configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py",
        grid={"task": "detection", "dataset": "coco", "pairs": (("fasterrcnn_r101", "fasterrcnn_r50"),),
              "methods": ("kd", "fitnet", "diffkd"), "seeds": 2, "preset": "2x"},
        teachers={"fasterrcnn_r101": "faster_rcnn_r101_fpn_coco.pth"},
        teachers_from="a COCO-trained Faster R-CNN R101-FPN in torchvision's layout (torchvision publishes none; train "
        "one with diffbench train --task detection --dataset coco --student fasterrcnn_r101 --preset 2x "
        "--student-checkpoint resnet101-63fe2227.pth)",
        students={"fasterrcnn_r50": "resnet50-0676ba61.pth"},
        students_from=_TV_FROM,
        notes=("not stated anywhere reachable: DiffKD's COCO detector, pair, schedule and loss weights; the preset "
               "runs the mmrazor PKD comparison's pair and 2x schedule with diffbench's detection defaults",
               "the published 42.4 AP has no pair attached; it is not shown beside these runs"),
    ),  # fmt: skip
}


def paper_preset(name: str) -> PaperPreset:
    """The paper preset ``name`` (without the ``paper:`` prefix); an unknown one is refused with a 'did you mean'."""
    if name not in PAPER_PRESETS:
        raise unknown("paper preset", f"{PAPER_PREFIX}{name}", [f"{PAPER_PREFIX}{n}" for n in PAPER_PRESETS])
    return PAPER_PRESETS[name]


def preset_names() -> list[str]:
    """Every ``--preset`` value: diffbench's grids, then the papers' tables."""
    return [*GRID_PRESETS, *(f"{PAPER_PREFIX}{n}" for n in PAPER_PRESETS)]
