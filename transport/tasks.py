"""What a federation trains: the server's model and each client's local training.

The transport needs two small things and nothing else of the ML side:

- a ``ServerModel``: the initial global vector and, optionally, an accuracy on held-out data;
- a ``LocalTrainer`` per client: from the global vector, its update and example count.

``LearnerModel`` and ``LearnerTrainer`` adapt any ``fedavg_core.Learner``. ``DigitsTask`` is the
built-in task of the command-line tools and the demo: scikit-learn's digits, split non-IID across
clients by a Dirichlet(alpha) draw from a shared seed (so every process derives the same split
and takes its own part), with a torch MLP (``digits-mlp``) or numpy softmax regression
(``digits-logreg``, no torch needed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Protocol

import numpy as np

from fedavg_core import (
    ClientUpdate,
    Dataset,
    Learner,
    LogisticRegression,
    dirichlet_partition,
    load_digits_dataset,
)
from fedavg_core.vectorize import FloatVector

from .wire import Setting

TASKS = ("digits-mlp", "digits-logreg")


@dataclass(frozen=True)
class TrainingSettings:
    """Local training knobs the server sends with every round (McMahan et al. 2017: E, B, eta).

    Attributes:
        epochs, batch_size, learning_rate: E, B (None: the whole local set) and eta.
        proximal_mu: FedProx's mu (Li et al. 2020): clients minimise
            ``f(w) + mu/2 * ||w - w_global||^2`` (0: plain FedAvg).
        learning_rate_decay: the server's client learning-rate schedule: round r trains with
            ``learning_rate * learning_rate_decay ** (r - 1)``. Only the server uses it:
            ``for_round(r)`` gives the settings sent in round r, with that rate.
    """

    epochs: int = 1
    batch_size: int | None = 16
    learning_rate: float = 0.1
    proximal_mu: float = 0.0
    learning_rate_decay: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or not 1 <= self.epochs <= 1000:
            raise ValueError(f"epochs must be an int in [1, 1000], got {self.epochs!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive int or None, got {self.batch_size!r}")
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate <= 100:
            raise ValueError(f"learning_rate must be in (0, 100], got {self.learning_rate!r}")
        mu = self.proximal_mu
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0 <= mu <= 1e6:
            raise ValueError(f"proximal_mu must be in [0, 1e6], got {mu!r}")
        decay = self.learning_rate_decay
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise ValueError(f"learning_rate_decay must be in (0, 1], got {decay!r}")

    def for_round(self, round_number: int) -> TrainingSettings:
        """The settings of 1-based round ``round_number``: the decayed learning rate, no decay."""
        if round_number < 1:
            raise ValueError(f"rounds are numbered from 1, got {round_number}")
        rate = self.learning_rate * self.learning_rate_decay ** (round_number - 1)
        return replace(self, learning_rate=max(rate, math.ulp(0.0)), learning_rate_decay=1.0)

    def to_wire(self) -> dict[str, Setting]:
        """As the ``settings`` map of ``RoundStart`` (batch size 0 means the whole local set).

        The decay schedule stays on the server: send ``for_round(r).to_wire()``."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size or 0,
            "learning_rate": float(self.learning_rate),
            "proximal_mu": float(self.proximal_mu),
        }

    @classmethod
    def from_wire(cls, settings: Mapping[str, Setting]) -> TrainingSettings:
        """Parse and validate the ``settings`` a server sent; ``ValueError`` if they are bad."""
        required, optional = {"epochs", "batch_size", "learning_rate"}, {"proximal_mu"}
        if not required <= set(settings) <= required | optional:
            raise ValueError(
                "training settings must be epochs, batch_size, learning_rate and optionally "
                f"proximal_mu; got {sorted(settings)}"
            )
        epochs, batch, rate = settings["epochs"], settings["batch_size"], settings["learning_rate"]
        mu = settings.get("proximal_mu", 0.0)
        if not isinstance(epochs, int) or not isinstance(batch, int) or isinstance(rate, (bool, str)):
            raise ValueError("epochs and batch_size must be ints, learning_rate a number")
        if isinstance(mu, (bool, str)):
            raise ValueError("proximal_mu must be a number")
        return cls(epochs, batch or None, float(rate), float(mu))


@dataclass(frozen=True)
class LocalBudget:
    """What one client declares it can do per round (systems heterogeneity, FedProx section 3).

    The server's settings give E; a client may run its own number of epochs instead, or stop
    local training once a wall-clock budget is spent (after the minibatch step that spent it,
    so at least one step is always taken). The client's weight stays its (capped) example
    count and the server never learns the budget.

    Attributes:
        epochs: this client's local epochs (None: the server's E).
        seconds: stop local training after this many seconds (None: no time limit).
    """

    epochs: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.epochs is not None and (
            isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or not 1 <= self.epochs <= 1000
        ):
            raise ValueError(f"local epochs must be an int in [1, 1000], got {self.epochs!r}")
        if self.seconds is not None and (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, (int, float))
            or not self.seconds > 0
        ):
            raise ValueError(f"the local time budget must be positive seconds, got {self.seconds!r}")


class ServerModel(Protocol):
    """The server's side of the task."""

    @property
    def dimension(self) -> int:
        """Length of the model vector."""
        ...

    def initial_vector(self) -> FloatVector:
        """The initial global model."""
        ...

    def evaluate(self, vector: FloatVector) -> float | None:
        """Accuracy of ``vector`` on held-out data, or None when there is none."""
        ...


class LocalTrainer(Protocol):
    """One client's side of the task. ``train`` may run in a worker thread."""

    @property
    def dimension(self) -> int:
        """Length of the model vector."""
        ...

    def train(self, vector: FloatVector, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        """Train from the global ``vector``; the update (local minus global) and example count."""
        ...


class LearnerModel:
    """A ``ServerModel`` over a ``fedavg_core.Learner`` and optional test data."""

    def __init__(
        self, learner: Learner, test_data: Dataset | None = None, initial: FloatVector | None = None
    ) -> None:
        self.learner = learner
        self.test_data = test_data
        self._initial = learner.initial_vector() if initial is None else learner.spec.check_vector(initial)

    @property
    def dimension(self) -> int:
        return self.learner.spec.size

    def initial_vector(self) -> FloatVector:
        out: FloatVector = self._initial.copy()
        return out

    def evaluate(self, vector: FloatVector) -> float | None:
        if self.test_data is None:
            return None
        return self.learner.evaluate(vector, self.test_data).accuracy


class LearnerTrainer:
    """A ``LocalTrainer`` over a ``fedavg_core.Learner`` and the client's own data.

    The minibatch order of round r comes from ``numpy.random.default_rng([seed, r])``.
    ``budget`` is what this client declares it can do (its own epochs, a time budget);
    ``clock`` (seconds) measures the time budget.
    """

    def __init__(
        self,
        learner: Learner,
        data: Dataset,
        seed: int = 0,
        *,
        budget: LocalBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(data) == 0:
            raise ValueError("a client needs at least one example")
        self.learner = learner
        self.data = data
        self.seed = seed
        self.budget = budget or LocalBudget()
        self.clock = clock

    @property
    def dimension(self) -> int:
        return self.learner.spec.size

    def warm_up(self) -> None:
        """One tiny training step, so that lazy imports (torch's optimizer pulls in
        ``torch._dynamo``, over a second) happen before the client joins a round."""
        sample = self.data.subset([0])
        self.learner.train(
            self.learner.initial_vector(),
            sample,
            epochs=1,
            batch_size=1,
            learning_rate=1e-3,
            rng=np.random.default_rng(0),
        )

    def train(self, vector: FloatVector, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        rng = np.random.default_rng([self.seed, round_number])
        should_stop = None
        if self.budget.seconds is not None:
            deadline = self.clock() + self.budget.seconds
            should_stop = lambda: self.clock() >= deadline  # noqa: E731
        local = self.learner.train(
            vector,
            self.data,
            epochs=settings.epochs if self.budget.epochs is None else self.budget.epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            rng=rng,
            proximal_mu=settings.proximal_mu,
            should_stop=should_stop,
        )
        return ClientUpdate(local - vector, len(self.data))


def digits_mlp(seed: int, hidden: int = 32) -> Learner:
    """A torch MLP 64 -> hidden -> 10 for the 8x8 digits, initialised from ``seed``."""
    import torch

    from fedavg_core import TorchLearner

    torch.set_num_threads(1)  # one process per client on a small machine: no oversubscription
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )
    return TorchLearner(module)


@dataclass(frozen=True)
class DigitsTask:
    """The built-in task: non-IID digits over ``num_clients`` clients.

    Attributes:
        name: ``digits-mlp`` (torch) or ``digits-logreg`` (numpy).
        num_clients: N; client ``i`` (1-based) gets part ``i - 1`` of the split.
        alpha: Dirichlet concentration of the label skew (small: very non-IID).
        seed: fixes the train/test split, the client split and the initial model.
    """

    name: str = "digits-mlp"
    num_clients: int = 8
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; choose one of {', '.join(TASKS)}")

    @cached_property
    def _data(self) -> tuple[Dataset, Dataset]:
        return load_digits_dataset(seed=self.seed)

    @property
    def test_data(self) -> Dataset:
        """The held-out test set the server evaluates on."""
        return self._data[1]

    @cached_property
    def client_data(self) -> tuple[Dataset, ...]:
        """Every client's local dataset (client i at index i - 1)."""
        train = self._data[0]
        parts = dirichlet_partition(
            train.y, self.num_clients, self.alpha, np.random.default_rng(self.seed), min_size=10
        )
        return tuple(train.split(parts))

    def learner(self) -> Learner:
        """A fresh model with the task's initial weights."""
        if self.name == "digits-mlp":
            return digits_mlp(self.seed)
        return LogisticRegression(num_features=64, num_classes=10)

    def server_model(self) -> LearnerModel:
        """The server's view: initial model, accuracy on the test set."""
        return LearnerModel(self.learner(), self.test_data)

    def trainer(self, client_id: int, budget: LocalBudget | None = None) -> LearnerTrainer:
        """Client ``client_id``'s local training on its own part of the split (``budget``: what
        the client declares it can do per round: its own epochs or a time budget)."""
        if not 1 <= client_id <= self.num_clients:
            raise ValueError(f"client id must be in 1..{self.num_clients}, got {client_id}")
        return LearnerTrainer(
            self.learner(),
            self.client_data[client_id - 1],
            seed=self.seed * 100_003 + client_id,
            budget=budget,
        )
