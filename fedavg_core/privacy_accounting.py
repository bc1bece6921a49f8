"""Privacy accounting for distributed DP with Google's ``dp-accounting`` library.

This module turns one round of distributed DP into ``dp_accounting`` events and lets the library
compose them over rounds and convert the result to (epsilon, delta); nothing here composes by
hand. It needs the ``dp`` extra (``pip install 'secagg-fedavg[dp]'``).

Neighbouring relation: two runs differ in one client's data, i.e. that client's (clipped,
rotated, scaled, rounded) contribution to a round's sum is replaced by zero. Its L2 norm is at
most ``l2_sensitivity`` and its L1 norm at most ``l1_sensitivity`` (integer units). The noise of
that client still counts only if it is honest; ``noise_clients`` is the number of honest clients
whose noise shares are in the released sum.

Per-round mechanisms, each given as one or more zCDP curves ``(xi, rho)`` meaning
``(alpha, xi + rho * alpha)``-RDP for every order alpha; each curve alone is a valid bound, so the
ledger composes every curve over all rounds (``dp_accounting.rdp.RdpAccountant``, which adds RDP
curves, and converts to (epsilon, delta) with its own optimal conversion) and reports the
smallest epsilon:

- Distributed discrete Gaussian (DDGauss; Kairouz, Liu, Steinke, "The Distributed Discrete
  Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML 2021, Theorem 1 and
  Proposition 14): n clients each add ``N_Z(0, sigma^2)``; with ``tau = 10 sum_{k=1}^{n-1}
  exp(-2 pi^2 sigma^2 k / (k + 1))``, ``l2 = D2 / (sqrt(n) sigma)``, ``l1 = D1 / (sqrt(n) sigma)``
  and dimension d, the sum is RDP with ``min(alpha/2 l2^2 + tau d, alpha/2 (l2^2 + 2 l1 tau +
  tau^2 d), alpha/2 (l2 + sqrt(d) tau)^2)``: three curves.
- Skellam (DSkellam; Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private
  Federated Learning", NeurIPS 2021, the RDP bound of section 3): the sum of the shares is
  ``Sk(0, mu)`` with mu the summed variance, RDP ``alpha D2^2 / (2 mu) + min(((2 alpha - 1) D2^2 +
  6 D1) / (4 mu^2), 3 D1 / (2 mu))``: two curves, ``(max(0, (6 D1 - D2^2) / (4 mu^2)), D2^2/(2 mu)
  + D2^2 / (2 mu^2))`` and ``(3 D1 / (2 mu), D2^2 / (2 mu))``.

Orders: integers 2..64 and 128..1024 (the Skellam bound is stated for integer orders).

No amplification by sampling is claimed: here the server picks each round's cohort and knows it,
and amplification needs the sample to be hidden from the adversary. (``dp_accounting`` also has no
subsampled DDGauss or Skellam event; only its Gaussian events support ``PoissonSampledDpEvent``.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import dp_accounting  # type: ignore[import-untyped]
from dp_accounting.rdp import RdpAccountant  # type: ignore[import-untyped]

ORDERS: Final[tuple[int, ...]] = (*range(2, 65), 128, 256, 512, 1024)
"""The RDP orders the ledger tracks."""


def ddgauss_tau(local_sigma: float, noise_clients: int) -> float:
    """tau of Kairouz et al. 2021, Theorem 1: how far the sum of ``noise_clients`` discrete
    Gaussians ``N_Z(0, local_sigma^2)`` may be from one discrete Gaussian (0 for one client)."""
    return 10.0 * sum(
        math.exp(-2.0 * math.pi**2 * local_sigma**2 * k / (k + 1)) for k in range(1, noise_clients)
    )


def ddgauss_round(
    l2_sensitivity: float,
    l1_sensitivity: float,
    local_sigma: float,
    noise_clients: int,
    dimension: int,
) -> tuple[dp_accounting.ZCDpEvent, ...]:
    """One DDGauss round as zCDP curves (Kairouz et al. 2021, Proposition 14 with Theorem 1)."""
    _check_positive(l2_sensitivity=l2_sensitivity, l1_sensitivity=l1_sensitivity, local_sigma=local_sigma)
    if noise_clients < 1 or dimension < 1:
        raise ValueError(f"need noise_clients >= 1 and dimension >= 1, got {noise_clients}, {dimension}")
    tau = ddgauss_tau(local_sigma, noise_clients)
    central = math.sqrt(noise_clients) * local_sigma
    l2, l1 = l2_sensitivity / central, l1_sensitivity / central
    return (
        dp_accounting.ZCDpEvent(rho=l2**2 / 2.0, xi=tau * dimension),
        dp_accounting.ZCDpEvent(rho=(l2**2 + 2.0 * l1 * tau + tau**2 * dimension) / 2.0),
        dp_accounting.ZCDpEvent(rho=(l2 + math.sqrt(dimension) * tau) ** 2 / 2.0),
    )


def skellam_round(
    l2_sensitivity: float, l1_sensitivity: float, central_variance: float
) -> tuple[dp_accounting.ZCDpEvent, ...]:
    """One Skellam round as zCDP curves (Agarwal et al. 2021); ``central_variance`` is the summed
    variance of the honest clients' Skellam shares."""
    _check_positive(
        l2_sensitivity=l2_sensitivity, l1_sensitivity=l1_sensitivity, central_variance=central_variance
    )
    d2, d1, mu = l2_sensitivity**2, l1_sensitivity, central_variance
    return (
        dp_accounting.ZCDpEvent(
            rho=d2 / (2 * mu) + d2 / (2 * mu**2), xi=max(0.0, (6 * d1 - d2) / (4 * mu**2))
        ),
        dp_accounting.ZCDpEvent(rho=d2 / (2 * mu), xi=3 * d1 / (2 * mu)),
    )


class PrivacyLedger:
    """The privacy spent by a run: every released round's curves, composed by ``dp_accounting``.

    ``record`` takes one round's curves (the same number of curves every round, from the same
    mechanism); ``epsilon(delta)`` is the smallest epsilon any curve sequence gives.
    """

    def __init__(self) -> None:
        self._accountants: list[RdpAccountant] = []
        self.rounds = 0

    def record(self, curves: Sequence[dp_accounting.DpEvent], count: int = 1) -> None:
        """Add ``count`` rounds with these curves."""
        if not curves:
            raise ValueError("a round needs at least one curve")
        if self._accountants and len(curves) != len(self._accountants):
            raise ValueError(f"every round must give {len(self._accountants)} curves, got {len(curves)}")
        if not self._accountants:
            self._accountants = [RdpAccountant(list(ORDERS)) for _ in curves]
        for accountant, curve in zip(self._accountants, curves, strict=True):
            accountant.compose(dp_accounting.SelfComposedDpEvent(curve, count))
        self.rounds += count

    def epsilon(self, delta: float) -> float:
        """epsilon of the whole run so far at this delta (0 before any round)."""
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        if not self._accountants:
            return 0.0
        return float(min(accountant.get_epsilon(delta) for accountant in self._accountants))


def run_epsilon(curves: Sequence[dp_accounting.DpEvent], rounds: int, delta: float) -> float:
    """epsilon after ``rounds`` rounds that each give these curves."""
    ledger = PrivacyLedger()
    ledger.record(curves, rounds)
    return ledger.epsilon(delta)


def gaussian_noise_multiplier(epsilon: float, delta: float, rounds: int) -> float:
    """The noise multiplier (stddev / L2 sensitivity) of the continuous Gaussian mechanism that
    spends exactly ``epsilon`` over ``rounds`` rounds (``dp_accounting``'s calibration, same
    orders): the reference the discrete mechanisms approach as their noise grows."""

    def event(multiplier: float) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(multiplier), rounds)

    return float(
        dp_accounting.mechanism_calibration.calibrate_dp_mechanism(
            lambda: RdpAccountant(list(ORDERS)),
            event,
            epsilon,
            delta,
            dp_accounting.mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0),
        )
    )


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")
