"""Object detection, declared without torch: archs of both backends, their taps, pairs, recipes, method defaults.

Arch names, families and FPN levels come from tables that need no backend import (:mod:`.archs` for the
torchvision backend, :mod:`.d2` for detectron2's ``d2_*`` archs); :mod:`tasks.detection.task` implements the task
with torch. Both backends hand out the same taps:

* ``fpn.p2..p6`` (Faster R-CNN) / ``fpn.p3..p7`` (RetinaNet): the FPN maps, 256 channels, roles ``hint``
  and ``feature`` — so FitNet and DiffKD see the same tap names and strides on either backend;
* ``logits`` (Faster R-CNN only): the student's box-classifier logits on its *sampled* proposals, the
  teacher's box head scoring the very same boxes, and as target the class the student's sampler assigned
  (mdistiller's ``RCNNKD``). Column order is the backend's: torchvision puts the background first (0),
  detectron2 last (``K``); each backend's target follows its own logits.
"""

from __future__ import annotations

from typing import Any

from methods.errors import UserError, unknown
from methods.taps import TapSpec
from tasks.detection import archs as tv_archs
from tasks.detection import d2, recipes
from tasks.recipe import Recipe
from tasks.spec import TaskSpec, register_spec

#: COCOeval's ``stats[0:6]`` in order, under the names the task's ``evaluate`` reports.
METRICS = ("bbox_AP", "AP50", "AP75", "APs", "APm", "APl")

#: mmrazor's PKD settings on COCO, per detector family: ``(loss weight, distilled FPN taps)``. Each level's PKD
#: loss is a separate term of the distiller's loss dict that mmengine sums, so the weight applies to the *sum* over
#: the levels (open-mmlab/mmrazor @90c7af1fdf35a606a2fceaaeb4b6be2f0dac4eb7):
#:
#: * Faster R-CNN: ``configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py`` L23-41,
#:   ``PKDLoss(loss_weight=6)`` on the neck outputs ``data_idx=0..3`` of its 5 (P2-P5; P6 is not distilled);
#: * RetinaNet: ``configs/distill/mmdet/pkd/pkd_fpn_retina_x101_retina_r50_2x_coco.py`` L12-16, ``loss_weight=10`` on
#:   ``data_idx=0..3`` of RetinaNet's P3-P7 (P3-P6; P7 is not distilled).
#:
#: PKD itself (standardised maps, ``MSE / 2``) is :mod:`methods.feature_norm`.
PKD_COCO: dict[str, tuple[float, tuple[str, ...]]] = {
    "fasterrcnn": (6.0, ("fpn.p2", "fpn.p3", "fpn.p4", "fpn.p5")),
    "retinanet": (10.0, ("fpn.p3", "fpn.p4", "fpn.p5", "fpn.p6")),
}
#: ``shapes`` (diffbench's CPU preset, not a published setting): weight 6 on the *mean* over every FPN level, i.e.
#: ``6 / 5`` on each of the 5 level terms. Summed over 5 levels, PKD's weight started FitNet's and DiffKD's feature
#: terms at 13x the detector's loss on ``shapes`` (and cost FitNet 14 AP); the mean keeps PKD's scale per level.
SHAPES_PKD_WEIGHT = 6.0

#: methods that distil softmax class logits, which RetinaNet does not have.
LOGIT_METHODS = ("kd", "dkd")


#: data sets whose detector setups fine-tune pretrained weights (frozen BatchNorm, frozen early stages), so a job
#: that trains one must say where it starts (:meth:`DetectionSpec.check_init`). ``shapes`` trains from scratch.
FINETUNE_DATASETS = ("coco",)


def _finetune_setup(arch: str) -> str:
    """The frozen parts of ``arch``'s fine-tuning setup, in the backend's words (for messages)."""
    if d2.is_d2(arch):
        if d2.entry(arch).backbone.startswith("mobilenet"):
            return "detectron2's FrozenBN, as mdistiller's MobileNetV2 student"
        return "detectron2's FrozenBN, stem and res2 frozen (FREEZE_AT 2)"
    if tv_archs.entry(arch)[1].startswith("resnet"):
        return "FrozenBatchNorm2d, stem and layer1 frozen"
    return "FrozenBatchNorm2d, only the last 3 stages trained"


class DetectionSpec(TaskSpec):
    """Object detection (see the module docstring for the taps; :mod:`tasks.detection.task` for the backends)."""

    name = "detection"
    implementation = "tasks.detection.task:DetectionTask"
    datasets = ("shapes", "coco")
    default_dataset = "shapes"
    primary_metric = "bbox_AP"
    metrics = METRICS
    presets = ("1x", "2x", "cpu")
    eval_autocast = False  # box decoding in bf16 moves COCO boxes by pixels
    fixed_input_size = False  # images keep their aspect ratio

    # -- models ------------------------------------------------------------------------------
    def archs(self) -> list[str]:
        """torchvision's archs, then detectron2's ``d2_*`` (listed even when detectron2 is not installed)."""
        return [*tv_archs.ARCHS, *d2.ARCHS]

    def check_names(self, dataset: str, *archs: str | None) -> None:
        """Also refuse ``d2_*`` archs up front when detectron2 is missing, with the install hint."""
        super().check_names(dataset, *archs)
        for arch in archs:
            if arch is not None and d2.is_d2(arch):
                d2.require(f"detection arch {arch!r}")

    def family(self, arch: str) -> str:
        """``"fasterrcnn"`` or ``"retinanet"`` (without importing detectron2)."""
        if d2.is_d2(arch):
            d2.entry(arch)
            return "fasterrcnn"
        return tv_archs.family(arch)

    def tap_specs(self, arch: str, num_classes: int, dataset: str) -> dict[str, TapSpec]:
        """FPN maps (256 channels) and, for Faster R-CNN, the box-classifier ``logits``; no forward pass."""
        family = self.family(arch)  # validates the name
        levels = d2.LEVELS if d2.is_d2(arch) else tv_archs.levels(arch)
        specs = {
            f"fpn.{level}": TapSpec(f"fpn.{level}", tv_archs.FPN_CHANNELS, stride, ("hint", "feature"), "backbone")
            for _key, level, stride in levels
        }
        if family == "fasterrcnn":
            specs["logits"] = TapSpec("logits", num_classes, 0, ("logits",), "roi_heads.box_predictor.cls_score")
        return specs

    def check_arch_pair(self, teacher: str, student: str) -> None:
        """Refuse, from the names, pairs across backends or detector families (their heads cannot align)."""
        t_d2, s_d2 = d2.is_d2(teacher), d2.is_d2(student)
        if t_d2 != s_d2:
            names = {True: "detectron2", False: "torchvision"}
            raise UserError(
                f"pair {teacher}:{student} mixes detection backends ({names[t_d2]} teacher, {names[s_d2]} "
                "student); pair d2_* with d2_* or torchvision archs with torchvision archs"
            )
        t_family, s_family = self.family(teacher), self.family(student)
        if t_family != s_family:
            raise UserError(
                f"pair {teacher}:{student} mixes detector families ({t_family} teacher, {s_family} student); pair "
                "fasterrcnn_* with fasterrcnn_* or retinanet_* with retinanet_*"
            )

    # -- data --------------------------------------------------------------------------------
    def default_num_classes(self, dataset: str) -> int:
        """Classes including the background: 3 shapes + 1, COCO's 80 + 1."""
        return {"shapes": 4, "coco": 81}.get(dataset, 81)

    def default_pairs(self, dataset: str) -> list[tuple[str, str]]:
        """torchvision pairs (always available); detectron2's are named with ``--pairs`` (``d2.PAIRS``)."""
        if dataset == "shapes":
            return [tv_archs.PAIRS["cpu"]]
        return [tv_archs.PAIRS[k] for k in ("r101_r18", "r101_r50", "r50_mbv2")]

    # -- starting weights --------------------------------------------------------------------
    def check_init(self, dataset: str, arch: str, init: str | None) -> None:
        """On COCO a job that trains ``arch`` must name its starting point (``UserError`` otherwise).

        The COCO setups are the published fine-tuning setups (frozen BatchNorm and frozen early stages, see
        :func:`_finetune_setup`): every paper starts them from ImageNet weights, and from random weights they would
        train with BatchNorm statistics fixed at initialisation. So the user chooses: a weights file, or ``random``,
        which builds the model with trainable BatchNorm and no frozen stage instead. ``shapes`` trains from scratch
        with plain BatchNorm whatever the starting point.
        """
        if dataset in FINETUNE_DATASETS and init is None:
            raise UserError(
                f"{arch} on {dataset} is set up to fine-tune pretrained weights ({_finetune_setup(arch)}); say where "
                f"it starts: --student-checkpoint {arch}=FILE (an ImageNet backbone or a whole detector) or "
                f"--student-checkpoint {arch}=random (then it is built with trainable BatchNorm and no frozen stage)"
            )

    def init_note(self, dataset: str, arch: str, init: str | None) -> str | None:
        """What building ``arch`` from random weights on COCO changes, for the job's log."""
        if dataset in FINETUNE_DATASETS and init == "random":
            return (f"random start on {dataset}: built with trainable BatchNorm and no frozen stage instead of the "
                    f"fine-tuning setup ({_finetune_setup(arch)})")  # fmt: skip
        return None

    def smallest_pair(self, dataset: str) -> tuple[str, str] | None:
        """COCO: Faster R-CNN R50 -> MobileNetV2 (the others have an R101 teacher); shapes: its one pair."""
        return tv_archs.PAIRS["r50_mbv2"] if dataset != "shapes" else super().smallest_pair(dataset)

    # -- recipes and method defaults ---------------------------------------------------------
    def recipe(self, dataset: str, student: str, preset: str | None = None) -> Recipe:
        """``1x``/``2x`` (COCO: mmdetection's schedules for torchvision's archs, mdistiller's detectron2 solver for
        ``d2_*``) and ``cpu`` (``shapes``, diffbench's own); values and sources in :mod:`.recipes`."""
        recipe = recipes.preset(preset or ("cpu" if dataset == "shapes" else "1x"), student)
        if recipe is None:
            raise unknown("detection recipe preset", preset, self.presets)
        return recipe

    def teacher_recipe(self, dataset: str, arch: str, preset: str | None = None) -> Recipe:
        """``cpu``: :data:`~.recipes.CPU_TEACHER_EPOCHS` with decays at :data:`~.recipes.CPU_TEACHER_MILESTONES`;
        COCO: the student's."""
        recipe = self.recipe(dataset, arch, preset)
        if (preset or ("cpu" if dataset == "shapes" else "1x")) == "cpu":
            return recipe.updated(epochs=recipes.CPU_TEACHER_EPOCHS, milestones=recipes.CPU_TEACHER_MILESTONES)
        return recipe

    def pkd_setting(self, dataset: str, student: str) -> tuple[float, list[str] | None]:
        """``(weight, taps)`` of the PKD-scaled feature term of FitNet and DiffKD (``taps`` ``None``: every level).

        COCO: mmrazor's (:data:`PKD_COCO`): weight 6 on the sum over P2-P5 (Faster R-CNN), 10 over P3-P6
        (RetinaNet). ``shapes``: :data:`SHAPES_PKD_WEIGHT` on the mean over all 5 levels (``6 / 5`` on each term).
        """
        if dataset == "shapes":
            levels = d2.LEVELS if d2.is_d2(student) else tv_archs.levels(student)
            return SHAPES_PKD_WEIGHT / len(levels), None
        weight, taps = PKD_COCO[self.family(student)]
        return weight, list(taps)

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        """Detection settings, the same on both backends; KD/DKD on RetinaNet are refused here with the reason.

        * ``kd``: T=1, all weights 1 (mdistiller has no detection KD; T=1 and weight 1 are its detection
          DKD settings, and DKD with alpha=beta=1 is KD).
        * ``dkd``: mdistiller ``detection/model/config.py`` L16-20 (@a08d46f): alpha 1, beta 0.25, T 1, no warm-up;
          the detector losses keep weight 1 (``RCNNKD`` adds ``loss_dkd`` unweighted).
        * ``fitnet``: PKD (``feat_norm="pkd"``, :mod:`methods.feature_norm`) on the FPN maps. On COCO *without an
          adapter* (``adapter="none"``), as mmrazor's PKD configs have none (both FPNs are 256-channel maps at the
          same strides; FitNet's ReLU regressor cannot produce the negative half of an FPN map). ``shapes`` keeps
          FitNet's own regressor, one per level (its jobs' identities are pinned; ``--set fitnet.adapter=none``
          runs mmrazor's form there). Weight and levels: :meth:`pkd_setting`. A raw MSE on two
          detectors' FPN maps depends on their activation scales (it started ~10x above the detector losses on
          ``shapes`` and cost FitNet 6 AP); CIFAR's weight 100 on a thin hint layer even more.
        * ``diffkd``: feature DiffKD on the FPN levels of :meth:`pkd_setting`, kernel 3, no AE, no logits, one
          module shared by all levels (the FPN levels share one feature space: RPN and RetinaNet heads are shared
          across levels, so one denoiser fits them all with a fifth of the parameters), with the same PKD scaling
          and weight as FitNet (diffusion loss weight 1 as the official).
        """
        for arch in (teacher, student):
            if self.family(arch) == "retinanet" and method in LOGIT_METHODS:
                raise UserError(
                    f"method {method!r} distils softmax class logits, but RetinaNet's classifier is sigmoid-based "
                    f"({arch!r} scores every class independently, with no background class); use fitnet or "
                    "diffkd on retinanet pairs, or a fasterrcnn_* pair for kd/dkd"
                )
        if method == "kd":
            return {"temperature": 1.0, "ce_weight": 1.0, "kd_weight": 1.0}
        if method == "dkd":
            return {"alpha": 1.0, "beta": 0.25, "temperature": 1.0, "ce_weight": 1.0, "warmup": 0}
        weight, taps = self.pkd_setting(dataset, student)
        chosen = {} if taps is None else {"taps": taps}
        if method == "fitnet":
            adapter = {} if dataset == "shapes" else {"adapter": "none"}
            return {"feat_weight": weight, "ce_weight": 1.0, "shared": False, "feat_norm": "pkd", **adapter, **chosen}
        if method == "diffkd":
            return {
                "use_ae": False,
                "distill_logits": False,
                "feat_kernel_size": 3,
                "share_levels": True,
                "feat_norm": "pkd",
                "kd_weight": weight,
                "diff_weight": 1.0,
                "ae_weight": 1.0,
                "ce_weight": 1.0,
                **chosen,
            }
        return {}


register_spec(DetectionSpec())
