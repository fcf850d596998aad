"""CIRKD's DeepLabV3 models (``*_cirkd``): its keys, shapes, dilation, input and hint, so CIRKD's files load strictly.

Facts from winycg/CIRKD @91735ef39d37a8a15ba942ae011e98587ac0e71d: ``models/base_models/resnet.py`` (``ResNetV1b``,
deep stem L103-123, inplanes 128 L100, dilation L131-133 and L163-170), ``models/segbase.py`` (``pretrained``),
``models/deeplabv3.py`` (``head``, ``auxlayer``, ASPP widths L77-82 / L133-138, ``x_feat_after_aspp`` L92-97),
``dataset/cityscapes.py`` L78-79 (BGR, Caffe mean, no std). The parameter counts 13,607,974 (ResNet-18) and
61,118,950 (ResNet-101) for 19 classes, and the 190 / 688 state-dict entries, were measured by building CIRKD's own
``DeepLabV3(19, backbone=..., aux=True)`` from that commit; the hand count below gives the same numbers.
"""

from __future__ import annotations

import pytest
import torch

from tasks.base import get_task
from tasks.segmentation.data import normalize
from tasks.segmentation.models import build_model

CIRKD_PARAMS = {18: 13_607_974, 101: 61_118_950}  # CIRKD's DeepLabV3, 19 classes, aux head (measured, see above)
CIRKD_BACKBONE_PARAMS = {18: 11_324_992, 101: 42_623_936}
CIRKD_ENTRIES = {18: 190, 101: 688}  # state-dict entries, BatchNorm buffers included


def hand_count(depth: int, n: int) -> tuple[int, int]:
    """(backbone, whole model) parameters of CIRKD's DeepLabV3 on resnet{depth}_v1s, counted from its definition."""
    bottleneck = depth == 101
    layers, exp = ((3, 4, 23, 3), 4) if bottleneck else ((2, 2, 2, 2), 1)
    total = 3 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9 + 2 * (64 + 64 + 128)  # deep stem: three 3x3 convs + BN
    inp = 128
    for planes, blocks, stride in zip((64, 128, 256, 512), layers, (1, 2, 1, 1), strict=True):
        for i in range(blocks):
            if bottleneck:
                total += inp * planes + planes * planes * 9 + planes * 4 * planes + 2 * (planes + planes + 4 * planes)
            else:
                total += inp * planes * 9 + planes * planes * 9 + 2 * (2 * planes)
            if i == 0 and (stride != 1 or inp != planes * exp):
                total += inp * planes * exp + 2 * planes * exp  # downsample: 1x1 conv + BN
            inp = planes * exp
    c = {512: 128, 2048: 256}[inp]  # ASPP width per backbone
    aspp = inp * c + 3 * inp * c * 9 + inp * c + 5 * c * c + 2 * c * 6  # b0, b1-b3, b4, project, six BNs
    head = aspp + c * c * 9 + 2 * c + c * n + n  # block: 3x3 conv + BN, 1x1 classifier with bias
    inter = inp // 2 // 4
    aux = inp // 2 * inter * 9 + 2 * inter + inter * n + n
    return total, total + head + aux


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def r101():
    return build_model("deeplabv3_r101_cirkd", 19)


@pytest.fixture(scope="module")
def r18():
    return build_model("deeplabv3_r18_cirkd", 19)


@pytest.mark.parametrize("depth", [18, 101])
def test_parameter_counts_equal_cirkds_definition(depth, r18, r101):
    model = {18: r18, 101: r101}[depth]
    assert hand_count(depth, 19) == (CIRKD_BACKBONE_PARAMS[depth], CIRKD_PARAMS[depth])
    assert n_params(model.pretrained) == CIRKD_BACKBONE_PARAMS[depth]
    assert n_params(model) == CIRKD_PARAMS[depth]
    assert len(model.state_dict()) == CIRKD_ENTRIES[depth]


def test_keys_and_shapes_are_cirkds(r18, r101):
    shapes = {k: tuple(v.shape) for k, v in r18.state_dict().items()}
    assert {k.split(".")[0] for k in shapes} == {"pretrained", "head", "auxlayer"}
    expected = {  # CIRKD names (flat deep stem, ASPP b0..b4 / project, head.block, auxlayer.block)
        "pretrained.conv1.weight": (64, 3, 3, 3),
        "pretrained.conv2.weight": (64, 64, 3, 3),
        "pretrained.conv3.weight": (128, 64, 3, 3),
        "pretrained.bn3.running_var": (128,),
        "pretrained.layer1.0.conv1.weight": (64, 128, 3, 3),
        "pretrained.layer1.0.downsample.0.weight": (64, 128, 1, 1),
        "pretrained.layer4.1.bn2.num_batches_tracked": (),
        "head.aspp.b0.0.weight": (128, 512, 1, 1),
        "head.aspp.b1.block.0.weight": (128, 512, 3, 3),
        "head.aspp.b4.gap.1.weight": (128, 512, 1, 1),
        "head.aspp.b4.gap.2.running_mean": (128,),
        "head.aspp.project.0.weight": (128, 640, 1, 1),
        "head.block.0.weight": (128, 128, 3, 3),
        "head.block.4.weight": (19, 128, 1, 1),
        "head.block.4.bias": (19,),
        "auxlayer.block.0.weight": (64, 256, 3, 3),
        "auxlayer.block.4.weight": (19, 64, 1, 1),
    }
    assert {k: shapes[k] for k in expected} == expected
    assert not any(k.startswith("pretrained.fc") or "input_" in k for k in shapes)  # no fc, no input buffers
    big = {k: tuple(v.shape) for k, v in r101.state_dict().items()}
    assert big["pretrained.layer1.0.conv1.weight"] == (64, 128, 1, 1)
    assert big["pretrained.layer1.0.downsample.0.weight"] == (256, 128, 1, 1)
    assert big["head.aspp.b0.0.weight"] == (256, 2048, 1, 1) and big["head.aspp.project.0.weight"] == (256, 1280, 1, 1)
    assert big["auxlayer.block.0.weight"] == (256, 1024, 3, 3)


def test_dilated_like_cirkd_to_output_stride_8(r18, r101):
    b = r18.pretrained
    rates = [(blk.conv1.dilation[0], blk.conv2.dilation[0]) for layer in (b.layer3, b.layer4) for blk in layer]
    # the first block of a dilated stage enters at the previous stage's rate
    assert rates == [(1, 2), (2, 2), (2, 4), (4, 4)]
    assert all(blk.conv1.stride == (1, 1) for layer in (b.layer3, b.layer4) for blk in layer)
    convs = [c for c in b.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)]
    assert all(c.padding == c.dilation for c in convs)
    big = r101.pretrained
    assert [blk.conv2.dilation[0] for blk in big.layer3[:2]] == [1, 2]
    assert [blk.conv2.dilation[0] for blk in big.layer4] == [2, 4, 4]
    r18.eval()
    with torch.no_grad():
        assert r18(torch.randn(1, 3, 64, 96))["out"].shape == (1, 19, 8, 12)
    assert set(r18.train()(torch.randn(2, 3, 32, 32))) == {"out", "aux"}


def test_the_model_sees_cirkds_input(r18):
    # diffbench feeds RGB in ImageNet mean/std units; CIRKD feeds BGR 0-255 minus the Caffe mean, no std.
    img = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    cirkd = img.float().flip(0) - torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(3, 1, 1)
    assert torch.allclose(r18.cirkd_input(normalize(img)[None])[0], cirkd, atol=1e-3)


def test_hint_is_the_feature_after_the_aspp_and_feat_the_last_stage(r18):
    task = get_task("segmentation")
    model = build_model("deeplabv3_r18_cirkd", 5).eval()
    task.attach_taps(model, "deeplabv3_r18_cirkd", 5, "cityscapes")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = model(x)["out"]
        taps = model.tap_recorder.pop()
        c4 = model.pretrained(model.cirkd_input(x))  # the backbone's own forward
        after_aspp = model.head.block[0:4](model.head.aspp(c4))  # CIRKD's x_feat_after_aspp
    assert torch.allclose(taps["feat"], c4) and taps["feat"].shape == (2, 512, 6, 6)
    assert torch.allclose(taps["hint"], after_aspp) and taps["hint"].shape == (2, 128, 6, 6)
    assert torch.allclose(out, model.head.block[4](after_aspp))
    specs = task.tap_specs("deeplabv3_r18_cirkd", 5, "cityscapes")
    assert specs["hint"].roles == ("hint",) and specs["feat"].roles == ("feature",) and specs["hint"].channels == 128
    assert task.tap_specs("deeplabv3_r101_cirkd", 5, "cityscapes")["hint"].channels == 256


def test_a_cirkd_trained_model_file_loads_strictly_as_teacher(tmp_path, r18):
    # CIRKD's save_checkpoint writes model.state_dict() of the unwrapped model (train_baseline.py); with DDP's
    # "module." prefix too, which diffbench strips.
    task = get_task("segmentation")
    torch.manual_seed(3)
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in r18.state_dict().items()}
    torch.save(state, tmp_path / "deeplabv3_resnet18_citys_best_model.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    for name in ("deeplabv3_resnet18_citys_best_model.pth", "ddp.pth"):
        model = build_model("deeplabv3_r18_cirkd", 19)
        task.load_weights(model, tmp_path / name)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
