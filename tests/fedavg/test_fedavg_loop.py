"""FedAvg (McMahan et al. 2017) over the secure and the plaintext aggregator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from fedavg_core import (
    AggregateResult,
    Aggregator,
    ClientUpdate,
    Dataset,
    FedAvg,
    FedAvgConfig,
    LogisticRegression,
    PlaintextAggregator,
    SecureAggregator,
    TorchLearner,
    dirichlet_partition,
    load_digits_dataset,
)

CLIP = 4.0
MAX_WEIGHT = 400


@pytest.fixture(scope="module")
def digits() -> tuple[list[Dataset], Dataset]:
    train, test = load_digits_dataset(seed=0)
    parts = dirichlet_partition(train.y, 10, 0.5, np.random.default_rng(1))
    return train.split(parts), test


@dataclass
class Recorder:
    """Wraps an aggregator; also computes the exact (plaintext) mean of the same updates."""

    inner: Aggregator
    errors: list[np.ndarray] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)
    largest_update: float = 0.0

    def aggregate(self, updates: Sequence[ClientUpdate], rng: np.random.Generator) -> AggregateResult:
        result = self.inner.aggregate(updates, rng)
        exact = PlaintextAggregator(max_weight=MAX_WEIGHT).aggregate(
            [updates[i] for i in result.participants], rng
        )
        self.errors.append(result.mean_update - exact.mean_update)
        self.bounds.append(result.error_bound)
        self.largest_update = max(self.largest_update, *(np.abs(u.update).max() for u in updates))
        return result


def test_secure_and_plaintext_fedavg_stay_within_the_quantization_bound(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    """Two runs from one seed sample the same clients and minibatches; they differ only by the
    quantization error e_r of each secure aggregate, |e_r| <= b_r per element.

    Why the differences cannot grow: softmax regression's minibatch loss is convex and
    beta-smooth with beta <= (max ||x||^2 + 1) / 2, so each SGD step with lr <= 2 / beta is
    non-expansive in L2, and so are local training, the weighted mean (fixed weights) and the
    server step with server_lr <= 1 (no clipping happens: checked). Hence after round r
    ||w_secure - w_plain||_2 <= server_lr * sum_k ||e_k||_2 <= server_lr * sum_k sqrt(m) b_k,
    and the max abs difference is at most that.
    """
    clients, test = digits
    learner = LogisticRegression(64, 10)
    config = FedAvgConfig(
        client_fraction=0.5,
        local_epochs=2,
        batch_size=16,
        learning_rate=0.1,
        server_learning_rate=0.9,
    )
    max_sq_norm = max(float((c.x**2).sum(axis=1).max()) for c in clients)
    assert config.learning_rate <= 2 / ((max_sq_norm + 1) / 2)  # the non-expansive regime

    secure = Recorder(SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT))
    plain = Recorder(PlaintextAggregator(clip=CLIP, max_weight=MAX_WEIGHT))
    runs = [FedAvg(learner, agg, clients, config, seed=11, test_data=test) for agg in (secure, plain)]
    m = learner.spec.size
    measured, documented = 0.0, 0.0
    for _ in range(12):
        a, b = (run.run_round() for run in runs)
        assert a.sampled == b.sampled and len(a.sampled) == 5
        assert a.total_weight == b.total_weight
        assert b.error_bound == 0.0 and a.error_bound == secure.bounds[-1]
        assert np.max(np.abs(secure.errors[-1])) <= a.error_bound  # this round's aggregate
        measured += config.server_learning_rate * float(np.linalg.norm(secure.errors[-1]))
        documented += config.server_learning_rate * np.sqrt(m) * a.error_bound
        diff = runs[0].global_vector - runs[1].global_vector
        assert float(np.linalg.norm(diff)) <= measured + 1e-12
        assert float(np.max(np.abs(diff))) <= documented
    assert secure.largest_update < CLIP and plain.largest_update < CLIP
    assert np.any(runs[0].global_vector != runs[1].global_vector)  # quantization did happen
    accuracy = [r.history[-1].metrics.accuracy for r in runs if r.history[-1].metrics]
    assert accuracy[0] == pytest.approx(accuracy[1], abs=0.005) and min(accuracy) > 0.8


def test_runs_are_reproducible_and_sample_a_fraction_of_clients(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    clients, _ = digits
    learner = LogisticRegression(64, 10)
    config = FedAvgConfig(client_fraction=0.3, local_epochs=1, batch_size=32, learning_rate=0.1)

    def run(seed: int) -> FedAvg:
        fedavg = FedAvg(learner, PlaintextAggregator(), clients, config, seed=seed)
        fedavg.run(4)
        return fedavg

    first, again, other = run(3), run(3), run(4)
    assert np.array_equal(first.global_vector, again.global_vector)
    assert [r.sampled for r in first.history] == [r.sampled for r in again.history]
    assert [r.sampled for r in first.history] != [r.sampled for r in other.history]
    for record in first.history:
        assert len(record.sampled) == 3 == len(set(record.sampled))
        assert record.participants == record.sampled
        assert record.total_weight == sum(len(clients[i]) for i in record.sampled)
        assert record.metrics is None  # no test data given
    assert FedAvgConfig(client_fraction=0.01).clients_per_round(10) == 2  # min_clients


def test_server_learning_rate_scales_the_averaged_update(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    clients, _ = digits
    learner = LogisticRegression(64, 10)
    steps = []
    for server_lr in (1.0, 0.25):
        config = FedAvgConfig(client_fraction=0.5, server_learning_rate=server_lr)
        fedavg = FedAvg(learner, PlaintextAggregator(), clients, config, seed=0)
        fedavg.run_round()
        steps.append(fedavg.global_vector - learner.initial_vector())
    assert np.allclose(steps[1], 0.25 * steps[0], rtol=1e-12, atol=1e-15)
    assert np.abs(steps[0]).max() > 0


def test_an_aborted_secure_round_keeps_the_model_and_is_recorded(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    clients, test = digits
    learner = LogisticRegression(64, 10)
    config = FedAvgConfig(client_fraction=0.4)  # 4 clients, threshold 3
    drop = {"masked_input": [1, 2]}
    fedavg = FedAvg(
        learner,
        SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, drop=drop),
        clients,
        config,
        seed=0,
        test_data=test,
    )
    record = fedavg.run_round()
    assert record.aborted is not None and "masked_input" in record.aborted
    assert record.participants == () and record.total_weight == 0
    assert np.array_equal(fedavg.global_vector, learner.initial_vector())
    strict = FedAvg(
        learner,
        SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, drop=drop),
        clients,
        FedAvgConfig(client_fraction=0.4, skip_aborted=False),
        seed=0,
    )
    with pytest.raises(Exception, match="aborted"):
        strict.run_round()


def test_fedavg_refuses_bad_settings(digits: tuple[list[Dataset], Dataset]) -> None:
    clients, _ = digits
    learner = LogisticRegression(64, 10)
    with pytest.raises(ValueError, match="client_fraction"):
        FedAvgConfig(client_fraction=0.0)
    with pytest.raises(ValueError, match="epochs"):
        FedAvgConfig(local_epochs=0)
    with pytest.raises(ValueError, match="min_clients=3"):
        FedAvg(learner, PlaintextAggregator(), clients[:2], FedAvgConfig(min_clients=3), seed=0)
    with pytest.raises(ValueError, match="length 650"):
        FedAvg(learner, PlaintextAggregator(), clients, FedAvgConfig(), seed=0, initial_vector=np.zeros(3))


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def test_torch_secure_round_matches_plaintext_within_the_bound(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    clients, test = digits
    learner = TorchLearner(_mlp(0))
    config = FedAvgConfig(client_fraction=1.0, local_epochs=1, batch_size=16, learning_rate=0.1)
    runs = [
        FedAvg(learner, agg, clients, config, seed=2, test_data=test)
        for agg in (
            SecureAggregator(clip=1.0, max_weight=MAX_WEIGHT),
            PlaintextAggregator(clip=1.0, max_weight=MAX_WEIGHT),
        )
    ]
    secure, plain = (run.run_round() for run in runs)
    diff = np.max(np.abs(runs[0].global_vector - runs[1].global_vector))
    assert 0 < diff <= config.server_learning_rate * secure.error_bound  # same start, one round
    assert secure.total_weight == plain.total_weight


@pytest.mark.slow
def test_torch_mlp_learns_non_iid_digits_with_secure_fedavg(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    """10 clients with Dirichlet(0.5) label skew, all sampled each round (C = 1), E = 5, B = 16;
    the server sees only the secure sums. Goal: >= 90% test accuracy within 30 rounds."""
    clients, test = digits
    config = FedAvgConfig(client_fraction=1.0, local_epochs=5, batch_size=16, learning_rate=0.1)
    fedavg = FedAvg(
        TorchLearner(_mlp(0)),
        SecureAggregator(clip=1.0, max_weight=MAX_WEIGHT),
        clients,
        config,
        seed=0,
        test_data=test,
    )
    accuracy = []
    for _ in range(30):
        record = fedavg.run_round()
        assert record.participants == tuple(range(10)) and record.aborted is None
        assert record.metrics is not None
        accuracy.append(record.metrics.accuracy)
        if record.metrics.accuracy >= 0.9:
            break
    assert max(accuracy) >= 0.9, accuracy
