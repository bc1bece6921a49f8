"""The INSECURE plaintext aggregation mode (debugging): members upload their encoded updates
unmasked, the coordinator sums them in the clear; records say so; clients must opt in."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
import pytest
from federation_helpers import ZeroModel, fixed_trainers, plaintext_mean, run_federation

from fedavg_core import SecureAggregator, encode_weighted_update
from fedavg_core.cohort import CohortPolicy
from fedavg_core.coordinator import (
    Action,
    Coordinator,
    CoordinatorSettings,
    Deadlines,
    Disconnect,
    Dismiss,
    RoundClosed,
    StartTraining,
)
from fedavg_core.plaintext_round import INSECURE_PLAINTEXT, PlaintextSum
from secagg import AbortedError, SecAggConfig
from secagg.messages import MaskedInput
from secagg.simulate import seeded_random_bytes
from transport.server import FederationSettings

DIM = 10
AGGREGATOR = SecureAggregator(clip=1.0, max_weight=256)


def _coordinator(policy: CohortPolicy) -> Coordinator:
    settings = CoordinatorSettings(
        rounds=1,
        aggregator=AGGREGATOR,
        cohort=policy,
        deadlines=Deadlines(phase=10, train=50, wait=5),
        insecure_plaintext=True,
    )
    return Coordinator(settings, np.zeros(DIM), random_bytes=seeded_random_bytes(3, "nonces"))


def _uploads(
    actions: list[Action], updates: dict[int, tuple[np.ndarray, int]]
) -> dict[int, tuple[int, bytes, MaskedInput]]:
    """Each started member's (round, session, plaintext upload)."""
    out = {}
    for action in actions:
        if isinstance(action, StartTraining):
            assert action.settings[INSECURE_PLAINTEXT] is True
            update, examples = updates[action.client]
            vector = encode_weighted_update(update, examples, action.quantization, np.random.default_rng(0))
            message = MaskedInput(action.local_id, vector)
            out[action.client] = (action.round, action.setup.session_id, message)
    return out


def test_a_plaintext_round_sums_exactly_what_the_members_sent_and_says_it_is_insecure() -> None:
    rng = np.random.default_rng(1)
    ids = [11, 25, 38, 40, 57, 63]
    updates = {i: (rng.uniform(-1, 1, DIM), int(rng.integers(20, 200))) for i in ids}
    coordinator = _coordinator(CohortPolicy(size=4, over_selection=1.5, seed=2))
    actions: list[Action] = []
    for i in ids:
        actions += coordinator.join(i, 0.0)
    uploads = _uploads(actions, updates)
    assert sorted(uploads) == sorted(ids)  # ceil(1.5 * 4) = 6 selected
    order = sorted(uploads)
    closed: list[RoundClosed] = []
    dismissed: list[Dismiss] = []
    for t, client in enumerate(order, start=1):
        round_number, session, message = uploads[client]
        for action in coordinator.receive(client, round_number, session, message, float(t)):
            if isinstance(action, RoundClosed):
                closed.append(action)
            elif isinstance(action, Dismiss):
                dismissed.append(action)
    # The phase closed at n = 4 uploads: the last two selected are stragglers, not in the sum.
    assert [d.client for d in dismissed] == order[4:]
    assert len(closed) == 1
    report = closed[0].report
    assert report.status == "completed", report.reason
    assert report.aggregation == "insecure plaintext"
    assert sorted(report.survivors) == order[:4] and report.stragglers == order[4:]
    weights = {i: min(updates[i][1], 256) for i in order[:4]}
    exact = sum(weights[i] * np.clip(updates[i][0], -1, 1) for i in order[:4]) / sum(weights.values())
    assert report.error_bound is not None
    assert np.max(np.abs(coordinator.vector - exact)) <= report.error_bound
    assert report.total_weight == sum(weights.values())


def test_a_secure_round_is_recorded_as_secure() -> None:
    settings = CoordinatorSettings(rounds=1, aggregator=AGGREGATOR, cohort=CohortPolicy(size=3))
    coordinator = Coordinator(settings, np.zeros(DIM), random_bytes=seeded_random_bytes(3, "n"))
    actions: list[Action] = []
    for i in (1, 2, 3):
        actions += coordinator.join(i, 0.0)
    starts = [a for a in actions if isinstance(a, StartTraining)]
    assert starts and all(INSECURE_PLAINTEXT not in a.settings for a in starts)
    assert coordinator.current_report is not None
    assert coordinator.current_report.aggregation == "secure"


def test_a_bad_upload_cuts_its_sender_off_and_too_few_uploads_abort() -> None:
    coordinator = _coordinator(CohortPolicy(size=3, seed=0))
    actions: list[Action] = []
    for i in (1, 2, 3):
        actions += coordinator.join(i, 0.0)
    uploads = _uploads(actions, {i: (np.zeros(DIM), 10) for i in (1, 2, 3)})
    config = coordinator.config()
    assert config is not None
    round_number, session, message = uploads[1]
    too_big = MaskedInput(message.sender, np.full(DIM + 1, config.modulus, dtype=np.uint64))
    cut = [
        a for a in coordinator.receive(1, round_number, session, too_big, 1.0) if isinstance(a, Disconnect)
    ]
    assert len(cut) == 1 and "integers in [0," in cut[0].reason
    round_number, session, message = uploads[2]
    coordinator.receive(2, round_number, session, message, 2.0)
    # Client 3 never uploads; at the deadline the phase closes with one upload, below t.
    closed = [a for a in coordinator.tick(1000.0) if isinstance(a, RoundClosed)]
    assert len(closed) == 1 and closed[0].report.status == "aborted"
    assert "plaintext uploads" in closed[0].report.reason
    assert closed[0].report.aggregation == "insecure plaintext"


@dataclass(frozen=True)
class _NotAnUpload:
    sender: int


def test_plaintext_sum_refuses_what_is_not_an_upload() -> None:
    config = SecAggConfig(3, 3, 4)
    plain = PlaintextSum(config)
    plain.receive(_NotAnUpload(1))
    assert "wrong message" in plain.dropped[1].reason
    plain.receive(MaskedInput(9, np.zeros(4, dtype=np.uint64)))
    assert "unknown client id 9" in plain.rejected[-1].reason
    plain.receive(MaskedInput(2, np.ones(4, dtype=np.uint64)))
    plain.receive(MaskedInput(2, np.ones(4, dtype=np.uint64)))
    assert plain.dropped[2].reason == "duplicate upload"
    with pytest.raises(AbortedError, match="only 1 plaintext uploads"):
        plain.advance()


def test_websocket_plaintext_rounds_match_the_plaintext_mean(caplog: pytest.LogCaptureFixture) -> None:
    settings = FederationSettings(
        num_clients=5, rounds=2, insecure_plaintext=True, phase_timeout=20, train_timeout=20, wait_timeout=20
    )
    trainers = fixed_trainers(5, DIM, seed=4)
    with caplog.at_level(logging.WARNING, logger="transport.server"):
        run = asyncio.run(
            run_federation(
                ZeroModel(DIM),
                settings,
                trainers,  # type: ignore[arg-type]
                client_options=lambda _i: {"allow_insecure_plaintext": True},
            )
        )
    assert "INSECURE PLAINTEXT AGGREGATION" in caplog.text
    assert [r.status for r in run.reports] == ["completed", "completed"]
    assert {r.aggregation for r in run.reports} == {"insecure plaintext"}
    mean = plaintext_mean([run.updates[(1, i)] for i in run.reports[0].survivors], settings)
    outcome = run.outcomes[1].mean_update
    assert outcome is not None and run.reports[0].error_bound is not None
    assert np.max(np.abs(outcome - mean)) <= run.reports[0].error_bound
    assert run.server is not None and np.allclose(
        run.server.vector, 2 * mean, atol=2 * run.reports[0].error_bound
    )


def test_a_client_that_did_not_opt_in_refuses_a_plaintext_round() -> None:
    settings = FederationSettings(
        num_clients=4, rounds=1, insecure_plaintext=True, phase_timeout=10, train_timeout=10, wait_timeout=10
    )
    trainers = fixed_trainers(4, DIM, seed=5)
    run = asyncio.run(
        run_federation(
            ZeroModel(DIM),
            settings,
            trainers,  # type: ignore[arg-type]
            client_options=lambda i: {"allow_insecure_plaintext": i != 4},
        )
    )
    report = run.reports[0]
    assert report.status == "completed"
    assert 4 not in report.survivors and sorted(report.survivors) == [1, 2, 3]
    refused = [s for s in run.summaries if not isinstance(s, BaseException) and s.refused]
    assert len(refused) == 1 and refused[0].client_id == 4
    assert "insecure plaintext round" in refused[0].refused[1]
    assert (1, 4) not in run.updates  # it refused before training: nothing left the client
