"""Distributed DP through the real SecAgg path (``secagg.simulate``) and the FedAvg loop."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dp_accounting")
pytest.importorskip("sklearn")

import itertools

from fedavg_core import (
    ClientUpdate,
    DistributedDP,
    FedAvg,
    FedAvgConfig,
    LogisticRegression,
    SecureAggregator,
    dirichlet_partition,
    load_digits_dataset,
)
from fedavg_core.privacy_accounting import run_epsilon

DELTA = 1e-5


def test_secure_dp_round_releases_the_noisy_mean_of_the_survivors_and_its_privacy() -> None:
    dp = DistributedDP(epsilon=4.0, delta=DELTA, rounds=5, clip=1.0, bits=8)
    agg = SecureAggregator(clip=1.0, max_weight=1, dp=dp, drop={"masked_input": {2, 5}})
    rng = np.random.default_rng(0)
    updates = [ClientUpdate(rng.normal(size=20) * 0.1, 30) for _ in range(8)]
    result = agg.aggregate(updates, np.random.default_rng(1))
    assert result.participants == (0, 2, 3, 5, 6, 7)
    assert result.total_weight == 6  # the survivor count, not the example counts
    plan = dp.plan(8, agg.secagg_config(8, 33).threshold, 20)
    assert result.noise_stddev == pytest.approx(plan.noise_stddev(6))
    exact = np.mean([updates[i].update for i in result.participants], axis=0)
    assert np.max(np.abs(result.mean_update - exact)) < 6 * result.noise_stddev
    assert result.privacy is not None and result.privacy.noise_clients == 6
    # Fewer survivors than 8 means less noise and a higher price, never above the budget per round.
    all_survive = run_epsilon(plan.curves(8), 5, DELTA)
    six = run_epsilon(result.privacy.curves, 5, DELTA)
    assert all_survive < six <= plan.planned_epsilon <= 4.0


def test_secure_fedavg_with_distributed_dp_learns_non_iid_digits_at_epsilon_8() -> None:
    """The stated target: >= 80% test accuracy at epsilon = 8 (delta = 1e-5) over 10 rounds.

    50 clients with Dirichlet(0.5) label skew, all in every round; noise sized for the SecAgg
    threshold t = 26; softmax regression. Plaintext FedAvg reaches about 91% on this setting and
    the DP run about 87% (BENCHMARKS.md).
    """
    train, test = load_digits_dataset(seed=0)
    clients = train.split(dirichlet_partition(train.y, 50, 0.5, np.random.default_rng(0)))
    dp = DistributedDP(epsilon=8.0, delta=DELTA, rounds=10, clip=1.0, bits=8)
    agg = SecureAggregator(clip=1.0, max_weight=1, dp=dp)
    config = FedAvgConfig(client_fraction=1.0, local_epochs=5, batch_size=16, learning_rate=0.3)
    fedavg = FedAvg(LogisticRegression(64, 10), agg, clients, config, seed=0, test_data=test)
    records = fedavg.run(10)
    spent = [r.epsilon for r in records]
    assert all(e is not None for e in spent)
    assert all(a < b for a, b in itertools.pairwise(spent))  # type: ignore[operator]
    assert spent[-1] is not None and spent[-1] <= 8.0  # 50 > t survivors: less than planned
    final = records[-1].metrics
    assert final is not None and final.accuracy >= 0.80
