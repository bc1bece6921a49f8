"""The federation coordinator in memory, driven by a fake clock: cohorts, over-selection,
stragglers, deadlines, exact weighted means, reproducible selection."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from fedavg_core import PlaintextAggregator, SecureAggregator, encode_weighted_update
from fedavg_core.aggregators import ClientUpdate
from fedavg_core.cohort import CohortPolicy, select_cohort
from fedavg_core.coordinator import (
    Action,
    Coordinator,
    CoordinatorSettings,
    Deadlines,
    Deliver,
    Disconnect,
    Dismiss,
    Finished,
    RoundClosed,
    StartTraining,
)
from secagg import SecAggClient
from secagg.simulate import seeded_random_bytes

DIM = 12
AGGREGATOR = SecureAggregator(clip=1.0, max_weight=256)


@dataclass
class FakeClient:
    """A population member: a fixed update, and how long its training takes."""

    update: np.ndarray
    examples: int
    train_seconds: float = 1.0
    secagg: SecAggClient | None = None
    session: bytes = b""
    round: int = 0


@dataclass
class Harness:
    """Carries out the coordinator's actions in memory; the clock moves only when told."""

    coordinator: Coordinator
    clients: dict[int, FakeClient]
    now: float = 0.0
    inbox: list[tuple[float, int, object]] = field(default_factory=list)  # (due, client, message)
    closed: list[RoundClosed] = field(default_factory=list)
    dismissed: list[Dismiss] = field(default_factory=list)
    cut: list[Disconnect] = field(default_factory=list)
    silent: set[int] = field(default_factory=set)  # clients that never answer
    finished: bool = False

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartTraining):
                client = self.clients[action.client]
                vector = encode_weighted_update(
                    client.update, client.examples, action.quantization, np.random.default_rng(action.client)
                )
                client.secagg = SecAggClient(
                    action.setup, action.local_id, vector,
                    random_bytes=seeded_random_bytes(action.client, f"r{action.round}"),
                )  # fmt: skip
                client.session, client.round = action.setup.session_id, action.round
                if action.client not in self.silent:
                    self.inbox.append((self.now + client.train_seconds, action.client, client.secagg.start()))
            elif isinstance(action, Deliver):
                client = self.clients[action.client]
                assert client.secagg is not None and action.session == client.session
                if action.client not in self.silent:
                    self.inbox.append((self.now, action.client, client.secagg.receive(action.message)))  # type: ignore[arg-type]
            elif isinstance(action, RoundClosed):
                self.closed.append(action)
            elif isinstance(action, Dismiss):
                self.dismissed.append(action)
            elif isinstance(action, Disconnect):
                self.cut.append(action)
            elif isinstance(action, Finished):
                self.finished = True

    def run(self, until: float = 1e6) -> None:
        """Deliver due messages in time order; tick at deadlines; stop when finished."""
        self.apply(self.coordinator.tick(self.now))
        while not self.finished and self.now < until:
            self.inbox.sort(key=lambda item: item[0])
            due = self.inbox[0][0] if self.inbox else None
            timeout = self.coordinator.next_timeout()
            if due is not None and (timeout is None or due <= timeout):
                _, client, message = self.inbox.pop(0)
                self.now = max(self.now, due)
                c = self.clients[client]
                self.apply(self.coordinator.receive(client, c.round, c.session, message, self.now))
            elif timeout is not None:
                self.now = max(self.now, timeout)
                self.apply(self.coordinator.tick(self.now))
            else:
                break


def population(size: int, seed: int = 0, slow: dict[int, float] | None = None) -> dict[int, FakeClient]:
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in rng.choice(10_000, size=size, replace=False) + 1]  # stable ids, not 1..N
    return {
        i: FakeClient(rng.uniform(-1, 1, DIM), int(rng.integers(20, 200)), (slow or {}).get(i, 1.0))
        for i in ids
    }


def coordinator(rounds: int, policy: CohortPolicy, **kw: object) -> Coordinator:
    settings = CoordinatorSettings(
        rounds=rounds, aggregator=AGGREGATOR, cohort=policy, deadlines=Deadlines(phase=10, train=50, wait=5)
    )
    return Coordinator(settings, np.zeros(DIM), random_bytes=seeded_random_bytes(7, "nonces"), **kw)  # type: ignore[arg-type]


def expected_mean(clients: dict[int, FakeClient], ids: list[int]) -> np.ndarray:
    updates = [ClientUpdate(clients[i].update, clients[i].examples) for i in ids]
    return PlaintextAggregator(1.0, 256).aggregate(updates, np.random.default_rng(0)).mean_update


def test_cohorts_are_drawn_from_the_available_clients_and_the_means_are_exact() -> None:
    clients = population(30)
    coord = coordinator(4, CohortPolicy(size=8, seed=3))
    h = Harness(coord, clients)
    for client in clients:
        h.apply(coord.join(client, 0.0))
    h.run()
    assert h.finished and len(h.closed) == 4
    cohorts = [closed.report.participants for closed in h.closed]
    for closed in h.closed:
        report = closed.report
        assert report.status == "completed", report.reason
        assert len(report.participants) == 8 and set(report.participants) <= set(clients)
        assert report.survivors == sorted(report.participants)
        assert closed.mean_update is not None and report.error_bound is not None
        gap = np.max(np.abs(closed.mean_update - expected_mean(clients, report.survivors)))
        assert gap <= report.error_bound
        assert report.total_weight == sum(clients[i].examples for i in report.survivors)
    assert len({tuple(sorted(c)) for c in cohorts}) == 4  # different cohorts each round


def test_selection_is_reproducible_from_the_seed_and_the_recorded_availability() -> None:
    policy = CohortPolicy(size=5, over_selection=1.4, seed=11)
    for closed_round in range(1, 4):
        available = list(range(100, 140))
        a = select_cohort(available, closed_round, policy)
        b = select_cohort(reversed(available), closed_round, policy)
        assert a == b and len(a.members) == 7 and a.target == 5
    assert select_cohort(range(40), 1, policy) != select_cohort(range(40), 1, CohortPolicy(size=5, seed=12))
    # A finished run's records replay.
    clients = population(20, seed=4)
    coord = coordinator(2, CohortPolicy(size=6, seed=5))
    h = Harness(coord, clients)
    for client in clients:
        h.apply(coord.join(client, 0.0))
    h.run()
    for closed in h.closed:
        r = closed.report
        assert r.selection_seed == 5 and set(r.available) <= set(clients) and len(r.available) >= 6
        replay = select_cohort(r.available, r.round, CohortPolicy(size=6, seed=r.selection_seed))
        assert list(replay.members) == r.participants


def test_over_selection_closes_training_at_n_and_dismisses_stragglers_at_no_cost() -> None:
    clients = population(20, seed=1)
    coord = coordinator(1, CohortPolicy(size=6, over_selection=1.5, wait_for=20, seed=2))
    h = Harness(coord, clients)
    # Make the last three selected clients slow: they must be the stragglers.
    cohort = select_cohort(clients, 1, coord.settings.cohort)
    for i, client in enumerate(cohort.members):
        clients[client].train_seconds = 40.0 if i >= 6 else 1.0 + i
    for client in clients:
        h.apply(coord.join(client, 0.0))
    h.run()
    report = h.closed[0].report
    assert len(report.participants) == 9 and report.target == 6
    assert report.status == "completed", report.reason
    assert sorted(d.client for d in h.dismissed) == sorted(cohort.members[6:]) == report.stragglers
    assert report.survivors == sorted(cohort.members[:6])
    assert h.cut == [] and report.dropped == []  # stragglers are not drops and are not cut off
    assert report.seconds["advertise_keys"] == pytest.approx(6.0)  # closed at the 6th answer, not at 40 s
    assert h.closed[0].mean_update is not None and report.error_bound is not None
    assert (
        np.max(np.abs(h.closed[0].mean_update - expected_mean(clients, report.survivors)))
        <= report.error_bound
    )
    # Their late answers are ignored, and they stay available for the next round.
    assert set(report.stragglers) <= coord.connected


def test_silent_members_are_cut_off_at_the_deadline_and_the_round_goes_on() -> None:
    clients = population(10, seed=2)
    coord = coordinator(1, CohortPolicy(size=10, seed=0))
    h = Harness(coord, clients)
    silent = list(clients)[:2]
    h.silent = set(silent)
    for client in clients:
        h.apply(coord.join(client, 0.0))
    h.run()
    report = h.closed[0].report
    assert report.status == "completed", report.reason
    assert sorted(d.client for d in h.cut) == sorted(silent)
    assert all(d.kind == "deadline" for d in h.cut)
    assert {d.client: d.close_code for d in report.dropped} == dict.fromkeys(silent, 4000)
    assert report.seconds["advertise_keys"] == pytest.approx(60.0)  # train 50 + phase 10
    assert report.survivors == sorted(set(clients) - set(silent))
    assert h.closed[0].mean_update is not None and report.error_bound is not None
    assert (
        np.max(np.abs(h.closed[0].mean_update - expected_mean(clients, report.survivors)))
        <= report.error_bound
    )


def test_a_round_waits_for_clients_and_starts_at_the_wait_deadline_with_the_minimum() -> None:
    clients = population(4, seed=3)
    coord = coordinator(1, CohortPolicy(size=6, min_clients=3, seed=0))
    h = Harness(coord, clients)
    ids = list(clients)
    h.apply(coord.join(ids[0], 0.0))
    h.apply(coord.join(ids[1], 1.0))
    assert coord.round is None and coord.next_timeout() == 5.0  # wait deadline
    h.now = 5.0
    h.apply(coord.tick(5.0))
    assert coord.round is None  # two are below min_clients
    h.apply(coord.join(ids[2], 6.0))
    assert coord.round is not None and sorted(coord.round.cohort.members) == sorted(ids[:3])
    h.apply(coord.join(ids[3], 6.5))  # joins during the round: waits for the next one
    assert ids[3] not in coord.round.members
    h.run()
    assert h.closed[0].report.status == "completed" and sorted(h.closed[0].report.survivors) == sorted(
        ids[:3]
    )


def test_members_that_leave_are_recorded_and_below_the_threshold_the_round_aborts() -> None:
    clients = population(6, seed=5)
    coord = coordinator(1, CohortPolicy(size=6, seed=0))
    h = Harness(coord, clients)
    for client in clients:
        h.apply(coord.join(client, 0.0))
    members = list(coord.round.cohort.members)  # type: ignore[union-attr]
    for client in members[:3]:  # half the cohort leaves during training: t = 4 not reached
        h.apply(coord.leave(client, 0.5, "connection lost", 1006))
    h.run()
    report = h.closed[0].report
    assert report.status == "aborted" and ("threshold" in report.reason or "fewer" in report.reason)
    assert report.survivors == [] and h.closed[0].mean_update is None
    assert {d.client for d in report.dropped} == set(members[:3])
    assert np.all(coord.vector == 0)  # the model did not move


def test_impersonation_and_foreign_messages_cut_the_sender_off() -> None:
    clients = population(4, seed=6)
    coord = coordinator(1, CohortPolicy(size=4, seed=0))
    h = Harness(coord, clients)
    for client in clients:
        h.apply(coord.join(client, 0.0))
    assert coord.round is not None
    a, b = coord.round.cohort.members[:2]
    forged = next(m for _, c, m in h.inbox if c == b)  # b's AdvertiseKeys, sent on a's connection
    actions = coord.receive(a, 1, coord.round.setup.session_id, forged, 0.1)
    cut = [x for x in actions if isinstance(x, Disconnect)]
    assert len(cut) == 1 and cut[0].client == a and "impersonation" in cut[0].reason
    assert a not in coord.round.members
    late = coord.receive(b, 7, coord.round.setup.session_id, forged, 0.2)
    assert any(isinstance(x, Disconnect) and "wrong round" in x.reason for x in late)
