"""Detection task: zoo facts, aligned taps for every preset pair, shared proposals, methods, refusals."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn, retinanet_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

from methods import build_method
from methods.base import Progress, UserError
from tasks.base import get_task
from tasks.detection.models import PAIRS, build_detector, fpn_level_names
from tasks.detection.task import COCO_CATEGORY_IDS, DetectionTask

CPU = torch.device("cpu")
TASK: DetectionTask = get_task("detection")  # type: ignore[assignment]


def batch(n: int = 1, size: int = 64, seed: int = 0) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Tiny images with two boxes each (the ``shapes`` transform resizes them to 128)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    boxes = torch.tensor([[4.0, 6.0, 30.0, 28.0], [34.0, 30.0, 60.0, 62.0]]) * size / 64
    targets = [{"boxes": boxes.clone(), "labels": torch.tensor([1, 3])} for _ in range(n)]
    return images, targets


@pytest.fixture(scope="module")
def pair_outputs() -> dict[str, tuple]:
    """Every preset pair built once (``shapes`` settings, 4 classes) and run on one 64x64 image."""
    torch.manual_seed(0)
    out = {}
    for key, (t_arch, s_arch) in PAIRS.items():
        teacher = TASK.build_model(t_arch, 4, "shapes")
        student = TASK.build_model(s_arch, 4, "shapes")
        TASK.check_pair(student, teacher)
        TASK.attach_taps(student, s_arch, 4, "shapes")
        TASK.attach_taps(teacher, t_arch, 4, "shapes")
        student.train()
        res = TASK.paired_forward(student, teacher, batch(), CPU)
        out[key] = (t_arch, s_arch, res)
    return out


@pytest.mark.parametrize("key", list(PAIRS))
def test_preset_pair_taps_align(pair_outputs: dict[str, tuple], key: str) -> None:
    t_arch, s_arch, res = pair_outputs[key]
    s_specs, t_specs = TASK.tap_specs(s_arch, 4, "shapes"), TASK.tap_specs(t_arch, 4, "shapes")
    assert s_specs == t_specs
    assert set(res.student_taps) == set(res.teacher_taps) == set(s_specs)
    for name, spec in s_specs.items():
        s, t = res.student_taps[name], res.teacher_taps[name]
        assert s.shape == t.shape, name
        assert not t.requires_grad
        if spec.stride:  # an FPN map of the 128x128 transformed image
            assert spec.channels == 256 and set(spec.roles) == {"hint", "feature"}
            assert s.shape == (1, 256, 128 // spec.stride, 128 // spec.stride)
        else:
            assert s.shape[1] == spec.channels == 4 and s.shape[0] == res.target.shape[0]
    if t_arch.startswith("retinanet"):
        assert "logits" not in s_specs and res.target is None
        assert set(res.losses) == {"classification", "bbox_regression"}
    else:
        assert [s.stride for s in s_specs.values()] == [4, 8, 16, 32, 64, 0]
        assert set(res.losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in res.losses.values())


def test_teacher_scores_the_students_sampled_proposals() -> None:
    """A teacher that *is* the student (same weights, both in eval mode) must give the very same logits."""
    torch.manual_seed(0)
    student = build_detector("fasterrcnn_r18", 4, "shapes")
    teacher = copy.deepcopy(student)
    student.eval()  # BN in eval mode on both sides; the sampler still runs (it does not look at the mode)
    res = TASK.paired_forward(student, teacher, batch(2), CPU)
    s, t = res.student_taps["logits"], res.teacher_taps["logits"]
    assert s.shape == t.shape and s.shape[0] == res.target.shape[0]
    torch.testing.assert_close(s.detach(), t, rtol=1e-4, atol=1e-4)
    # torchvision's sampler: at most 128 RoIs per image here (shapes setting), at most 25% foreground
    assert s.shape[0] <= 2 * 128
    fg = int((res.target > 0).sum())
    assert 0 < fg <= int(0.25 * 128) * 2
    assert set(res.target.tolist()) <= {0, 1, 3}  # background or the labels of the boxes given
    for name in ("fpn.p2", "fpn.p6"):
        torch.testing.assert_close(res.student_taps[name].detach(), res.teacher_taps[name])


@pytest.fixture(scope="module")
def cpu_pair() -> tuple:
    t_arch, s_arch = PAIRS["cpu"]
    torch.manual_seed(0)
    teacher = TASK.build_model(t_arch, 4, "shapes").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return t_arch, s_arch, teacher


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnet", "diffkd"])
def test_method_losses_backpropagate_into_student(cpu_pair: tuple, method: str) -> None:
    t_arch, s_arch, teacher = cpu_pair
    torch.manual_seed(1)
    student = TASK.build_model(s_arch, 4, "shapes").train()
    hp = TASK.method_defaults(method, "shapes", t_arch, s_arch)
    m = build_method(method, TASK.tap_specs(s_arch, 4, "shapes"), TASK.tap_specs(t_arch, 4, "shapes"), **hp)
    out = TASK.paired_forward(student, teacher, TASK.synthetic_batch(1, 4, CPU), CPU)
    terms = {k: m.task_weight * v for k, v in out.losses.items()}
    extra = m(out.student_taps, out.teacher_taps, out.target, Progress(1, 8))
    assert extra and all(torch.isfinite(v) and v.ndim == 0 for v in extra.values())
    sum(extra.values()).backward()
    # the distillation terms alone reach the student's FPN (feature methods) or box head (logit methods)
    probe = student.roi_heads.box_predictor.cls_score.weight if method in ("kd", "dkd") else None
    probe = probe if probe is not None else next(student.backbone.fpn.layer_blocks[0].parameters())
    assert probe.grad is not None and probe.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert torch.isfinite(sum(terms.values()))


def test_method_defaults_follow_mdistiller_detection() -> None:
    t, s = PAIRS["r101_r18"]
    assert TASK.method_defaults("dkd", "coco", t, s) == {
        "alpha": 1.0, "beta": 0.25, "temperature": 1.0, "ce_weight": 1.0, "warmup": 0,
    }  # fmt: skip
    assert TASK.method_defaults("kd", "coco", t, s)["temperature"] == 1.0
    d = TASK.method_defaults("diffkd", "coco", t, s)
    assert d["distill_logits"] is False and d["use_ae"] is False and d["feat_kernel_size"] == 3
    # FPN feature terms on COCO are mmrazor's PKD: standardised maps, weight 6 on the sum over P2-P5 (P6 not
    # distilled), no adapter (see test_detection_presets for the sources)
    p2_p5 = ["fpn.p2", "fpn.p3", "fpn.p4", "fpn.p5"]
    assert (d["feat_norm"], d["kd_weight"], d["diff_weight"], d["taps"]) == ("pkd", 6.0, 1.0, p2_p5)
    f = TASK.method_defaults("fitnet", "coco", t, s)
    assert (f["feat_norm"], f["feat_weight"], f["adapter"], f["taps"]) == ("pkd", 6.0, "none", p2_p5)
    # shapes keeps its own choice: 6 over the mean of all 5 levels
    f = TASK.method_defaults("fitnet", "shapes", *PAIRS["cpu"])
    assert (f["feat_weight"], "adapter" in f, "taps" in f) == (pytest.approx(6.0 / 5), False, False)


def test_pkd_scaled_feature_terms_start_near_the_detector_losses(cpu_pair: tuple) -> None:
    """At initialisation the PKD term is 6 times the levels' mean of ``1 - r``, ``|r| < 1``: at most 12 whatever the
    FPN maps' scale, a small factor of the detector's losses (~2 at initialisation)."""
    t_arch, s_arch, teacher = cpu_pair
    torch.manual_seed(2)
    student = TASK.build_model(s_arch, 4, "shapes").train()
    out = TASK.paired_forward(student, teacher, TASK.synthetic_batch(2, 4, CPU), CPU)
    levels = len([k for k in out.student_taps if k.startswith("fpn.")])
    for method, term in (("fitnet", "fitnet"), ("diffkd", "kd_feat")):
        hp = TASK.method_defaults(method, "shapes", t_arch, s_arch)
        m = build_method(method, TASK.tap_specs(s_arch, 4, "shapes"), TASK.tap_specs(t_arch, 4, "shapes"), **hp)
        value = m(out.student_taps, out.teacher_taps, out.target, Progress(1, 8))[term].item()
        assert levels == 5 and 0 < value < 6.0 * 2, (method, value)


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_logit_methods_refused_on_retinanet_with_reason(method: str) -> None:
    t, s = PAIRS["retina_r101_r50"]
    with pytest.raises(UserError, match="sigmoid"):
        TASK.method_defaults(method, "coco", t, s)
    assert TASK.method_defaults("fitnet", "coco", t, s)  # feature methods are fine


def test_mismatched_pairs_are_refused() -> None:
    s = build_detector("fasterrcnn_mbv3s", 4, "shapes")
    t_coco = build_detector("fasterrcnn_r18", 4, "coco")
    with pytest.raises(UserError, match="different input transforms.*min_size"):
        TASK.check_pair(s, t_coco)
    r = build_detector("retinanet_r18", 4, "shapes")
    with pytest.raises(UserError, match="FPNs differ"):
        TASK.check_pair(s, r)
    t5 = build_detector("fasterrcnn_r18", 5, "shapes")
    with pytest.raises(UserError, match="class counts"):
        TASK.check_pair(s, t5)
    with pytest.raises(UserError, match="unknown detection arch"):
        TASK.build_model("fasterrcnn_r999", 4, "shapes")


def _no_bn_counter(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def test_coco_models_match_torchvision_layout_and_size(tmp_path: Path) -> None:
    """Our COCO R50 detectors have torchvision's keys, shapes and parameter counts (41,755,286 for
    fasterrcnn_resnet50_fpn, 34,014,999 for retinanet_resnet50_fpn, from torchvision's weight docs), so
    its COCO weight files load strictly; the 91 raw-id rows are cut to our 81 contiguous labels."""
    ours = build_detector("fasterrcnn_r50", 91, "coco")
    ref = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    assert _no_bn_counter(ours.state_dict()) == _no_bn_counter(ref.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == 41_755_286
    assert isinstance(ours.backbone.body.bn1, FrozenBatchNorm2d)
    assert [n for n, p in ours.backbone.body.named_parameters() if p.requires_grad][0].startswith("layer2")
    retina = build_detector("retinanet_r50", 91, "coco")
    ref_r = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    assert _no_bn_counter(retina.state_dict()) == _no_bn_counter(ref_r.state_dict())
    assert sum(p.numel() for p in retina.parameters()) == 34_014_999
    assert fpn_level_names(ours) == ["0", "1", "2", "3", "pool"] and fpn_level_names(retina) == [
        "0",
        "1",
        "2",
        "p6",
        "p7",
    ]

    # a torchvision-layout COCO file (no num_batches_tracked, 91 rows) into an 81-class model
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "coco.pth"
    torch.save(state, path)
    model81 = build_detector("fasterrcnn_r50", 81, "coco")
    TASK.load_weights(model81, path)
    cls = model81.roi_heads.box_predictor.cls_score.weight
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[11] == 13 and COCO_CATEGORY_IDS[-1] == 90
    torch.testing.assert_close(cls[0], state["roi_heads.box_predictor.cls_score.weight"][0])  # background
    torch.testing.assert_close(cls[12], state["roi_heads.box_predictor.cls_score.weight"][13])  # label 12 = cat 13
    reg = model81.roi_heads.box_predictor.bbox_pred.weight
    torch.testing.assert_close(reg[12 * 4 : 13 * 4], state["roi_heads.box_predictor.bbox_pred.weight"][13 * 4 : 14 * 4])
    torch.testing.assert_close(model81.backbone.body.conv1.weight, state["backbone.body.conv1.weight"])
    with pytest.raises(UserError, match="does not fit"):
        TASK.load_weights(build_detector("fasterrcnn_r18", 81, "coco"), path)


def test_recipes() -> None:
    r = TASK.recipe("coco", "fasterrcnn_r18")
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.weight_decay, r.warmup_factor) == (
        12, 16, 0.02, (8, 11), 1e-4, 0.001,
    )  # fmt: skip
    assert r.warmup_epochs * 117_266 / 16 == pytest.approx(500, rel=0.01)  # 500 warm-up iterations
    assert TASK.recipe("coco", "fasterrcnn_r18", "2x").milestones == (16, 22)
    assert TASK.recipe("coco", "retinanet_r50").lr == 0.01
    cpu = TASK.recipe("shapes", "fasterrcnn_mbv3s")
    assert cpu.epochs <= 12 and cpu.batch_size == 8
    # teachers of the CPU preset train 3x longer (cached once per grid); COCO teachers use the 1x schedule
    teacher = TASK.teacher_recipe("shapes", "fasterrcnn_r18")
    assert (teacher.epochs, teacher.milestones) == (3 * cpu.epochs, (8, 11))
    assert teacher.updated(epochs=cpu.epochs, milestones=cpu.milestones) == TASK.recipe("shapes", "fasterrcnn_r18")
    assert TASK.teacher_recipe("coco", "fasterrcnn_r101") == TASK.recipe("coco", "fasterrcnn_r101")
    with pytest.raises(UserError, match="valid: 1x, 2x, cpu"):
        TASK.recipe("coco", "fasterrcnn_r18", "3x")


def test_synthetic_batch_shapes() -> None:
    images, targets = TASK.synthetic_batch(3, 4, CPU)
    assert len(images) == len(targets) == 3 and images[0].shape == (3, 128, 128)
    for t in targets:
        b = t["boxes"]
        assert (b[:, 2:] > b[:, :2]).all() and ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
