"""200 concurrent clients in one SecAgg+ round over real websockets on 127.0.0.1.

The clients run as asyncio tasks in this process (a 2-core machine cannot host 200 processes
usefully), but each has its own websocket connection to the server. The neighbour graph is a
Harary graph of degree 16 with the smallest threshold ``SecAggConfig`` accepts for it, so each
client's work grows with 16 neighbours rather than 199.
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
DEGREE = 16


@pytest.mark.slow
def test_two_hundred_clients_complete_a_round_with_vectors_of_ten_thousand() -> None:
    threshold = SecAggConfig(
        CLIENTS, DEGREE + 1, LENGTH, graph="harary", degree=DEGREE
    ).minimum_safe_threshold()
    assert threshold == 6  # t > (k + 1) / 3
    settings = FederationSettings(
        num_clients=CLIENTS,
        rounds=1,
        threshold=threshold,
        graph="harary",
        degree=DEGREE,
        clip=1.0,
        max_weight=256,
        phase_timeout=60,
        train_timeout=60,
        wait_timeout=60,
    )
    trainers = fixed_trainers(CLIENTS, LENGTH - 1, seed=200)
    run = asyncio.run(run_federation(ZeroModel(LENGTH - 1), settings, trainers))  # type: ignore[arg-type]

    report = run.reports[0]
    assert report.status == "completed", report.reason
    assert report.survivors == list(range(1, CLIENTS + 1)) and report.dropped == []
    assert run.server is not None and run.server.config.vector_length == LENGTH
    expected = plaintext_mean([run.updates[(1, i)] for i in report.survivors], settings)
    assert report.error_bound is not None
    assert np.max(np.abs(run.server.vector - expected)) <= report.error_bound
    # Every client uploaded its masked vector, bit-packed at log2(p) bits, and little more than that.
    packed = packed_size(LENGTH, run.server.config.modulus)
    assert CLIENTS * packed <= report.bytes_up <= 2 * CLIENTS * packed
