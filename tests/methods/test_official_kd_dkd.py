"""KD and DKD against tensors produced by mdistiller's own ``kd_loss`` / ``dkd_loss`` (``official/kd_dkd.pt``).

Provenance and the generating script: ``tests/methods/official/README.md``.

Tolerance: ``atol = rtol = 1e-6`` (float32 values of order 1-60). KD is the same op sequence as
mdistiller, so it agrees to the last bit or two. Our DKD takes the student's binary log-probabilities in
log space (``logsumexp``) where mdistiller takes ``log`` of summed softmax masses: the same quantity,
rounded differently (measured max abs difference 1e-6 on a loss of 15, see the README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from methods.base import Progress, TapSpec, build_method
from methods.dkd import dkd_loss
from methods.kd import kd_loss

FIXTURES = Path(__file__).parent / "official"
TOL = dict(atol=1e-6, rtol=1e-6)


def load(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


OFFICIAL = load("kd_dkd")
KD, DKD = OFFICIAL["kd"], OFFICIAL["dkd"]
TAPS = {"logits": TapSpec("logits", 10, 0, ("logits",))}


def test_fixture_provenance() -> None:
    assert OFFICIAL["source"]["repo"] == "megvii-research/mdistiller"
    assert OFFICIAL["source"]["commit"] == "a08d46f10d6102bd6e3f258ca5ac880b020ea259"


def loss_and_grad(fn: Any, z_s: torch.Tensor, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = z_s.clone().requires_grad_(True)
    loss = fn(z, *args)
    loss.backward()
    return loss.detach(), z.grad


# ------------------------------------------------------------------------------------------ KD
@pytest.mark.parametrize("case", KD["cases"], ids=lambda c: f"T{c['temperature']:g}")
def test_kd_loss_matches_mdistiller(case: dict[str, Any]) -> None:
    loss, grad = loss_and_grad(kd_loss, KD["student"], KD["teacher"], case["temperature"])
    torch.testing.assert_close(loss, case["loss"], **TOL)
    torch.testing.assert_close(grad, case["grad_student"], **TOL)


def test_kd_method_is_mdistiller_weighting() -> None:
    """``KD.forward_train``: ``loss_kd = KD_WEIGHT * kd_loss`` (CIFAR ``KD_WEIGHT`` 0.9, T 4)."""
    case = next(c for c in KD["cases"] if c["temperature"] == 4.0)
    m = build_method("kd", TAPS, TAPS)
    terms = m({"logits": KD["student"]}, {"logits": KD["teacher"]}, None, Progress())
    torch.testing.assert_close(terms["kd"], 0.9 * case["loss"], **TOL)


# ------------------------------------------------------------------------------------------ DKD
@pytest.mark.parametrize("case", DKD["cases"], ids=lambda c: f"a{c['alpha']:g}-b{c['beta']:g}-T{c['temperature']:g}")
def test_dkd_loss_matches_mdistiller(case: dict[str, Any]) -> None:
    args = (DKD["target"], case["alpha"], case["beta"], case["temperature"])
    loss, grad = loss_and_grad(dkd_loss, DKD["student"], DKD["teacher"], *args)
    torch.testing.assert_close(loss, case["loss"], **TOL)
    torch.testing.assert_close(grad, case["grad_student"], **TOL)


def test_dkd_method_after_warmup_is_mdistiller_loss() -> None:
    """``DKD.forward_train``: ``min(epoch / warmup, 1) * dkd_loss``; at epoch 20 of a 20-epoch warm-up, 1."""
    case = DKD["cases"][0]
    m = build_method("dkd", TAPS, TAPS, alpha=case["alpha"], beta=case["beta"], temperature=case["temperature"])
    terms = m({"logits": DKD["student"]}, {"logits": DKD["teacher"]}, DKD["target"], Progress(epoch=20))
    torch.testing.assert_close(terms["dkd"], case["loss"], **TOL)
    half = m({"logits": DKD["student"]}, {"logits": DKD["teacher"]}, DKD["target"], Progress(epoch=10))
    torch.testing.assert_close(half["dkd"], 0.5 * case["loss"], **TOL)


def test_dkd_finite_where_mdistiller_overflows() -> None:
    """A saturated student (target logit 120 above the rest, T = 1): mdistiller's float32 loss is ``inf``.

    Its ``log(1 - p_t)`` is ``log(0)`` once every non-target probability underflows; its gradient is NaN.
    The same official function in float64 is finite, and ours in float32 gives that value.
    """
    sat = DKD["saturated"]
    assert torch.isinf(sat["loss_float32"]) and torch.isnan(sat["grad_student_float32"]).all()  # official, fp32
    assert torch.isfinite(sat["loss_float64"]) and torch.isfinite(sat["grad_student_float64"]).all()
    args = (sat["target"], sat["alpha"], sat["beta"], sat["temperature"])
    loss, grad = loss_and_grad(dkd_loss, sat["student"], sat["teacher"], *args)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), sat["loss_float64"], atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(grad.double(), sat["grad_student_float64"], atol=1e-6, rtol=1e-5)
