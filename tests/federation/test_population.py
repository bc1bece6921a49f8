"""A population over real websockets: 30 clients with stable ids, cohorts of 10 over 5 rounds,
clients joining and leaving between and during rounds. Every completed round's sum equals the
plaintext weighted mean of exactly its survivors within the quantization bound."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from federation_helpers import FixedTrainer, ZeroModel, plaintext_mean

from fedavg_core import ClientUpdate
from fedavg_core.cohort import CohortPolicy, select_cohort
from transport.client import FederationClient
from transport.records import RoundReport, ServerEvent
from transport.server import FederationServer, FederationSettings, RoundOutcome
from transport.tasks import TrainingSettings

DIM = 16


class GatedTrainer(FixedTrainer):
    """Training in the gated rounds waits (at most ``GATE_SECONDS``) until the clients that join
    during that round have registered, so they are available for the next round whatever the
    machine's load."""

    def __init__(self, update: np.ndarray, num_examples: int, gates: dict[int, threading.Event]) -> None:
        super().__init__(update, num_examples)
        self.gates = gates

    def train(self, vector: np.ndarray, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        gate = self.gates.get(round_number)
        if gate is not None:
            gate.wait(GATE_SECONDS)
        return super().train(vector, settings, round_number)


GATE_SECONDS = 8.0  # below train_timeout: a gate that never opens fails the test, not the round


def test_a_population_of_30_runs_cohorts_of_10_with_joins_and_leaves() -> None:
    rng = np.random.default_rng(9)
    ids = sorted(int(i) for i in rng.choice(50_000, size=30, replace=False) + 100)  # not 1..N
    joiners = {1: ids[20:25], 3: ids[25:]}  # join while round 1 (round 3) trains
    gates = {number: threading.Event() for number in joiners}
    trainers = {i: GatedTrainer(rng.uniform(-1, 1, DIM), int(rng.integers(20, 300)), gates) for i in ids}
    settings = FederationSettings(
        num_clients=30, rounds=5, cohort=10, selection_seed=4, clip=1.0,
        phase_timeout=10, train_timeout=10, wait_timeout=2,
    )  # fmt: skip
    outcomes: dict[int, RoundOutcome] = {}
    events: list[ServerEvent] = []
    leavers: list[int] = []

    async def scenario() -> tuple[list[RoundReport], FederationServer]:
        tasks: dict[int, asyncio.Task[object]] = {}
        registered: set[int] = set()

        def join(client: int) -> None:
            tasks[client] = asyncio.create_task(
                FederationClient(client, trainers[client], url, give_up_after=30, backoff_max=0.5).run()
            )

        def leave(client: int) -> None:
            leavers.append(client)
            tasks.pop(client).cancel()  # the connection closes mid-whatever

        def on_event(event: ServerEvent) -> None:
            # Runs on the server's loop as the event happens, so every step lands in its round.
            events.append(event)
            if event.kind == "registered" and event.client is not None:
                registered.add(event.client)
                for number, group in joiners.items():
                    if registered.issuperset(group):
                        gates[number].set()
            if event.kind != "round_start":
                return
            for client in joiners.get(event.round, []):
                join(client)
            current = server.coordinator.round
            if event.round == 2 and current is not None:
                leave(current.cohort.members[0])  # a cohort member leaves during training
                leave(next(c for c in tasks if c not in current.cohort.members))  # a bystander

        server = FederationServer(
            ZeroModel(DIM),  # type: ignore[arg-type]
            settings,
            on_event=on_event,
            on_round=lambda r, o: outcomes.__setitem__(r.round, o),
        )
        await server.start("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{server.port}"
        for client in ids[:20]:  # 20 at first; 10 more join later
            join(client)
        try:
            reports = await asyncio.wait_for(server.run(), 120)
        finally:
            for task in tasks.values():
                task.cancel()
            await server.stop()
        return reports, server

    reports, server = asyncio.run(scenario())
    assert [r.round for r in reports] == [1, 2, 3, 4, 5] and server.next_round == 6
    assert all(r.status == "completed" for r in reports), [r.reason for r in reports]
    cohorts = []
    for report in reports:
        assert len(report.participants) == 10 and set(report.participants) <= set(ids)
        assert set(report.participants) <= set(report.available)
        replay = select_cohort(report.available, report.round, CohortPolicy(size=10, seed=4))
        assert list(replay.members) == report.participants  # reproducible from the record
        assert set(report.survivors) <= set(report.participants) and len(report.survivors) >= report.threshold  # type: ignore[operator]
        outcome = outcomes[report.round]
        assert outcome.mean_update is not None and report.error_bound is not None
        # Each FixedTrainer's update is fixed: the plaintext mean of exactly the survivors.
        expected = plaintext_mean(
            [ClientUpdate(trainers[i].update, trainers[i].num_examples) for i in report.survivors], settings
        )
        assert np.max(np.abs(outcome.mean_update - expected)) <= report.error_bound
        assert report.total_weight == sum(
            min(trainers[i].num_examples, settings.max_weight) for i in report.survivors
        )
        cohorts.append(frozenset(report.participants))
    assert len(set(cohorts)) == 5
    # The round-2 leaver is recorded as dropped from round 2, and it is in no later cohort.
    second = reports[1]
    assert len(second.dropped) == 1 and second.dropped[0].client == second.participants[0]
    assert all(second.participants[0] not in r.participants for r in reports[2:])
    # Late joiners are available from the round after they joined, and were selected.
    assert set(joiners[1]) <= set(reports[1].available) and set(joiners[3]) <= set(reports[3].available)
    assert not set(joiners[3]) & set(reports[2].available)
    assert set(ids[20:]) & set().union(*cohorts[1:])
    # The two leavers are in no later round's pool; everyone else is.
    assert set(reports[4].available) == set(ids) - set(leavers)
