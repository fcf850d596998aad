"""DiffKD against tensors produced by the official code (``tests/methods/official/diffkd.pt``).

The fixture holds, per case, the official ``DiffKD`` module's initial state dict, the inputs, every random
draw its forward made (``torch.randn`` / ``torch.randint``, in call order), and its outputs, gradients and
BatchNorm statistics after one training forward + backward composed as the official ``kd_loss.py`` does
(``MSE`` on features, ``KLDivergence(tau=1)`` on logits, plus the diffusion and AE losses). Provenance and
the generating script: ``tests/methods/official/README.md``.

Our module loads the official state dict with ``strict=True`` (the parameter names are the official ones;
no key map is needed), the draws are replayed to it, and everything is compared.

Tolerance: ``atol = rtol = 1e-5``. Both sides run the same float32 ops except the DDIM step, where the
official multiplies by 0-d float32 tensors (``alphas_cumprod[t] ** 0.5``) and ours by Python floats
rounded once; that and summation order give differences of a few float32 ulps (measured max abs
difference ~1e-6 on outputs of order 1, see the README). A real mismatch (a wrong coefficient, timestep, a
missing BN call or detach) moves these tensors by 1e-3 or more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from methods.base import Progress, TapSpec, build_method
from methods.diffkd import DiffKD, feature_kd_loss, logits_kd_loss

FIXTURES = Path(__file__).parent / "official"
TOL = dict(atol=1e-5, rtol=1e-5)
EMBEDDING = "model.time_embedding.weight"


def load(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


OFFICIAL = load("diffkd")
CASES = list(OFFICIAL["cases"])


def test_fixture_provenance() -> None:
    src = OFFICIAL["source"]
    assert src["repo"] == "hunto/image_classification_sota"
    assert src["commit"] == "6cb144105fc5c2f778e51cc66e35314938f96fae"  # pinned by hunto/DiffKD 904a465
    assert set(CASES) == {"feat_noae", "feat_ae", "logits"}


# ------------------------------------------------------------------------------------------ helpers
def official_state(case: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The official initial state dict, with the time-embedding rows the forward never reads set to NaN.

    The fixture keeps only the rows the official forward looked up (its inference timesteps and the
    sampled training timesteps); if our module read any other row, NaN would reach every output.
    """
    state = dict(case["state_dict"])
    emb = torch.full(case["time_embedding_shape"], float("nan"))
    emb[case["time_embedding_rows"]] = case["time_embedding_weight_rows"]
    state[EMBEDDING] = emb
    return state


class Replay:
    """Stand-ins for ``torch.randn`` / ``torch.randint`` returning the official draws in their order.

    Each call must be the same function with the same shape and dtype as the official call at that
    position (``randint`` also over the official range ``[0, 1000)``); so a module that draws in another
    order, shape or dtype fails here instead of silently using other noise.
    """

    def __init__(self, draws: list[dict[str, Any]]) -> None:
        self.draws = list(draws)

    def _next(self, fn: str, size: Any, dtype: torch.dtype) -> torch.Tensor:
        assert self.draws, f"unexpected extra torch.{fn}{tuple(size)}: the official forward drew nothing more"
        want = self.draws.pop(0)
        t = want["tensor"]
        assert fn == want["fn"], f"torch.{fn} called where the official called torch.{want['fn']}"
        assert tuple(size) == tuple(t.shape), f"torch.{fn}{tuple(size)}: official shape {tuple(t.shape)}"
        assert dtype == t.dtype, f"torch.{fn} dtype {dtype}: official {t.dtype}"
        return t.clone()

    def randn(self, *size: Any, dtype: torch.dtype | None = None, device: Any = None, **_: Any) -> torch.Tensor:
        size = size[0] if len(size) == 1 and not isinstance(size[0], int) else size
        return self._next("randn", size, dtype or torch.get_default_dtype()).to(device)

    def randint(self, low: int, high: int, size: Any, device: Any = None, **_: Any) -> torch.Tensor:
        assert (low, high) == (0, 1000), f"torch.randint range [{low}, {high}): official [0, 1000)"
        return self._next("randint", size, torch.int64).to(device)


@pytest.fixture
def replay(monkeypatch: pytest.MonkeyPatch):
    def install(*draw_lists: list[dict[str, Any]]) -> Replay:
        r = Replay([d for draws in draw_lists for d in draws])
        monkeypatch.setattr(torch, "randn", r.randn)
        monkeypatch.setattr(torch, "randint", r.randint)
        return r

    return install


def bchw(x: torch.Tensor) -> torch.Tensor:
    """The official ``KDLoss._reshape_BCHW`` for logits: ``[N, K] -> [N, K, 1, 1]``."""
    return x.view(*x.shape, 1, 1) if x.dim() == 2 else x


def close(name: str, ours: torch.Tensor, official: torch.Tensor) -> None:
    assert ours.shape == official.shape, f"{name}: shape {tuple(ours.shape)} vs official {tuple(official.shape)}"
    torch.testing.assert_close(ours.detach(), official, **TOL, msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------------------ the module
@pytest.mark.parametrize("name", CASES)
def test_diffkd_module_matches_official(name: str, replay) -> None:
    case = OFFICIAL["cases"][name]
    init = case["init"]
    ours = DiffKD(**init)
    ours.load_state_dict(official_state(case), strict=True)  # official names, no key map
    ours.train()

    gamma: list[torch.Tensor] = []
    pre_proj: list[torch.Tensor] = []
    ours.noise_adapter.register_forward_hook(lambda m, a, o: gamma.append(o.detach()))
    ours.proj.register_forward_pre_hook(lambda m, a: pre_proj.append(a[0].detach()))

    x_s = case["student"].clone().requires_grad_(True)
    x_t = case["teacher"].clone()
    r = replay(case["draws"])
    refined, target, diff_loss, ae_loss = ours(bchw(x_s), bchw(x_t))
    assert not r.draws, f"our forward drew {len(case['draws']) - len(r.draws)} of the official {len(case['draws'])}"
    kd = feature_kd_loss(refined, target) if init["kernel_size"] == 3 else logits_kd_loss(refined, target, 1.0)
    total = kd + diff_loss + (ae_loss if ae_loss is not None else 0)
    total.backward()

    out = case["outputs"]
    close("gamma (noise adapter)", gamma[0], out["gamma"])
    close("denoised student before proj", pre_proj[-1], out["denoised_before_proj"])
    close("refined student", refined, out["refined"])
    close("target (teacher or AE latent)", target, out["target"])
    close("diffusion loss", diff_loss, out["diff_loss"])
    close("kd loss", kd, out["kd_loss"])
    if out["ae_loss"] is None:
        assert ae_loss is None
    else:
        close("ae loss", ae_loss, out["ae_loss"])

    grads = case["grads"]
    close("grad wrt student feature", x_s.grad, grads["student"])
    named = dict(ours.named_parameters())
    assert sorted(n for n, p in named.items() if p.grad is None) == grads["params_without_grad"]
    assert set(grads["params"]) | {EMBEDDING} == {n for n, p in named.items() if p.grad is not None}
    for n, g in grads["params"].items():
        close(f"grad {n}", named[n].grad, g)
    rows = case["time_embedding_rows"]
    emb_grad = named[EMBEDDING].grad
    close("grad time embedding (used rows)", emb_grad[rows], grads["time_embedding_rows"])
    assert torch.count_nonzero(emb_grad.index_fill(0, rows, 0.0)) == 0, "gradient on a row the official never read"

    buffers = dict(ours.named_buffers())
    assert set(case["buffers_after"]) == {n for n in buffers if "running" in n}
    for n, b in case["buffers_after"].items():
        close(f"buffer {n} after the forward", buffers[n], b)


# ------------------------------------------------------------------------------------------ the method
def test_diffkd_method_matches_official_classification_total(replay) -> None:
    """Our method on a feature tap (AE) plus logits equals the official ``KDLoss`` composition.

    The official ``kd_loss.py`` distils ``layer4`` (kernel 3, AE, MSE) then ``fc`` (kernel 1, no AE,
    ``KLDivergence(tau=1)``) and adds ``kd + diff (+ ae)`` per tap with weight 1; the noise is drawn in
    that order too, which the replay checks.
    """
    feat, logits = OFFICIAL["cases"]["feat_ae"], OFFICIAL["cases"]["logits"]
    fi, li = feat["init"], logits["init"]
    s_taps = {
        "feat": TapSpec("feat", fi["student_channels"], 32, ("feature",)),
        "logits": TapSpec("logits", li["student_channels"], 0, ("logits",)),
    }
    t_taps = {
        "feat": TapSpec("feat", fi["teacher_channels"], 32, ("feature",)),
        "logits": TapSpec("logits", li["teacher_channels"], 0, ("logits",)),
    }
    m = build_method("diffkd", s_taps, t_taps, use_ae=True)
    m.diff["feat"].load_state_dict(official_state(feat), strict=True)
    m.diff["logits"].load_state_dict(official_state(logits), strict=True)
    m.train()
    r = replay(feat["draws"], logits["draws"])
    terms = m(
        {"feat": feat["student"], "logits": logits["student"]},
        {"feat": feat["teacher"], "logits": logits["teacher"]},
        torch.zeros(2, dtype=torch.long),
        Progress(),
    )
    assert not r.draws
    fo, lo = feat["outputs"], logits["outputs"]
    assert set(terms) == {"kd_feat", "kd_logits", "diff", "ae"}
    close("kd_feat", terms["kd_feat"], fo["kd_loss"])
    close("kd_logits", terms["kd_logits"], lo["kd_loss"])
    close("diff", terms["diff"], fo["diff_loss"] + lo["diff_loss"])
    close("ae", terms["ae"], fo["ae_loss"])
    official_total = fo["kd_loss"] + fo["diff_loss"] + fo["ae_loss"] + lo["kd_loss"] + lo["diff_loss"]
    close("total distillation loss", sum(terms.values()), official_total)


def test_replay_refuses_a_different_draw_order(replay) -> None:
    """The replay can fail: drawing the timesteps before the noise is caught."""
    r = replay(OFFICIAL["cases"]["feat_noae"]["draws"])
    with pytest.raises(AssertionError, match="torch.randint called where the official called torch.randn"):
        torch.randint(0, 1000, (2,))
    assert len(r.draws) == 2
