"""detectron2 backend: preset models, strict model-zoo checkpoints, RCNNKD pairing, methods, evaluation.

Skipped where detectron2 is not installed (CI installs it from ``../shared/vendor``; see ``.ci/run``).
Facts come from detectron2 itself (its own training forward, checkpointer and box head run by hand),
from mdistiller's MobileNetV2 layout, and from torchvision's equivalent detectors.
"""

from __future__ import annotations

import copy
import importlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("detectron2", reason="detectron2 is not installed (see the README's detectron2 section)")
# the backend first: it imports detectron2 with its import-time torch.jit deprecation warnings silenced
backend = importlib.import_module("tasks.detection.d2.backend")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.models import mobilenet_v2  # noqa: E402

from methods import build_method  # noqa: E402
from methods.base import Progress, UserError  # noqa: E402
from methods.dkd import dkd_loss  # noqa: E402
from methods.kd import kd_loss  # noqa: E402
from tasks.base import get_task  # noqa: E402
from tasks.detection import d2  # noqa: E402
from tasks.detection.coco_eval import METRICS  # noqa: E402
from tasks.detection.d2.mobilenetv2 import MobileNetV2  # noqa: E402
from tasks.detection.data import CocoDetection, collate  # noqa: E402
from tasks.detection.models import build_detector  # noqa: E402

CPU = torch.device("cpu")
TASK = get_task("detection")
R101, R50, R18, MV2 = (f"d2_faster_rcnn_{b}_FPN" for b in ("R_101", "R_50", "R_18", "MV2"))


def batch(n: int = 2, size: int = 64, seed: int = 0) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Tiny images with two boxes each (labels 1 and 3; the ``shapes`` config resizes them to 128)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    boxes = torch.tensor([[4.0, 6.0, 30.0, 28.0], [34.0, 30.0, 60.0, 62.0]]) * size / 64
    return images, [{"boxes": boxes.clone(), "labels": torch.tensor([1, 3])} for _ in range(n)]


def n_params(model: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


@pytest.fixture(scope="module")
def shapes_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The ``cpu`` pair on ``shapes`` settings: an RGB teacher (R18) and a BGR student (MobileNetV2)."""
    torch.manual_seed(0)
    teacher = TASK.build_model(R18, 4, "shapes").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = TASK.build_model(MV2, 4, "shapes").train()
    TASK.check_pair(student, teacher)
    return teacher, student


# -- models --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [R101, R50, R18])
def test_resnet_presets_are_torchvisions_detector_with_detectron2s_box_regressor(arch: str) -> None:
    """Same Faster R-CNN FPN as torchvision's (ResNet, FPN, 3-anchor RPN head, 2x1024 FC box head); detectron2
    regresses boxes for the 80 foreground classes only, torchvision for the background too (4 x 1024 + 4 more)."""
    model = TASK.build_model(arch, 81, "coco")
    ref = build_detector(arch.replace("d2_faster_rcnn_R_", "fasterrcnn_r").removesuffix("_FPN"), 81, "coco")
    assert n_params(model) == n_params(ref) - (4 * 1024 + 4)
    if arch == R50:  # torchvision's documented fasterrcnn_resnet50_fpn (91 classes) is 41,755,286
        assert n_params(model) == 41_755_286 - (10 * 1025 + 44 * 1025) == 41_699_936
    cfg = model.d2_cfg
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80 and model.roi_heads.box_predictor.cls_score.out_features == 81
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    # model zoo: FrozenBN, stem + res2 frozen (FREEZE_AT 2)
    assert type(model.backbone.bottom_up.stem.conv1.norm).__name__ == "FrozenBatchNorm2d"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.bottom_up.stem.", "backbone.bottom_up.res2.")) for n in frozen)
    fmt = (cfg.INPUT.FORMAT, tuple(cfg.MODEL.PIXEL_STD))
    assert fmt == (("RGB", (57.375, 57.120, 58.395)) if arch == R18 else ("BGR", (1.0, 1.0, 1.0)))
    assert "detectron2.model_zoo" not in sys.modules  # its configs were read by path


def test_mobilenetv2_has_mdistillers_layout() -> None:
    """mdistiller's MobileNetV2 keys and stages; the convs and norms are torchvision's ``features[:18]``."""
    model = TASK.build_model(MV2, 81, "coco")
    sd = {k.removeprefix("backbone.bottom_up."): tuple(v.shape) for k, v in model.state_dict().items()}
    assert sd["features.0.0.weight"] == (32, 3, 3, 3) and "features.0.1.running_var" in sd  # stem conv, FrozenBN
    assert sd["features.1.conv.0.weight"] == (32, 1, 3, 3) and sd["features.1.conv.3.weight"] == (16, 32, 1, 1)
    assert sd["features.2.conv.0.weight"] == (96, 16, 1, 1) and sd["features.2.conv.3.weight"] == (96, 1, 3, 3)
    assert sd["features.17.conv.6.weight"] == (320, 960, 1, 1) and "features.18.conv.0.weight" not in sd
    assert sd["backbone.fpn_lateral2.weight"] == (256, 24, 1, 1)
    assert sd["backbone.fpn_lateral5.weight"] == (256, 320, 1, 1)
    shapes = {k: (v.channels, v.stride) for k, v in model.backbone.bottom_up.output_shape().items()}
    assert shapes == {"m2": (24, 4), "m3": (32, 8), "m4": (96, 16), "m5": (320, 32)}
    assert all(p.requires_grad for p in model.parameters())  # mdistiller's DKD-MV2-R50: FREEZE_AT 0
    bn = MobileNetV2(["m2", "m3", "m4", "m5"], norm="BN")
    assert n_params(bn) == n_params(mobilenet_v2(weights=None).features[:18])


def test_mobilenetv2_freezes_like_mdistiller() -> None:
    """FREEZE_AT 2 freezes the stem, the unexpanded block and the m2 group (mdistiller's stage counter)."""
    m = MobileNetV2(["m2", "m3"], norm="BN", freeze_at=2)
    frozen = [i for i, layer in enumerate(m.features) if not any(p.requires_grad for p in layer.parameters())]
    assert frozen == [0, 1, 2, 3]
    assert type(m.features[3].conv[1]).__name__ == "FrozenBatchNorm2d"
    assert isinstance(m.features[4].conv[1], torch.nn.BatchNorm2d)


def test_shapes_overlay_and_tap_specs(shapes_pair) -> None:
    teacher, student = shapes_pair
    cfg = student.d2_cfg
    assert cfg.INPUT.MIN_SIZE_TRAIN == (128,) and cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[16], [32], [64], [128], [256]]
    assert cfg.MODEL.ROI_BOX_HEAD.FC_DIM == 256 and cfg.MODEL.MOBILENETV2.NORM == "BN"
    assert isinstance(teacher.backbone.bottom_up.stem.conv1.norm, torch.nn.BatchNorm2d)
    # the same tap names and strides as the torchvision backend, so FitNet/DiffKD work unchanged
    assert TASK.tap_specs(MV2, 4, "shapes") == TASK.tap_specs("fasterrcnn_mbv3s", 4, "shapes")
    feats = student.backbone(torch.zeros(1, 3, 128, 128))
    for name, spec in TASK.tap_specs(MV2, 4, "shapes").items():
        if spec.stride:
            assert tuple(feats[name.removeprefix("fpn.")].shape) == (1, 256, 128 // spec.stride, 128 // spec.stride)


# -- checkpoints ---------------------------------------------------------------------------------------------
def _zoo_pkl(state: dict[str, torch.Tensor], path: Path, **extra: torch.Tensor) -> Path:
    """The model zoo's ``model_final_*.pkl`` layout: numpy arrays under ``model`` and an ``__author__``."""
    model = {k: v.numpy() for k, v in {**state, **extra}.items()}
    with path.open("wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)
    return path


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_model_zoo_pkl_and_detectron2_pth_load_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = TASK.build_model(R18, 4, "shapes")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    # old model-zoo files still carry pixel_mean/std: detectron2 ignores them, so do we
    pkl = _zoo_pkl(src.state_dict(), tmp_path / "model_final.pkl", pixel_mean=torch.zeros(3, 1, 1))
    dst = TASK.build_model(R18, 4, "shapes")
    assert not _same(src, dst)
    TASK.load_weights(dst, pkl)
    assert _same(src, dst)
    # detectron2's own .pth, written by its checkpointer
    DetectionCheckpointer(src, save_dir=str(tmp_path)).save("model_0004999", iteration=4999)
    dst2 = TASK.build_model(R18, 4, "shapes")
    TASK.load_weights(dst2, tmp_path / "model_0004999.pth")
    assert _same(src, dst2)
    # and diffbench's own export (what a grid's teacher job leaves)
    torch.save({"student": src.state_dict(), "arch": R18}, tmp_path / "student.pt")
    dst3 = TASK.build_model(R18, 4, "shapes")
    TASK.load_weights(dst3, tmp_path / "student.pt")
    assert _same(src, dst3)


def test_wrong_checkpoints_are_refused_in_one_line_and_leave_the_model_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = TASK.build_model(R18, 4, "shapes").state_dict()
    model = TASK.build_model(R18, 4, "shapes")
    before = copy.deepcopy(model.state_dict())
    cases = {
        "missing.pkl": ({k: v for k, v in state.items() if "box_head" not in k}, "missing 4 .*box_head"),
        "unexpected.pkl": ({**state, "roi_heads.mask_head.w": torch.zeros(1)}, "unexpected 1 .*mask_head"),
        "five_classes.pkl": (TASK.build_model(R18, 5, "shapes").state_dict(), "shape mismatch 4 .*box_predictor"),
        "other_arch.pkl": (TASK.build_model(MV2, 4, "shapes").state_dict(), "missing .*unexpected"),
    }
    for name, (sd, why) in cases.items():
        path = _zoo_pkl(sd, tmp_path / name)
        with pytest.raises(UserError, match=f"checkpoint '.*{name}' does not fit {R18}: {why}") as err:
            TASK.load_weights(model, path)
        assert "\n" not in str(err.value)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="junk.pkl.*cannot be loaded"):
        TASK.load_weights(model, tmp_path / "junk.pkl")
    with pytest.raises(UserError, match="does not exist"):
        TASK.load_weights(model, tmp_path / "absent.pkl")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- the paired forward --------------------------------------------------------------------------------------
def test_losses_are_detectron2s_own_training_forward(shapes_pair) -> None:
    """Step by step (for the taps), the student's losses are exactly ``GeneralizedRCNN.forward``'s."""
    _, student = shapes_pair
    images, targets = batch()
    torch.manual_seed(3)
    ours = TASK.paired_forward(student, None, (images, targets), CPU)
    inputs = [
        {
            "image": F.interpolate(img[None], size=(128, 128), mode="bilinear", align_corners=False)[0].flip(0) * 255,
            "instances": Instances((128, 128), gt_boxes=Boxes(t["boxes"] * 2), gt_classes=t["labels"] - 1),
        }
        for img, t in zip(images, targets, strict=True)
    ]
    torch.manual_seed(3)
    with EventStorage():
        theirs = student(inputs)
    assert set(ours.losses) == set(theirs) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    for k, v in theirs.items():
        torch.testing.assert_close(ours.losses[k], v)
    assert ours.teacher_taps == {} and ours.batch_size == 2


def test_teacher_scores_the_students_sampled_proposals(shapes_pair) -> None:
    """Redo the student's sampling and run the teacher's pooler, box head and classifier by hand: same rows."""
    teacher, student = shapes_pair
    images, targets = batch()
    torch.manual_seed(7)
    out = TASK.paired_forward(student, teacher, (images, targets), CPU)

    pixels = [F.interpolate(i[None], size=(128, 128), mode="bilinear", align_corners=False)[0] * 255 for i in images]
    gts = [Instances((128, 128), gt_boxes=Boxes(t["boxes"] * 2), gt_classes=t["labels"] - 1) for t in targets]
    torch.manual_seed(7)
    with EventStorage(), torch.no_grad():
        s_img = student.preprocess_image([{"image": p.flip(0)} for p in pixels])  # the student reads BGR
        s_feat = student.backbone(s_img.tensor)
        proposals, _ = student.proposal_generator(s_img, s_feat, gts)
        sampled = student.roi_heads.label_and_sample_proposals(proposals, gts)
        t_img = teacher.preprocess_image([{"image": p} for p in pixels])  # mdistiller's R18 reads RGB
        t_feat = teacher.backbone(t_img.tensor)
        heads = teacher.roi_heads
        pooled = heads.box_pooler([t_feat[f] for f in ("p2", "p3", "p4", "p5")], [p.proposal_boxes for p in sampled])
        by_hand = heads.box_predictor.cls_score(heads.box_head(pooled))
    torch.testing.assert_close(out.teacher_taps["logits"], by_hand)
    torch.testing.assert_close(out.target, torch.cat([p.gt_classes for p in sampled]))
    for level in ("p2", "p6"):
        torch.testing.assert_close(out.teacher_taps[f"fpn.{level}"], t_feat[level])
    # detectron2's class order: foreground 0..K-1 (labels 1 and 3 -> 0 and 2), background last (K = 3)
    rows = out.student_taps["logits"].shape
    assert rows == out.teacher_taps["logits"].shape == (out.target.numel(), 4)
    assert set(out.target.tolist()) <= {0, 2, 3} and 3 in out.target.tolist()
    fg = int((out.target < 3).sum())
    assert 0 < fg <= int(0.25 * 128) * 2 and out.target.numel() <= 2 * 128  # ROI sampler: 128 per image, 25% fg
    assert not out.teacher_taps["logits"].requires_grad and out.student_taps["logits"].requires_grad


def test_teacher_identical_to_student_gives_identical_taps(shapes_pair) -> None:
    _, student = shapes_pair
    twin = copy.deepcopy(student).eval()
    student.eval()  # BN in eval mode on both; the sampler still runs
    try:
        out = TASK.paired_forward(student, twin, batch(), CPU)
    finally:
        student.train()
    for name, t in out.teacher_taps.items():
        torch.testing.assert_close(out.student_taps[name].detach(), t, rtol=1e-4, atol=1e-4)


def test_kd_and_dkd_are_the_classification_losses_on_the_box_rows(shapes_pair) -> None:
    teacher, student = shapes_pair
    out = TASK.paired_forward(student, teacher, batch(), CPU)
    s, t, y = out.student_taps["logits"], out.teacher_taps["logits"], out.target
    specs_s, specs_t = TASK.tap_specs(MV2, 4, "shapes"), TASK.tap_specs(R18, 4, "shapes")
    dkd_hp = TASK.method_defaults("dkd", "shapes", R18, MV2)
    assert (dkd_hp["alpha"], dkd_hp["beta"], dkd_hp["temperature"]) == (1.0, 0.25, 1.0)  # mdistiller's detection DKD
    dkd = build_method("dkd", specs_s, specs_t, **dkd_hp)
    got = dkd(out.student_taps, out.teacher_taps, y, Progress(1, 4))["dkd"]
    torch.testing.assert_close(got, dkd_loss(s, t, y, 1.0, 0.25, 1.0))
    kd = build_method("kd", specs_s, specs_t, **TASK.method_defaults("kd", "shapes", R18, MV2))
    torch.testing.assert_close(kd(out.student_taps, out.teacher_taps, y, Progress(1, 4))["kd"], kd_loss(s, t, 1.0))


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnet", "diffkd"])
def test_method_terms_reach_the_student_only(shapes_pair, method: str) -> None:
    teacher, student = shapes_pair
    student.zero_grad(set_to_none=True)
    hp = TASK.method_defaults(method, "shapes", R18, MV2)
    m = build_method(method, TASK.tap_specs(MV2, 4, "shapes"), TASK.tap_specs(R18, 4, "shapes"), **hp)
    out = TASK.paired_forward(student, teacher, batch(1), CPU)
    extra = m(out.student_taps, out.teacher_taps, out.target, Progress(1, 4))
    assert extra and all(torch.isfinite(v) and v.ndim == 0 for v in extra.values())
    sum(extra.values()).backward()
    probe = student.roi_heads.box_predictor.cls_score.weight if method in ("kd", "dkd") else None
    probe = probe if probe is not None else student.backbone.fpn_output2.weight
    assert probe.grad is not None and probe.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    student.zero_grad(set_to_none=True)


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnet"])
def test_a_diverged_student_gives_nan_losses_not_a_crash(shapes_pair, method: str) -> None:
    """detectron2's RPN raises on non-finite proposals; like the torchvision backend, the step returns NaN
    losses (the training loop then fails the job with that reason) and every tap a method reads."""
    teacher, student = shapes_pair
    broken = copy.deepcopy(student)
    with torch.no_grad():
        broken.proposal_generator.rpn_head.anchor_deltas.bias.fill_(float("nan"))
    out = TASK.paired_forward(broken, teacher, batch(), CPU)
    assert set(out.losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(torch.isnan(v) and v.requires_grad for v in out.losses.values())
    assert set(out.student_taps) == set(out.teacher_taps) == set(TASK.tap_specs(MV2, 4, "shapes"))
    hp = TASK.method_defaults(method, "shapes", R18, MV2)
    m = build_method(method, TASK.tap_specs(MV2, 4, "shapes"), TASK.tap_specs(R18, 4, "shapes"), **hp)
    terms = m(out.student_taps, out.teacher_taps, out.target, Progress(1, 4))
    total = sum(out.losses.values()) + sum(terms.values())
    assert not torch.isfinite(total)
    total.backward()  # the loop's backward still runs before it stops the job


def test_mismatched_pairs_are_refused(shapes_pair) -> None:
    teacher, student = shapes_pair
    with pytest.raises(UserError, match="resize differently.*MIN_SIZE_TRAIN"):
        TASK.check_pair(student, TASK.build_model(R18, 4, "coco"))
    with pytest.raises(UserError, match="class counts"):
        TASK.check_pair(student, TASK.build_model(R18, 5, "shapes"))
    with pytest.raises(UserError, match="different detection backends"):
        TASK.check_pair(student, build_detector("fasterrcnn_r18", 4, "shapes"))


# -- evaluation ----------------------------------------------------------------------------------------------
def _coco(root: Path) -> CocoDetection:
    """Two 64x48 images with sparse category ids 3 and 7."""
    from PIL import Image

    (root / "val").mkdir(parents=True)
    for i in (1, 2):
        Image.new("RGB", (64, 48), (60 * i, 0, 0)).save(root / "val" / f"{i}.png")
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 6, 20, 16], "area": 320, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 10, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [10, 5, 40, 40], "area": 1600, "iscrowd": 0},
    ]
    doc = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in (1, 2)],
        "annotations": anns,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    (root / "val.json").write_text(json.dumps(doc))
    return CocoDetection(root / "val.json", root / "val", train=False)


def test_evaluation_maps_detectron2_classes_back_to_coco_categories(tmp_path: Path) -> None:
    """A detector answering the ground truth in detectron2's classes (label - 1) scores 100 AP."""
    ds = _coco(tmp_path)
    model = TASK.build_model(MV2, 3, "shapes")
    sizes_seen = []

    def oracle(inputs: list[dict]) -> list[dict]:
        outs = []
        for inp in inputs:
            sizes_seen.append((tuple(inp["image"].shape), inp["height"], inp["width"]))
            image_id = ds.ids[len(sizes_seen) - 1]
            _, t = ds[ds.ids.index(image_id)]
            inst = Instances((inp["height"], inp["width"]))
            inst.pred_boxes, inst.scores = Boxes(t["boxes"]), torch.ones(len(t["labels"]))
            inst.pred_classes = t["labels"] - 1
            outs.append({"instances": inst})
        return outs

    model.forward = oracle
    loader = DataLoader(ds, batch_size=2, collate_fn=collate)
    metrics = TASK.evaluate(model, loader, CPU)
    assert set(METRICS) <= set(metrics) and metrics["bbox_AP"] == pytest.approx(100.0)
    # ResizeShortestEdge(128, max 128): 48x64 -> 128x171 -> long side capped: 96x128; answers at 48x64
    assert sizes_seen == [((3, 96, 128), 48, 64)] * 2


def test_ground_truth_matches_detectron2s_own_coco_loader(tmp_path: Path) -> None:
    """detectron2's ``load_coco_json`` on the same file: its contiguous class ids are our labels - 1 (the rule the
    backend applies to every batch), its XYWH boxes our XYXY boxes, image by image (crowd boxes aside)."""
    from detectron2.data.datasets import load_coco_json
    from detectron2.structures import BoxMode

    ds = _coco(tmp_path)
    theirs = load_coco_json(str(tmp_path / "val.json"), str(tmp_path / "val"), dataset_name="diffbench_test_gt")
    assert [d["image_id"] for d in theirs] == ds.ids
    for record in theirs:
        image, target = ds[ds.ids.index(record["image_id"])]
        assert (record["height"], record["width"]) == tuple(image.shape[-2:])
        anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        assert [a["category_id"] for a in anns] == (target["labels"] - 1).tolist()
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        torch.testing.assert_close(torch.tensor(boxes, dtype=torch.float32), target["boxes"])
        gt = backend._gt_instances(target, (96, 128), (2.0, 2.0))
        assert gt.gt_classes.tolist() == [a["category_id"] for a in anns]


def test_real_model_predictions_are_torchvision_format(shapes_pair) -> None:
    _, student = shapes_pair
    student.eval()
    images, _ = batch(1, size=64)
    bgr = F.interpolate(images[0][None], size=(128, 128), mode="bilinear", align_corners=False)[0].flip(0) * 255
    try:
        with torch.no_grad():
            ours = backend.predict(student, images)[0]
            raw = student([{"image": bgr, "height": 64, "width": 64}])
    finally:
        student.train()
    inst = raw[0]["instances"]
    torch.testing.assert_close(ours["labels"], inst.pred_classes + 1)
    torch.testing.assert_close(ours["boxes"], inst.pred_boxes.tensor)
    assert ours["boxes"].numel() == 0 or float(ours["boxes"].max()) <= 64  # back in the original image's pixels


def test_resize_follows_resize_shortest_edge() -> None:
    model = TASK.build_model(MV2, 3, "coco")
    assert backend.resized_shape(model, 480, 640, train=False) == (800, 1067)
    assert backend.resized_shape(model, 400, 2000, train=False) == (267, 1333)  # long side capped at 1333
    np.random.seed(0)
    assert {backend.resized_shape(model, 480, 640, train=True)[0] for _ in range(60)} == {640, 672, 704, 736, 768, 800}
    assert d2.PAIRS["cpu"] == (R18, MV2)


# -- a grid through the CLI ----------------------------------------------------------------------------------
def test_two_epoch_d2_grid_on_shapes_reaches_the_report(tmp_path: Path) -> None:
    """``diffbench run`` with the detectron2 pair on a tiny ``shapes`` folder (the real layout, 8 + 4 images),
    then ``diffbench report``: teacher, vanilla, kd and fitnet jobs finish and land in one leaderboard."""
    from typer.testing import CliRunner

    from bench.cli.app import app
    from tasks.detection.data import SHAPES_VERSION, make_shapes

    data, out = tmp_path / "shapes", tmp_path / "results"
    make_shapes(data, num_train=8, num_val=4)
    (data / "READY").write_text(json.dumps({"version": SHAPES_VERSION}))  # what ensure_shapes writes last
    runner = CliRunner()
    args = ["run", "--task", "detection", "--pairs", f"{R18}:{MV2}", "--methods", "kd,fitnet", "--executor", "local"]
    args += ["--epochs", "2", "--max-steps", "2", "--batch-size", "4", "--data-dir", str(data), "--output", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output  # the exit code counts failed jobs
    rep = runner.invoke(app, ["report", "--task", "detection", "--format", "markdown", "--output", str(out)])
    assert rep.exit_code == 0, rep.output
    table = rep.output
    for needle in (R18, MV2, "vanilla", "kd", "fitnet"):
        assert needle in table, table
