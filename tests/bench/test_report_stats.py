"""bench.report.stats: Welch's and the paired interval and test against scipy on raw values, hand formulas and R's
output; the interval of a mean and the reproduction verdict on fixed numbers."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

pytest.importorskip("scipy")
from scipy import stats as sps  # noqa: E402

from bench.report.schema import ABOVE, BELOW, REPRODUCED, SIG_VANILLA, SIG_VS, UNDECIDED  # noqa: E402
from bench.report.stats import mark, mean_interval, one_sample, verdicts, welch  # noqa: E402

# R's documented example, t.test(extra ~ group, data = sleep) (Welch is R's default):
# t = -1.8608, df = 17.776, p-value = 0.07939, 95 percent CI -3.3654832 0.2054832.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
KD = [70.5, 71.0, 70.2]
VANILLA = [69.0, 69.5, 70.1]


def _summary(x: list[float]) -> tuple[float, float, int]:
    return statistics.mean(x), statistics.stdev(x), len(x)


def test_matches_r_sleep_example():
    r = welch(*_summary(SLEEP_1), *_summary(SLEEP_2))
    assert float(r.diff) == pytest.approx(0.75 - 2.33)
    assert float(r.df) == pytest.approx(17.776, abs=5e-4)
    assert float(r.p) == pytest.approx(0.07939, abs=5e-6)
    assert float(r.ci_low) == pytest.approx(-3.3654832, abs=1e-6)
    assert float(r.ci_high) == pytest.approx(0.2054832, abs=1e-6)


@pytest.mark.parametrize("a,b", [(KD, VANILLA), (SLEEP_1, SLEEP_2), ([1.0, 2.0], [0.0, 0.5, 0.7, 0.2])])
def test_matches_scipy_on_raw_values(a, b):
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    r = welch(*_summary(a), *_summary(b))
    assert float(r.p) == pytest.approx(ref.pvalue, rel=1e-10)
    assert float(r.df) == pytest.approx(ref.df, rel=1e-10)
    assert (float(r.ci_low), float(r.ci_high)) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))


def test_hand_formula():
    """diff ± t(0.975, ν)·se with se² = s1²/n1 + s2²/n2 and the Welch–Satterthwaite ν, written out."""
    m1, s1, n1 = _summary(KD)
    m2, s2, n2 = _summary(VANILLA)
    v1, v2 = s1**2 / n1, s2**2 / n2
    nu = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = sps.t.ppf(0.975, nu) * math.sqrt(v1 + v2)
    t = (m1 - m2) / math.sqrt(v1 + v2)
    p = 2 * sps.t.sf(abs(t), nu)
    r = welch(m1, s1, n1, m2, s2, n2)
    assert float(r.ci_low) == pytest.approx(m1 - m2 - half)
    assert float(r.ci_high) == pytest.approx(m1 - m2 + half)
    assert float(r.p) == pytest.approx(p)
    # Welch on these seeds (the report prints the paired interval for them: test_paired_hand_formula).
    assert (round(float(r.ci_low), 2), round(float(r.ci_high), 2)) == (-0.10, 2.17)


def test_vectorised_and_undefined_cases():
    r = welch(
        np.array([71.0, 72.6, 70.0, 70.0, np.nan]),
        np.array([0.4, np.nan, 0.0, 0.3, np.nan]),
        np.array([3, 1, 3, 3, 0]),
        np.array([69.5, 69.5, 70.0, 69.5, 69.5]),
        np.array([0.5, 0.5, 0.0, np.nan, 0.5]),
        np.array([3, 3, 3, 1, 3]),
    )
    assert np.isfinite(r.ci_low[0]) and np.isfinite(r.p[0])
    assert r.diff[1] == pytest.approx(3.1) and np.isnan(r.ci_low[1]) and np.isnan(r.p[1])  # n = 1: no CI
    assert r.diff[2] == 0.0 and np.isnan(r.ci_low[2]) and np.isnan(r.p[2])  # no spread at all
    assert np.isnan(r.ci_high[3]) and np.isnan(r.p[3])  # baseline n = 1
    assert np.isnan(r.diff[4])  # n = 0


@pytest.mark.parametrize(
    "p,levels,expected",
    [(0.004, SIG_VANILLA, "**"), (0.01, SIG_VANILLA, "*"), (0.049, SIG_VANILLA, "*"), (0.05, SIG_VANILLA, ""),
     (0.2, SIG_VANILLA, ""), (float("nan"), SIG_VANILLA, ""), (0.003, SIG_VS, "††"), (0.03, SIG_VS, "†")],
)  # fmt: skip
def test_marks(p, levels, expected):
    assert mark(p, levels) == expected


def _paired(a: list[float], b: list[float]):
    """bench.report's paired comparison of a with b: the one-sample t on the per-seed differences."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    return one_sample(*_summary(d))


@pytest.mark.parametrize("a,b", [(KD, VANILLA), (SLEEP_2, SLEEP_1), ([1.0, 2.5], [0.0, 0.5])])
def test_paired_matches_scipy_ttest_rel_on_raw_values(a, b):
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    r = _paired(a, b)
    assert float(r.diff) == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert float(r.p) == pytest.approx(ref.pvalue, rel=1e-10)
    assert float(r.df) == ref.df == len(a) - 1
    assert (float(r.ci_low), float(r.ci_high)) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))


def test_paired_matches_r_sleep_example():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = -4.0621, df = 9, p-value = 0.002833,
    # 95 percent CI -2.4598858 -0.7001142, mean difference -1.58.
    r = _paired(SLEEP_1, SLEEP_2)
    assert float(r.diff) == pytest.approx(-1.58)
    assert float(r.p) == pytest.approx(0.002833, abs=5e-7)
    assert float(r.ci_low) == pytest.approx(-2.4598858, abs=1e-6)
    assert float(r.ci_high) == pytest.approx(-0.7001142, abs=1e-6)


def test_paired_hand_formula():
    """d̄ ± t(0.975, n-1)·s_d/√n and p = 2·P(T_{n-1} > |d̄|/(s_d/√n)), written out on KD - VANILLA."""
    d = [1.5, 1.5, 0.1]  # 70.5-69.0, 71.0-69.5, 70.2-70.1
    assert d == pytest.approx([x - y for x, y in zip(KD, VANILLA, strict=True)])
    dbar = sum(d) / 3
    sd = math.sqrt(sum((x - dbar) ** 2 for x in d) / 2)
    se = sd / math.sqrt(3)
    half = sps.t.ppf(0.975, 2) * se
    p = 2 * sps.t.sf(abs(dbar / se), 2)
    r = _paired(KD, VANILLA)
    assert (float(r.ci_low), float(r.ci_high), float(r.p)) == (
        pytest.approx(dbar - half), pytest.approx(dbar + half), pytest.approx(p))  # fmt: skip
    # The interval the report prints for this pair when KD and vanilla ran the same three seeds.
    assert (round(float(r.ci_low), 2), round(float(r.ci_high), 2)) == (-0.97, 3.04)


def test_one_sample_undefined_cases():
    r = one_sample(np.array([1.0, 1.0, 2.0, np.nan]), np.array([0.5, 0.0, np.nan, 0.1]), np.array([3, 3, 1, 0]))
    assert np.isfinite(r.ci_low[0]) and np.isfinite(r.p[0])
    assert np.isnan(r.ci_low[1]) and np.isnan(r.p[1])  # differences without spread: no interval, no test
    assert np.isnan(r.ci_high[2]) and np.isnan(r.p[2]) and np.isnan(r.ci_low[3])


def test_mean_interval_matches_scipy():
    values = [70.0, 71.0, 72.0]
    lo, hi = mean_interval(*_summary(values))
    ref = sps.t.interval(0.95, len(values) - 1, loc=statistics.mean(values), scale=sps.sem(values))
    assert (float(lo), float(hi)) == (pytest.approx(ref[0], rel=1e-12), pytest.approx(ref[1], rel=1e-12))
    # By hand: 71 ± t(0.975, 2) · 1/√3 = 71 ± 4.302653 · 0.577350 = 71 ± 2.484138.
    assert (float(lo), float(hi)) == (pytest.approx(68.515862, abs=1e-6), pytest.approx(73.484138, abs=1e-6))
    lo, hi = mean_interval(np.array([5.0, 5.0]), np.array([0.0, np.nan]), np.array([2, 1]))
    assert (lo[0], hi[0]) == (5.0, 5.0) and np.isnan(lo[1]) and np.isnan(hi[1])


# Seeds 70, 71, 72: mean 71, 95 % t-interval [68.52, 73.48] (see test_mean_interval_matches_scipy).
@pytest.mark.parametrize(
    "published,expected",
    [(73.0, REPRODUCED), (71.0, REPRODUCED), (68.6, REPRODUCED), (74.0, BELOW), (73.5, BELOW), (68.0, ABOVE),
     (60.0, ABOVE)],
)  # fmt: skip
def test_verdict_rule_on_fixed_numbers(published, expected):
    assert verdicts(71.0, 1.0, 3, published) == [expected]


def test_verdict_one_seed_no_published_and_vectorised():
    got = verdicts(
        np.array([71.0, 71.0, 71.0, np.nan, 71.0]),
        np.array([1.0, np.nan, 1.0, np.nan, 0.0]),
        np.array([3, 1, 3, 0, 2]),
        np.array([80.0, 71.0, np.nan, 70.0, 71.0]),
    )
    assert got == [BELOW, UNDECIDED, "", "", REPRODUCED]  # no spread: the interval is the point [71, 71]
    assert UNDECIDED == "undecided (1 seed)"
