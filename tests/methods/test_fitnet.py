"""FitNet: mdistiller's ConvReg layer choice and parameter counts, the MSE loss, gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods import Progress, TapSpec, UserError, build_method
from methods.fitnet import ConvReg, FitNet

S_C, T_C = 8, 16


def hint(channels: int, stride: int, name: str = "hint") -> dict[str, TapSpec]:
    return {name: TapSpec(name, channels, stride, ("hint",)), "logits": TapSpec("logits", 10, 0, ("logits",))}


def regressor(method: FitNet) -> ConvReg:
    (reg,) = method.regressors.values()
    return reg


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("s_stride", "t_stride", "conv_type", "kernel", "stride", "s_hw", "t_hw", "conv_params"),
    [
        # equal maps: 1x1 conv, weight S_C*T_C*1*1 + bias T_C
        (8, 8, nn.Conv2d, (1, 1), (1, 1), 4, 4, S_C * T_C + T_C),
        # student map twice the teacher's: 3x3 stride-2 conv
        (4, 8, nn.Conv2d, (3, 3), (2, 2), 8, 4, S_C * T_C * 9 + T_C),
        # student map half the teacher's: 4x4 stride-2 transposed conv, weight [S_C, T_C, 4, 4]
        (8, 4, nn.ConvTranspose2d, (4, 4), (2, 2), 4, 8, S_C * T_C * 16 + T_C),
    ],
)
def test_regressor_layers_shapes_and_parameter_count(
    s_stride: int, t_stride: int, conv_type: type, kernel: tuple, stride: tuple, s_hw: int, t_hw: int, conv_params: int
) -> None:
    m = build_method("fitnet", hint(S_C, s_stride), hint(T_C, t_stride))
    reg = regressor(m)
    assert [name for name, _ in reg.named_children()] == ["conv", "bn", "relu"]
    assert type(reg.conv) is conv_type and isinstance(reg.bn, nn.BatchNorm2d) and isinstance(reg.relu, nn.ReLU)
    assert reg.conv.kernel_size == kernel and reg.conv.stride == stride
    # conv weight + bias, then BatchNorm's weight and bias (running stats are buffers).
    assert n_params(m) == conv_params + 2 * T_C
    out = reg(torch.randn(2, S_C, s_hw, s_hw))
    assert out.shape == (2, T_C, t_hw, t_hw)
    assert (out >= 0).all()  # the final ReLU


def test_input_size_sizes_the_kernel_like_mdistiller() -> None:
    # 16x16 input: student stride 1 -> 16x16, teacher stride 4 -> 4x4: kernel 1 + 16 - 4 = 13.
    with pytest.raises(UserError, match="input_size"):
        build_method("fitnet", hint(S_C, 1), hint(T_C, 4))
    m = build_method("fitnet", hint(S_C, 1), hint(T_C, 4), input_size=[16, 16])
    reg = regressor(m)
    assert reg.conv.kernel_size == (13, 13)
    assert n_params(m) == S_C * T_C * 13 * 13 + T_C + 2 * T_C
    assert reg(torch.randn(1, S_C, 16, 16)).shape == (1, T_C, 4, 4)
    # With input_size, equal strides still give the 1x1 conv.
    assert regressor(build_method("fitnet", hint(S_C, 8), hint(T_C, 8), input_size=32)).conv.kernel_size == (1, 1)


def test_impossible_size_ratio() -> None:
    with pytest.raises(UserError, match="stride"):
        build_method("fitnet", hint(S_C, 16), hint(T_C, 4))
    with pytest.raises(UserError, match="cannot be mapped"):
        ConvReg(S_C, T_C, (2, 2), (8, 8))
    with pytest.raises(UserError, match="input_size"):
        build_method("fitnet", hint(S_C, 8), hint(T_C, 8), input_size=[0, 3])


def test_loss_is_feat_weight_times_mse_with_identity_regressor() -> None:
    m = build_method("fitnet", hint(4, 8), hint(4, 8))
    reg = regressor(m)
    with torch.no_grad():
        reg.conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        reg.conv.bias.zero_()
        reg.bn.running_mean.zero_()
        reg.bn.running_var.fill_(1.0 - reg.bn.eps)  # eval BN becomes x / sqrt(1) exactly
    m.eval()
    f_s, f_t = torch.rand(2, 4, 3, 3), torch.randn(2, 4, 3, 3)  # f_s >= 0 so the ReLU is the identity too
    out = m({"hint": f_s}, {"hint": f_t}, None, Progress())
    assert set(out) == {"fitnet"}
    expected = 100.0 * ((f_s - f_t) ** 2).sum() / f_s.numel()
    assert out["fitnet"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_matches_independent_computation_in_train_mode() -> None:
    m = build_method("fitnet", hint(S_C, 4), hint(T_C, 8))
    m.train()
    f_s, f_t = torch.randn(3, S_C, 6, 6), torch.randn(3, T_C, 3, 3)
    got = m({"hint": f_s}, {"hint": f_t}, None, Progress())["fitnet"]
    reg = regressor(m)
    x = F.conv2d(f_s, reg.conv.weight, reg.conv.bias, stride=2, padding=1)
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    x = (x - mean) / torch.sqrt(var + 1e-5)  # BN init: weight 1, bias 0, eps 1e-5, batch statistics
    expected = 100.0 * ((x.clamp(min=0) - f_t) ** 2).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_regressor_and_student_not_teacher() -> None:
    m = build_method("fitnet", hint(S_C, 8), hint(T_C, 8))
    f_s = torch.randn(2, S_C, 4, 4, requires_grad=True)
    f_t = torch.randn(2, T_C, 4, 4, requires_grad=True)
    m({"hint": f_s}, {"hint": f_t}, None, Progress())["fitnet"].backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert regressor(m).conv.weight.grad.abs().sum() > 0
    assert f_t.grad is None


def test_defaults_match_mdistiller_cfg() -> None:
    m = build_method("fitnet", hint(S_C, 8), hint(T_C, 8))
    assert (m.feat_weight, m.task_weight, m.shared) == (100.0, 1.0, False)  # CFG.FITNET.LOSS


def fpn(channels: int, strides: tuple[int, ...]) -> dict[str, TapSpec]:
    return {f"fpn.p{i}": TapSpec(f"fpn.p{i}", channels, s, ("hint", "feature")) for i, s in enumerate(strides, 3)}


def test_one_regressor_per_tap_and_sum_of_terms() -> None:
    m = build_method("fitnet", fpn(S_C, (8, 16)), fpn(T_C, (8, 16)))
    assert sorted(m.regressors) == ["fpn_p3", "fpn_p4"]
    assert n_params(m) == 2 * (S_C * T_C + 3 * T_C)
    m.eval()
    s = {"fpn.p3": torch.randn(1, S_C, 4, 4), "fpn.p4": torch.randn(1, S_C, 2, 2)}
    t = {"fpn.p3": torch.randn(1, T_C, 4, 4), "fpn.p4": torch.randn(1, T_C, 2, 2)}
    got = m(s, t, None, Progress())["fitnet"]
    expected = sum(F.mse_loss(m.regressors[k.replace(".", "_")](s[k]), t[k]) for k in s)
    assert got.item() == pytest.approx(100.0 * expected.item(), rel=1e-6)


def test_shared_regressor() -> None:
    m = build_method("fitnet", fpn(S_C, (8, 8, 8)), fpn(T_C, (8, 8, 8)), shared=True)
    assert list(m.regressors) == ["shared"]
    assert n_params(m) == S_C * T_C + 3 * T_C
    s = {k: torch.randn(1, S_C, 2, 2) for k in ("fpn.p3", "fpn.p4", "fpn.p5")}
    t = {k: torch.randn(1, T_C, 2, 2) for k in s}
    m(s, t, None, Progress())["fitnet"].backward()
    assert m.regressors["shared"].conv.weight.grad is not None
    with pytest.raises(UserError, match="shared"):
        build_method("fitnet", fpn(S_C, (8, 16)), fpn(T_C, (8, 16)), shared=True)


def test_missing_hint_tap() -> None:
    with pytest.raises(UserError, match="hint"):
        build_method("fitnet", hint(S_C, 8), hint(T_C, 8, name="other_hint"))
    no_hint = {"logits": TapSpec("logits", 10, 0, ("logits",))}
    with pytest.raises(UserError, match="hint"):
        build_method("fitnet", no_hint, no_hint)
    m = build_method("fitnet", hint(S_C, 8), hint(T_C, 8))
    with pytest.raises(UserError, match="teacher"):
        m({"hint": torch.randn(1, S_C, 2, 2)}, {}, None, Progress())


def test_shape_mismatch_is_reported() -> None:
    m = build_method("fitnet", hint(S_C, 8), hint(T_C, 8))
    with pytest.raises(UserError, match="does not match"):
        m({"hint": torch.randn(1, S_C, 4, 4)}, {"hint": torch.randn(1, T_C, 3, 3)}, None, Progress())
