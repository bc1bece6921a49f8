"""wss:// with a self-signed certificate made in the test by ``cryptography``."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import FixedTrainer, ZeroModel, fixed_trainers, run_federation

from transport.client import FatalClientError, FederationClient
from transport.server import FederationServer, FederationSettings
from transport.tls import client_context, generate_self_signed, server_context


def test_a_federation_over_wss_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = generate_self_signed(tmp_path)
    settings = FederationSettings(num_clients=3, rounds=2, clip=1.0, max_weight=256)
    trainers = fixed_trainers(3, 12)
    run = asyncio.run(
        run_federation(
            ZeroModel(12),
            settings,
            trainers,  # type: ignore[arg-type]
            client_options=lambda i: {"ssl_context": client_context(cert)},
            server_options={"ssl_context": server_context(cert, key)},
        )
    )
    assert [r.status for r in run.reports] == ["completed", "completed"]
    assert all(r.survivors == [1, 2, 3] for r in run.reports)
    expected = sum(t.num_examples * t.update for t in trainers.values()) / sum(
        t.num_examples for t in trainers.values()
    )
    assert run.server is not None and run.reports[0].error_bound is not None
    assert np.max(np.abs(run.server.vector - 2 * expected)) <= 2 * run.reports[0].error_bound


@pytest.mark.parametrize("who", ["no trust in the certificate", "plain ws:// to a wss:// server"])
def test_clients_do_not_talk_to_a_tls_server_they_cannot_verify(tmp_path: Path, who: str) -> None:
    cert, key = generate_self_signed(tmp_path)

    async def main() -> None:
        server = FederationServer(ZeroModel(4), FederationSettings(num_clients=2, rounds=1))
        await server.start("127.0.0.1", 0, server_context(cert, key))
        try:
            if who == "no trust in the certificate":
                client = FederationClient(
                    1,
                    FixedTrainer(np.zeros(4), 1),
                    f"wss://127.0.0.1:{server.port}",
                    ssl_context=client_context(),
                )
                with pytest.raises(FatalClientError, match="CERTIFICATE_VERIFY_FAILED"):
                    await asyncio.wait_for(client.run(), 20)
            else:
                client = FederationClient(
                    1, FixedTrainer(np.zeros(4), 1), f"ws://127.0.0.1:{server.port}", give_up_after=1.0
                )
                with pytest.raises(ConnectionError, match="no server at"):
                    await asyncio.wait_for(client.run(), 20)
            assert client.summary.completed == []
        finally:
            await server.stop()

    asyncio.run(main())


def test_the_self_signed_certificate_names_the_loopback_address(tmp_path: Path) -> None:
    cert, key = generate_self_signed(tmp_path)
    context = client_context(cert)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert oct(key.stat().st_mode & 0o777) == "0o600"
