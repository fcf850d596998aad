"""Welch's comparison of two sets of seeds: difference of means, its confidence interval and p-value.

Seeds of a KD run differ by a few tenths of a point, about the size of the gains papers report, so
every gain in a report carries an interval and a test. Welch's form is used because nothing makes the
two methods' seed variances equal (a distilled student is often steadier than the vanilla one).

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

from bench.report.schema import CI_LEVEL


@dataclass(frozen=True)
class Welch:
    """Element-wise results of :func:`welch` (NaN where a side has fewer than two values or no spread)."""

    diff: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    df: np.ndarray
    p: np.ndarray


def welch(
    mean1: np.ndarray,
    std1: np.ndarray,
    n1: np.ndarray,
    mean2: np.ndarray,
    std2: np.ndarray,
    n2: np.ndarray,
    level: float = CI_LEVEL,
) -> Welch:
    """Compare group 1 with group 2: ``mean1 - mean2``, a ``level`` confidence interval and a two-sided p.

    The interval is ``diff ± t(1 - α/2, ν) · se`` with ``se² = s1²/n1 + s2²/n2`` and the
    Welch–Satterthwaite degrees of freedom ``ν = se⁴ / ((s1²/n1)²/(n1-1) + (s2²/n2)²/(n2-1))``.

    Args:
        mean1 / std1 / n1: mean, sample standard deviation (ddof=1) and count of group 1, array-like.
        mean2 / std2 / n2: the same for group 2 (the baseline).
        level: confidence level of the interval.

    Returns:
        :class:`Welch` arrays. ``diff`` is defined whenever both means are; the interval, ``df`` and
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
    return Welch(
        diff=diff,
        ci_low=np.where(ok, diff - half, np.nan),
        ci_high=np.where(ok, diff + half, np.nan),
        df=np.where(ok, df, np.nan),
        p=p,
    )


def mark(p: float, levels: tuple[tuple[float, str], ...]) -> str:
    """The significance mark of ``p`` (``levels`` strictest first, e.g. ``((0.01, "**"), (0.05, "*"))``)."""
    if p is None or not np.isfinite(p):
        return ""
    for threshold, symbol in levels:
        if p < threshold:
            return symbol
    return ""
