"""Federated Averaging (McMahan et al. 2017, Algorithm 1) over a pluggable aggregator.

Each round the server samples ``m = max(round(C * K), min_clients)`` of the K clients without
replacement, every sampled client trains the global model locally (E epochs, batch size B,
learning rate eta) and reports its update ``x_k = w_local - w_global`` with its example count, and
the server moves ``w_global += server_learning_rate * weighted_mean(x_k)``. The weighted mean is
all the server gets: with ``SecureAggregator`` it is decoded from a secure sum, so the server
never sees an update or a client's example count.

Randomness: one seed is split (``numpy.random.SeedSequence``) into independent streams for
client sampling, local training and aggregation. Two runs from the same seed therefore sample the
same clients and draw the same minibatches whichever aggregator they use, which makes secure and
plaintext FedAvg comparable round by round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from secagg.errors import AbortedError

from .aggregators import Aggregator, ClientUpdate
from .data import Dataset
from .distributed_dp import RoundPrivacy
from .models import Learner, Metrics, check_training_args
from .vectorize import FloatVector

if TYPE_CHECKING:
    from .privacy_accounting import PrivacyLedger


@dataclass(frozen=True)
class FedAvgConfig:
    """Hyperparameters of FedAvg, named as in McMahan et al. 2017.

    Attributes:
        client_fraction: C, the fraction of clients sampled per round.
        local_epochs: E, local passes over the client's data per round.
        batch_size: B, local minibatch size (None: the whole local dataset, B = infinity).
        learning_rate: the clients' SGD step size.
        server_learning_rate: scales the averaged update (1.0 is plain FedAvg).
        min_clients: sample at least this many clients (2 by default: a one-client "aggregate"
            would be that client's update).
        skip_aborted: when the secure round aborts (too few survivors), keep the global model and
            record the round (True), or raise ``secagg.AbortedError`` (False).
        proximal_mu: FedProx's mu (Li et al. 2020): local training minimises
            ``f(w) + mu/2 * ||w - w_global||^2`` (0: plain FedAvg).
        learning_rate_decay: the clients' learning rate in round r is
            ``learning_rate * learning_rate_decay ** (r - 1)`` (1.0: constant).
    """

    client_fraction: float = 0.1
    local_epochs: int = 1
    batch_size: int | None = 10
    learning_rate: float = 0.1
    server_learning_rate: float = 1.0
    min_clients: int = 2
    skip_aborted: bool = True
    proximal_mu: float = 0.0
    learning_rate_decay: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.client_fraction <= 1.0:
            raise ValueError(f"client_fraction C must be in (0, 1], got {self.client_fraction}")
        check_training_args(self.local_epochs, self.batch_size, self.learning_rate, self.proximal_mu)
        if not 0.0 < self.learning_rate_decay <= 1.0:
            raise ValueError(f"learning_rate_decay must be in (0, 1], got {self.learning_rate_decay}")
        if not self.server_learning_rate > 0:
            raise ValueError(f"server_learning_rate must be positive, got {self.server_learning_rate}")
        if self.min_clients < 1:
            raise ValueError(f"min_clients must be >= 1, got {self.min_clients}")

    def clients_per_round(self, num_clients: int) -> int:
        """m = max(round(C * K), min_clients), at most K."""
        if self.min_clients > num_clients:
            raise ValueError(f"min_clients={self.min_clients} exceeds the {num_clients} available clients")
        return min(num_clients, max(round(self.client_fraction * num_clients), self.min_clients))

    def round_learning_rate(self, round_number: int) -> float:
        """The clients' learning rate in 1-based round ``round_number`` (the decay schedule)."""
        if round_number < 1:
            raise ValueError(f"rounds are numbered from 1, got {round_number}")
        return self.learning_rate * self.learning_rate_decay ** (round_number - 1)


@dataclass(frozen=True)
class RoundRecord:
    """What one round did, as the server knows it.

    Attributes:
        round: 1-based round number.
        sampled: indices of the clients sampled for the round.
        participants: indices of the clients whose updates are in the aggregate (the survivors).
        total_weight: the summed weight of the participants (never one client's weight).
        error_bound: per-element quantization bound of the aggregate (0 in plaintext).
        metrics: evaluation of the new global model on the test data, if any.
        aborted: why the round was skipped, or None.
        epsilon: with distributed DP, the epsilon spent by the run up to and including this round
            (at the budget's delta, composed by ``dp_accounting``); None without DP.
    """

    round: int
    sampled: tuple[int, ...]
    participants: tuple[int, ...]
    total_weight: int
    error_bound: float
    metrics: Metrics | None
    aborted: str | None = None
    epsilon: float | None = None


class FedAvg:
    """The FedAvg server loop, simulated in process with the clients' data.

    Args:
        learner: the model (``LogisticRegression``, ``TorchLearner`` or any ``Learner``).
        aggregator: ``PlaintextAggregator`` or ``SecureAggregator`` (or any ``Aggregator``).
        clients: one dataset per client.
        config: the hyperparameters.
        seed: the seed of all randomness of the run.
        test_data: evaluated after every round (None: no evaluation).
        initial_vector: the starting global model (None: ``learner.initial_vector()``).
        local_epochs: per-client local epochs (systems heterogeneity: client i runs
            ``local_epochs[i]``; None: every client runs ``config.local_epochs``).
    """

    def __init__(
        self,
        learner: Learner,
        aggregator: Aggregator,
        clients: Sequence[Dataset],
        config: FedAvgConfig,
        *,
        seed: int,
        test_data: Dataset | None = None,
        initial_vector: FloatVector | None = None,
        local_epochs: Sequence[int] | None = None,
    ) -> None:
        if not clients:
            raise ValueError("FedAvg needs at least one client")
        if local_epochs is not None:
            if len(local_epochs) != len(clients):
                raise ValueError(f"local_epochs has {len(local_epochs)} entries for {len(clients)} clients")
            for epochs in local_epochs:
                check_training_args(epochs, config.batch_size, config.learning_rate)
        empty = [i for i, data in enumerate(clients) if len(data) == 0]
        if empty:
            raise ValueError(f"clients {empty} have no examples")
        self.learner = learner
        self.aggregator = aggregator
        self.clients = tuple(clients)
        self.config = config
        self.test_data = test_data
        self.local_epochs = tuple(local_epochs) if local_epochs is not None else None
        self._per_round = config.clients_per_round(len(self.clients))
        start = learner.initial_vector() if initial_vector is None else initial_vector
        self._vector: FloatVector = learner.spec.check_vector(start).copy()
        sampling, training, aggregation = np.random.SeedSequence(seed).spawn(3)
        self._sampling_rng = np.random.default_rng(sampling)
        self._training_rng = np.random.default_rng(training)
        self._aggregation_rng = np.random.default_rng(aggregation)
        self._history: list[RoundRecord] = []
        self._ledger: PrivacyLedger | None = None  # created by the first DP round
        self._delta = 0.5  # replaced by the budget's delta with the first DP round

    @property
    def global_vector(self) -> FloatVector:
        """A copy of the current global model."""
        out: FloatVector = self._vector.copy()
        return out

    @property
    def history(self) -> tuple[RoundRecord, ...]:
        """The records of the rounds run so far."""
        return tuple(self._history)

    def sample_clients(self) -> tuple[int, ...]:
        """Draw this round's clients: m of K without replacement, sorted."""
        chosen = self._sampling_rng.choice(len(self.clients), size=self._per_round, replace=False)
        return tuple(int(i) for i in np.sort(chosen))

    def run_round(self) -> RoundRecord:
        """Sample, train locally, aggregate, update the global model, evaluate."""
        number = len(self._history) + 1
        sampled = self.sample_clients()
        rngs = self._training_rng.spawn(len(sampled))
        cfg = self.config
        learning_rate = cfg.round_learning_rate(number)
        updates = []
        for client, rng in zip(sampled, rngs, strict=True):
            data = self.clients[client]
            local = self.learner.train(
                self._vector,
                data,
                epochs=cfg.local_epochs if self.local_epochs is None else self.local_epochs[client],
                batch_size=cfg.batch_size,
                learning_rate=learning_rate,
                rng=rng,
                proximal_mu=cfg.proximal_mu,
            )
            updates.append(ClientUpdate(local - self._vector, len(data)))
        aggregation_rng = self._aggregation_rng.spawn(1)[0]
        try:
            result = self.aggregator.aggregate(updates, aggregation_rng)
        except AbortedError as error:
            if not cfg.skip_aborted:
                raise
            epsilon = None if self._ledger is None else self._ledger.epsilon(self._delta)
            record = RoundRecord(number, sampled, (), 0, 0.0, self.evaluate(), str(error), epsilon)
        else:
            self._vector = self._vector + cfg.server_learning_rate * result.mean_update
            participants = tuple(sampled[i] for i in result.participants)
            record = RoundRecord(
                number,
                sampled,
                participants,
                result.total_weight,
                result.error_bound,
                self.evaluate(),
                epsilon=self._spend(result.privacy),
            )
        self._history.append(record)
        return record

    def _spend(self, privacy: RoundPrivacy | None) -> float | None:
        # An aborted round released nothing and costs nothing; a released DP round is composed.
        if privacy is None:
            return None if self._ledger is None else self._ledger.epsilon(self._delta)
        if self._ledger is None:
            from .privacy_accounting import PrivacyLedger  # the optional ``dp`` extra

            self._ledger = PrivacyLedger()
        self._delta = privacy.delta
        self._ledger.record(privacy.curves)
        return self._ledger.epsilon(privacy.delta)

    def run(self, rounds: int) -> list[RoundRecord]:
        """Run ``rounds`` rounds; their records."""
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        return [self.run_round() for _ in range(rounds)]

    def evaluate(self, data: Dataset | None = None) -> Metrics | None:
        """Metrics of the global model on ``data`` (default: the test data; None if neither)."""
        target = self.test_data if data is None else data
        return None if target is None else self.learner.evaluate(self._vector, target)
