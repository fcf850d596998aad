"""KD against the KL formula written out, torch.distributions, and Hinton's high-temperature limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods import Progress, TapSpec, UserError, build_method
from methods.kd import KD, kd_loss

TAPS = {"logits": TapSpec("logits", 5, 0, ("logits",))}


def kl_by_hand(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    """T^2 * mean_i sum_k p_ik (log p_ik - log q_ik), p/q the softened teacher/student, with explicit sums."""
    total = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        es = [np.exp(v / temperature) for v in s_row]
        et = [np.exp(v / temperature) for v in t_row]
        q = [v / sum(es) for v in es]
        p = [v / sum(et) for v in et]
        total += sum(p[k] * (np.log(p[k]) - np.log(q[k])) for k in range(len(p)))
    return temperature**2 * total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_equals_kl_written_out(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    got = kd_loss(s, t, temperature).item()
    assert got == pytest.approx(kl_by_hand(s.numpy(), t.numpy(), temperature), rel=1e-10)


def test_kd_equals_torch_distributions() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 7, generator=g) * 3, torch.randn(4, 7, generator=g) * 3
    kl = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=t / 4), torch.distributions.Categorical(logits=s / 4)
    )
    assert kd_loss(s, t, 4.0).item() == pytest.approx(16 * kl.mean().item(), rel=1e-5)


def test_kd_zero_iff_equal() -> None:
    z = torch.randn(2, 5)
    assert kd_loss(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z + 0.0, z + torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]), 4.0).item() > 1e-4
    # A constant shift changes no probability: still zero.
    assert kd_loss(z, z + 3.0, 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_high_temperature_gradient_matches_hinton() -> None:
    """Hinton et al. eq. 4: for large T and zero-mean logits, d(T^2 KL)/dz_s ~ (z_s - z_t) / K."""
    g = torch.Generator().manual_seed(2)
    s = torch.randn(1, 6, generator=g, dtype=torch.float64)
    t = torch.randn(1, 6, generator=g, dtype=torch.float64)
    s, t = (s - s.mean()).requires_grad_(), t - t.mean()
    kd_loss(s, t, 1000.0).backward()
    torch.testing.assert_close(s.grad, (s - t).detach() / 6, rtol=1e-2, atol=1e-6)


def test_method_defaults_weights_and_registry() -> None:
    m = build_method("kd", TAPS, TAPS)
    assert isinstance(m, KD)
    assert (m.temperature, m.task_weight, m.kd_weight) == (4.0, 0.1, 0.9)  # mdistiller CFG.KD
    assert list(m.parameters()) == []
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    out = m({"logits": s}, {"logits": t}, torch.tensor([0, 1, 2]), Progress())
    assert set(out) == {"kd"}
    assert out["kd"].item() == pytest.approx(0.9 * kd_loss(s, t, 4.0).item(), rel=1e-6)
    out["kd"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_method_overrides_imagenet_style() -> None:
    m = build_method("kd", TAPS, TAPS, temperature=1.0, ce_weight=0.5, kd_weight=0.5)
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    out = m({"logits": s}, {"logits": t}, None, Progress())
    assert m.task_weight == 0.5
    assert out["kd"].item() == pytest.approx(0.5 * kd_loss(s, t, 1.0).item(), rel=1e-6)


def test_user_errors() -> None:
    with pytest.raises(UserError, match="temperture"):
        build_method("kd", TAPS, TAPS, temperture=2.0)
    feat_only = {"feat": TapSpec("feat", 8, 8, ("feature",))}
    with pytest.raises(UserError, match="logits"):
        build_method("kd", feat_only, feat_only)
    with pytest.raises(UserError, match="temperature"):
        build_method("kd", TAPS, TAPS, temperature=0.0)
    m = build_method("kd", TAPS, TAPS)
    with pytest.raises(UserError, match="student"):
        m({}, {"logits": torch.zeros(1, 5)}, None, Progress())
