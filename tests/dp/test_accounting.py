"""Privacy accounting: agrees with dp-accounting's own computations, composes, calibrates."""

from __future__ import annotations

import itertools
import math

import pytest

dp_accounting = pytest.importorskip("dp_accounting")

from dp_accounting.pld import privacy_loss_distribution  # noqa: E402
from dp_accounting.rdp import RdpAccountant  # noqa: E402

from fedavg_core.distributed_dp import DistributedDP  # noqa: E402
from fedavg_core.privacy_accounting import (  # noqa: E402
    ORDERS,
    PrivacyLedger,
    ddgauss_round,
    ddgauss_tau,
    gaussian_noise_multiplier,
    run_epsilon,
    skellam_round,
)

DELTA = 1e-5


def gaussian_epsilon(noise_multiplier: float, rounds: int) -> float:
    accountant = RdpAccountant(list(ORDERS))
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(DELTA))


def test_one_discrete_gaussian_share_spends_what_dp_accounting_gives_the_gaussian() -> None:
    # One client (tau = 0): the discrete Gaussian's RDP is the Gaussian's (Canonne et al. 2020),
    # so the epsilon equals dp-accounting's for GaussianDpEvent with sigma / Delta_2.
    l2, sigma, rounds = 40.0, 100.0, 12
    assert ddgauss_tau(sigma, 1) == 0.0
    ours = run_epsilon(ddgauss_round(l2, l2 * 32, sigma, 1, 1024), rounds, DELTA)
    assert ours == pytest.approx(gaussian_epsilon(sigma / l2, rounds), rel=1e-9)


def test_distributed_discrete_gaussian_approaches_the_gaussian_from_above() -> None:
    l2, clients, rounds = 40.0, 20, 12
    central = 100.0
    local = central / math.sqrt(clients)
    ours = run_epsilon(ddgauss_round(l2, l2 * 32, local, clients, 1024), rounds, DELTA)
    reference = gaussian_epsilon(central / l2, rounds)
    assert reference <= ours <= reference * (1 + 1e-6)
    # Small local noise: the sum is far from a discrete Gaussian, and tau makes it cost more.
    tiny = run_epsilon(ddgauss_round(0.4, 0.4 * 32, 0.3, clients, 1024), rounds, DELTA)
    assert tiny > gaussian_epsilon(0.3 * math.sqrt(clients) / 0.4, rounds) * 1.5


def test_skellam_costs_more_than_the_gaussian_of_its_variance_and_converges_to_it() -> None:
    rounds = 10
    gaps = []
    for scale in (1.0, 10.0, 100.0):
        l2, variance = 10.0 * scale, (30.0 * scale) ** 2
        ours = run_epsilon(skellam_round(l2, l2 * min(32, l2), variance), rounds, DELTA)
        reference = gaussian_epsilon(math.sqrt(variance) / l2, rounds)
        assert ours >= reference
        gaps.append(ours / reference - 1)
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3


def test_rdp_accounting_upper_bounds_dp_accountings_exact_discrete_gaussian_pld() -> None:
    # A one-dimensional discrete Gaussian, sensitivity 3: the PLD of dp-accounting is exact, the
    # RDP route is a valid but looser bound.
    sigma, sensitivity, rounds = 12.0, 3, 8
    pld = privacy_loss_distribution.from_discrete_gaussian_mechanism(sigma, sensitivity=sensitivity)
    exact = pld.self_compose(rounds).get_epsilon_for_delta(DELTA)
    ours = run_epsilon(ddgauss_round(sensitivity, sensitivity, sigma, 1, 1), rounds, DELTA)
    assert exact <= ours <= 1.35 * exact


def test_composition_grows_with_rounds_and_matches_recording_round_by_round() -> None:
    curves = ddgauss_round(30.0, 30.0 * 32, 25.0, 10, 1024)
    epsilons = [run_epsilon(curves, rounds, DELTA) for rounds in (1, 2, 5, 10, 50)]
    assert all(a < b for a, b in itertools.pairwise(epsilons))
    # Roughly sqrt(T) growth once composition dominates (zCDP): far below T-fold.
    assert epsilons[-1] < 50 * epsilons[0] / 3
    ledger = PrivacyLedger()
    for _ in range(10):
        ledger.record(curves)
    assert ledger.rounds == 10
    assert ledger.epsilon(DELTA) == pytest.approx(epsilons[3], rel=1e-12)


def test_the_plan_spends_the_budget_at_t_survivors_and_less_when_more_survive() -> None:
    for mechanism in ("ddgauss", "skellam"):
        dp = DistributedDP(epsilon=8.0, delta=DELTA, rounds=10, clip=1.0, mechanism=mechanism, bits=8)
        plan = dp.plan(num_clients=20, threshold=11, dimension=650)
        assert 8.0 * (1 - 1e-3) <= plan.planned_epsilon <= 8.0
        at_t = run_epsilon(plan.curves(11), 10, DELTA)
        assert at_t == pytest.approx(plan.planned_epsilon, rel=1e-12)
        assert run_epsilon(plan.curves(20), 10, DELTA) < at_t
        # The calibrated noise is at least the continuous Gaussian's for the same budget.
        z = gaussian_noise_multiplier(8.0, DELTA, 10)
        assert math.sqrt(11 * plan.local_variance) >= z * plan.l2_sensitivity


def test_colluders_raise_the_noise_so_the_honest_shares_alone_give_the_budget() -> None:
    base = DistributedDP(epsilon=4.0, delta=DELTA, rounds=5, clip=1.0, bits=10).plan(20, 11, 100)
    guarded = DistributedDP(epsilon=4.0, delta=DELTA, rounds=5, clip=1.0, bits=10, colluders=6)
    plan = guarded.plan(20, 11, 100)
    assert plan.noise_clients == 5
    central_honest = plan.local_variance * 5 * (1 / plan.scale) ** 2
    central_base = base.local_variance * 11 * (1 / base.scale) ** 2
    assert central_honest == pytest.approx(central_base, rel=0.05)
    with pytest.raises(ValueError, match="no honest noise share"):
        DistributedDP(epsilon=4.0, delta=DELTA, rounds=5, clip=1.0, colluders=11).plan(20, 11, 100)


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        DistributedDP(epsilon=0.0, delta=DELTA, rounds=5, clip=1.0)
    with pytest.raises(ValueError, match="delta"):
        DistributedDP(epsilon=1.0, delta=1.0, rounds=5, clip=1.0)
    with pytest.raises(ValueError, match="mechanism"):
        DistributedDP(epsilon=1.0, delta=DELTA, rounds=5, clip=1.0, mechanism="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delta"):
        PrivacyLedger().epsilon(0.0)
