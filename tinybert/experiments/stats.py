"""Intervals for the results tables: mean and 95% Student-t interval of a small sample, without scipy.

Where it sits: tables.py (summary.csv, tables.md) and plots/make_figures.py call `mean_ci` on per-seed accuracies
and paired differences; a claim is "supported" only when its interval excludes 0 (`verdict`).

The t quantile is exact up to float rounding: the Student-t CDF is written with the regularized incomplete beta
function, P(T <= t) = 1 - I_x(df/2, 1/2) / 2 for t >= 0 with x = df / (df + t^2), evaluated by its continued
fraction (modified Lentz, as in Numerical Recipes' `betacf`), and inverted by bisection. `t_cdf_reference`
integrates the t density numerically: the slow, obviously-correct check tests/test_stats.py compares against.
"""

from __future__ import annotations

import math
from typing import Iterable


def _betacf(a: float, b: float, x: float, max_iter: int = 300, eps: float = 1e-15) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz); converges fast for x < (a + 1) / (a + b + 2)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))  # the even step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))  # the odd step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got {a}, {b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b  # the symmetry I_x(a, b) = 1 - I_{1-x}(b, a)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_cdf_reference(t: float, df: float, steps: int = 200_000) -> float:
    """P(T <= t) by Simpson's rule on the t density from 0 to |t| (the reference for `t_cdf`)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(u):
        return math.exp(log_c - (df + 1) / 2 * math.log1p(u * u / df))

    h = abs(t) / steps
    s = density(0.0) + density(abs(t))
    s += sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    half = s * h / 3  # P(0 <= T <= |t|)
    return 0.5 + half if t >= 0 else 0.5 - half


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p, by bisection on `t_cdf` (to float resolution)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            raise ArithmeticError(f"t_quantile({p}, {df}) is beyond 1e12")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _clean(values: Iterable) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if not math.isnan(v):
            out.append(v)
    return out


def mean_ci(values: Iterable, level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the `level` Student-t interval, n) of a sample, NaN and None dropped.

    The half-width is t_{(1+level)/2, n-1} * s / sqrt(n) with the sample std s (ddof 1); n = 1 gives NaN (no
    interval from one value), n = 0 gives (NaN, NaN, 0)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(x) / n
    if n == 1:
        return mean, math.nan, 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    return mean, t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n), n


def ci_half(values: Iterable, level: float = 0.95) -> float:
    """Only the half-width of `mean_ci` (a pandas aggregation)."""
    return mean_ci(values, level)[1]


def verdict(mean: float, half: float) -> str:
    """'supported (> 0)' / 'supported (< 0)' when the interval excludes 0, 'not supported' when it holds 0,
    'no interval (n < 2)' when there is none."""
    if mean is None or math.isnan(mean):
        return ""
    if half is None or math.isnan(half):
        return "no interval (n < 2)"
    if mean - half > 0:
        return "supported (> 0)"
    if mean + half < 0:
        return "supported (< 0)"
    return "not supported"


def binomial_se(p: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of an accuracy p measured on n rows (NaN for n < 1)."""
    if n is None or n < 1 or p is None or math.isnan(p):
        return math.nan
    return math.sqrt(p * (1.0 - p) / n)
