"""Discrete noise: the distributions and variances the accounting assumes, and the tail bounds.

Fixed seeds make every test deterministic; tolerances are stated in standard errors (SE) of the
estimate, so a wrong sampler fails by a wide margin while the right one passes with room.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedavg_core.discrete_noise import (
    discrete_gaussian,
    skellam,
    skellam_tail,
    subgaussian_tail,
)

stats = pytest.importorskip("scipy.stats")

SAMPLES = 200_000


def discrete_gaussian_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    grid = np.arange(-int(12 * sigma) - 20, int(12 * sigma) + 21)
    weights = np.exp(-(grid**2) / (2 * sigma**2))
    norm = weights.sum()
    return np.exp(-(support**2) / (2 * sigma**2)) / norm


def discrete_gaussian_variance(sigma: float) -> float:
    grid = np.arange(-int(12 * sigma) - 20, int(12 * sigma) + 21)
    pmf = discrete_gaussian_pmf(sigma, grid)
    return float((pmf * grid**2).sum())


def chi_square_pvalue(samples: np.ndarray, pmf: np.ndarray, support: np.ndarray) -> float:
    counts = np.array([(samples == k).sum() for k in support], dtype=float)
    expected = pmf * samples.size
    keep = expected >= 5  # the usual validity rule; the rest of the mass is pooled
    observed = np.append(counts[keep], samples.size - counts[keep].sum())
    wanted = np.append(expected[keep], samples.size - expected[keep].sum())
    return float(stats.chisquare(observed, wanted).pvalue)


@pytest.mark.parametrize("sigma", [0.8, 3.0])
def test_discrete_gaussian_has_the_discrete_gaussian_pmf(sigma: float) -> None:
    z = discrete_gaussian(sigma, SAMPLES, np.random.default_rng(1))
    support = np.arange(-int(6 * sigma) - 3, int(6 * sigma) + 4)
    assert chi_square_pvalue(z, discrete_gaussian_pmf(sigma, support), support) > 1e-3
    # A continuous Gaussian rounded to integers has a different pmf and must fail the same test.
    rounded = np.rint(np.random.default_rng(1).normal(0, sigma, SAMPLES)).astype(np.int64)
    if sigma < 1:
        assert chi_square_pvalue(rounded, discrete_gaussian_pmf(sigma, support), support) < 1e-6


@pytest.mark.parametrize("clients,sigma", [(10, 2.0), (50, 7.5)])
def test_summed_discrete_gaussian_noise_has_n_times_the_variance(clients: int, sigma: float) -> None:
    rng = np.random.default_rng(2)
    total = sum(discrete_gaussian(sigma, SAMPLES // 4, rng) for _ in range(clients))
    want = clients * discrete_gaussian_variance(sigma)
    se_var = want * math.sqrt(2 / total.size)  # SE of a sample variance of a near-normal variable
    assert abs(total.var() - want) < 5 * se_var
    assert abs(total.mean()) < 5 * math.sqrt(want / total.size)
    # The accounting uses sigma^2, an upper bound on the variance (CKS 2020, Proposition 19).
    assert discrete_gaussian_variance(sigma) <= sigma**2 * (1 + 1e-12)


def test_summed_skellam_shares_are_exactly_skellam_with_the_summed_variance() -> None:
    clients, variance = 20, 4.5
    rng = np.random.default_rng(3)
    total = sum(skellam(variance, SAMPLES, rng) for _ in range(clients))
    mu = clients * variance / 2
    support = np.arange(-60, 61)
    assert chi_square_pvalue(total, stats.skellam.pmf(support, mu, mu), support) > 1e-3
    se_var = clients * variance * math.sqrt(2 / SAMPLES) * 1.1  # near-normal at this size
    assert abs(total.var() - clients * variance) < 5 * se_var
    # The test can tell a different distribution of the same variance: one discrete Gaussian of
    # variance ~1 is not Sk(0, 1).
    gauss = discrete_gaussian(1.0, SAMPLES, rng)
    assert chi_square_pvalue(gauss, stats.skellam.pmf(support, 0.5, 0.5), support) < 1e-6


def test_tail_bounds_hold_empirically_and_match_their_formulas() -> None:
    rng = np.random.default_rng(4)
    variance, p = 50.0, 1e-3
    s = skellam(variance, SAMPLES, rng)
    assert (np.abs(s) >= skellam_tail(variance, p)).mean() <= p
    z = discrete_gaussian(math.sqrt(variance), SAMPLES, rng)
    assert (np.abs(z) >= subgaussian_tail(variance, p)).mean() <= p
    assert subgaussian_tail(variance, p) == pytest.approx(math.sqrt(2 * variance * math.log(2 / p)))
    # Bennett's bound is above the Gaussian one (heavier tail), and close to it for large variance.
    assert skellam_tail(variance, p) > subgaussian_tail(variance, p)
    assert skellam_tail(1e8, p) == pytest.approx(subgaussian_tail(1e8, p), rel=1e-3)


def test_bad_parameters_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="sigma"):
        discrete_gaussian(0.0, 3, rng)
    with pytest.raises(ValueError, match="variance"):
        skellam(float("nan"), 3, rng)
    with pytest.raises(ValueError, match="probability"):
        skellam_tail(1.0, 1.5)
