"""t-intervals and t-tests over seeds: Welch's two-sample form, the paired form and one mean's interval.

Seeds of a KD run differ by a few tenths of a point, about the size of the gains papers report, so
every gain in a report carries an interval and a test. Two forms:

* **paired** (:func:`one_sample` on the per-seed differences): when a method and its baseline ran the
  same seeds (same starting weights and data order per seed), seed ``i``'s difference ``x_i - v_i``
  cancels what the two runs share; the one-sample t-interval and t-test of those differences is what
  :func:`scipy.stats.ttest_rel` computes;
* **Welch** (:func:`welch`) otherwise: nothing makes the two methods' seed variances equal (a
  distilled student is often steadier than the vanilla one).

:func:`mean_interval` is the 95 % t-interval of one cell's mean, and :func:`verdicts` says whether a
published number lies in it (``reproduced``), above it (ours is ``below``) or below it (``above``).

Works on summary statistics (mean, sample std, n) arrays, one comparison per element, so a leaderboard
of thousands of cells costs one vectorised call. The t distribution is scipy's, called at the
``scipy.special`` level that ``scipy.stats`` itself uses: the quantile is :func:`scipy.special.stdtrit`
(``scipy.stats.t.ppf``) and the two-sided p-value ``2 · stdtr(ν, -|t|)``, which is what
:func:`scipy.stats.ttest_ind_from_stats` with ``equal_var=False`` computes (the same test as
``scipy.stats.ttest_ind(a, b, equal_var=False)`` on the raw values). Importing ``scipy.special``
costs a fraction of ``scipy.stats`` (about 0.3 s against 1.5 s), which a report answering in a second
notices; tests/bench/test_report_stats.py holds the numbers against ``scipy.stats`` and R.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.report.schema import ABOVE, BELOW, CI_LEVEL, REPRODUCED, UNDECIDED


@dataclass(frozen=True)
class TTest:
    """Element-wise results of :func:`welch` or :func:`one_sample` (NaN where too few values or no spread)."""

    diff: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    df: np.ndarray
    p: np.ndarray


#: The name the results of :func:`welch` had first.
Welch = TTest


def welch(
    mean1: np.ndarray,
    std1: np.ndarray,
    n1: np.ndarray,
    mean2: np.ndarray,
    std2: np.ndarray,
    n2: np.ndarray,
    level: float = CI_LEVEL,
) -> TTest:
    """Compare group 1 with group 2: ``mean1 - mean2``, a ``level`` confidence interval and a two-sided p.

    The interval is ``diff ± t(1 - α/2, ν) · se`` with ``se² = s1²/n1 + s2²/n2`` and the
    Welch–Satterthwaite degrees of freedom ``ν = se⁴ / ((s1²/n1)²/(n1-1) + (s2²/n2)²/(n2-1))``.

    Args:
        mean1 / std1 / n1: mean, sample standard deviation (ddof=1) and count of group 1, array-like.
        mean2 / std2 / n2: the same for group 2 (the baseline).
        level: confidence level of the interval.

    Returns:
        :class:`TTest` arrays. ``diff`` is defined whenever both means are; the interval, ``df`` and
        ``p`` need two values on each side and a non-zero spread: with one seed nothing is known about
        the noise, and pretending otherwise is the mistake the report exists to prevent.
    """
    from scipy.special import stdtr, stdtrit

    m1, s1, k1, m2, s2, k2 = (np.asarray(x, dtype=float) for x in (mean1, std1, n1, mean2, std2, n2))
    diff = m1 - m2
    with np.errstate(divide="ignore", invalid="ignore"):
        v1, v2 = s1**2 / k1, s2**2 / k2
        se2 = v1 + v2
        df = se2**2 / (v1**2 / (k1 - 1) + v2**2 / (k2 - 1))
        ok = (k1 >= 2) & (k2 >= 2) & np.isfinite(se2) & (se2 > 0) & np.isfinite(diff)
        nu = np.where(ok, df, 1.0)  # a placeholder where undefined: those elements are masked below
        se = np.sqrt(se2)
        half = np.where(ok, stdtrit(nu, 0.5 + level / 2) * se, np.nan)  # scipy.stats.t.ppf(q, ν)
        t = diff / se
        p = np.where(ok, 2 * stdtr(nu, -np.abs(t)), np.nan)  # scipy.stats.t.sf(|t|, ν), both tails
    return TTest(
        diff=diff,
        ci_low=np.where(ok, diff - half, np.nan),
        ci_high=np.where(ok, diff + half, np.nan),
        df=np.where(ok, df, np.nan),
        p=p,
    )


def one_sample(mean: np.ndarray, std: np.ndarray, n: np.ndarray, level: float = CI_LEVEL) -> TTest:
    """The one-sample t-interval of a mean and the two-sided t-test of mean = 0, element-wise.

    ``mean ± t(1 - α/2, n - 1) · std / √n`` and ``p = 2 · P(T_{n-1} > |mean| / (std / √n))``. On per-seed
    differences this is the paired comparison (:func:`scipy.stats.ttest_rel` on the raw values); on one
    cell's seeds, the interval is the cell's :func:`mean_interval`.

    Args:
        mean / std / n: mean, sample standard deviation (ddof=1) and count, array-like.
        level: confidence level of the interval.

    Returns:
        :class:`TTest` arrays (``diff`` is the mean). The interval, ``df`` and ``p`` need two values and a
        non-zero spread (NaN otherwise).
    """
    from scipy.special import stdtr, stdtrit

    m, s, k = (np.asarray(x, dtype=float) for x in (mean, std, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        se = s / np.sqrt(k)
        ok = (k >= 2) & np.isfinite(se) & (se > 0) & np.isfinite(m)
        nu = np.where(ok, k - 1, 1.0)  # a placeholder where undefined: those elements are masked below
        half = np.where(ok, stdtrit(nu, 0.5 + level / 2) * se, np.nan)  # scipy.stats.t.ppf(q, n - 1)
        p = np.where(ok, 2 * stdtr(nu, -np.abs(m / se)), np.nan)
    return TTest(
        diff=m,
        ci_low=np.where(ok, m - half, np.nan),
        ci_high=np.where(ok, m + half, np.nan),
        df=np.where(ok, k - 1, np.nan),
        p=p,
    )


def mean_interval(
    mean: np.ndarray, std: np.ndarray, n: np.ndarray, level: float = CI_LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """The t-interval of each mean, ``mean ± t(1 - α/2, n - 1) · std / √n``: ``(low, high)``.

    Defined for ``n ≥ 2`` with a finite std; a std of zero gives the point ``[mean, mean]`` (seeds that
    all scored the same). NaN for one seed or none.
    """
    from scipy.special import stdtrit

    m, s, k = (np.asarray(x, dtype=float) for x in (mean, std, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (k >= 2) & np.isfinite(s) & np.isfinite(m)
        nu = np.where(ok, k - 1, 1.0)
        half = np.where(ok, stdtrit(nu, 0.5 + level / 2) * s / np.sqrt(np.where(ok, k, 1.0)), np.nan)
    return m - half, m + half


def verdicts(mean: np.ndarray, std: np.ndarray, n: np.ndarray, published: np.ndarray) -> list[str]:
    """Did our seeds reproduce each published number? One verdict per element.

    The rule: with ``n ≥ 2`` seeds, the 95 % t-interval of our mean (:func:`mean_interval`) containing the
    published value (ends included) is :data:`REPRODUCED`; a published value above the interval is
    :data:`BELOW` (ours is lower), one below it :data:`ABOVE`. One seed: :data:`UNDECIDED`. No published
    number, or no finished seed: ``""``.
    """
    low, high = (np.atleast_1d(x) for x in mean_interval(mean, std, n))
    pub = np.atleast_1d(np.asarray(published, dtype=float))
    k = np.atleast_1d(np.asarray(n, dtype=float))
    out = []
    for lo, hi, p, count in zip(low, high, pub, k, strict=True):
        if not np.isfinite(p) or not count >= 1:
            out.append("")
        elif count < 2 or not np.isfinite(lo):
            out.append(UNDECIDED)
        elif p > hi:
            out.append(BELOW)
        elif p < lo:
            out.append(ABOVE)
        else:
            out.append(REPRODUCED)
    return out


def mark(p: float, levels: tuple[tuple[float, str], ...]) -> str:
    """The significance mark of ``p`` (``levels`` strictest first, e.g. ``((0.01, "**"), (0.05, "*"))``)."""
    if p is None or not np.isfinite(p):
        return ""
    for threshold, symbol in levels:
        if p < threshold:
            return symbol
    return ""
