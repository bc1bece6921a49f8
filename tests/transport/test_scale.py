"""200 concurrent clients in one SecAgg+ round over real websockets on 127.0.0.1.

The clients run as asyncio tasks in this process (a 2-core machine cannot host 200 processes
usefully), but each has its own websocket connection to the server. The neighbour graph is the
Harary graph the parameter finder picks for n=200 under gamma=0.05 colluding and delta=0.1
dropping clients (degree 24, threshold 12), so each client's work grows with 24 neighbours rather
than 199.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from federation_helpers import ZeroModel, fixed_trainers, plaintext_mean, run_federation

from secagg import SecAggConfig
from secagg.primitives.packing import packed_size
from transport.server import FederationSettings

CLIENTS = 200
LENGTH = 10_000  # field elements per client: 9,999 parameters + the weight
GAMMA, DELTA = 0.05, 0.1  # collusion and dropout fractions of the threat model


@pytest.mark.slow
def test_two_hundred_clients_complete_a_round_with_vectors_of_ten_thousand() -> None:
    chosen = SecAggConfig(
        CLIENTS, vector_length=LENGTH, graph="harary", collusion_fraction=GAMMA, dropout_fraction=DELTA
    )
    assert chosen.graph == "harary" and chosen.degree is not None and chosen.degree <= 32, chosen
    settings = FederationSettings(
        num_clients=CLIENTS,
        rounds=1,
        graph="harary",
        collusion_fraction=GAMMA,
        dropout_fraction=DELTA,
        clip=1.0,
        max_weight=256,
        phase_timeout=60,
        train_timeout=60,
        wait_timeout=60,
    )
    trainers = fixed_trainers(CLIENTS, LENGTH - 1, seed=200)
    run = asyncio.run(
        run_federation(
            ZeroModel(LENGTH - 1),
            settings,
            trainers,  # type: ignore[arg-type]
            client_options=lambda _i: {"min_collusion_fraction": GAMMA},  # clients accept gamma=0.05
        )
    )

    report = run.reports[0]
    assert report.status == "completed", report.reason
    assert report.survivors == list(range(1, CLIENTS + 1)) and report.dropped == []
    assert run.server is not None and run.server.config.vector_length == LENGTH
    assert (run.server.config.degree, run.server.config.threshold) == (chosen.degree, chosen.threshold)
    assert report.threshold == chosen.threshold
    expected = plaintext_mean([run.updates[(1, i)] for i in report.survivors], settings)
    assert report.error_bound is not None
    assert np.max(np.abs(run.server.vector - expected)) <= report.error_bound
    # Every client uploaded its masked vector, bit-packed at log2(p) bits, and little more than that.
    packed = packed_size(LENGTH, run.server.config.modulus)
    assert CLIENTS * packed <= report.bytes_up <= 2 * CLIENTS * packed
