"""Hostile peers are cut off with a clear reason; the server and the honest clients carry on.

Six honest clients (ids 1-6) share a round with eight hostile peers (ids 7-14), each breaking
the protocol in its own way and at its own phase, and with three peers that never get past
registration. Every hostile peer must be closed with the expected close code and reason, recorded
in the round's ``dropped``; the honest clients' aggregate must still be exactly their weighted
mean (within the quantization bound); and the server must run the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import numpy as np
from federation_helpers import ZeroModel, fixed_trainers, plaintext_mean, run_federation
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from secagg import RoundSetup, SecAggClient
from secagg.messages import AdvertiseKeys, ShareKeys
from transport.codec import FrameLimits, decode_from_server, encode
from transport.errors import CloseCode
from transport.records import ServerEvent
from transport.server import FederationServer, FederationSettings
from transport.wire import LOCAL_ID, Hello, RoundStart

DIMENSION = 16
HONEST = 6
LIMITS = FrameLimits.for_client(DIMENSION)

Behaviour = Callable[[ClientConnection, SecAggClient, int, bytes], Awaitable[None]]


async def send_garbage(ws: ClientConnection, client: SecAggClient, round_: int, session: bytes) -> None:
    await ws.send(b"\x00\xff this is not msgpack")


async def send_truncated(ws: ClientConnection, client: SecAggClient, round_: int, session: bytes) -> None:
    await ws.send(encode(client.start(), round=round_, session=session)[:-9])


async def send_huge(ws: ClientConnection, client: SecAggClient, round_: int, session: bytes) -> None:
    await ws.send(b"\x00" * 5_000_000)


async def impersonate(ws: ClientConnection, client: SecAggClient, round_: int, session: bytes) -> None:
    keys = client.start()
    forged = AdvertiseKeys(1, keys.c_pk, keys.s_pk, None, keys.b_commitment)
    await ws.send(encode(forged, round=round_, session=session))


async def wrong_phase(ws: ClientConnection, client: SecAggClient, round_: int, session: bytes) -> None:
    await ws.send(encode(ShareKeys(client.client_id, {}), round=round_, session=session))


async def duplicate_share_keys(
    ws: ClientConnection, client: SecAggClient, round_: int, session: bytes
) -> None:
    await ws.send(encode(client.start(), round=round_, session=session))
    reply = client.receive(decode_from_server(await ws.recv(), LIMITS).message)  # type: ignore[arg-type]
    await ws.send(encode(reply, round=round_, session=session))
    await ws.send(encode(reply, round=round_, session=session))


async def stale_masked_input(ws: ClientConnection, client: SecAggClient, round_: int, session: bytes) -> None:
    # Plays along until U2 (so the others mask with it), then sends its input for another round.
    await ws.send(encode(client.start(), round=round_, session=session))
    key_list = decode_from_server(await ws.recv(), LIMITS).message
    await ws.send(encode(client.receive(key_list), round=round_, session=session))  # type: ignore[arg-type]
    bundles = decode_from_server(await ws.recv(), LIMITS).message
    await ws.send(encode(client.receive(bundles), round=round_, session=session))  # type: ignore[arg-type]
    request = decode_from_server(await ws.recv(), LIMITS).message
    await ws.send(encode(client.receive(request), round=round_ + 1, session=session))  # type: ignore[arg-type]


async def stay_silent(ws: ClientConnection, client: SecAggClient, round_: int, session: bytes) -> None:
    await ws.wait_closed()


HOSTILE: dict[int, tuple[Behaviour, int, str]] = {
    7: (send_garbage, CloseCode.INVALID_DATA, "malformed frame: not a valid msgpack frame"),
    8: (send_truncated, CloseCode.INVALID_DATA, "malformed frame: not a valid msgpack frame"),
    9: (send_huge, CloseCode.MESSAGE_TOO_BIG, "sent a frame above the limit of"),
    10: (
        impersonate,
        CloseCode.POLICY_VIOLATION,
        "impersonation: message claims sender 1 on the connection of client 10",
    ),
    11: (wrong_phase, CloseCode.POLICY_VIOLATION, "dropped in advertise_keys: wrong round: sent ShareKeys"),
    12: (duplicate_share_keys, CloseCode.POLICY_VIOLATION, "dropped in share_keys: duplicate ShareKeys"),
    13: (stale_masked_input, CloseCode.POLICY_VIOLATION, "wrong round: message for round 2"),
    14: (stay_silent, CloseCode.DEADLINE, "missed the advertise_keys deadline"),
}


async def hostile_peer(port: int, client_id: int, behaviour: Behaviour) -> tuple[int | None, str | None]:
    ws = await connect(f"ws://127.0.0.1:{port}", max_size=None)
    try:
        await ws.recv()  # challenge
        await ws.send(encode(Hello(client_id)))
        await ws.recv()  # welcome
        frame = decode_from_server(await ws.recv(), LIMITS)
        start = frame.message
        assert isinstance(start, RoundStart)
        setup = RoundSetup(start.config, start.nonce, start.roster)
        local_id = int(start.settings[LOCAL_ID])  # the SecAgg id of this round, not the stable one
        client = SecAggClient(setup, local_id, np.zeros(start.config.vector_length, dtype=np.uint64))
        with contextlib.suppress(ConnectionClosed):
            await behaviour(ws, client, frame.round, setup.session_id)
        await asyncio.wait_for(ws.wait_closed(), 30)
    finally:
        # The peer that sent 5 MB may find its transport already torn down by the server.
        with contextlib.suppress(Exception):
            await ws.close()
    return ws.close_code, ws.close_reason


async def unregistered_peer(port: int, first_frame: bytes | None) -> tuple[int | None, str | None]:
    async with connect(f"ws://127.0.0.1:{port}") as ws:
        await ws.recv()  # challenge
        if first_frame is not None:
            await ws.send(first_frame)
        await asyncio.wait_for(ws.wait_closed(), 30)
        return ws.close_code, ws.close_reason


def test_hostile_peers_are_cut_off_and_the_honest_round_yields_the_right_sum() -> None:
    n = HONEST + len(HOSTILE)
    settings = FederationSettings(
        num_clients=n,
        rounds=2,
        threshold=6,  # floor(n/3) + 2 for n = 14: every honest client must answer
        clip=1.0,
        max_weight=256,
        phase_timeout=3.0,
        train_timeout=1.0,
        hello_timeout=1.0,
        wait_timeout=1.0,
    )
    trainers = fixed_trainers(HONEST, DIMENSION, seed=11)
    hostile_results: dict[int, tuple[int | None, str | None]] = {}
    registration_results: dict[str, tuple[int | None, str | None]] = {}

    async def attack(server: FederationServer, events: list[ServerEvent]) -> None:
        peers = {i: asyncio.create_task(hostile_peer(server.port, i, b)) for i, (b, _, _) in HOSTILE.items()}
        while not any(e.kind == "round_start" for e in events):
            await asyncio.sleep(0.01)
        registration_results.update(
            zip(
                ["garbage hello", "id in use", "no hello"],
                await asyncio.gather(
                    unregistered_peer(server.port, b"\x93garbage"),
                    unregistered_peer(server.port, encode(Hello(2))),
                    unregistered_peer(server.port, None),
                ),
                strict=True,
            )
        )
        for i, task in peers.items():
            hostile_results[i] = await task

    run = asyncio.run(run_federation(ZeroModel(DIMENSION), settings, trainers, extra=attack))  # type: ignore[arg-type]

    first, second = run.reports
    assert first.status == "completed", first.reason
    assert first.survivors == list(range(1, HONEST + 1))
    honest_updates = [run.updates[(1, i)] for i in first.survivors]
    secure = run.outcomes[1].mean_update
    assert secure is not None and first.error_bound is not None
    assert np.max(np.abs(secure - plaintext_mean(honest_updates, settings))) <= first.error_bound

    recorded = {d.client: d for d in first.dropped}
    assert set(recorded) == set(HOSTILE)
    for client_id, (_, code, reason) in HOSTILE.items():
        assert recorded[client_id].close_code == code
        assert reason in recorded[client_id].reason
        seen_code, seen_reason = hostile_results[client_id]
        assert seen_code == code
        if code != CloseCode.MESSAGE_TOO_BIG:  # websockets words its own 1009 reason
            assert seen_reason and reason in seen_reason

    assert registration_results["garbage hello"][0] == CloseCode.INVALID_DATA
    assert registration_results["id in use"] == (CloseCode.ID_IN_USE, "client id 2 is already connected")
    assert registration_results["no hello"] == (CloseCode.DEADLINE, "no hello in time")

    # The server kept going: the next round runs with the honest clients alone.
    assert second.status == "completed" and second.survivors == list(range(1, HONEST + 1))
    assert all(s.completed == [1, 2] for s in run.summaries)  # type: ignore[union-attr]
