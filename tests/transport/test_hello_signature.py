"""A semi-honest server refuses a hello that carries an identity proof (issue 8).

Such a client expects the active mode and a roster; a server that ignored the signature would let
it believe it was authenticated when it was not.
"""

from __future__ import annotations

import asyncio
import contextlib

from federation_helpers import ZeroModel
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from transport.codec import FrameLimits, decode_from_server, encode
from transport.errors import CloseCode
from transport.server import FederationServer, FederationSettings
from transport.wire import Hello, Welcome

LIMITS = FrameLimits.for_client(4)


async def _hello(port: int, hello: Hello) -> tuple[object, int | None, str | None]:
    """Send ``hello``; return the server's answer (None if it closed) and its close code/reason."""
    async with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        await ws.recv()  # challenge
        await ws.send(encode(hello))
        answer: object = None
        with contextlib.suppress(ConnectionClosed):
            answer = decode_from_server(await asyncio.wait_for(ws.recv(), 10), LIMITS).message
        return answer, ws.close_code, ws.close_reason


def test_semi_honest_server_refuses_a_signed_hello_and_welcomes_an_unsigned_one() -> None:
    settings = FederationSettings(num_clients=3, rounds=1, hello_timeout=5.0)

    async def scenario() -> tuple[
        tuple[object, int | None, str | None], tuple[object, int | None, str | None]
    ]:
        server = FederationServer(ZeroModel(4), settings)
        await server.start()
        try:
            signed = await _hello(server.port, Hello(1, b"\x01" * 64))
            unsigned = await _hello(server.port, Hello(2))
        finally:
            await server.stop()
        return signed, unsigned

    signed, unsigned = asyncio.run(scenario())
    assert signed[0] is None
    assert signed[1] == CloseCode.REGISTRATION_FAILED
    assert "semi_honest" in (signed[2] or "")
    assert isinstance(unsigned[0], Welcome)
