"""Heterogeneous clients and drift in the websocket federation: the server's per-round client
learning-rate schedule and FedProx mu reach the clients; each client's declared budget (its own
epochs, a time budget) shapes its local training; the weight stays the capped example count."""

from __future__ import annotations

import argparse
import asyncio
import itertools

import numpy as np
import pytest
from federation_helpers import ZeroModel, run_federation

from fedavg_core import ClientUpdate, Dataset, LogisticRegression
from transport.arguments import UsageError, add_federation_arguments, add_task_arguments, federation_settings
from transport.server import FederationSettings
from transport.tasks import LearnerTrainer, LocalBudget, TrainingSettings


class SettingsRecorder:
    """A client that records the training settings of every round and returns a fixed update."""

    def __init__(self, dimension: int, value: float) -> None:
        self._dimension = dimension
        self.value = value
        self.settings: dict[int, TrainingSettings] = {}

    @property
    def dimension(self) -> int:
        return self._dimension

    def train(self, vector: np.ndarray, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        self.settings[round_number] = settings
        return ClientUpdate(np.full(self._dimension, self.value), 50)


def test_the_server_sends_each_round_its_decayed_learning_rate_and_mu() -> None:
    training = TrainingSettings(
        epochs=2, batch_size=8, learning_rate=0.4, proximal_mu=0.25, learning_rate_decay=0.5
    )
    settings = FederationSettings(
        num_clients=4, rounds=3, training=training, phase_timeout=20, train_timeout=20, wait_timeout=20
    )
    trainers = {i: SettingsRecorder(6, 0.01 * i) for i in range(1, 5)}
    run = asyncio.run(run_federation(ZeroModel(6), settings, trainers))  # type: ignore[arg-type]
    assert [r.status for r in run.reports] == ["completed"] * 3
    for trainer in trainers.values():
        assert sorted(trainer.settings) == [1, 2, 3]
        for r, received in trainer.settings.items():
            assert received == TrainingSettings(2, 8, 0.4 * 0.5 ** (r - 1), proximal_mu=0.25)


def test_training_settings_on_the_wire() -> None:
    sent = TrainingSettings(3, None, 0.2, proximal_mu=0.1, learning_rate_decay=0.9)
    received = TrainingSettings.from_wire(sent.for_round(3).to_wire())
    assert (received.epochs, received.batch_size, received.proximal_mu) == (3, None, 0.1)
    assert received.learning_rate == pytest.approx(0.2 * 0.81)
    assert received.learning_rate_decay == 1.0  # the schedule stays on the server
    # A server that predates FedProx sends no mu: plain FedAvg.
    assert TrainingSettings.from_wire({"epochs": 1, "batch_size": 0, "learning_rate": 0.1}).proximal_mu == 0
    with pytest.raises(ValueError, match="optionally proximal_mu"):
        TrainingSettings.from_wire({**sent.to_wire(), "momentum": 0.9})
    with pytest.raises(ValueError, match="proximal_mu must be"):
        TrainingSettings.from_wire({**sent.to_wire(), "proximal_mu": -1.0})
    with pytest.raises(ValueError, match="proximal_mu must be a number"):
        TrainingSettings.from_wire({**sent.to_wire(), "proximal_mu": "1"})
    with pytest.raises(ValueError, match="learning_rate_decay"):
        TrainingSettings(learning_rate_decay=0.0)
    with pytest.raises(ValueError, match="rounds are numbered from 1"):
        sent.for_round(0)


def _data(n: int = 64) -> Dataset:
    rng = np.random.default_rng(5)
    return Dataset(rng.normal(size=(n, 4)), rng.integers(0, 3, n))


def test_a_client_declares_its_own_epochs_and_mu_reaches_its_learner() -> None:
    learner, data = LogisticRegression(4, 3), _data()
    start = learner.initial_vector() + 0.2
    server = TrainingSettings(epochs=1, batch_size=16, learning_rate=0.1, proximal_mu=0.5)
    update = LearnerTrainer(learner, data, seed=1, budget=LocalBudget(epochs=4)).train(start, server, 2)
    expected = learner.train(
        start,
        data,
        epochs=4,
        batch_size=16,
        learning_rate=0.1,
        rng=np.random.default_rng([1, 2]),
        proximal_mu=0.5,
    )
    assert np.array_equal(update.update, expected - start)
    assert update.num_examples == len(data)  # the weight is the example count, whatever the work
    plain = LearnerTrainer(learner, data, seed=1).train(start, server, 2)
    assert not np.allclose(plain.update, update.update)


def test_a_time_budget_stops_local_training_after_the_step_that_spent_it() -> None:
    learner, data = LogisticRegression(4, 3), _data()
    start = learner.initial_vector()
    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731 - one second per reading
    # One reading sets the deadline (t=0, budget 2.5 s), then one per step: t=1, 2, 3 -> 3 steps.
    trainer = LearnerTrainer(learner, data, seed=1, budget=LocalBudget(seconds=2.5), clock=clock)
    server = TrainingSettings(epochs=10, batch_size=16, learning_rate=0.1)
    update = trainer.train(start, server, 1)
    assert next(ticks) == 4
    rng = np.random.default_rng([1, 1])
    expected = learner.train(
        start, data, epochs=1, batch_size=16, learning_rate=0.1, rng=rng, should_stop=lambda: False
    )
    # Three steps of 16 are not the whole first epoch (four steps) ...
    assert not np.allclose(update.update, expected - start)
    steps = iter(range(1, 100))
    rng = np.random.default_rng([1, 1])
    three = learner.train(
        start,
        data,
        epochs=10,
        batch_size=16,
        learning_rate=0.1,
        rng=rng,
        should_stop=lambda: next(steps) >= 3,
    )
    assert np.array_equal(update.update, three - start)  # ... but exactly its first three steps


def test_local_budgets_are_checked() -> None:
    for bad in ({"epochs": 0}, {"epochs": True}, {"seconds": 0}, {"seconds": -1.0}):
        with pytest.raises(ValueError, match="local"):
            LocalBudget(**bad)


def test_the_server_command_line_sets_the_schedule_and_mu() -> None:
    parser = argparse.ArgumentParser()
    add_task_arguments(parser)
    add_federation_arguments(parser)
    args = parser.parse_args(["--lr", "0.2", "--lr-decay", "0.5", "--proximal-mu", "0.01"])
    training = federation_settings(args).training
    assert (training.proximal_mu, training.learning_rate_decay) == (0.01, 0.5)
    assert training.for_round(3).learning_rate == pytest.approx(0.05)
    for bad in (["--proximal-mu", "-1"], ["--lr-decay", "2"]):
        with pytest.raises(UsageError, match=r"proximal_mu|learning_rate_decay"):
            federation_settings(parser.parse_args(bad))
