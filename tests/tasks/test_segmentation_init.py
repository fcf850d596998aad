"""A segmentation student's starting weights: whole models and ImageNet backbones in the layouts people have.

Each file is written here in the real layout (a state dict with the layout's key names and shapes, random values):
torchvision's ``resnet18`` / ``mobilenet_v3_large`` files (keys of ``torchvision.models.*(weights=None)``, the
ones of ``resnet18-f37072fd.pth``), and CIRKD's ``resnet18-imagenet.pth`` (``resnet18_v1s``: flat deep stem
``conv1/bn1/conv2/bn2/conv3/bn3``, ``layer1.0.downsample``; winycg/CIRKD @91735ef39d37a8a15ba942ae011e98587ac0e71d
``models/base_models/resnet.py`` L103-123, L246-259). Whether CIRKD's released file carries an ``fc`` is not known
here; it may (only a classifier may be left over).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from bench.engine.build import build_models
from methods.errors import UserError
from tasks.base import get_task
from tasks.segmentation.models import build_model


@pytest.fixture(scope="module")
def task():
    return get_task("segmentation")


def _random(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in state.items()}


@pytest.fixture(scope="module")
def cirkd_file(tmp_path_factory):
    """CIRKD's resnet18-imagenet.pth layout, with an ImageNet classifier left in."""
    backbone = build_model("deeplabv3_r18_cirkd", 19).pretrained.state_dict()
    state = _random({**backbone, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    path = tmp_path_factory.mktemp("cirkd") / "resnet18-imagenet.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """torchvision's resnet18 file layout (conv1 7x7, fc)."""
    state = _random(torchvision.models.resnet18(weights=None).state_dict(), seed=2)
    path = tmp_path_factory.mktemp("tv") / "resnet18-f37072fd.pth"
    torch.save(state, path)
    return path, state


def test_cirkds_backbone_file_starts_a_cirkd_student(task, cirkd_file):
    path, state = cirkd_file
    model = build_model("deeplabv3_r18_cirkd", 19)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    what = task.load_init(model, "deeplabv3_r18_cirkd", path)
    own = model.pretrained.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head.items())  # the heads start random
    assert "CIRKD" in what and "into pretrained" in what and "left over: fc.bias, fc.weight" in what


def test_torchvision_file_starts_a_torchvision_layout_student(task, torchvision_file):
    path, state = torchvision_file
    model = build_model("deeplabv3_r18", 19)
    what = task.load_init(model, "deeplabv3_r18", path)
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert "torchvision" in what and "left over: fc.bias, fc.weight" in what


def test_torchvision_mobilenet_file_starts_the_mobilenet_student(task, tmp_path):
    state = _random(torchvision.models.mobilenet_v3_large(weights=None).state_dict())
    torch.save(state, tmp_path / "mbv3.pth")
    model = build_model("deeplabv3_mbv3", 19)
    task.load_init(model, "deeplabv3_mbv3", tmp_path / "mbv3.pth")
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k.removeprefix("features.")], v) for k, v in state.items() if k.startswith("features."))


def test_a_torchvision_file_is_refused_by_a_cirkd_arch_naming_the_conv1_shape(task, torchvision_file):
    with pytest.raises(UserError, match=r"conv1\.weight: \(64, 3, 7, 7\) vs \(64, 3, 3, 3\).*torchvision ResNet"):
        task.load_init(build_model("deeplabv3_r18_cirkd", 19), "deeplabv3_r18_cirkd", torchvision_file[0])


def test_a_cirkd_file_is_refused_by_a_torchvision_arch(task, cirkd_file):
    with pytest.raises(UserError, match=r"unexpected 18 .*bn2\.bias.*conv1\.weight: \(64, 3, 3, 3\) vs \(64, 3, 7, 7\)"
                                        r".*fits deeplabv3_r18_cirkd"):  # fmt: skip
        task.load_init(build_model("deeplabv3_r18", 19), "deeplabv3_r18", cirkd_file[0])


def test_missing_and_unexpected_backbone_keys_are_named(task, cirkd_file, tmp_path):
    _, state = cirkd_file
    short = {k: v for k, v in state.items() if k != "layer4.1.bn2.weight"}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(UserError, match=r"missing 1 \(e\.g\. layer4\.1\.bn2\.weight\)"):
        task.load_init(build_model("deeplabv3_r18_cirkd", 19), "deeplabv3_r18_cirkd", tmp_path / "short.pth")
    torch.save({**state, "layer5.0.conv1.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(UserError, match=r"unexpected 1 \(e\.g\. layer5\.0\.conv1\.weight\)"):
        task.load_init(build_model("deeplabv3_r18_cirkd", 19), "deeplabv3_r18_cirkd", tmp_path / "extra.pth")


def test_files_without_batchnorm_counters_load(task, torchvision_file, tmp_path):
    _, state = torchvision_file
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, tmp_path / "old.pth")
    model = build_model("deeplabv3_r18", 19)
    task.load_init(model, "deeplabv3_r18", tmp_path / "old.pth")
    assert torch.equal(model.backbone.state_dict()["layer1.0.bn1.weight"], state["layer1.0.bn1.weight"])


def test_whole_models_load_and_other_whole_models_are_refused(task, tmp_path):
    given = build_model("deeplabv3_r18_cirkd", 19)
    state = _random(given.state_dict())
    torch.save({"student": state}, tmp_path / "student.pt")
    model = build_model("deeplabv3_r18_cirkd", 19)
    assert task.load_init(model, "deeplabv3_r18_cirkd", tmp_path / "student.pt") == "the whole model"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    torch.save(build_model("deeplabv3_r18", 19).state_dict(), tmp_path / "tv_whole.pth")
    with pytest.raises(UserError, match="does not fit deeplabv3_r18_cirkd as a whole model"):
        task.load_init(build_model("deeplabv3_r18_cirkd", 19), "deeplabv3_r18_cirkd", tmp_path / "tv_whole.pth")
    with pytest.raises(UserError, match="does not fit deeplabv3_tiny_s"):  # no backbone layout: whole models only
        task.load_init(build_model("deeplabv3_tiny_s", 4), "deeplabv3_tiny_s", tmp_path / "tv_whole.pth")


def test_the_training_loop_starts_the_student_from_the_backbone_file(task, cirkd_file):
    path, state = cirkd_file
    lines: list[str] = []
    student, _, _ = build_models(task, "deeplabv3_r18_cirkd", None, "vanilla", {}, 19, "cityscapes", None,
                                 torch.device("cpu"), init="file", init_path=path, log=lines.append)  # fmt: skip
    assert torch.equal(student.pretrained.conv3.weight, state["conv3.weight"])
    assert any("starts from" in line and "resnet18-imagenet.pth" in line for line in lines), lines
