"""FitNet's named options for dense prediction: the adapter (mdistiller's ConvReg with or without its ReLU, CIRKD's
bias-free 1x1 conv, none as in PKD), a subset of taps (mmrazor's P2-P5), and CIRKD's logit KD term beside the hints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import Progress, TapSpec, UserError, build_method
from methods.kd import kd_loss

FPN = {f"fpn.p{i}": TapSpec(f"fpn.p{i}", 8, 2**i, ("hint", "feature"), "fpn") for i in range(2, 7)}
LOGITS = {"logits": TapSpec("logits", 5, 0, ("logits",), "cls")}


def _maps(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(2, 8, 64 // s.stride, 64 // s.stride, generator=g) for n, s in FPN.items()}


def test_conv_bn_is_convreg_without_the_relu_and_reaches_negative_values():
    torch.manual_seed(0)
    relu = build_method("fitnet", FPN, FPN, adapter="conv_bn_relu")
    torch.manual_seed(0)
    plain = build_method("fitnet", FPN, FPN, adapter="conv_bn")
    x = _maps(1)["fpn.p3"]
    a, b = relu.regressors["fpn_p3"](x), plain.regressors["fpn_p3"](x)
    assert torch.equal(a, F.relu(b))  # the same conv and BN weights; only the ReLU differs
    assert (b < 0).float().mean() > 0.3 and (a >= 0).all()


def test_conv_is_cirkds_bias_free_1x1_and_none_compares_the_maps_directly():
    cirkd = build_method("fitnet", FPN, FPN, adapter="conv")
    reg = cirkd.regressors["fpn_p2"]
    assert isinstance(reg, nn.Conv2d) and reg.kernel_size == (1, 1) and reg.bias is None
    direct = build_method("fitnet", FPN, FPN, adapter="none", feat_weight=1.0)
    s, t = _maps(1), _maps(2)
    out = direct(s, t, None, Progress())["fitnet"]
    assert torch.allclose(out, sum(F.mse_loss(s[n], t[n]) for n in FPN))
    wider = {n: TapSpec(n, 16, s_.stride, s_.roles, s_.module) for n, s_ in FPN.items()}
    with pytest.raises(UserError, match="adapter='none' needs hint tap .* and channels"):
        build_method("fitnet", FPN, wider, adapter="none")


def test_taps_narrow_the_distilled_levels_and_the_weight_applies_to_their_sum():
    p2_p5 = [f"fpn.p{i}" for i in range(2, 6)]
    m = build_method("fitnet", FPN, FPN, adapter="none", feat_weight=6.0, taps=p2_p5, feat_norm="pkd")
    assert m.hint_taps == p2_p5 and not any("p6" in k for k in m.regressors)
    s, t = _maps(1), _maps(2)
    from methods.feature_norm import pkd_loss

    expected = 6.0 * sum(pkd_loss(s[n], t[n]) for n in p2_p5)  # mmrazor: loss_weight 6 per level, summed
    assert torch.allclose(m(s, t, None, Progress())["fitnet"], expected)
    with pytest.raises(UserError, match="are not taps of this pair"):
        build_method("fitnet", FPN, FPN, taps=["fpn.p9"])


def test_the_kd_term_is_kd_loss_on_the_logits_with_its_weight():
    specs = {**FPN, **LOGITS}
    m = build_method("fitnet", specs, specs, adapter="none", kd_weight=1.0, kd_temperature=2.0)
    s, t = {**_maps(1), "logits": torch.randn(6, 5)}, {**_maps(2), "logits": torch.randn(6, 5)}
    terms = m(s, t, torch.zeros(6, dtype=torch.long), Progress())
    assert torch.allclose(terms["kd"], kd_loss(s["logits"], t["logits"], 2.0))
    assert "kd" not in build_method("fitnet", specs, specs, adapter="none")(s, t, None, Progress())
    with pytest.raises(UserError, match="kd_weight > 0 needs a logits tap"):
        build_method("fitnet", FPN, FPN, kd_weight=1.0)
