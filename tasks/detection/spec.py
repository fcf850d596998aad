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
from tasks.detection import d2
from tasks.recipe import Recipe
from tasks.spec import TaskSpec, register_spec

#: COCOeval's ``stats[0:6]`` in order, under the names the task's ``evaluate`` reports.
METRICS = ("bbox_AP", "AP50", "AP75", "APs", "APm", "APl")

#: mmrazor's PKD weight per FPN level for Faster R-CNN students (``loss_weight=6`` on each FPN level in
#: ``configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py``; PKD itself is
#: :mod:`methods.feature_norm`).
PKD_LEVEL_WEIGHT = 6.0

#: train2017 images with at least one non-crowd box (torchvision's reference filter): 117,266.
COCO_TRAIN_IMAGES = 117_266

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

#: methods that distil softmax class logits, which RetinaNet does not have.
LOGIT_METHODS = ("kd", "dkd")


def _coco_recipe(student: str, epochs: int, milestones: tuple[int, ...]) -> Recipe:
    """1x-style schedules: milestones at 2/3 and 11/12, weight decay 1e-4, SGD momentum 0.9.

    torchvision archs: the mmdetection/detectron2 default, batch 16, lr 0.02 (RetinaNet 0.01), 500 warm-up
    iterations. ``d2_*`` archs: mdistiller's DKD detection solver (``detection/configs/DKD/*.yaml``), batch 8,
    lr 0.01, 180k iterations with decays at 120k and 160k (12.3, 8.2 and 10.9 epochs of train2017), and
    detectron2's 1000 warm-up iterations (``SOLVER.WARMUP_ITERS``, factor 0.001).
    """
    if d2.is_d2(student):
        batch, lr, warmup_iters = 8, 0.01, 1000
    else:
        batch, warmup_iters = 16, 500
        lr = 0.01 if tv_archs.family(student) == "retinanet" else 0.02
    iters_per_epoch = -(-COCO_TRAIN_IMAGES // batch)
    return Recipe(
        epochs=epochs,
        batch_size=batch,
        lr=lr,
        weight_decay=1e-4,
        milestones=milestones,
        warmup_epochs=warmup_iters / iters_per_epoch,
        warmup_factor=0.001,
        num_workers=4,
    )


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

    def smallest_pair(self, dataset: str) -> tuple[str, str] | None:
        """COCO: Faster R-CNN R50 -> MobileNetV2 (the others have an R101 teacher); shapes: its one pair."""
        return tv_archs.PAIRS["r50_mbv2"] if dataset != "shapes" else super().smallest_pair(dataset)

    # -- recipes and method defaults ---------------------------------------------------------
    def recipe(self, dataset: str, student: str, preset: str | None = None) -> Recipe:
        """``1x``/``2x`` (COCO; mdistiller's solver for ``d2_*``) and ``cpu`` (``shapes``, a CPU grid in minutes;
        lr :data:`CPU_LR`)."""
        preset = preset or ("cpu" if dataset == "shapes" else "1x")
        if preset == "1x":
            return _coco_recipe(student, 12, (8, 11))
        if preset == "2x":
            return _coco_recipe(student, 24, (16, 22))
        if preset == "cpu":
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
        raise unknown("detection recipe preset", preset, self.presets)

    def teacher_recipe(self, dataset: str, arch: str, preset: str | None = None) -> Recipe:
        """``cpu``: :data:`CPU_TEACHER_EPOCHS` with decays at :data:`CPU_TEACHER_MILESTONES`; COCO: the student's."""
        recipe = self.recipe(dataset, arch, preset)
        if (preset or ("cpu" if dataset == "shapes" else "1x")) == "cpu":
            return recipe.updated(epochs=CPU_TEACHER_EPOCHS, milestones=CPU_TEACHER_MILESTONES)
        return recipe

    def _pkd_weight(self, arch: str) -> float:
        """PKD's weight 6 for the *mean* over FPN levels (6 / levels on each level's term): mmrazor gives each of 4
        levels weight 6 against COCO-sized detector losses; summed over our 5 levels that started FitNet's and
        DiffKD's feature terms at 13x the detector's loss on ``shapes`` (and cost FitNet 14 AP), far past the
        small factor a distillation term should start at. The mean keeps PKD's scale per level of signal."""
        levels = d2.LEVELS if d2.is_d2(arch) else tv_archs.levels(arch)
        return PKD_LEVEL_WEIGHT / len(levels)

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        """Detection settings, the same on both backends; KD/DKD on RetinaNet are refused here with the reason.

        * ``kd``: T=1, all weights 1 (mdistiller has no detection KD; T=1 and weight 1 are its detection
          DKD settings, and DKD with alpha=beta=1 is KD).
        * ``dkd``: mdistiller ``detection/model/config.py``: alpha 1, beta 0.25, T 1, no warm-up; the
          detector losses keep weight 1 (``RCNNKD`` adds ``loss_dkd`` unweighted).
        * ``fitnet``: one regressor per FPN level (methods.fitnet shares one only across equal strides) and
          PKD's feature scaling (``feat_norm="pkd"``, :mod:`methods.feature_norm`): the mean over levels of
          ``6 * MSE(norm(reg(f_s)), norm(f_t)) / 2``, 6 being mmrazor's PKD Faster R-CNN weight (see
          :meth:`_pkd_weight` for why the mean, not mmrazor's sum). A raw
          MSE on two detectors' FPN maps depends on their activation scales (it started ~10x above the
          detector losses on ``shapes`` and cost FitNet 6 AP); CIFAR's weight 100 on a thin hint layer even more.
        * ``diffkd``: feature DiffKD on every FPN level, kernel 3, no AE, no logits, one module shared by all
          levels (the FPN levels share one feature space: RPN and RetinaNet heads are shared across levels, so
          one denoiser fits them all with a fifth of the parameters), with the same PKD scaling as FitNet
          (standardised maps, feature term weight 6 over the mean of levels; diffusion loss weight 1 as the official).
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
        if method == "fitnet":
            return {"feat_weight": self._pkd_weight(student), "ce_weight": 1.0, "shared": False, "feat_norm": "pkd"}
        if method == "diffkd":
            return {
                "use_ae": False,
                "distill_logits": False,
                "feat_kernel_size": 3,
                "share_levels": True,
                "feat_norm": "pkd",
                "kd_weight": self._pkd_weight(student),
                "diff_weight": 1.0,
                "ae_weight": 1.0,
                "ce_weight": 1.0,
            }
        return {}


register_spec(DetectionSpec())
