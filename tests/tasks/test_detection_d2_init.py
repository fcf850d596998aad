"""detectron2 backend: students' starting weights in the layouts people have, and the random-start setup.

Each file is written here in a real key layout from a model built here (values perturbed so nothing matches by
chance), renamed the way its source names it, and the tests assert the tensors arrive where detectron2's own
loader puts them:

* MSRA's Caffe2-named ImageNet ``R-50.pkl`` (flat blob dict: ``conv1_w``, ``res_conv1_bn_gamma``,
  ``res2_0_branch2a_w``, ..., ``fc1000_w``; detectron2's ``c2_model_loading.convert_basic_c2_names`` reversed);
* detectron2's ``tools/convert-torchvision-to-d2.py`` output for torchvision's ``resnet18`` (its renaming, L37-51);
* mdistiller/ReviewKD's combined ``r18-r101.pth`` (``RCNNKD`` keys: the student's, and the teacher's under
  ``teacher.``).

Skipped where detectron2 is not installed.
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed (see the README's detectron2 section)")
backend = importlib.import_module("tasks.detection.d2.backend")

from torchvision.models import resnet18, resnet34  # noqa: E402

from methods.base import UserError  # noqa: E402
from tasks.base import get_task  # noqa: E402

TASK = get_task("detection")
R50, R18, MV2 = (f"d2_faster_rcnn_{b}_FPN" for b in ("R_50", "R_18", "MV2"))
BOTTOM_UP = "backbone.bottom_up."


def _perturbed(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            v = v + (torch.rand if k.endswith("running_var") else torch.randn)(v.shape, generator=g)
        out[k] = v
    return out


def _caffe2_name(key: str) -> str:
    """A detectron2 ResNet key (``stem.conv1.norm.weight``, ``res2.0.conv1.weight``) under its MSRA Caffe2 blob
    name (``res_conv1_bn_gamma``, ``res2_0_branch2a_w``): ``convert_basic_c2_names`` read backwards."""
    bn = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}
    if key == "stem.conv1.weight":
        return "conv1_w"
    if key.startswith("stem.conv1.norm."):
        return "res_conv1_bn_" + bn[key.rsplit(".", 1)[1]]
    m = re.fullmatch(r"(res\d)\.(\d+)\.(conv\d|shortcut)\.(norm\.)?(\w+)", key)
    assert m, key
    stage, block, conv, norm, leaf = m.groups()
    return f"{stage}_{block}_{branch[conv]}_" + (f"bn_{bn[leaf]}" if norm else "w")


def _backbone(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix(BOTTOM_UP): v for k, v in model.state_dict().items() if k.startswith(BOTTOM_UP)}


def test_random_start_on_coco_trains_batchnorm_and_every_stage() -> None:
    for arch in (R18, MV2):
        tuned = TASK.build_model(arch, 81, "coco", init="file")
        fresh = TASK.build_model(arch, 81, "coco", init="random")
        norms = {type(m).__name__ for m in tuned.backbone.bottom_up.modules() if "BatchNorm" in type(m).__name__}
        assert norms == {"FrozenBatchNorm2d"}
        assert not any(type(m).__name__ == "FrozenBatchNorm2d" for m in fresh.modules())
        assert all(p.requires_grad for p in fresh.parameters())
        assert (fresh.d2_cfg.MODEL.BACKBONE.FREEZE_AT, fresh.d2_cfg.MODEL.RESNETS.NORM) == (0, "BN")
    assert not all(p.requires_grad for p in TASK.build_model(R18, 81, "coco").parameters())  # FREEZE_AT 2


def test_msra_caffe2_imagenet_backbone_arrives_through_detectron2s_renaming(tmp_path: Path) -> None:
    model = TASK.build_model(R50, 81, "coco", init="file")
    src = _perturbed(_backbone(model))
    blobs = {_caffe2_name(k): v.numpy() for k, v in src.items()}
    assert {"conv1_w", "res_conv1_bn_gamma", "res2_0_branch2a_w", "res2_0_branch1_bn_running_var"} <= set(blobs)
    # MSRA's file also has the classifier and a stem conv bias detectron2's stem has no use for
    blobs |= {"fc1000_w": torch.zeros(1000, 2048).numpy(), "fc1000_b": torch.zeros(1000).numpy(),
              "conv1_b": torch.zeros(64).numpy()}  # fmt: skip
    with (tmp_path / "R-50.pkl").open("wb") as f:
        pickle.dump(blobs, f)
    heads = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(BOTTOM_UP)}
    what = TASK.load_init(model, R50, tmp_path / "R-50.pkl")
    assert what == f"ImageNet backbone (Caffe2 names, e.g. MSRA R-50.pkl), {len(src)} tensors"
    for key, value in _backbone(model).items():
        assert torch.equal(value, src[key]), key
    assert all(torch.equal(model.state_dict()[k], v) for k, v in heads.items())  # FPN and heads keep their init


def _torchvision_to_d2(state: dict[str, torch.Tensor]) -> dict:
    """detectron2's ``tools/convert-torchvision-to-d2.py`` (@02b5c4e, L37-51), applied to a torchvision state dict."""
    new = {}
    for k, v in state.items():
        if "layer" not in k:
            k = "stem." + k
        for t in (1, 2, 3, 4):
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        new[k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")] = v.numpy()
    return {"model": new, "__author__": "torchvision", "matching_heuristics": True}


def test_a_torchvision_resnet18_converted_for_detectron2_arrives(tmp_path: Path) -> None:
    tv = _perturbed(resnet18(weights=None).state_dict(), seed=1)
    with (tmp_path / "r18.pkl").open("wb") as f:
        pickle.dump(_torchvision_to_d2(tv), f)
    model = TASK.build_model(R18, 81, "coco", init="file")
    what = TASK.load_init(model, R18, tmp_path / "r18.pkl")
    assert what.startswith("ImageNet backbone (convert-torchvision-to-d2.py)")
    got = _backbone(model)
    pairs = {"stem.conv1.weight": "conv1.weight", "stem.conv1.norm.running_mean": "bn1.running_mean",
             "res2.0.conv1.norm.weight": "layer1.0.bn1.weight",
             "res3.0.shortcut.weight": "layer2.0.downsample.0.weight",
             "res5.1.conv2.norm.running_var": "layer4.1.bn2.running_var"}  # fmt: skip
    for ours, theirs in pairs.items():
        assert torch.equal(got[ours], tv[theirs]), ours
    assert len(got) == len([k for k in tv if not k.endswith("num_batches_tracked") and not k.startswith("fc.")])
    # into plain BatchNorm (shapes) too, with or without the counters
    plain = {k: v for k, v in tv.items() if not k.endswith("num_batches_tracked")}
    with (tmp_path / "r18_plain.pkl").open("wb") as f:
        pickle.dump(_torchvision_to_d2(plain), f)
    bn = TASK.build_model(R18, 4, "shapes", init="file")
    TASK.load_init(bn, R18, tmp_path / "r18_plain.pkl")
    assert torch.equal(_backbone(bn)["res4.1.conv2.norm.running_var"], tv["layer3.1.bn2.running_var"])


def test_the_students_part_of_an_mdistiller_combined_file_is_taken(tmp_path: Path) -> None:
    student = TASK.build_model(R18, 81, "coco", init="file")
    teacher = TASK.build_model(R18, 81, "coco")  # stands in for R101: only the ``teacher.`` prefix matters
    s_back = {BOTTOM_UP + k: v for k, v in _perturbed(_backbone(student), seed=2).items()}
    t_all = {"teacher." + k: v for k, v in _perturbed(teacher.state_dict(), seed=3).items()}
    torch.save({"model": {**s_back, **t_all}}, tmp_path / "r18-r101.pth")
    what = TASK.load_init(student, R18, tmp_path / "r18-r101.pth")
    assert what.startswith("ImageNet backbone") and f"{len(t_all)} teacher tensors left out" in what
    assert all(torch.equal(student.state_dict()[k], v) for k, v in s_back.items())
    # with the student's FPN and heads in the file too, the whole student arrives (and never the teacher)
    s_all = _perturbed(student.state_dict(), seed=4)
    torch.save({**s_all, **t_all}, tmp_path / "whole.pth")
    what = TASK.load_init(student, R18, tmp_path / "whole.pth")
    assert what.startswith("the whole detector from a combined teacher+student file")
    assert all(torch.equal(student.state_dict()[k], v) for k, v in s_all.items())


def test_files_that_do_not_fit_are_refused_naming_keys(tmp_path: Path) -> None:
    model = TASK.build_model(R18, 81, "coco", init="file")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with (tmp_path / "r34.pkl").open("wb") as f:  # a deeper ResNet: blocks the R18 does not have
        pickle.dump(_torchvision_to_d2(resnet34(weights=None).state_dict()), f)
    deeper = r"ImageNet backbone detectron2 can match.*unexpected \d+ \(e\.g\. res2\.2\."
    with pytest.raises(UserError, match=deeper) as e:
        TASK.load_init(model, R18, tmp_path / "r34.pkl")
    assert "\n" not in str(e.value)
    partial = _torchvision_to_d2({k: v for k, v in resnet18(weights=None).state_dict().items() if "layer4.1" not in k})
    with (tmp_path / "partial.pkl").open("wb") as f:
        pickle.dump(partial, f)
    with pytest.raises(UserError, match=r"missing \d+ backbone tensors \(e\.g\. backbone\.bottom_up\.res5\.1\."):
        TASK.load_init(model, R18, tmp_path / "partial.pkl")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_teacher_trained_from_random_weights_loads_into_the_teacher_setup(tmp_path: Path) -> None:
    trained = TASK.build_model(R18, 81, "coco", init="random")
    state = _perturbed(trained.state_dict(), seed=5)
    assert any(k.endswith("num_batches_tracked") for k in state)
    torch.save({"student": state, "arch": R18}, tmp_path / "student.pt")
    teacher = TASK.build_model(R18, 81, "coco")
    TASK.load_weights(teacher, tmp_path / "student.pt")
    assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())
