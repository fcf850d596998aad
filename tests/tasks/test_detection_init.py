"""Detection students' starting weights: the COCO refusal, random-start setups, torchvision backbone files.

Files are written here in the real key layouts (torchvision's ImageNet classification state dicts, built with
``weights=None`` and perturbed so nothing matches by chance) and the tests assert that the tensors arrive.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18, resnet34
from torchvision.ops import FrozenBatchNorm2d

from bench.engine.build import build_models
from bench.jobs.grid import GridSpec, expand
from methods.base import UserError
from tasks.base import get_task
from tasks.spec import task_spec

CPU = torch.device("cpu")
TASK = get_task("detection")
PAIR = ("fasterrcnn_r18", "fasterrcnn_mbv3s")


def _perturbed(model: nn.Module, seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every float tensor moved off its initialisation (a stand-in for trained weights;
    BatchNorm variances stay positive)."""
    g = torch.Generator().manual_seed(seed)

    def moved(key: str, v: torch.Tensor) -> torch.Tensor:
        if not v.is_floating_point():
            return v
        return v + scale * (torch.rand if key.endswith("running_var") else torch.randn)(v.shape, generator=g)

    return {k: moved(k, v) for k, v in model.state_dict().items()}


# -- the refusal, torch-free, at expansion -------------------------------------------------------------------
def test_coco_jobs_must_name_their_start_and_the_refusal_says_how() -> None:
    grid = GridSpec(task="detection", dataset="coco", pairs=(PAIR,), methods=("kd",))
    with pytest.raises(UserError) as err:
        expand(grid)
    msg = str(err.value)
    assert "\n" not in msg and "fasterrcnn_r18 on coco" in msg  # the teacher job trains first, the same rule
    for needle in ("--student-checkpoint fasterrcnn_r18=FILE", "--student-checkpoint fasterrcnn_r18=random",
                   "ImageNet backbone or a whole detector", "trainable BatchNorm and no frozen stage",
                   "FrozenBatchNorm2d, stem and layer1 frozen"):  # fmt: skip
        assert needle in msg, msg
    both = {a: "random" for a in PAIR}
    jobs = expand(GridSpec(task="detection", dataset="coco", pairs=(PAIR,), methods=("kd",),
                           student_checkpoints=both))  # fmt: skip
    assert {j.student_init for j in jobs} == {"random"}
    # a given teacher file means no teacher job: then only the student needs a start
    with pytest.raises(UserError, match="fasterrcnn_mbv3s on coco"):
        expand(GridSpec(task="detection", dataset="coco", pairs=(PAIR,), methods=("kd",),
                        teacher_checkpoints={PAIR[0]: __file__}))  # fmt: skip
    spec = task_spec("detection")
    with pytest.raises(UserError, match="detectron2's FrozenBN, stem and res2 frozen"):
        spec.check_init("coco", "d2_faster_rcnn_R_18_FPN", None)
    for init in ("random", "file"):
        spec.check_init("coco", PAIR[1], init)
    spec.check_init("shapes", PAIR[1], None)  # shapes trains from scratch: unchanged
    assert spec.init_note("shapes", PAIR[1], "random") is None and spec.init_note("coco", PAIR[1], None) is None
    assert "trainable BatchNorm" in spec.init_note("coco", PAIR[1], "random")


# -- the model setup of each starting point ------------------------------------------------------------------
def _frozen(model: nn.Module) -> tuple[bool, list[str]]:
    body = model.backbone.body
    frozen_bn = any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    return frozen_bn, [n for n, p in body.named_parameters() if not p.requires_grad]


@pytest.mark.parametrize("arch", ["fasterrcnn_r18", "fasterrcnn_mbv3s"])
def test_random_start_on_coco_trains_batchnorm_and_every_stage(arch: str) -> None:
    frozen_bn, frozen = _frozen(TASK.build_model(arch, 81, "coco"))
    assert frozen_bn and frozen  # the fine-tuning setup (init None, or a file)
    assert _frozen(TASK.build_model(arch, 81, "coco", init="file")) == (frozen_bn, frozen)
    assert _frozen(TASK.build_model(arch, 81, "coco", init="random")) == (False, [])
    assert _frozen(TASK.build_model(arch, 4, "shapes", init="random")) == _frozen(TASK.build_model(arch, 4, "shapes"))


def test_the_random_start_is_logged_when_the_student_is_built() -> None:
    lines: list[str] = []
    build_models(TASK, PAIR[1], None, "vanilla", {}, 81, "coco", None, CPU, init="random", log=lines.append)
    assert any("trainable BatchNorm and no frozen stage" in line for line in lines), lines


# -- torchvision ImageNet backbones ----------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "classifier", "prefix"), [
    ("fasterrcnn_r18", resnet18, ""), ("retinanet_r18", resnet18, ""),
    ("fasterrcnn_mbv3s", mobilenet_v3_small, "features."),
])  # fmt: skip
def test_an_imagenet_backbone_in_torchvisions_layout_arrives_in_the_body(tmp_path, arch, classifier, prefix) -> None:
    src = _perturbed(classifier(weights=None))
    assert ("fc.weight" in src) if prefix == "" else ("classifier.0.weight" in src)  # the real file has its classifier
    path = tmp_path / "imagenet.pth"
    torch.save(src, path)  # torchvision's ImageNet files are plain state dicts
    model = TASK.build_model(arch, 81, "coco", init="file")
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.body.")}
    what = TASK.load_init(model, arch, path)
    body = model.backbone.body.state_dict()
    assert what == f"ImageNet backbone (torchvision {classifier.__name__} layout), {len(body)} tensors"
    for key, value in body.items():
        torch.testing.assert_close(value, src[prefix + key], rtol=0, atol=0, msg=key)
    for key, value in model.state_dict().items():  # FPN and heads keep their initialisation
        if key in head_before:
            assert torch.equal(value, head_before[key]), key


def test_a_backbone_file_loads_into_plain_batchnorm_with_or_without_its_counters(tmp_path) -> None:
    """On ``shapes`` (plain BatchNorm) too; a file without ``num_batches_tracked`` loads as torch loads it."""
    src = _perturbed(resnet18(weights=None), seed=1)
    torch.save({k: v for k, v in src.items() if not k.endswith("num_batches_tracked")}, tmp_path / "r18.pth")
    model = TASK.build_model("fasterrcnn_r18", 4, "shapes", init="file")
    TASK.load_init(model, "fasterrcnn_r18", tmp_path / "r18.pth")
    assert torch.equal(model.backbone.body.layer3[1].bn2.running_var, src["layer3.1.bn2.running_var"])


def test_a_file_that_is_not_the_backbone_is_refused_naming_keys(tmp_path) -> None:
    model = TASK.build_model("fasterrcnn_r18", 81, "coco", init="file")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(UserError, match=r"ImageNet resnet18 backbone.*unexpected \d+ \(e\.g\. layer1\.2\.") as err:
        TASK.load_init(model, "fasterrcnn_r18", tmp_path / "r34.pth")
    assert "\n" not in str(err.value)
    partial = {k: v for k, v in resnet18(weights=None).state_dict().items() if k != "layer4.1.conv2.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"missing 1 \(e\.g\. layer4\.1\.conv2\.weight\)"):
        TASK.load_init(model, "fasterrcnn_r18", tmp_path / "partial.pth")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_whole_detector_is_a_starting_point_too(tmp_path) -> None:
    src = TASK.build_model("fasterrcnn_mbv3s", 81, "coco")
    state = _perturbed(src, seed=3)
    torch.save({"model": state}, tmp_path / "det.pth")
    model = TASK.build_model("fasterrcnn_mbv3s", 81, "coco", init="file")
    assert TASK.load_init(model, "fasterrcnn_mbv3s", tmp_path / "det.pth") == "the whole detector"
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_teacher_trained_from_random_weights_loads_into_the_teacher_setup(tmp_path) -> None:
    """A COCO teacher job trained from ``random`` has plain BatchNorm; its students build the teacher in the
    fine-tuning setup (frozen BatchNorm), which computes the same in eval mode from the same four tensors."""
    trained = TASK.build_model(PAIR[0], 81, "coco", init="random")
    trained.load_state_dict(_perturbed(trained, seed=5, scale=0.02))  # small: activations stay in range
    torch.save({"student": trained.state_dict(), "arch": PAIR[0]}, tmp_path / "student.pt")
    teacher = TASK.build_model(PAIR[0], 81, "coco")
    TASK.load_weights(teacher, tmp_path / "student.pt")
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key
    x = [torch.rand(3, 96, 128)]
    trained.eval(), teacher.eval()
    with torch.no_grad():
        torch.testing.assert_close(teacher.backbone(teacher.transform(x)[0].tensors)["0"],
                                   trained.backbone(trained.transform(x)[0].tensors)["0"], rtol=1e-3, atol=1e-3)


def test_a_detector_saved_from_frozen_batchnorm_loads_into_plain_batchnorm(tmp_path: Path) -> None:
    """No ``num_batches_tracked`` in the file (frozen BatchNorm has none): torch fills the counters in."""
    frozen = TASK.build_model(PAIR[1], 4, "coco")
    state = _perturbed(frozen, seed=6)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    torch.save(state, tmp_path / "frozen.pth")
    plain = TASK.build_model(PAIR[1], 4, "coco", init="random")
    TASK.load_weights(plain, tmp_path / "frozen.pth")
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in state.items())


def test_a_missing_or_unreadable_file_is_one_line(tmp_path: Path) -> None:
    model = TASK.build_model(PAIR[1], 81, "coco", init="file")
    with pytest.raises(UserError, match="does not exist"):
        TASK.load_init(model, PAIR[1], tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot be read"):
        TASK.load_init(model, PAIR[1], tmp_path / "junk.pth")
