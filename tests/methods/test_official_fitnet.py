"""FitNet against tensors produced by mdistiller's ``ConvReg`` and FitNet loss (``official/fitnet.pt``).

One case per branch of mdistiller's ``ConvReg`` (student map half, double, equal to, or larger than the
teacher's). Each stores the official regressor's initial state dict, the inputs, and after one training
forward + backward of ``FEAT_WEIGHT * MSE(ConvReg(f_s), f_t)`` the regressed map, the loss, the gradients
and the BatchNorm statistics. Provenance and the generating script: ``tests/methods/official/README.md``.

Tolerance: ``atol = rtol = 1e-6`` on values and ``atol = 1e-5, rtol = 1e-6`` on gradients: the same
float32 ops, but reductions may be ordered differently (thread count), and the gradients are of order 10
(``FEAT_WEIGHT`` 100), so their rounding noise is ~1e-6 absolute. The conv bias gradient is such noise
only: it is zero in exact arithmetic, because the training-mode BatchNorm after the conv removes any
constant (measured max abs differences in the README). A real difference (kernel, stride, padding,
BN/ReLU order, weighting) is far larger.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from methods.base import Progress, TapSpec, build_method
from methods.fitnet import ConvReg

FIXTURES = Path(__file__).parent / "official"
TOL = dict(atol=1e-6, rtol=1e-6)
GRAD_TOL = dict(atol=1e-5, rtol=1e-6)

OFFICIAL = torch.load(FIXTURES / "fitnet.pt", weights_only=True)
CASES = list(OFFICIAL["cases"])

#: Student / teacher strides (and input size where a stride ratio cannot size the kernel) under which our
#: FitNet method builds the same regressor mdistiller builds from its dummy forward's map sizes.
STRIDES: dict[str, tuple[int, int, int | None]] = {
    "half": (4, 8, None),  # 8x8 student map, 4x4 teacher map
    "double": (8, 4, None),  # 4x4 -> 8x8
    "same": (8, 8, None),  # 4x4 -> 4x4
    "shrink": (4, 6, 24),  # 24 / 4 = 6 -> 24 / 6 = 4
}


def test_fixture_provenance() -> None:
    assert OFFICIAL["source"]["repo"] == "megvii-research/mdistiller"
    assert OFFICIAL["source"]["commit"] == "a08d46f10d6102bd6e3f258ca5ac880b020ea259"
    assert set(CASES) == set(STRIDES)


def check(name: str, reg: torch.nn.Module, regressed: torch.Tensor, loss: torch.Tensor, f_s: torch.Tensor) -> None:
    case = OFFICIAL["cases"][name]
    torch.testing.assert_close(regressed.detach(), case["regressed"], **TOL)
    torch.testing.assert_close(loss.detach(), case["loss"], **TOL)
    torch.testing.assert_close(f_s.grad, case["grad_student"], **GRAD_TOL)
    params = dict(reg.named_parameters())
    assert set(params) == set(case["grads"])
    for n, g in case["grads"].items():
        torch.testing.assert_close(params[n].grad, g, **GRAD_TOL, msg=lambda m, n=n: f"grad {n}: {m}")
    buffers = dict(reg.named_buffers())
    for n, b in case["buffers_after"].items():
        torch.testing.assert_close(buffers[n], b, **TOL, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name", CASES)
def test_convreg_matches_mdistiller(name: str) -> None:
    case = OFFICIAL["cases"][name]
    s, t = case["student"], case["teacher"]
    reg = ConvReg(s.shape[1], t.shape[1], tuple(s.shape[2:]), tuple(t.shape[2:]))
    reg.load_state_dict(case["state_dict"], strict=True)  # mdistiller's names: conv.*, bn.*
    reg.train()
    f_s = s.clone().requires_grad_(True)
    regressed = reg(f_s)
    loss = case["feat_weight"] * F.mse_loss(regressed, t)
    loss.backward()
    check(name, reg, regressed, loss, f_s)


@pytest.mark.parametrize("name", CASES)
def test_fitnet_method_matches_mdistiller(name: str) -> None:
    """Our method, sized from tap strides instead of a dummy forward, gives mdistiller's ``loss_feat``."""
    case = OFFICIAL["cases"][name]
    s, t = case["student"], case["teacher"]
    s_stride, t_stride, input_size = STRIDES[name]
    m = build_method(
        "fitnet",
        {"hint": TapSpec("hint", s.shape[1], s_stride, ("hint",))},
        {"hint": TapSpec("hint", t.shape[1], t_stride, ("hint",))},
        input_size=input_size,
    )
    reg = m.regressors["hint"]
    reg.load_state_dict(case["state_dict"], strict=True)
    m.train()
    f_s = s.clone().requires_grad_(True)
    captured: list[torch.Tensor] = []
    reg.register_forward_hook(lambda mod, a, o: captured.append(o))
    terms = m({"hint": f_s}, {"hint": t}, None, Progress())
    terms["fitnet"].backward()
    check(name, reg, captured[0], terms["fitnet"], f_s)
