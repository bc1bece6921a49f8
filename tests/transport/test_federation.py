"""A real websocket federation on 127.0.0.1: secure FedAvg matches plaintext FedAvg."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import (
    FixedTrainer,
    ZeroModel,
    digits_settings,
    fixed_trainers,
    plaintext_mean,
    run_federation,
)
from websockets.asyncio.client import connect

from fedavg_core import FedAvg, FedAvgConfig, PlaintextAggregator, QuantizationConfig
from secagg import RoundSetup, SecAggConfig
from secagg.primitives import signatures
from transport.client import FatalClientError, FederationClient, RoundRefused
from transport.codec import Frame, FrameLimits, decode_from_server, encode
from transport.errors import CloseCode
from transport.identity import generate_identities, load_identity_key, load_roster
from transport.server import FederationServer, FederationSettings
from transport.tasks import DigitsTask, TrainingSettings
from transport.wire import LOCAL_ID, Hello, RoundStart, registration_payload


def test_secure_federation_matches_plaintext_fedavg_within_the_quantization_bound(
    digits_task: DigitsTask,
) -> None:
    settings = digits_settings(num_clients=4, rounds=3)
    trainers = {i: digits_task.trainer(i) for i in range(1, 5)}
    model = digits_task.server_model()
    run = asyncio.run(run_federation(model, settings, trainers))  # type: ignore[arg-type]

    assert [r.status for r in run.reports] == ["completed"] * 3
    bounds = []
    for report in run.reports:
        assert report.survivors == [1, 2, 3, 4] and report.dropped == []
        # This round's secure mean update against the plaintext mean of the very same updates.
        updates = [run.updates[(report.round, i)] for i in report.survivors]
        secure = run.outcomes[report.round].mean_update
        assert secure is not None and report.error_bound is not None
        assert np.max(np.abs(secure - plaintext_mean(updates, settings))) <= report.error_bound
        assert report.bytes_up > 0 and report.bytes_down > 0
        bounds.append(report.error_bound)

    # The whole trajectory against plaintext FedAvg run in memory: full-batch softmax regression
    # steps are non-expansive, so the models differ by at most the accumulated rounding.
    plain = FedAvg(
        digits_task.learner(),
        PlaintextAggregator(settings.clip, settings.max_weight),
        digits_task.client_data,
        FedAvgConfig(client_fraction=1.0, local_epochs=5, batch_size=None, learning_rate=0.05),
        seed=0,
        test_data=digits_task.test_data,
    )
    plain.run(3)
    assert run.server is not None
    gap = np.max(np.abs(run.server.vector - plain.global_vector))
    assert gap <= math.sqrt(model.dimension) * sum(bounds)
    accuracies = [r.accuracy for r in run.reports]
    assert accuracies[-1] is not None and run.server.initial_accuracy is not None
    assert accuracies[-1] > run.server.initial_accuracy + 0.3
    assert all(s.completed == [1, 2, 3] and s.finished for s in run.summaries)  # type: ignore[union-attr]


def test_weights_travel_inside_the_masked_vector_and_weight_the_mean() -> None:
    trainers = fixed_trainers(num_clients=3, dimension=20, seed=5)
    settings = FederationSettings(num_clients=3, rounds=1, clip=1.0, max_weight=256)
    run = asyncio.run(run_federation(ZeroModel(20), settings, trainers))  # type: ignore[arg-type]
    report = run.reports[0]
    weights = {i: t.num_examples for i, t in trainers.items()}
    assert report.total_weight == sum(weights.values())
    expected = sum(weights[i] * trainers[i].update for i in weights) / sum(weights.values())
    assert run.server is not None and report.error_bound is not None
    assert np.max(np.abs(run.server.vector - expected)) <= report.error_bound


def test_active_mode_registers_clients_by_identity_key_and_refuses_an_impostor(tmp_path: Path) -> None:
    roster_path = generate_identities(tmp_path, 4)
    roster = load_roster(roster_path)
    trainers = fixed_trainers(num_clients=4, dimension=8)
    settings = FederationSettings(num_clients=4, rounds=1, mode="active", clip=1.0, max_weight=256)
    refused: list[tuple[int | None, str | None]] = []

    async def impostor(server: FederationServer, events: object) -> None:
        # Client 2's id with client 3's key: the challenge signature does not match the roster.
        async with connect(f"ws://127.0.0.1:{server.port}") as ws:
            challenge = decode_from_server(await ws.recv(), FrameLimits.for_client(8)).message
            wrong = load_identity_key(tmp_path / "client-3.pem")
            signature = signatures.sign(wrong, registration_payload(challenge.nonce, 2))  # type: ignore[attr-defined]
            await ws.send(encode(Hello(2, signature)))
            await ws.wait_closed()
            refused.append((ws.close_code, ws.close_reason))

    run = asyncio.run(
        run_federation(
            ZeroModel(8),
            settings,
            trainers,  # type: ignore[arg-type]
            client_options=lambda i: {
                "identity_key": load_identity_key(tmp_path / f"client-{i}.pem"),
                "roster": roster,
            },
            server_options={"roster": roster},
            extra=impostor,
        )
    )
    assert run.reports[0].status == "completed" and run.reports[0].survivors == [1, 2, 3, 4]
    assert refused == [(CloseCode.REGISTRATION_FAILED, "identity proof for client 2 failed")]


def test_a_client_without_identity_key_cannot_join_an_active_federation(tmp_path: Path) -> None:
    roster = load_roster(generate_identities(tmp_path, 3))
    settings = FederationSettings(num_clients=3, rounds=1, mode="active")

    async def main() -> None:
        server = FederationServer(ZeroModel(4), settings, roster=roster)
        await server.start()
        try:
            client = FederationClient(1, FixedTrainer(np.zeros(4), 1), f"ws://127.0.0.1:{server.port}")
            with pytest.raises(FatalClientError, match="active mode; this client has no identity key"):
                await asyncio.wait_for(client.run(), 10)
        finally:
            await server.stop()

    asyncio.run(main())


BASE = SecAggConfig(num_clients=5, threshold=3, vector_length=5)


def round_start(nonce: bytes, **changes: object) -> tuple[Frame, RoundStart]:
    """A round start for a 4-parameter model as a client receives it (encoded, then decoded)."""
    config, dimension = BASE, 4
    fields: dict[str, object] = {
        "config": config,
        "nonce": nonce,
        "roster": None,
        "quantization": QuantizationConfig(1.0, 20, config.modulus, config.num_clients, 64),
        "parameters": np.zeros(dimension),
        "settings": {**TrainingSettings().to_wire(), LOCAL_ID: 3},
    }
    fields.update(changes)
    start = RoundStart(**fields)  # type: ignore[arg-type]
    session = RoundSetup(start.config, start.nonce, start.roster).session_id
    frame = decode_from_server(encode(start, round=1, session=session), FrameLimits.for_client(dimension))
    return frame, frame.message  # type: ignore[return-value]


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"config": SecAggConfig(5, 2, 5, collusion_fraction=0.1)}, "collusion fraction of 0.1"),
        (  # SecAgg+ sized as if nobody dropped: k=30 for n=200, where 10% dropping needs k=66
            {"config": SecAggConfig(200, vector_length=5, graph="harary", dropout_fraction=0.0)},
            "sized for a dropout fraction of 0; this client assumes at least 0.1",
        ),
        ({"config": SecAggConfig(5, 3, 3)}, "vector length 3"),
        ({"parameters": np.full(4, np.nan)}, "NaN"),
        ({"quantization": "small"}, "headroom for 2 clients"),
        ({"config": SecAggConfig(2, 2, 5, collusion_fraction=0.0)}, "round-local id 3 is outside 1..2"),
        ({"settings": {"epochs": 1, LOCAL_ID: 3}}, "training settings"),
        ({"settings": TrainingSettings().to_wire()}, "no round-local id"),
    ],
)
def test_clients_refuse_a_round_start_they_cannot_trust(change: dict[str, object], problem: str) -> None:
    if change.get("quantization") == "small":
        change = {"quantization": QuantizationConfig(1.0, 20, BASE.modulus, 2, 64)}
    client = FederationClient(3, FixedTrainer(np.zeros(4), 1), "ws://127.0.0.1:1")
    frame, start = round_start(bytes(32), **change)
    with pytest.raises(RoundRefused, match=problem):
        client.check_round_start(frame, start)


def test_clients_refuse_a_replayed_nonce_and_a_mismatched_session_id() -> None:
    client = FederationClient(3, FixedTrainer(np.zeros(4), 1), "ws://127.0.0.1:1")
    frame, start = round_start(b"n" * 32)
    client.check_round_start(frame, start)
    client._seen_nonces.add(start.nonce)  # what _start_round records once it accepts
    with pytest.raises(RoundRefused, match="nonce was used before"):
        client.check_round_start(frame, start)
    fresh_frame, fresh = round_start(b"m" * 32)
    forged = Frame(fresh, fresh_frame.round, frame.session)  # the session of another round
    with pytest.raises(RoundRefused, match="session id does not match"):
        client.check_round_start(forged, fresh)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("min_collusion_fraction", float("nan")),
        ("min_collusion_fraction", -0.1),
        ("min_collusion_fraction", 1.0),
        ("min_dropout_fraction", float("nan")),
        ("min_dropout_fraction", float("inf")),
        ("min_dropout_fraction", True),
    ],
)
def test_a_client_refuses_a_threat_model_it_cannot_check(name: str, value: float) -> None:
    # With min_collusion_fraction=nan, "gamma < nan" is False for every gamma: the client would
    # join a round that assumes nobody colludes (t = 2 over the complete graph). With
    # min_dropout_fraction=nan the check raised from inside the round start instead.
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\)"):
        FederationClient(1, FixedTrainer(np.zeros(4), 1), "ws://127.0.0.1:1", **{name: value})  # type: ignore[arg-type]
