"""tinybert/experiments/stats.py: the t quantile against table values and a numerical integral, and intervals."""

import math
import random

import pytest

from tinybert.experiments.stats import (betainc, binomial_se, mean_ci, t_cdf, t_cdf_reference, t_quantile,
                                        verdict)


@pytest.mark.parametrize("df, t975", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042),
                                      (120, 1.980)])
def test_t_quantile_matches_the_printed_tables(df, t975):
    assert t_quantile(0.975, df) == pytest.approx(t975, abs=5e-4)


def test_t_quantile_tends_to_the_normal_quantile():
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert t_quantile(0.95, 1e7) == pytest.approx(1.644854, abs=1e-5)


def test_t_quantile_is_the_inverse_of_the_cdf_and_antisymmetric():
    for df in (1, 2.5, 7, 50):
        for p in (0.6, 0.9, 0.975, 0.999):
            t = t_quantile(p, df)
            assert t_cdf(t, df) == pytest.approx(p, abs=1e-12)
            assert t_quantile(1 - p, df) == pytest.approx(-t, abs=1e-9)


@pytest.mark.parametrize("df", [1, 2, 5, 30])
def test_t_cdf_agrees_with_a_numerical_integral_of_the_density(df):
    for t in (-3.0, -0.4, 0.0, 0.7, 2.0, 6.0):
        assert t_cdf(t, df) == pytest.approx(t_cdf_reference(t, df, steps=20_000), abs=1e-9)


def test_betainc_special_cases():
    # I_x(1, 1) = x; I_x(a, 1) = x^a; symmetry I_x(a, b) = 1 - I_{1-x}(b, a)
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert betainc(1, 1, x) == pytest.approx(x, abs=1e-14)
        assert betainc(3.5, 1, x) == pytest.approx(x ** 3.5, abs=1e-13)
        assert betainc(2.5, 0.7, x) == pytest.approx(1 - betainc(0.7, 2.5, 1 - x), abs=1e-13)
    with pytest.raises(ValueError):
        betainc(0, 1, 0.5)
    with pytest.raises(ValueError):
        betainc(1, 1, 1.5)


def test_mean_ci_by_hand_and_its_edge_cases():
    m, h, n = mean_ci([0.1, 0.3, 0.2, float("nan"), None])
    sd = math.sqrt(((0.1 - 0.2) ** 2 + 0 + (0.3 - 0.2) ** 2) / 2)
    assert (n, m) == (3, pytest.approx(0.2)) and h == pytest.approx(4.303 * sd / math.sqrt(3), rel=1e-4)
    m, h, n = mean_ci([0.5])
    assert (m, n) == (0.5, 1) and math.isnan(h)
    m, h, n = mean_ci([])
    assert n == 0 and math.isnan(m) and math.isnan(h)
    assert mean_ci([0.4, 0.4, 0.4])[1] == pytest.approx(0.0, abs=1e-12)


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = random.Random(0)
    hits = 0
    for _ in range(2000):
        m, h, _ = mean_ci([rng.gauss(1.0, 2.0) for _ in range(4)])
        hits += abs(m - 1.0) <= h
    assert 0.93 < hits / 2000 < 0.97


def test_verdict_needs_an_interval_that_excludes_zero():
    assert verdict(0.05, 0.03) == "supported (> 0)"
    assert verdict(-0.05, 0.03) == "supported (< 0)"
    assert verdict(0.05, 0.08) == "not supported"
    assert verdict(0.05, float("nan")) == "no interval (n < 2)"
    assert verdict(float("nan"), 0.1) == ""


def test_binomial_se():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(0.9, 400) == pytest.approx(0.015)
    assert math.isnan(binomial_se(0.5, 0))
