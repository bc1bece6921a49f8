"""Seeded cohort selection: which of the available clients take part in a round.

FedAvg samples a fraction C of the clients each round (McMahan et al. 2017); production systems
select a target cohort size n from the clients available now, over-selecting (about 1.3 n) so
that the round closes when n have finished training and stragglers cost nothing (Bonawitz et
al. 2019, "Towards Federated Learning at Scale", section 2.2).

Selection is reproducible: the cohort of round r is a function of the sorted available ids,
the policy and ``numpy.random.default_rng([seed, r])``; the coordinator records the available
ids with every round, so anyone can replay ``select_cohort`` and check it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CohortPolicy:
    """How many clients a round selects and when a round may start.

    Attributes:
        size: the target cohort size n (None: ``fraction`` of the available clients).
        fraction: C, the fraction of the available clients (used when ``size`` is None;
            None and None: every available client).
        over_selection: select ``ceil(over_selection * n)`` clients (at most all available);
            the training phase closes as soon as n of them have answered.
        min_clients: the fewest clients a round starts with once ``wait_for`` was not reached
            within the wait deadline (and the fewest a round ever starts with).
        wait_for: start at once when this many are available (None: the full selection
            ``ceil(over_selection * size)``, or ``min_clients`` when selecting by fraction).
        seed: the selection seed (recorded with every round).
    """

    size: int | None = None
    fraction: float | None = None
    over_selection: float = 1.0
    min_clients: int = 2
    wait_for: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 2:
            raise ValueError(f"a cohort needs at least 2 clients, got size={self.size}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if not 1 <= self.over_selection <= 10:
            raise ValueError(f"over_selection must be in [1, 10], got {self.over_selection}")
        if self.min_clients < 2:
            raise ValueError(f"min_clients must be at least 2, got {self.min_clients}")
        if self.size is not None and self.min_clients > self.selection_size(1 << 30):
            raise ValueError(
                f"min_clients={self.min_clients} exceeds the selection of "
                f"{self.selection_size(1 << 30)} clients"
            )
        if self.wait_for is not None and self.wait_for < self.min_clients:
            raise ValueError(f"wait_for={self.wait_for} is below min_clients={self.min_clients}")

    def target(self, available: int) -> int:
        """n: the clients whose training closes the first phase, given ``available`` clients."""
        if self.size is not None:
            n = self.size
        elif self.fraction is not None:
            n = max(self.min_clients, math.ceil(self.fraction * available - 1e-9))
        else:
            n = available
        return min(n, available)

    def selection_size(self, available: int) -> int:
        """How many clients are selected: ``ceil(over_selection * n)``, at most ``available``."""
        return min(available, math.ceil(self.over_selection * self.target(available) - 1e-9))

    def ready_at(self) -> int:
        """Available clients at which a round starts without waiting for the deadline."""
        if self.wait_for is not None:
            return self.wait_for
        if self.size is not None:
            return math.ceil(self.over_selection * self.size - 1e-9)
        return self.min_clients


@dataclass(frozen=True)
class Cohort:
    """A round's selection. ``members[i]`` has the round-local id ``i + 1``.

    Attributes:
        round: the FedAvg round.
        members: the selected stable client ids, in round-local id order.
        target: n, the answers that close the training phase (the rest are stragglers).
        available: the sorted ids the selection drew from (recorded for replay).
        seed: the policy's seed.
    """

    round: int
    members: tuple[int, ...]
    target: int
    available: tuple[int, ...]
    seed: int

    def local_ids(self) -> dict[int, int]:
        """Stable id -> round-local id (1..len(members))."""
        return {client: i for i, client in enumerate(self.members, start=1)}


def select_cohort(available: Iterable[int], round_number: int, policy: CohortPolicy) -> Cohort:
    """The cohort of ``round_number``: a uniformly random subset of the available ids of size
    ``policy.selection_size``, in a uniformly random order (the round-local ids), drawn from
    ``default_rng([policy.seed, round_number])``."""
    pool = tuple(sorted(set(available)))
    if len(pool) < policy.min_clients:
        raise ValueError(f"{len(pool)} clients available, a round needs at least {policy.min_clients}")
    rng = np.random.default_rng([policy.seed, round_number])
    count = policy.selection_size(len(pool))
    chosen = rng.permutation(len(pool))[:count]
    members = tuple(pool[int(i)] for i in chosen)
    return Cohort(round_number, members, policy.target(len(pool)), pool, policy.seed)
