"""PKD feature normalisation (``feat_norm="pkd"``) against its definition: Pearson correlation per channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods import Progress, TapSpec, UserError, build_method
from methods.feature_norm import pkd_loss, pkd_norm


def mmdet_norm(feat: torch.Tensor) -> torch.Tensor:
    """mmdetection's ``pkd_loss.norm`` spelt as it is there: channels first, flattened, unbiased std + 1e-6."""
    n, c, h, w = feat.shape
    flat = feat.permute(1, 0, 2, 3).reshape(c, -1)
    flat = (flat - flat.mean(dim=-1, keepdim=True)) / (flat.std(dim=-1, keepdim=True) + 1e-6)
    return flat.reshape(c, n, h, w).permute(1, 0, 2, 3)


def test_norm_is_mmdetections_per_channel_standardisation() -> None:
    x = torch.randn(3, 5, 4, 6) * torch.arange(1, 6).view(1, 5, 1, 1) + 7
    torch.testing.assert_close(pkd_norm(x), mmdet_norm(x))
    flat = pkd_norm(x).permute(1, 0, 2, 3).reshape(5, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(5), atol=1e-5, rtol=0)


def test_loss_is_one_minus_the_pearson_correlation_per_channel() -> None:
    """Half the MSE of two standardised vectors of M values is ``(M - 1) / M * (1 - r)``; mean over channels."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    s = 0.6 * t + torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    m = 2 * 5 * 5
    r = [np.corrcoef(s[:, c].flatten().numpy(), t[:, c].flatten().numpy())[0, 1] for c in range(4)]
    expected = np.mean([(m - 1) / m * (1 - rc) for rc in r])
    assert pkd_loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_loss_ignores_each_channels_scale_and_offset() -> None:
    t = torch.randn(2, 3, 4, 4)
    s = torch.randn(2, 3, 4, 4)
    scale = torch.tensor([0.01, 10.0, 300.0]).view(1, 3, 1, 1)
    assert pkd_loss(s * scale - 5, t * 40 + 2).item() == pytest.approx(pkd_loss(s, t).item(), rel=1e-4)
    assert pkd_loss(t * scale + 1, t).item() == pytest.approx(0.0, abs=1e-5)
    assert pkd_loss(-t, t).item() == pytest.approx(2 * (32 - 1) / 32, rel=1e-4)  # r = -1


def fpn(channels: int) -> dict[str, TapSpec]:
    return {f"fpn.p{i}": TapSpec(f"fpn.p{i}", channels, 2**i, ("hint", "feature")) for i in (3, 4)}


def test_fitnet_pkd_is_pkd_loss_of_the_regressed_student_summed_over_levels() -> None:
    m = build_method("fitnet", fpn(6), fpn(8), feat_weight=6.0, feat_norm="pkd").eval()
    s = {"fpn.p3": torch.randn(2, 6, 4, 4), "fpn.p4": torch.randn(2, 6, 2, 2)}
    t = {"fpn.p3": 50 * torch.randn(2, 8, 4, 4), "fpn.p4": 50 * torch.randn(2, 8, 2, 2)}
    got = m(s, t, None, Progress())["fitnet"]
    regressed = {k: m.regressors[k.replace(".", "_")](s[k]) for k in s}
    expected = sum(F.mse_loss(mmdet_norm(regressed[k]), mmdet_norm(t[k])) / 2 for k in s)
    assert got.item() == pytest.approx(6.0 * expected.item(), rel=1e-5)
    plain = build_method("fitnet", fpn(6), fpn(8), feat_weight=6.0)
    plain.load_state_dict(m.state_dict())
    assert plain.eval()(s, t, None, Progress())["fitnet"].item() > 100 * got.item()  # raw MSE sees the scale 50


def test_diffkd_pkd_terms_do_not_depend_on_the_feature_scale() -> None:
    """Standardised inputs: the teacher map times 1000 gives the same terms (official MSE would grow 1e6x)."""
    s_taps, t_taps = fpn(6), fpn(8)
    m = build_method("diffkd", s_taps, t_taps, distill_logits=False, share_levels=True, feat_norm="pkd")
    s = {"fpn.p3": torch.randn(2, 6, 4, 4), "fpn.p4": torch.randn(2, 6, 2, 2)}
    t = {"fpn.p3": torch.randn(2, 8, 4, 4), "fpn.p4": torch.randn(2, 8, 2, 2)}

    def terms(teacher: dict[str, torch.Tensor]) -> dict[str, float]:
        torch.manual_seed(3)  # the same noise and timesteps for both calls
        return {k: v.item() for k, v in m(s, teacher, None, Progress()).items()}

    small, big = terms(t), terms({k: 1000 * v for k, v in t.items()})
    assert small.keys() == {"kd_feat", "diff"}
    for k in small:
        assert big[k] == pytest.approx(small[k], rel=1e-3), k
    assert 0 < small["kd_feat"] <= 2 * 2  # two levels of 1 - r, r in [-1, 1]


def test_feat_norm_is_validated() -> None:
    with pytest.raises(UserError, match="feat_norm must be one of none, pkd"):
        build_method("fitnet", fpn(6), fpn(8), feat_norm="l2")
