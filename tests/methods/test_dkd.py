"""DKD against its definitions (TCKD, NCKD), the KD decomposition identity, mdistiller's configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from methods import Progress, TapSpec, UserError, build_method
from methods.dkd import DKD, dkd_loss, warmup_factor
from methods.kd import kd_loss
from tasks.classification.spec import dkd_beta, dkd_defaults

TAPS = {"logits": TapSpec("logits", 6, 0, ("logits",))}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def parts(s: np.ndarray, t: np.ndarray, y: int, temp: float) -> tuple[float, float, float, float]:
    """(KD, TCKD, NCKD, p_t of teacher) of one row from the definitions, the target class *removed*."""
    p, q = softmax(t / temp), softmax(s / temp)
    kd = float(np.sum(p * (np.log(p) - np.log(q))))
    bp, bq = np.array([p[y], 1 - p[y]]), np.array([q[y], 1 - q[y]])
    tckd = float(np.sum(bp * (np.log(bp) - np.log(bq))))
    keep = np.arange(len(p)) != y
    hp, hq = p[keep] / p[keep].sum(), q[keep] / q[keep].sum()
    nckd = float(np.sum(hp * (np.log(hp) - np.log(hq))))
    return kd, tckd, nckd, float(p[y])


def batch(seed: int, n: int = 4, k: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    t = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, k, (n,), generator=g)
    return s, t, y


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_tckd_and_nckd_match_definitions(temp: float) -> None:
    s, t, y = batch(0)
    rows = [parts(s[i].numpy(), t[i].numpy(), int(y[i]), temp) for i in range(len(y))]
    tckd = temp**2 * np.mean([r[1] for r in rows])
    nckd = temp**2 * np.mean([r[2] for r in rows])
    assert dkd_loss(s, t, y, 1.0, 0.0, temp).item() == pytest.approx(tckd, rel=1e-9)
    assert dkd_loss(s, t, y, 0.0, 1.0, temp).item() == pytest.approx(nckd, rel=1e-9)
    assert dkd_loss(s, t, y, 2.0, 8.0, temp).item() == pytest.approx(2 * tckd + 8 * nckd, rel=1e-9)


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kd_decomposes_into_tckd_and_weighted_nckd(temp: float) -> None:
    s, t, y = batch(1)
    for i in range(len(y)):
        kd, tckd, nckd, pt = parts(s[i].numpy(), t[i].numpy(), int(y[i]), temp)
        assert kd == pytest.approx(tckd + (1 - pt) * nckd, rel=1e-9)  # DKD paper, eq. (5)
        # ... and the library's kd_loss of that row is T^2 times the same.
        assert kd_loss(s[i : i + 1], t[i : i + 1], temp).item() == pytest.approx(temp**2 * (tckd + (1 - pt) * nckd))
        # One row with beta = 1 - p_t(teacher) is exactly KD.
        one = dkd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], 1.0, 1 - pt, temp).item()
        assert one == pytest.approx(kd_loss(s[i : i + 1], t[i : i + 1], temp).item(), rel=1e-9)


def test_alpha_beta_one_exceeds_kd_by_teacher_confidence_weighted_nckd() -> None:
    s, t, y = batch(2)
    rows = [parts(s[i].numpy(), t[i].numpy(), int(y[i]), 4.0) for i in range(len(y))]
    extra = np.mean([pt * nckd for _, _, nckd, pt in rows])
    assert dkd_loss(s, t, y, 1.0, 1.0, 4.0).item() == pytest.approx(kd_loss(s, t, 4.0).item() + 16 * extra, rel=1e-9)


def naive_mdistiller_tckd(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float) -> torch.Tensor:
    """mdistiller's TCKD as written: log of the masked softmax sums."""
    gt = F.one_hot(y, s.shape[1]).bool()
    ps, pt = F.softmax(s / temp, 1), F.softmax(t / temp, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], 1)
    return F.kl_div(torch.log(bs), bt, reduction="sum") * temp**2 / len(y)


@pytest.mark.parametrize("target_logit", [200.0, -200.0])
def test_extreme_logits_are_finite_and_correct(target_logit: float) -> None:
    # float32: p_t of the student is exactly 1 (or 0), so mdistiller's log(1 - p_t) (or log p_t) is -inf.
    s = torch.zeros(2, 6)
    s[:, 0] = target_logit
    t = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, 0.0], [0.0, 1.0, 2.0, 0.0, 0.0, -3.0]])
    y = torch.tensor([0, 0])
    assert not torch.isfinite(naive_mdistiller_tckd(s, t, y, 1.0))
    s.requires_grad_()
    loss = dkd_loss(s, t, y, 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    # Exact value in float64 from the definitions.
    with np.errstate(divide="ignore"):  # the float64 TCKD of `parts` underflows too; only NCKD is used
        rows = [parts(s[i].detach().double().numpy(), t[i].double().numpy(), 0, 1.0) for i in range(2)]
    tckd64 = []
    for i in range(2):
        p = softmax(t[i].double().numpy())
        z = s[i].detach().double().numpy()
        log_q = z - np.log(np.sum(np.exp(z - z.max()))) - z.max()
        log_qt, log_qo = log_q[0], np.logaddexp.reduce(log_q[1:])
        tckd64.append(p[0] * (np.log(p[0]) - log_qt) + (1 - p[0]) * (np.log(1 - p[0]) - log_qo))
    expected = np.mean(tckd64) + 8 * np.mean([r[2] for r in rows])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_agrees_with_naive_formula_on_ordinary_logits() -> None:
    s, t, y = batch(3)
    s, t = s.float(), t.float()
    ours = dkd_loss(s, t, y, 1.0, 0.0, 4.0)
    torch.testing.assert_close(ours, naive_mdistiller_tckd(s, t, y, 4.0), rtol=1e-5, atol=1e-6)


def test_teacher_certain_is_finite() -> None:
    t = torch.zeros(1, 6)
    t[0, 3] = 300.0
    loss = dkd_loss(torch.randn(1, 6), t, torch.tensor([3]), 1.0, 8.0, 1.0)
    assert torch.isfinite(loss)


def test_warmup_scaling() -> None:
    m = build_method("dkd", TAPS, TAPS, warmup=20)
    s, t, y = batch(4)
    full = dkd_loss(s, t, y, 1.0, 8.0, 4.0).item()
    for epoch, factor in [(1, 0.05), (10, 0.5), (20, 1.0), (30, 1.0)]:
        got = m({"logits": s}, {"logits": t}, y, Progress(epoch=epoch, epochs=240))["dkd"].item()
        assert got == pytest.approx(factor * full, rel=1e-9)
    assert warmup_factor(1, 0) == 1.0 and warmup_factor(1, -1) == 1.0


def test_method_defaults_match_mdistiller_cfg() -> None:
    m = build_method("dkd", TAPS, TAPS)
    assert isinstance(m, DKD)
    # mdistiller/engine/cfg.py: CFG.DKD CE_WEIGHT 1.0, ALPHA 1.0, BETA 8.0, T 4.0, WARMUP 20.
    assert (m.task_weight, m.alpha, m.beta, m.temperature, m.warmup) == (1.0, 1.0, 8.0, 4.0, 20)


def test_gradient_reaches_student_not_teacher() -> None:
    m = build_method("dkd", TAPS, TAPS)
    s, t, y = batch(5)
    s.requires_grad_()
    t.requires_grad_()
    m({"logits": s}, {"logits": t}, y, Progress(epoch=25))["dkd"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_needs_target() -> None:
    m = build_method("dkd", TAPS, TAPS)
    with pytest.raises(UserError, match="target"):
        m({"logits": torch.zeros(2, 6)}, {"logits": torch.zeros(2, 6)}, None, Progress())


@pytest.mark.parametrize(
    ("teacher", "student", "dataset", "beta"),
    [  # mdistiller configs/cifar100/dkd/*.yaml (no DKD.BETA -> CFG default 8.0), configs/imagenet/*/dkd.yaml
        ("resnet56", "resnet20", "cifar100", 2.0),
        ("resnet110", "resnet32", "cifar100", 2.0),
        ("resnet32x4", "resnet8x4", "cifar100", 8.0),
        ("wrn_40_2", "wrn_16_2", "cifar100", 6.0),
        ("wrn_40_2", "wrn_40_1", "cifar100", 6.0),
        ("vgg13", "vgg8", "cifar100", 6.0),
        ("vgg13", "MobileNetV2", "cifar100", 6.0),
        ("resnet32x4", "ShuffleV1", "cifar100", 8.0),
        ("resnet32x4", "ShuffleV2", "cifar100", 8.0),
        ("wrn_40_2", "ShuffleV1", "cifar100", 8.0),
        ("ResNet50", "MobileNetV2", "cifar100", 8.0),
        ("resnet34", "resnet18", "imagenet", 0.5),
        ("resnet50", "MobileNetV1", "imagenet", 2.0),
        ("resnet8x4", "resnet8x4", "cifar100", 8.0),
    ],
)
def test_dkd_beta_table(teacher: str, student: str, dataset: str, beta: float) -> None:
    assert dkd_beta(teacher, student, dataset) == beta


def test_dkd_defaults_per_dataset() -> None:
    assert dkd_defaults("resnet34", "resnet18", "imagenet") == {"temperature": 1.0, "warmup": 1, "beta": 0.5}
    assert dkd_defaults("resnet56", "resnet20", "cifar100") == {"beta": 2.0}
    assert dkd_defaults("resnet101", "resnet18", "coco") == {"temperature": 1.0, "warmup": 0, "beta": 0.25}
    m = build_method("dkd", TAPS, TAPS, **dkd_defaults("resnet34", "resnet18", "imagenet"))
    assert (m.temperature, m.warmup, m.beta) == (1.0, 1, 0.5)
