"""The classification model zoo against facts that do not come from its own code.

* parameter counts derived by hand from the architectures (closed forms below) and checked against
  published figures: He et al. 2016 Table 6 (CIFAR ResNets), torchvision's documented ``num_params``,
  Keras' MobileNet summary, and the KD literature's model tables for the RepDistiller zoo;
* state-dict key names and shapes as mdistiller's model files define them (including a full key list
  generated independently for a CIFAR ResNet and a WRN, loaded strictly from an mdistiller-format file);
* forward outputs and tap tensors against reference computations written here from mdistiller's
  ``forward`` code (blocks re-composed from the leaf layers), so a tap on the wrong module, an in-place
  op that corrupts a captured tensor or a mis-ordered block shows up as a numeric mismatch.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import TapSpec, UserError
from tasks.base import TapRecorder, load_state_dict_file
from tasks.classification.models import wrn, zoo

CIFAR = zoo.arch_names(imagenet=False)
IMAGENET = zoo.arch_names(imagenet=True)


@functools.cache
def _model(arch: str) -> nn.Module:
    """One eval-mode instance per arch (100 classes for CIFAR, 1000 for ImageNet), seeded."""
    torch.manual_seed(0)
    return zoo.build(arch, 1000 if arch in IMAGENET else 100).eval()


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------


def test_registry_names():
    expected_cifar = {
        "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
        "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16",
        "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet18", "ResNet50",
    }  # fmt: skip
    assert set(CIFAR) == expected_cifar
    assert set(IMAGENET) == {"resnet18", "resnet34", "resnet50", "MobileNetV1"}
    assert zoo.arch_names() == CIFAR + IMAGENET


def test_unknown_arch_is_user_error_listing_valid_names():
    with pytest.raises(UserError, match="unknown architecture 'resnet9'.*resnet8.*MobileNetV1"):
        zoo.build("resnet9", 100)
    with pytest.raises(UserError, match="valid:"):
        zoo.tap_specs("vgg7", 100)
    with pytest.raises(UserError, match="num_classes"):
        zoo.build("resnet8", 0)


def test_forward_returns_logits_tensor_only():
    out = _model("resnet8")(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 100)
    assert zoo.build("wrn_16_1", 7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_tap_specs_without_forward():
    specs = zoo.tap_specs("resnet32x4", 100)
    assert list(specs) == ["hint", "feat", "logits"]
    assert all(isinstance(s, TapSpec) for s in specs.values())
    assert specs["hint"] == TapSpec("hint", 128, 2, ("hint",), "layer2")
    assert specs["feat"] == TapSpec("feat", 256, 4, ("feature",), "layer3")
    assert specs["logits"] == TapSpec("logits", 100, 0, ("logits",), "fc")
    # DiffKD's own tap table (hunto's image_classification_sota KD_MODULES): WRN 'relu', tv ResNet 'layer4',
    # MobileNetV1 'model.13' with 1024 channels.
    assert zoo.tap_specs("wrn_40_2", 100)["feat"].module == "relu"
    assert zoo.tap_specs("wrn_40_2", 100)["feat"].channels == 128
    assert zoo.tap_specs("resnet34", 1000)["feat"] == TapSpec("feat", 512, 32, ("feature",), "layer4")
    assert zoo.tap_specs("MobileNetV1", 1000)["feat"].module == "model.13"
    assert zoo.tap_specs("MobileNetV2", 100)["logits"].module == "classifier"


@pytest.mark.parametrize("arch", zoo.arch_names())
def test_validate_taps(arch):
    """Every declared tap exists, has the declared channels and H = input / stride; ``feat`` is pooled."""
    size = 64 if arch.startswith("resnet") and arch in IMAGENET else None  # torchvision pools adaptively
    shapes = zoo.validate_taps(arch, input_size=size, model=_model(arch))
    specs = zoo.tap_specs(arch, 1)
    size = size or (224 if arch in IMAGENET else 32)
    for name in ("hint", "feat"):
        _, c, h, w = shapes[name]
        assert c == specs[name].channels and h == w == size // specs[name].stride
    assert shapes["logits"][1] == (1000 if arch in IMAGENET else 100)


def test_validate_taps_catches_a_wrong_spec(monkeypatch):
    a = zoo.ARCHS["resnet8"]
    monkeypatch.setitem(zoo.ARCHS, "resnet8", zoo.Arch(a.name, a.builder, False, ("layer2", 32, 4), a.feat, "fc"))
    with pytest.raises(RuntimeError, match="tap 'hint'"):
        zoo.validate_taps("resnet8")
    # Right shape, wrong module: the last block of layer3 has the shape of layer3 but is not pooled...
    b = zoo.ARCHS["resnet20"]
    monkeypatch.setitem(zoo.ARCHS, "resnet20", zoo.Arch(b.name, b.builder, False, b.hint, ("layer3.1", 64, 4), "fc"))
    with pytest.raises(RuntimeError, match="pooled 'feat'"):
        zoo.validate_taps("resnet20")


# ----------------------------------------------------------------------------------------------
# parameter counts: closed forms from the architectures, then published figures
# ----------------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, bias: bool = False, groups: int = 1) -> int:
    return cin // groups * cout * k * k + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c  # weight and bias; running stats are buffers


def cifar_resnet_params(depth: int, filters: tuple[int, int, int, int], classes: int) -> int:
    """He et al.'s 6n+2 CIFAR ResNet with mdistiller's 1x1-conv+BN projection shortcuts."""
    n = (depth - 2) // 6
    total = _conv(3, filters[0], 3) + _bn(filters[0])
    cin = filters[0]
    for stage, planes in enumerate(filters[1:]):
        for b in range(n):
            total += _conv(cin, planes, 3) + _bn(planes) + _conv(planes, planes, 3) + _bn(planes)
            if b == 0 and (stage > 0 or cin != planes):
                total += _conv(cin, planes, 1) + _bn(planes)
            cin = planes
    return total + cin * classes + classes


def wrn_params(depth: int, k: int, classes: int) -> int:
    """Pre-activation WRN: per block BN(in)+conv3x3+BN(out)+conv3x3 (+1x1 shortcut when widths differ)."""
    n = (depth - 4) // 6
    total = _conv(3, 16, 3)
    cin = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(cin) + _conv(cin, width, 3) + _bn(width) + _conv(width, width, 3)
            total += _conv(cin, width, 1) if cin != width else 0
            cin = width
    return total + _bn(cin) + cin * classes + classes


def vgg_bn_params(cfg: list[list[int]], classes: int) -> int:
    """conv3x3 with bias + BN per layer, one linear 512 -> classes."""
    total, cin = 0, 3
    for block in cfg:
        for c in block:
            total += _conv(cin, c, 3, bias=True) + _bn(c)
            cin = c
    return total + 512 * classes + classes


@pytest.mark.parametrize(
    ("depth", "published_m"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)]
)  # He et al. 2016, Table 6 (CIFAR-10, identity shortcuts: ours adds 2,752 for two projections)
def test_cifar_resnet_formula_matches_he_et_al(depth, published_m):
    assert cifar_resnet_params(depth, (16, 16, 32, 64), 10) == pytest.approx(published_m * 1e6, rel=0.02)


@pytest.mark.parametrize(
    ("arch", "count"),
    [
        ("resnet8", cifar_resnet_params(8, (16, 16, 32, 64), 100)),
        ("resnet20", cifar_resnet_params(20, (16, 16, 32, 64), 100)),
        ("resnet56", cifar_resnet_params(56, (16, 16, 32, 64), 100)),
        ("resnet110", cifar_resnet_params(110, (16, 16, 32, 64), 100)),
        ("resnet8x4", cifar_resnet_params(8, (32, 64, 128, 256), 100)),
        ("resnet32x4", cifar_resnet_params(32, (32, 64, 128, 256), 100)),
        ("wrn_16_1", wrn_params(16, 1, 100)),
        ("wrn_16_2", wrn_params(16, 2, 100)),
        ("wrn_40_1", wrn_params(40, 1, 100)),
        ("wrn_40_2", wrn_params(40, 2, 100)),
        ("vgg8", vgg_bn_params([[64], [128], [256], [512], [512]], 100)),
        ("vgg13", vgg_bn_params([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], 100)),
    ],
)
def test_param_count_matches_closed_form(arch, count):
    assert _nparams(_model(arch)) == count


@pytest.mark.parametrize(
    ("count", "millions"),
    [
        (cifar_resnet_params(20, (16, 16, 32, 64), 100), 0.28),
        (cifar_resnet_params(56, (16, 16, 32, 64), 100), 0.86),
        (cifar_resnet_params(8, (32, 64, 128, 256), 100), 1.23),
        (cifar_resnet_params(32, (32, 64, 128, 256), 100), 7.43),
        (wrn_params(40, 2, 100), 2.26),
        (wrn_params(16, 2, 100), 0.70),
        (vgg_bn_params([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], 100), 9.46),
        (vgg_bn_params([[64], [128], [256], [512], [512]], 100), 3.96),
    ],
)
def test_closed_forms_match_published_counts(count, millions):
    # Millions of parameters the KD literature lists for the RepDistiller zoo on CIFAR-100 (tables round
    # or truncate to two decimals, hence the 0.01M window).
    assert abs(count / 1e6 - millions) < 0.01


@pytest.mark.parametrize(("arch", "millions"), [("MobileNetV2", 0.81), ("ShuffleV1", 0.95), ("ShuffleV2", 1.36)])
def test_light_students_match_published_counts(arch, millions):
    assert abs(_nparams(_model(arch)) / 1e6 - millions) < 0.01


def test_torchvision_and_cifar_resnet18_50_counts():
    # torchvision's documented num_params for the ImageNet builders (1000 classes).
    assert _nparams(_model("resnet18")) == 11_689_512
    assert _nparams(_model("resnet34")) == 21_797_672
    assert _nparams(_model("resnet50")) == 25_557_032
    # The CIFAR variants differ only by a 3x3 instead of 7x7 stem and a 100-way classifier.
    stem = 3 * 64 * (49 - 9)
    assert _nparams(_model("ResNet18")) == 11_689_512 - stem - (512 * 900 + 900)
    assert _nparams(_model("ResNet50")) == 25_557_032 - stem - (2048 * 900 + 900)


def test_mobilenetv1_count_matches_keras_mobilenet():
    # Keras' MobileNet (alpha 1, 224) reports 4,231,976 trainable parameters: conv weights, BN gamma/beta
    # and the 1024 -> 1000 classifier; the same layers as mdistiller's MobileNetV1.
    assert _nparams(_model("MobileNetV1")) == 4_231_976


# ----------------------------------------------------------------------------------------------
# state-dict keys and shapes as mdistiller's model files define them
# ----------------------------------------------------------------------------------------------

KEYS = {
    "resnet8x4": {
        "conv1.weight": (32, 3, 3, 3),
        "bn1.running_var": (32,),
        "layer1.0.conv1.weight": (64, 32, 3, 3),
        "layer1.0.downsample.0.weight": (64, 32, 1, 1),
        "layer1.0.downsample.1.weight": (64,),
        "layer3.0.downsample.0.weight": (256, 128, 1, 1),
        "layer3.0.bn2.num_batches_tracked": (),
        "fc.weight": (100, 256),
        "fc.bias": (100,),
    },
    "resnet56": {"layer2.0.downsample.0.weight": (32, 16, 1, 1), "layer3.8.conv2.weight": (64, 64, 3, 3)},
    "wrn_40_2": {
        "conv1.weight": (16, 3, 3, 3),
        "block1.layer.0.bn1.weight": (16,),
        "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block1.layer.5.conv2.weight": (32, 32, 3, 3),
        "block3.layer.0.convShortcut.weight": (128, 64, 1, 1),
        "bn1.weight": (128,),
        "fc.weight": (100, 128),
    },
    "vgg13": {
        "block0.0.weight": (64, 3, 3, 3),
        "block0.0.bias": (64,),
        "block0.1.running_mean": (64,),
        "block0.3.weight": (64, 64, 3, 3),
        "block0.4.weight": (64,),
        "block4.4.running_var": (512,),
        "classifier.weight": (100, 512),
    },
    "vgg8": {"block0.1.weight": (64,), "block3.0.weight": (512, 256, 3, 3), "classifier.bias": (100,)},
    "MobileNetV2": {
        "conv1.0.weight": (16, 3, 3, 3),
        "blocks.0.0.conv.0.weight": (16, 16, 1, 1),
        "blocks.0.0.conv.3.weight": (16, 1, 3, 3),
        "blocks.0.0.conv.6.weight": (8, 16, 1, 1),
        "blocks.1.0.conv.0.weight": (48, 8, 1, 1),
        "blocks.6.0.conv.7.weight": (160,),
        "conv2.0.weight": (1280, 160, 1, 1),
        "classifier.0.weight": (100, 1280),
    },
    "ShuffleV1": {
        "conv1.weight": (24, 3, 1, 1),
        "layer1.0.conv1.weight": (54, 24, 1, 1),
        "layer1.0.conv2.weight": (54, 1, 3, 3),
        "layer1.0.conv3.weight": (216, 18, 1, 1),
        "layer2.0.conv1.weight": (60, 80, 1, 1),
        "layer3.3.bn3.weight": (960,),
        "linear.weight": (100, 960),
    },
    "ShuffleV2": {
        "layer1.0.conv1.weight": (24, 1, 3, 3),
        "layer1.0.conv2.weight": (58, 24, 1, 1),
        "layer1.0.conv5.weight": (58, 58, 1, 1),
        "layer1.1.conv1.weight": (58, 58, 1, 1),
        "layer2.7.bn3.weight": (116,),
        "conv2.weight": (1024, 464, 1, 1),
        "bn2.weight": (1024,),
        "linear.weight": (100, 1024),
    },
    "ResNet18": {
        "conv1.weight": (64, 3, 3, 3),
        "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
        "layer2.0.shortcut.1.running_mean": (128,),
        "linear.weight": (100, 512),
    },
    "ResNet50": {"layer1.0.shortcut.0.weight": (256, 64, 1, 1), "layer4.2.conv3.weight": (2048, 512, 1, 1)},
    "MobileNetV1": {
        "model.0.0.weight": (32, 3, 3, 3),
        "model.1.0.weight": (32, 1, 3, 3),
        "model.1.3.weight": (64, 32, 1, 1),
        "model.13.3.weight": (1024, 1024, 1, 1),
        "model.13.4.running_mean": (1024,),
        "fc.weight": (1000, 1024),
    },
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "fc.weight": (1000, 512),
    },
}

ABSENT = {
    "resnet56": ["layer1.0.downsample.0.weight"],  # 16 -> 16, stride 1: identity
    "wrn_16_1": ["block1.layer.0.convShortcut.weight"],  # equalInOut
    "wrn_40_2": ["block1.layer.1.convShortcut.weight"],
    "vgg8": ["block0.3.weight", "block0.2.weight"],  # one conv; the block's last ReLU is dropped
    "ResNet18": ["layer1.0.shortcut.0.weight"],
    "MobileNetV2": ["classifier.weight"],  # classifier is Sequential(Linear)
    "MobileNetV1": ["model.14.weight"],  # the avg pool has no parameters
}


@pytest.mark.parametrize("arch", list(KEYS))
def test_mdistiller_keys_and_shapes(arch):
    sd = _model(arch).state_dict()
    for key, shape in KEYS[arch].items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    for key in ABSENT.get(arch, []):
        assert key not in sd, key


def _bn_keys(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def mdistiller_resnet_keys(depth: int, f: tuple[int, int, int, int], classes: int) -> dict[str, tuple[int, ...]]:
    """Every key of mdistiller's CIFAR ``ResNet(depth, f, 'basicblock')``, written from its source."""
    keys = {"conv1.weight": (f[0], 3, 3, 3)} | _bn_keys("bn1", f[0])
    cin, n = f[0], (depth - 2) // 6
    for li, (planes, stride) in enumerate(((f[1], 1), (f[2], 2), (f[3], 2)), start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            keys[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            keys |= _bn_keys(f"{p}.bn1", planes)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys |= _bn_keys(f"{p}.bn2", planes)
            if b == 0 and (stride != 1 or cin != planes):
                keys[f"{p}.downsample.0.weight"] = (planes, cin, 1, 1)
                keys |= _bn_keys(f"{p}.downsample.1", planes)
            cin = planes
    return keys | {"fc.weight": (classes, cin), "fc.bias": (classes,)}


def mdistiller_wrn_keys(depth: int, k: int, classes: int) -> dict[str, tuple[int, ...]]:
    """Every key of mdistiller's ``WideResNet(depth, classes, k)``, written from its source."""
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (16, 3, 3, 3)}
    cin, n = 16, (depth - 4) // 6
    for g, width in enumerate((16 * k, 32 * k, 64 * k), start=1):
        for b in range(n):
            p = f"block{g}.layer.{b}"
            keys |= _bn_keys(f"{p}.bn1", cin)
            keys[f"{p}.conv1.weight"] = (width, cin, 3, 3)
            keys |= _bn_keys(f"{p}.bn2", width)
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            if cin != width:
                keys[f"{p}.convShortcut.weight"] = (width, cin, 1, 1)
            cin = width
    return keys | _bn_keys("bn1", cin) | {"fc.weight": (classes, cin), "fc.bias": (classes,)}


def _random_state(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        k: torch.tensor(240, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.rand(s, generator=g)
        for k, s in keys.items()
    }


@pytest.mark.parametrize(
    ("arch", "keys"),
    [
        ("resnet8x4", mdistiller_resnet_keys(8, (32, 64, 128, 256), 100)),
        ("resnet20", mdistiller_resnet_keys(20, (16, 16, 32, 64), 100)),
        ("wrn_16_2", mdistiller_wrn_keys(16, 2, 100)),
        ("wrn_40_1", mdistiller_wrn_keys(40, 1, 100)),
    ],
)
def test_mdistiller_checkpoint_loads_strictly(tmp_path, arch, keys):
    """A ``ckpt_epoch_240.pth``-style file ({"model": state_dict, ...}) with mdistiller's full key set."""
    state = _random_state(keys)
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": state, "epoch": 240, "best_acc": 71.5, "optimizer": {"state": {}}}, path)
    model = zoo.build(arch, 100)
    assert set(model.state_dict()) == set(keys)
    load_state_dict_file(model, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_plain_and_dataparallel_state_dicts_load(tmp_path):
    src = zoo.build("ShuffleV2", 100)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "dp.pth")
    dst = zoo.build("ShuffleV2", 100)
    load_state_dict_file(dst, tmp_path / "dp.pth")
    assert torch.equal(dst.linear.weight, src.linear.weight)
    torch.save(_model("resnet18").state_dict(), tmp_path / "tv.pth")  # torchvision weight-file layout
    load_state_dict_file(zoo.build("resnet18", 1000), tmp_path / "tv.pth")


@pytest.mark.parametrize(
    ("saved", "target"), [("resnet8x4", "resnet32x4"), ("wrn_16_2", "wrn_40_2"), ("vgg8", "vgg13")]
)
def test_wrong_arch_checkpoint_is_user_error(tmp_path, saved, target):
    torch.save({"model": zoo.build(saved, 100).state_dict(), "epoch": 240}, tmp_path / "ckpt.pth")
    with pytest.raises(UserError, match="does not fit"):
        load_state_dict_file(zoo.build(target, 100), tmp_path / "ckpt.pth")


def test_wrong_num_classes_is_user_error(tmp_path):
    torch.save({"model": zoo.build("resnet20", 100).state_dict()}, tmp_path / "ckpt.pth")
    with pytest.raises(UserError, match="shape mismatch.*fc"):
        load_state_dict_file(zoo.build("resnet20", 10), tmp_path / "ckpt.pth")


# ----------------------------------------------------------------------------------------------
# reference forwards, written from mdistiller's forward code with the model's leaf layers
# ----------------------------------------------------------------------------------------------


def _shuffle(x: torch.Tensor, g: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


def ref_resnet(m, x):
    def block(b, x):
        out = F.relu(b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out))
        return F.relu(out + (x if b.downsample is None else b.downsample[1](b.downsample[0](x))))

    feats = [F.relu(m.bn1(m.conv1(x)))]
    for layer in (m.layer1, m.layer2, m.layer3):
        y = feats[-1]
        for b in layer:
            y = block(b, y)
        feats.append(y)
    return feats[2], feats[-1], m.fc(F.avg_pool2d(feats[-1], 8).flatten(1))


def ref_resnetv2(m, x):
    def block(b, x):
        out = F.relu(b.bn1(b.conv1(x)))
        if hasattr(b, "conv3"):
            out = b.bn3(b.conv3(F.relu(b.bn2(b.conv2(out)))))
        else:
            out = b.bn2(b.conv2(out))
        sc = x if len(b.shortcut) == 0 else b.shortcut[1](b.shortcut[0](x))
        return F.relu(out + sc)

    feats = [F.relu(m.bn1(m.conv1(x)))]
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        y = feats[-1]
        for b in layer:
            y = block(b, y)
        feats.append(y)
    return feats[2], feats[-1], m.linear(feats[-1].mean((2, 3)))


def ref_wrn(m, x):
    def block(b, x):
        equal = b.conv1.in_channels == b.conv1.out_channels
        if not equal:
            x = F.relu(b.bn1(x))
            out = F.relu(b.bn2(b.conv1(x)))
        else:
            out = F.relu(b.bn2(b.conv1(F.relu(b.bn1(x)))))
        return (x if equal else b.convShortcut(x)) + b.conv2(out)

    feats = [m.conv1(x)]
    for group in (m.block1, m.block2, m.block3):
        y = feats[-1]
        for b in group.layer:
            y = block(b, y)
        feats.append(y)
    pre_pool = F.relu(m.bn1(feats[-1]))
    return feats[2], pre_pool, m.fc(F.avg_pool2d(pre_pool, 8).flatten(1))


def ref_vgg(m, x):
    for blk in (m.block0, m.block1, m.block2, m.block3, m.block4):
        assert isinstance(blk[-1], nn.BatchNorm2d)  # the block's last ReLU is applied outside
    f0 = F.relu(m.block0(x))
    f1 = F.relu(m.block1(F.max_pool2d(f0, 2)))
    f2 = F.relu(m.block2(F.max_pool2d(f1, 2)))
    f3 = F.relu(m.block3(F.max_pool2d(f2, 2)))
    f4 = F.relu(m.block4(f3))  # no pool3 on 32x32 inputs
    return f2, f4, m.classifier(f4.mean((2, 3)))


def ref_mobilenetv2(m, x):
    def block(b, x):
        c = b.conv
        out = F.relu(c[1](c[0](x)))
        out = F.relu(c[4](c[3](out)))
        out = c[7](c[6](out))
        return x + out if c[3].stride == (1, 1) and x.shape[1] == out.shape[1] else out

    y = F.relu(m.conv1[1](m.conv1[0](x)))
    feats = []
    for group in m.blocks:
        for b in group:
            y = block(b, y)
        feats.append(y)
    head = F.relu(m.conv2[1](m.conv2[0](y)))
    return feats[2], head, m.classifier[0](F.avg_pool2d(head, 2, ceil_mode=True).flatten(1))


def ref_shufflev1(m, x):
    def block(b, x):
        out = F.relu(b.bn1(b.conv1(x)))
        out = _shuffle(out, b.conv1.groups)
        out = F.relu(b.bn2(b.conv2(out)))
        out = b.bn3(b.conv3(out))
        if b.conv2.stride == (2, 2):
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)

    feats = [F.relu(m.bn1(m.conv1(x)))]
    for layer in (m.layer1, m.layer2, m.layer3):
        y = feats[-1]
        for b in layer:
            y = block(b, y)
        feats.append(y)
    return feats[2], feats[3], m.linear(F.avg_pool2d(feats[3], 4).flatten(1))


def ref_shufflev2(m, x):
    def down(b, x):
        left = F.relu(b.bn2(b.conv2(b.bn1(b.conv1(x)))))
        right = F.relu(b.bn3(b.conv3(x)))
        right = F.relu(b.bn5(b.conv5(b.bn4(b.conv4(right)))))
        return _shuffle(torch.cat([left, right], 1), 2)

    def basic(b, x):
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(b.bn3(b.conv3(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x2))))))))
        return _shuffle(torch.cat([x1, out], 1), 2)

    feats = [F.relu(m.bn1(m.conv1(x)))]
    for layer in (m.layer1, m.layer2, m.layer3):
        y = down(layer[0], feats[-1])
        for b in layer[1:]:
            y = basic(b, y)
        feats.append(y)
    head = F.relu(m.bn2(m.conv2(feats[3])))
    return feats[2], head, m.linear(F.avg_pool2d(head, 4).flatten(1))


def ref_mobilenetv1(m, x):
    outs, y = [], x
    for unit in list(m.model)[:14]:
        layers = list(unit)
        for i in range(0, len(layers), 3):  # conv, bn, relu triples
            y = F.relu(layers[i + 1](layers[i](y)))
        outs.append(y)
    return outs[11], outs[13], m.fc(F.avg_pool2d(outs[13], 7).flatten(1))


def ref_tv_resnet(m, x):
    y = m.maxpool(F.relu(m.bn1(m.conv1(x))))
    l3 = m.layer3(m.layer2(m.layer1(y)))
    l4 = m.layer4(l3)
    return l3, l4, m.fc(l4.mean((2, 3)))


REFS = {
    **dict.fromkeys(["resnet8", "resnet20", "resnet8x4"], ref_resnet),
    "ResNet18": ref_resnetv2,
    **dict.fromkeys(["wrn_16_1", "wrn_40_2"], ref_wrn),
    **dict.fromkeys(["vgg8", "vgg13"], ref_vgg),
    "MobileNetV2": ref_mobilenetv2,
    "ShuffleV1": ref_shufflev1,
    "ShuffleV2": ref_shufflev2,
    "MobileNetV1": ref_mobilenetv1,
    "resnet18": ref_tv_resnet,
}


@pytest.mark.parametrize("arch", list(REFS))
def test_forward_and_taps_match_reference(arch):
    torch.manual_seed(0)
    model = zoo.build(arch, 10)
    # Non-trivial BN statistics, so a BN skipped or applied twice changes the numbers.
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    size = 224 if arch == "MobileNetV1" else 64 if arch in IMAGENET else 32
    x = torch.randn(2, 3, size, size)
    specs = zoo.tap_specs(arch, 10)
    rec = TapRecorder(model, {n: s.module for n, s in specs.items()})
    with torch.no_grad():
        logits = model(x)
        hint, feat, ref_logits = REFS[arch](model, x)
    taps = rec.pop()
    torch.testing.assert_close(taps["hint"], hint, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(taps["feat"], feat, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(taps["logits"], logits)


def test_taps_keep_gradients_in_training():
    model = zoo.build("vgg8", 10).train()
    rec = TapRecorder(model, {n: s.module for n, s in zoo.tap_specs("vgg8", 10).items()})
    model(torch.randn(2, 3, 32, 32))
    taps = rec.pop()
    taps["hint"].pow(2).mean().backward()
    assert model.block0[0].weight.grad is not None and model.block0[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# quirks and initialisation
# ----------------------------------------------------------------------------------------------


def test_wrn_updates_three_batchnorms_twice_like_mdistiller():
    """mdistiller re-applies block2.layer.0.bn1, block3.layer.0.bn1 and bn1 to build pre-activations."""
    model = zoo.build("wrn_16_1", 10).train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        twin = copy.deepcopy(model)
        f1 = twin.block1(twin.conv1(x))
    model(x)
    twice = [model.block2.layer[0].bn1, model.block3.layer[0].bn1, model.bn1]
    for bn in twice:
        assert int(bn.num_batches_tracked) == 2
    assert int(model.block1.layer[0].bn1.num_batches_tracked) == 1
    # Two EMA steps with the same batch mean m from 0: (1 - 0.9**2) * m.
    expected = (1 - 0.9**2) * f1.mean((0, 2, 3))
    torch.testing.assert_close(twice[0].running_mean, expected, rtol=1e-4, atol=1e-6)

    single = wrn.WideResNet(16, 10, 1, double_bn_update=False).train()
    single(x)
    assert int(single.bn1.num_batches_tracked) == 1


def test_vgg_pool3_only_on_64px_inputs():
    model = _model("vgg8")
    rec = TapRecorder(model, {"feat": "relu4"})
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert rec.pop()["feat"].shape[-1] == 4  # 64 / 16: pool3 used
    rec.remove()


def test_initialisation_follows_mdistiller():
    vgg = _model("vgg13")
    assert torch.count_nonzero(vgg.block0[0].bias) == 0 and torch.count_nonzero(vgg.classifier.bias) == 0
    assert vgg.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)  # N(0, 0.01)
    conv = vgg.block4[3]  # N(0, sqrt(2 / (k*k*out)))
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.05)
    res = _model("resnet32x4")  # kaiming_normal fan_out = same law
    assert res.layer3[1].conv1.weight.std().item() == pytest.approx((2 / (9 * 256)) ** 0.5, rel=0.05)
    wrn = _model("wrn_40_2")
    assert torch.count_nonzero(wrn.fc.bias) == 0
    mbv2 = _model("MobileNetV2")
    assert mbv2.classifier[0].weight.std().item() == pytest.approx(0.01, rel=0.05)
