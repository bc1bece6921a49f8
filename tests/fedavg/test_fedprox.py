"""FedProx (Li et al. 2020) and client learning-rate decay in the local training of fedavg_core.

The local objective is ``h(w) = f(w) + mu/2 * ||w - w_global||^2``; training starts at
``w_global``. Checked here: the objective and its gradient (numerically), mu = 0 is plain local
SGD bit for bit, the proximal step of both learners, the time budget hook, and on non-IID digits
that the local update's distance from the global model shrinks as mu grows, within the bound
``2 ||grad f(w_global)|| / mu`` that convexity gives, while FedProx still learns.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from fedavg_core import (
    Dataset,
    FedAvg,
    FedAvgConfig,
    LogisticRegression,
    PlaintextAggregator,
    TorchLearner,
    dirichlet_partition,
    load_digits_dataset,
)
from fedavg_core.models import Learner, minibatches
from fedavg_core.torch_models import module_to_vector, vector_to_module

MUS = (0.0, 0.1, 1.0, 10.0)


@pytest.fixture(scope="module")
def digits() -> tuple[list[Dataset], Dataset]:
    """Very non-IID digits: Dirichlet(0.1) label skew over 10 clients."""
    train, test = load_digits_dataset(seed=0)
    parts = dirichlet_partition(train.y, 10, 0.1, np.random.default_rng(1), min_size=10)
    return train.split(parts), test


def small_data(seed: int = 0, n: int = 40, d: int = 5, k: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(rng.normal(size=(n, d)), rng.integers(0, k, n))


def test_the_proximal_gradient_matches_the_numerical_gradient_of_the_objective() -> None:
    model = LogisticRegression(num_features=5, num_classes=3, l2=0.01)
    data = small_data()
    rng = np.random.default_rng(7)
    vector = rng.normal(size=model.spec.size)
    anchor = rng.normal(size=model.spec.size)
    for mu in (0.0, 0.5, 3.0):
        analytic = model.gradient(vector, data, anchor=anchor, proximal_mu=mu)
        numeric = np.empty_like(vector)
        step = 1e-6
        for i in range(vector.size):
            e = np.zeros_like(vector)
            e[i] = step
            up = model.objective(vector + e, data, anchor=anchor, proximal_mu=mu)
            down = model.objective(vector - e, data, anchor=anchor, proximal_mu=mu)
            numeric[i] = (up - down) / (2 * step)
        assert np.max(np.abs(analytic - numeric)) < 1e-6, mu
    # The proximal part alone: mu/2 ||w - a||^2 has gradient mu (w - a).
    plain = model.gradient(vector, data)
    assert np.allclose(
        model.gradient(vector, data, anchor=anchor, proximal_mu=2.0) - plain, 2.0 * (vector - anchor)
    )
    assert model.objective(anchor, data, anchor=anchor, proximal_mu=5.0) == pytest.approx(
        model.objective(anchor, data)
    )


def test_a_proximal_term_needs_an_anchor_and_a_valid_mu() -> None:
    model = LogisticRegression(num_features=5, num_classes=3)
    data = small_data()
    with pytest.raises(ValueError, match="anchor"):
        model.objective(model.initial_vector(), data, proximal_mu=1.0)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="proximal_mu"):
            model.train(
                model.initial_vector(), data, epochs=1, batch_size=None, learning_rate=0.1,
                rng=np.random.default_rng(0), proximal_mu=bad,
            )  # fmt: skip
        with pytest.raises(ValueError, match="proximal_mu"):
            FedAvgConfig(proximal_mu=bad)


def _train(
    learner: Learner,
    vector: np.ndarray,
    data: Dataset,
    *,
    epochs: int = 3,
    batch_size: int | None = 8,
    learning_rate: float = 0.1,
    proximal_mu: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    return learner.train(
        vector,
        data,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        rng=np.random.default_rng(3),
        proximal_mu=proximal_mu,
        should_stop=should_stop,
    )


def _torch_learner(seed: int = 0) -> TorchLearner:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    return TorchLearner(module.double())


def _plain_sgd(learner: Learner, start: np.ndarray, data: Dataset) -> np.ndarray:
    """Plain minibatch SGD written out here (3 epochs, B=8, lr 0.1, the same shuffles)."""
    rng = np.random.default_rng(3)
    if isinstance(learner, LogisticRegression):
        w: np.ndarray = np.array(start, dtype=np.float64)
        for _ in range(3):
            for batch in minibatches(len(data), 8, rng):
                w -= 0.1 * learner.gradient(w, data.subset(batch))
        return w
    assert isinstance(learner, TorchLearner)
    vector_to_module(start, learner.module)
    params = list(learner.module.parameters())
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    torch.manual_seed(0)
    rng.integers(2**63)  # TorchLearner draws torch's seed first
    for _ in range(3):
        for batch in minibatches(len(data), 8, rng):
            index = torch.from_numpy(batch)
            loss = torch.nn.functional.cross_entropy(learner.module(x[index]), y[index])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    p.sub_(0.1 * g)
    return module_to_vector(learner.module)


@pytest.mark.parametrize(
    "make", [lambda: LogisticRegression(5, 3, l2=0.01), _torch_learner], ids=["numpy", "torch"]
)
def test_mu_zero_is_plain_local_sgd(make: Callable[[], Learner]) -> None:
    learner, data = make(), small_data()
    start = learner.initial_vector() + 0.1
    reference = _plain_sgd(learner, start, data)
    assert np.allclose(_train(learner, start, data, proximal_mu=0.0), reference, rtol=0, atol=1e-12)
    assert np.max(np.abs(_train(learner, start, data, proximal_mu=1.0) - reference)) > 1e-3


@pytest.mark.parametrize(
    "make", [lambda: LogisticRegression(5, 3, l2=0.01), _torch_learner], ids=["numpy", "torch"]
)
def test_the_second_full_batch_step_is_pulled_back_by_mu_times_the_first_step(
    make: Callable[[], Learner],
) -> None:
    # Full batch: w1 = w0 - lr g(w0) with or without mu (w0 is the anchor), and
    # w2 = w1 - lr (g(w1) + mu (w1 - w0)): the two runs differ by exactly -lr mu (w1 - w0).
    learner, data = make(), small_data(1)
    w0 = learner.initial_vector() + 0.05
    lr, mu = 0.2, 0.7
    w1 = _train(learner, w0, data, epochs=1, batch_size=None, learning_rate=lr)
    plain = _train(learner, w0, data, epochs=2, batch_size=None, learning_rate=lr)
    prox = _train(learner, w0, data, epochs=2, batch_size=None, learning_rate=lr, proximal_mu=mu)
    assert np.linalg.norm(w1 - w0) > 1e-3
    assert np.allclose(prox - plain, -lr * mu * (w1 - w0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: LogisticRegression(5, 3), _torch_learner], ids=["numpy", "torch"])
def test_should_stop_ends_training_after_the_step_that_spent_the_budget(make: Callable[[], Learner]) -> None:
    learner, data = make(), small_data(2, n=40)
    start = learner.initial_vector()
    calls: list[int] = []

    def budget_of(steps: int) -> Callable[[], bool]:
        def should_stop() -> bool:
            calls.append(1)
            return len(calls) >= steps

        return should_stop

    # 40 examples in batches of 10: 4 steps per epoch; a budget of 6 steps ends in epoch 2.
    six = _train(learner, start, data, epochs=5, batch_size=10, should_stop=budget_of(6))
    assert len(calls) == 6
    calls.clear()
    one = _train(learner, start, data, epochs=5, batch_size=None, should_stop=budget_of(1))
    assert np.array_equal(one, _train(learner, start, data, epochs=1, batch_size=None))
    # Six steps from the same shuffles: not the one-epoch and not the five-epoch result.
    assert not np.array_equal(six, _train(learner, start, data, epochs=1, batch_size=10))
    assert not np.array_equal(six, _train(learner, start, data, epochs=5, batch_size=10))


def test_local_drift_shrinks_as_mu_grows_within_the_convex_bound(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    clients, test = digits
    model = LogisticRegression(num_features=64, num_classes=10)
    # A global model part-way through training: 5 rounds of plain FedAvg.
    config = FedAvgConfig(client_fraction=0.5, local_epochs=5, batch_size=16, learning_rate=0.1)
    fedavg = FedAvg(model, PlaintextAggregator(max_weight=1000), clients, config, seed=0, test_data=test)
    fedavg.run(5)
    w_global = fedavg.global_vector
    # Full-batch GD with lr <= 2 / (L_f + mu) (L_f <= (max ||x||^2 + 1) / 2 ~ 12.05 on digits) never
    # moves away from the minimiser w* of h, so ||w_E - w_global|| <= 2 ||w* - w_global||
    # <= 2 ||grad f(w_global)|| / mu (convexity of f).
    lr = 0.05
    assert lr <= 2 / (((clients[0].x.reshape(len(clients[0]), -1) ** 2).sum(1).max() + 1) / 2 + max(MUS))
    for data in clients:
        distances = []
        for mu in MUS:
            local = model.train(
                w_global, data, epochs=20, batch_size=None, learning_rate=lr,
                rng=np.random.default_rng(0), proximal_mu=mu,
            )  # fmt: skip
            distances.append(float(np.linalg.norm(local - w_global)))
            if mu:
                bound = 2 * np.linalg.norm(model.gradient(w_global, data)) / mu
                assert distances[-1] <= bound
        assert all(a > b for a, b in itertools.pairwise(distances)), distances
        assert distances[-1] < 0.5 * distances[0], distances


def test_fedprox_on_non_iid_digits_still_learns(digits: tuple[list[Dataset], Dataset]) -> None:
    clients, test = digits
    model = LogisticRegression(num_features=64, num_classes=10)
    accuracy = {}
    for mu in (0.0, 0.1):
        config = FedAvgConfig(
            client_fraction=0.5, local_epochs=5, batch_size=16, learning_rate=0.1, proximal_mu=mu
        )
        records = FedAvg(
            model, PlaintextAggregator(max_weight=1000), clients, config, seed=0, test_data=test
        ).run(20)
        final = records[-1].metrics
        assert final is not None
        accuracy[mu] = final.accuracy
    # Measured 0.84 for both (20 rounds, half the clients per round, Dirichlet(0.1) labels);
    # the zero model scores 0.1.
    assert accuracy[0.1] >= 0.80, accuracy
    assert accuracy[0.0] >= 0.80, accuracy


class _Recording:
    """A learner that records the learning rate and mu of every local training call."""

    def __init__(self, inner: LogisticRegression) -> None:
        self.inner = inner
        self.calls: list[tuple[int, float, float]] = []  # (epochs, learning rate, mu)

    @property
    def spec(self):  # type: ignore[no-untyped-def]
        return self.inner.spec

    def initial_vector(self) -> np.ndarray:
        return self.inner.initial_vector()

    def train(self, vector: np.ndarray, data: Dataset, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append((kwargs["epochs"], kwargs["learning_rate"], kwargs.get("proximal_mu", 0.0)))
        return self.inner.train(vector, data, **kwargs)

    def evaluate(self, vector: np.ndarray, data: Dataset):  # type: ignore[no-untyped-def]
        return self.inner.evaluate(vector, data)


def test_fedavg_decays_the_client_learning_rate_per_round_and_passes_mu_and_per_client_epochs(
    digits: tuple[list[Dataset], Dataset],
) -> None:
    clients, _ = digits
    learner = _Recording(LogisticRegression(num_features=64, num_classes=10))
    config = FedAvgConfig(
        client_fraction=1.0, local_epochs=1, batch_size=32, learning_rate=0.2,
        learning_rate_decay=0.5, proximal_mu=0.3,
    )  # fmt: skip
    epochs = [1 + i % 3 for i in range(len(clients))]
    FedAvg(learner, PlaintextAggregator(), clients, config, seed=0, local_epochs=epochs).run(3)
    per_round = [learner.calls[i * len(clients) : (i + 1) * len(clients)] for i in range(3)]
    for r, calls in enumerate(per_round, start=1):
        assert [rate for _, rate, _ in calls] == pytest.approx([0.2 * 0.5 ** (r - 1)] * len(clients))
        assert {mu for _, _, mu in calls} == {0.3}
        assert [e for e, _, _ in calls] == epochs  # every client sampled, in index order
    assert config.round_learning_rate(4) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="learning_rate_decay"):
        FedAvgConfig(learning_rate_decay=1.5)
    with pytest.raises(ValueError, match="local_epochs has 2 entries"):
        FedAvg(learner, PlaintextAggregator(), clients, config, seed=0, local_epochs=[1, 2])
