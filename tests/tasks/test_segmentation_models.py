"""Segmentation model zoo: checkpoint compatibility, dilation, parameter counts, tap alignment."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models import segmentation as tvseg

from methods.base import UserError
from tasks.base import get_task
from tasks.segmentation.models import ARCHS, DilatedBasicBlock, build_model


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_dilated_resnet18_loads_torchvision_resnet18_and_is_dilated():
    tv = torchvision.models.resnet18(weights=None)
    model = build_model("deeplabv3_r18", 19)
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    model.backbone.load_state_dict(state, strict=True)  # same keys and shapes
    for k, v in state.items():
        assert torch.equal(model.backbone.state_dict()[k], v)
    assert isinstance(model.backbone.layer4[1], DilatedBasicBlock)
    # torchvision's dilation rule: first block of a dilated stage keeps the previous dilation
    assert model.backbone.layer3[0].conv1.dilation == (1, 1) and model.backbone.layer3[1].conv1.dilation == (2, 2)
    assert model.backbone.layer4[0].conv1.dilation == (2, 2) and model.backbone.layer4[1].conv2.dilation == (4, 4)
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, 64, 64))
        out = model(torch.randn(1, 3, 64, 64))["out"]
    assert feats["out"].shape == (1, 512, 8, 8)  # output stride 8, not 32
    assert feats["aux"].shape == (1, 256, 8, 8)
    assert out.shape == (1, 19, 8, 8)


@pytest.mark.parametrize(
    ("arch", "builder", "aux"),
    [
        ("deeplabv3_r50", tvseg.deeplabv3_resnet50, True),
        ("deeplabv3_r101", tvseg.deeplabv3_resnet101, True),
        ("deeplabv3_mbv3", tvseg.deeplabv3_mobilenet_v3_large, False),
    ],
)
def test_parameter_counts_match_torchvision(arch, builder, aux):
    # Dilation changes no parameter: the counts must equal torchvision's own DeepLabV3 builders.
    ref = builder(weights=None, weights_backbone=None, num_classes=19, aux_loss=aux)
    assert n_params(build_model(arch, 19)) == n_params(ref)


def test_pspnet_head_pools_at_four_bins():
    model = build_model("pspnet_r18", 5)
    pools = [m.output_size for m in model.head.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    assert pools == [1, 2, 3, 6]
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))["out"].shape == (1, 5, 8, 8)


def test_aux_only_in_training():
    model = build_model("deeplabv3_tiny_s", 4)
    x = torch.randn(2, 3, 32, 32)
    assert set(model.train()(x)) == {"out", "aux"}
    assert set(model.eval()(x)) == {"out"}


def test_unknown_arch():
    with pytest.raises(UserError, match="valid:"):
        build_model("deeplabv3_r34", 19)


def test_taps_aligned_for_every_preset_pair():
    task = get_task("segmentation")
    pairs = task.default_pairs("cityscapes") + task.default_pairs("shapes")
    assert {a for p in pairs for a in p} == set(ARCHS)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)  # two images: BatchNorm after global pooling needs a batch
    labels = torch.randint(0, 4, (2, 32, 32))
    labels[:, :8] = 255
    teachers: dict[str, torch.nn.Module] = {}
    for t_arch, s_arch in pairs:
        if t_arch not in teachers:
            teachers[t_arch] = task.build_model(t_arch, 4, "cityscapes")
            task.attach_taps(teachers[t_arch], t_arch, 4, "cityscapes")
        student = task.build_model(s_arch, 4, "cityscapes")
        task.attach_taps(student, s_arch, 4, "cityscapes")
        out = task.paired_forward(student, teachers[t_arch], (images, labels), torch.device("cpu"))
        s_spec, t_spec = task.tap_specs(s_arch, 4, "cityscapes"), task.tap_specs(t_arch, 4, "cityscapes")
        s_feat, t_feat = out.student_taps["feat"], out.teacher_taps["feat"]
        assert s_feat.shape[-2:] == t_feat.shape[-2:] == (4, 4), (t_arch, s_arch)
        assert s_spec["feat"].stride == t_spec["feat"].stride == 8
        assert s_feat.shape[1] == s_spec["feat"].channels and t_feat.shape[1] == t_spec["feat"].channels
        assert not t_feat.requires_grad and s_feat.requires_grad
        if "hint" in s_spec:  # CIRKD's archs: FitNet's hint after the ASPP, on the same grid
            assert out.student_taps["hint"].shape[1:] == (s_spec["hint"].channels, 4, 4)
            assert out.teacher_taps["hint"].shape[1:] == (t_spec["hint"].channels, 4, 4)
        # the top row of each 4x4 grid is void: 2 x 12 valid cells
        assert out.student_taps["logits"].shape == out.teacher_taps["logits"].shape == (24, 4)
        assert out.target.shape == (24,)
