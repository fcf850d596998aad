"""DiffKD against the official architecture's facts and the DDIM equations (tiny CPU shapes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.base import Progress, TapSpec, UserError, build_method
from methods.ddim import DDIMScheduler
from methods.diffkd import DiffKD, DiffKDMethod, feature_kd_loss, logits_kd_loss


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------ layer sizes
def conv(i: int, o: int, k: int = 1) -> int:
    """Parameters of ``nn.Conv2d(i, o, k)`` with bias."""
    return i * o * k * k + o


def bn(c: int) -> int:
    """Trainable parameters of ``nn.BatchNorm2d(c)`` (weight + bias; running stats are buffers)."""
    return 2 * c


def bottleneck(c: int, r: int) -> int:
    m = c // r
    return conv(c, m) + bn(m) + conv(m, m, 3) + bn(m) + conv(m, c) + bn(c)


def official_params(s: int, t: int, k: int, ae: int | None = None) -> int:
    """Hand count of the official DiffKD(s, t, kernel_size=k, use_ae=ae is not None, ae_channels=ae)."""
    total = 0
    if ae is not None:
        total += conv(t, ae) + bn(ae) + conv(ae, t)  # ae.encoder (conv + BN), ae.decoder (conv)
        t = ae
    total += conv(s, t)  # trans
    total += 1280 * t  # model.time_embedding
    if k == 3:
        total += 2 * bottleneck(t, 4) + conv(t, t) + bn(t)  # model.pred
        total += bottleneck(t, 8) + (t * 2 + 2)  # noise_adapter.feat + noise_adapter.pred (Linear(t, 2))
    else:
        total += 2 * (conv(t, 4 * t) + bn(4 * t) + conv(4 * t, t)) + bn(t)  # model.pred (two MLP blocks)
        total += conv(t, 2 * t) + bn(2 * t) + conv(2 * t, t) + bn(t) + (t * 2 + 2)  # noise_adapter
    total += conv(t, t) + bn(t)  # proj (conv + BN)
    return total


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("args", "kwargs", "by_hand"),
    [
        ((256, 256), dict(kernel_size=3), 694_722),
        ((100, 100), dict(kernel_size=1), 352_302),
        ((512, 2048), dict(use_ae=True, ae_channels=1024), 10_791_682),
    ],
)
def test_parameter_counts_match_official_architecture(args, kwargs, by_hand) -> None:
    k = kwargs.get("kernel_size", 3)
    assert official_params(*args, k, kwargs.get("ae_channels")) == by_hand
    assert n_params(DiffKD(*args, **kwargs)) == by_hand


def test_default_ae_channels_is_half_the_teacher() -> None:
    m = DiffKD(16, 32, use_ae=True)
    assert m.ae.encoder[0].out_channels == 16 and m.trans.out_channels == 16


def test_state_dict_keys_follow_official_names_kernel1() -> None:
    m = DiffKD(10, 10, kernel_size=1)
    pred = [0, 1, 3, 4, 5, 6, 8]  # conv, BN, conv, BN, conv, BN, conv (ReLUs at 2 and 7 hold nothing)
    expected = ["trans.weight", "trans.bias", "model.time_embedding.weight"]
    expected += [f"model.pred.{i}.{w}" for i in pred for w in ("weight", "bias")]
    expected += [f"noise_adapter.feat.{i}.{w}" for i in (0, 1, 3, 4) for w in ("weight", "bias")]
    expected += ["noise_adapter.pred.weight", "noise_adapter.pred.bias"]
    expected += [f"proj.{i}.{w}" for i in (0, 1) for w in ("weight", "bias")]
    assert [n for n, _ in m.named_parameters()] == expected


def test_state_dict_top_level_kernel3_with_ae() -> None:
    m = DiffKD(16, 32, use_ae=True, ae_channels=16)
    tops = list(dict.fromkeys(k.split(".")[0] for k in m.state_dict()))
    assert tops == ["ae", "trans", "model", "noise_adapter", "proj"]
    keys = set(m.state_dict())
    assert {"ae.encoder.0.weight", "ae.encoder.1.running_var", "ae.decoder.0.bias"} <= keys
    assert {"model.pred.1.block.7.weight", "model.pred.3.bias", "noise_adapter.feat.0.block.3.weight"} <= keys
    assert not any(k.startswith(("scheduler", "pipeline")) for k in keys)


# ------------------------------------------------------------------------------------------ shapes
def test_shapes_kernel3_without_ae() -> None:
    m = DiffKD(12, 16, kernel_size=3)
    s, t = torch.randn(2, 12, 5, 7), torch.randn(2, 16, 5, 7)
    refined, goal, diff, ae = m(s, t)
    assert refined.shape == (2, 16, 5, 7)
    assert torch.equal(goal, t) and not goal.requires_grad
    assert diff.dim() == 0 and torch.isfinite(diff) and ae is None


def test_shapes_kernel3_with_ae_target_is_detached_latent() -> None:
    m = DiffKD(12, 16, use_ae=True, ae_channels=8)
    s, t = torch.randn(2, 12, 4, 4), torch.randn(2, 16, 4, 4)
    refined, goal, diff, ae = m(s, t)
    assert refined.shape == goal.shape == (2, 8, 4, 4)
    assert not goal.requires_grad
    torch.testing.assert_close(goal, m.ae.encoder(t))  # train-mode BN: batch statistics, same batch
    rec = m.ae.decoder(m.ae.encoder(t))
    torch.testing.assert_close(ae, ((rec - t) ** 2).mean())


def test_shapes_kernel1_logits() -> None:
    m = DiffKD(10, 12, kernel_size=1)
    refined, goal, diff, ae = m(torch.randn(4, 10, 1, 1), torch.randn(4, 12, 1, 1))
    assert refined.shape == goal.shape == (4, 12, 1, 1) and ae is None and torch.isfinite(diff)


def test_arbitrary_spatial_sizes() -> None:
    m = DiffKD(8, 8)
    for h, w in [(1, 1), (3, 9), (6, 2)]:
        assert m(torch.randn(2, 8, h, w), torch.randn(2, 8, h, w))[0].shape == (2, 8, h, w)


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="kernel_size"):
        DiffKD(8, 8, kernel_size=5)
    with pytest.raises(UserError, match="8 teacher"):
        DiffKD(8, 4)
    with pytest.raises(UserError, match="num_train_timesteps"):
        DiffKD(8, 8, num_train_timesteps=2000)
    with pytest.raises(UserError, match="inference_steps"):
        DiffKD(8, 8, inference_steps=600)


# ------------------------------------------------------------------------------------------ gradients
def _grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: p.grad for n, p in module.named_parameters()}


def test_gradients_reach_student_and_every_submodule_not_teacher() -> None:
    m = DiffKD(12, 16, use_ae=True, ae_channels=8)
    s = torch.randn(2, 12, 4, 4, requires_grad=True)
    t = torch.randn(2, 16, 4, 4, requires_grad=True)  # even a teacher tensor with grad gets none
    refined, goal, diff, ae = m(s, t)
    (feature_kd_loss(refined, goal) + diff + ae).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    missing = [n for n, g in _grads_of(m).items() if g is None or g.abs().sum() == 0]
    assert missing == []


def test_kd_loss_trains_denoiser_path_but_not_the_autoencoder() -> None:
    m = DiffKD(12, 16, use_ae=True, ae_channels=8)
    refined, goal, _, _ = m(torch.randn(2, 12, 4, 4), torch.randn(2, 16, 4, 4))
    feature_kd_loss(refined, goal).backward()
    g = _grads_of(m)
    assert all(v is None for n, v in g.items() if n.startswith("ae."))  # the latent target is detached
    for prefix in ("trans.", "model.", "noise_adapter.", "proj."):  # denoising loop is not detached
        assert any(v is not None and v.abs().sum() > 0 for n, v in g.items() if n.startswith(prefix)), prefix


def test_diffusion_loss_trains_only_the_noise_predictor() -> None:
    m = DiffKD(12, 16)
    _, _, diff, _ = m(torch.randn(2, 12, 4, 4), torch.randn(2, 16, 4, 4))
    diff.backward()
    g = _grads_of(m)
    assert all(v is None for n, v in g.items() if not n.startswith("model."))
    assert all(v is not None for n, v in g.items() if n.startswith("model."))


# ------------------------------------------------------------------------------------------ scheduler
def _alpha_bar64(t: int, T: int = 1000) -> float:
    """Closed form prod_{i<=t} (1 - beta_i), beta linear from 1e-4 to 0.02 (float64)."""
    return math.prod(1.0 - (1e-4 + i * (0.02 - 1e-4) / (T - 1)) for i in range(t + 1))


def test_alphas_cumprod_closed_form() -> None:
    sch = DDIMScheduler(1000)
    assert sch.alphas_cumprod.dtype == torch.float32 and sch.alphas_cumprod.shape == (1000,)
    for t in (0, 1, 99, 400, 999):
        assert float(sch.alphas_cumprod[t]) == pytest.approx(_alpha_bar64(t), rel=1e-5)
    assert float(sch.betas[0]) == pytest.approx(1e-4) and float(sch.betas[-1]) == pytest.approx(0.02)


def test_timesteps_are_second_half_of_doubled_schedule() -> None:
    sch = DDIMScheduler(1000)
    n = 2 * 5
    ratio = 1000 // n  # DDIM "leading" spacing: t_i = i * (T // n)
    expected_full = [i * ratio for i in reversed(range(n))]
    assert sch.set_timesteps(n).tolist() == expected_full
    assert expected_full[n // 2 :] == [400, 300, 200, 100, 0]


def test_denoising_loop_runs_t_400_to_0() -> None:
    m = DiffKD(8, 8)
    seen: list[int] = []
    m.model.register_forward_pre_hook(lambda mod, args: seen.append(int(args[1])) if args[1].dim() == 0 else None)
    m(torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3))
    assert seen == [400, 300, 200, 100, 0]


@pytest.mark.parametrize(("t", "prev"), [(300, 200), (0, -100)])
def test_ddim_step_matches_equation(t: int, prev: int) -> None:
    sch = DDIMScheduler(1000)
    sch.set_timesteps(10)
    x, eps = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64)
    a_t = _alpha_bar64(t)
    a_prev = _alpha_bar64(prev) if prev >= 0 else 1.0  # set_alpha_to_one
    x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps  # DDIM eq. 12, sigma = 0
    out = sch.step(eps.float(), t, x.float())
    torch.testing.assert_close(out.prev_sample.double(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.pred_original_sample.double(), x0, rtol=1e-4, atol=1e-4)


def test_ddim_step_with_eta_matches_equation() -> None:
    sch = DDIMScheduler(1000)
    sch.set_timesteps(10)
    x, eps, z = (torch.randn(2, 3, 2, 2, dtype=torch.float64) for _ in range(3))
    a_t, a_prev = _alpha_bar64(500), _alpha_bar64(400)
    sigma = 0.5 * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))  # DDIM eq. 16, eta = 0.5
    x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    out = sch.step(eps.float(), 500, x.float(), eta=0.5, variance_noise=z.float()).prev_sample
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def test_add_noise_and_noise_adapter_mixing_formulas() -> None:
    sch = DDIMScheduler(1000)
    x0, eps = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    ts = torch.tensor([10, 700])
    out = sch.add_noise(x0, eps, ts)
    for i, t in enumerate(ts.tolist()):
        a = _alpha_bar64(t)
        torch.testing.assert_close(out[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i], rtol=1e-5, atol=1e-5)
    gamma = torch.tensor([0.25, 0.9])
    mixed = sch.mix_with_noise(x0, eps, gamma)
    torch.testing.assert_close(mixed[1], 0.9 * x0[1] + 0.1 * eps[1])  # official add_noise_diff2: no square roots


# ------------------------------------------------------------------------------------------ fp16 hazard
def test_fp16_cumprod_hazard_exists_in_the_official_recipe() -> None:
    # The official add_noise casts alphas_cumprod to the (fp16) sample dtype; then alpha_bar_0 == 1 and the
    # re-derived epsilon at t = 0 is 0/0. This reproduces that arithmetic so the fix below is meaningful.
    a16 = DDIMScheduler(1000).alphas_cumprod.half()
    assert float(a16[0]) == 1.0
    x, eps = torch.randn(4).half(), torch.randn(4).half()
    a_t = a16[0]
    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    eps2 = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
    assert not torch.isfinite(eps2).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("t", [0, 100, 400])
def test_step_in_half_precision_is_finite_and_matches_fp32(dtype: torch.dtype, t: int) -> None:
    sch = DDIMScheduler(1000)
    sch.set_timesteps(10)
    x, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    ref = sch.step(eps, t, x).prev_sample
    out = sch.step(eps.to(dtype), t, x.to(dtype)).prev_sample
    assert out.dtype == dtype and torch.isfinite(out).all()
    tol = 2e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_forward_under_bf16_autocast_keeps_fp32_tables_and_is_finite() -> None:
    m = DiffKD(12, 16, use_ae=True, ae_channels=8)
    s, t = torch.randn(2, 12, 4, 4), torch.randn(2, 16, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):  # the second call is where the official table would already be half precision
            refined, goal, diff, ae = m(s, t.bfloat16())
            total = feature_kd_loss(refined.float(), goal.float()) + diff + ae
            assert torch.isfinite(refined).all() and torch.isfinite(total)
    assert m.scheduler.alphas_cumprod.dtype == torch.float32
    total.backward()
    assert torch.isfinite(m.trans.weight.grad).all()


# ------------------------------------------------------------------------------------------ pure losses
def test_logits_kd_loss_equals_batchmean_kl() -> None:
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    for tau in (1.0, 4.0):
        p_t, p_s = F.softmax(t / tau, 1), F.softmax(s / tau, 1)
        expected = tau**2 * (p_t * (p_t.log() - p_s.log())).sum() / 5
        torch.testing.assert_close(logits_kd_loss(s, t, tau), expected)
        torch.testing.assert_close(logits_kd_loss(s[..., None, None], t[..., None, None], tau), expected)


# ------------------------------------------------------------------------------------------ the method
def _taps(c_feat: int, k: int = 10) -> dict[str, TapSpec]:
    return {
        "feat": TapSpec("feat", c_feat, 32, ("feature",), "layer4"),
        "logits": TapSpec("logits", k, 0, ("logits",), "fc"),
    }


def _tensors(c_feat: int, n: int = 3, k: int = 10, hw: int = 4, grad: bool = False) -> dict[str, torch.Tensor]:
    return {
        "feat": torch.randn(n, c_feat, hw, hw, requires_grad=grad),
        "logits": torch.randn(n, k, requires_grad=grad),
    }


def test_method_builds_from_tapspecs_and_backpropagates() -> None:
    m = build_method("diffkd", _taps(12), _taps(16), use_ae=True, ae_channels=8, ce_weight=0.5)
    assert isinstance(m, DiffKDMethod) and m.task_weight == 0.5
    assert set(m.diff) == {"feat", "logits"}
    assert m.diff["feat"].use_ae and not m.diff["logits"].use_ae  # never an AE on logits (official)
    assert m.diff["logits"].model.kernel_size == 1 and m.diff["feat"].model.kernel_size == 3
    s, t = _tensors(12, grad=True), _tensors(16)
    terms = m(s, t, torch.randint(0, 10, (3,)), Progress())
    assert set(terms) == {"kd_feat", "kd_logits", "diff", "ae"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert s["feat"].grad.abs().sum() > 0 and s["logits"].grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.parameters())


def test_method_terms_are_the_official_sum() -> None:
    m = build_method("diffkd", _taps(12), _taps(16), kd_weight=2.0, diff_weight=3.0)
    s, t = _tensors(12), _tensors(16)
    torch.manual_seed(1)
    terms = m(s, t, None, Progress())
    torch.manual_seed(1)  # replay the same noise draws through the modules directly
    r, g, d1, _ = m.diff["feat"](s["feat"], t["feat"])
    rl, gl, d2, _ = m.diff["logits"](s["logits"][..., None, None], t["logits"][..., None, None])
    torch.testing.assert_close(terms["kd_feat"], 2.0 * F.mse_loss(r, g))
    torch.testing.assert_close(terms["kd_logits"], 2.0 * logits_kd_loss(rl, gl, 1.0))
    torch.testing.assert_close(terms["diff"], 3.0 * (d1 + d2))
    assert "ae" not in terms


def test_method_without_logit_distillation() -> None:
    m = build_method("diffkd", _taps(12), _taps(16), distill_logits=False)
    assert set(m.diff) == {"feat"}
    assert set(m(_tensors(12), _tensors(16), None, Progress())) == {"kd_feat", "diff"}


def test_method_refuses_pair_without_feature_tap() -> None:
    only_logits = {"logits": TapSpec("logits", 10, 0, ("logits",))}
    with pytest.raises(UserError, match="feature"):
        build_method("diffkd", only_logits, only_logits)


def test_method_rejects_mismatched_spatial_sizes() -> None:
    m = build_method("diffkd", _taps(8), _taps(8), distill_logits=False)
    with pytest.raises(UserError, match="feat"):
        m({"feat": torch.randn(2, 8, 4, 4)}, {"feat": torch.randn(2, 8, 2, 2)}, None, Progress())


def _fpn(c: int) -> dict[str, TapSpec]:
    return {f"fpn.p{i}": TapSpec(f"fpn.p{i}", c, 2**i, ("feature",)) for i in (3, 4)}


def test_method_fpn_levels_separate_and_shared() -> None:
    s = {"fpn.p3": torch.randn(2, 8, 6, 8, requires_grad=True), "fpn.p4": torch.randn(2, 8, 3, 4)}
    t = {"fpn.p3": torch.randn(2, 8, 6, 8), "fpn.p4": torch.randn(2, 8, 3, 4)}
    sep = build_method("diffkd", _fpn(8), _fpn(8))
    assert set(sep.diff) == {"fpn_p3", "fpn_p4"}  # ModuleDict keys cannot hold dots
    shared = build_method("diffkd", _fpn(8), _fpn(8), share_levels=True)
    assert set(shared.diff) == {"shared"} and 2 * n_params(shared) == n_params(sep)
    terms = shared(s, t, None, Progress())
    assert set(terms) == {"kd_feat", "diff"} and all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert s["fpn.p3"].grad is not None
    uneven = {**_fpn(8), "fpn.p5": TapSpec("fpn.p5", 16, 32, ("feature",))}
    with pytest.raises(UserError, match="share_levels"):
        build_method("diffkd", uneven, uneven, share_levels=True)
