"""bench.report.stats: Welch's interval and test against scipy on raw values, a hand formula and R's output."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

pytest.importorskip("scipy")
from scipy import stats as sps  # noqa: E402

from bench.report.schema import SIG_VANILLA, SIG_VS  # noqa: E402
from bench.report.stats import mark, welch  # noqa: E402

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
    # The numbers the report prints for this pair (tests/bench/test_report.py uses the same seeds).
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
