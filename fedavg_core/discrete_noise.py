"""Integer-valued noise for distributed DP, and tail bounds for the sum of many clients' noise.

- Discrete Gaussian ``N_Z(0, sigma^2)``: ``P(z) ~ exp(-z^2 / (2 sigma^2))`` on the integers, drawn
  with Algorithm 3 of Canonne, Kamath, Steinke 2020 ("The Discrete Gaussian for Differential
  Privacy"): a discrete Laplace proposal with scale ``floor(sigma) + 1``, accepted with probability
  ``exp(-(|y| - sigma^2/t)^2 / (2 sigma^2))``. Its variance is at most ``sigma^2`` (within a
  relative ``1e-8`` for sigma >= 1), and it is sigma^2-sub-Gaussian (same paper, Corollary 9), so a
  sum of n independent draws is n sigma^2-sub-Gaussian. The sum is *not* a discrete Gaussian; the
  DDGauss accounting (Kairouz, Liu, Steinke 2021) pays for that with its tau term.
- Skellam ``Sk(0, mu)``: ``Poisson(mu/2) - Poisson(mu/2)``, variance mu (Agarwal, Kairouz, Liu
  2021). Sums of independent Skellams are Skellam (variances add), which is why the sum of the
  clients' shares is exactly the mechanism the accountant analyses. Its log moment generating
  function is ``mu (cosh(l) - 1) <= mu (e^l - 1 - l)``, so it obeys Bennett's inequality.

Sampling uses numpy floats: fine for simulations and experiments, but not hardened against timing
side channels (a production client would use an exact, constant-time sampler).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def _check_scale(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    return float(value)


def discrete_laplace(scale: float, size: int, rng: np.random.Generator) -> IntArray:
    """``size`` draws with ``P(y) ~ exp(-|y| / scale)`` on the integers (difference of two
    geometric variables on {0, 1, ...} with ratio ``exp(-1/scale)``)."""
    scale = _check_scale("scale", scale)
    success = -math.expm1(-1.0 / scale)
    first = rng.geometric(success, size).astype(np.int64)
    second = rng.geometric(success, size).astype(np.int64)
    out: IntArray = first - second
    return out


def discrete_gaussian(sigma: float, size: int, rng: np.random.Generator) -> IntArray:
    """``size`` independent draws of the discrete Gaussian ``N_Z(0, sigma^2)`` (CKS 2020, Alg. 3)."""
    sigma = _check_scale("sigma", sigma)
    t = math.floor(sigma) + 1
    out = np.empty(size, dtype=np.int64)
    pending = np.arange(size)
    while pending.size:
        y = discrete_laplace(t, pending.size, rng)
        keep = rng.random(pending.size) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        out[pending[keep]] = y[keep]
        pending = pending[~keep]
    return out


def skellam(variance: float, size: int, rng: np.random.Generator) -> IntArray:
    """``size`` independent draws of ``Sk(0, variance)`` = ``Poisson(v/2) - Poisson(v/2)``."""
    variance = _check_scale("variance", variance)
    half = variance / 2.0
    out: IntArray = rng.poisson(half, size).astype(np.int64) - rng.poisson(half, size).astype(np.int64)
    return out


def subgaussian_tail(variance_proxy: float, probability: float) -> float:
    """u with ``P(|X| >= u) <= probability`` for X sub-Gaussian with this variance proxy
    (``2 exp(-u^2 / (2 v)) = probability``)."""
    _check_probability(probability)
    if variance_proxy <= 0:
        return 0.0
    return math.sqrt(2.0 * variance_proxy * math.log(2.0 / probability))


def skellam_tail(variance: float, probability: float) -> float:
    """u with ``P(|X| >= u) <= probability`` for X ~ Sk(0, variance), by Bennett's inequality:
    ``P(X >= u) <= exp(-v h(u / v))`` with ``h(x) = (1 + x) log(1 + x) - x``, both tails."""
    _check_probability(probability)
    if variance <= 0:
        return 0.0
    target = math.log(2.0 / probability)

    def exponent(u: float) -> float:
        x = u / variance
        return variance * ((1.0 + x) * math.log1p(x) - x)

    low, high = 0.0, 1.0
    while exponent(high) < target:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if exponent(mid) < target:
            low = mid
        else:
            high = mid
    return high


def _check_probability(probability: float) -> None:
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability!r}")
