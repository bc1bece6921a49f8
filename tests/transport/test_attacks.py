"""Attacks on the transport that earlier tests did not cover, each with the fix it checks.

- an unregistered peer may not make the server buffer a model-sized frame before it has proven
  anything (the pre-registration frame limit is the size of a hello);
- a client with an identity key must pin the roster, or the server can substitute the keys of
  every other client (Sybils that the active mode is meant to exclude);
- a checkpoint with a valid checksum but a non-finite model or malformed records is refused with
  ``CheckpointError``; writing one does not follow a planted symlink;
- a roster file cannot list one id twice under aliases ("1" and "01") so that a reviewer sees one
  key and the loader keeps another;
- identity keys and the self-signed TLS key are never world-readable, not even between write and
  chmod, and writing one does not follow a planted symlink;
- a flood of connections that never say hello cannot hold unbounded server memory, nor lock out
  a client that answers its challenge: at most ``max_registering`` wait for their hello, a new
  connection evicts the oldest (1013, try again later);
- a client that plays round 0 honestly and then sends share bundles of random bytes used to make
  every honest neighbour abort, so every round aborted; now its recipients report it, the server
  excludes it, and every round completes without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from federation_helpers import ZeroModel, fixed_trainers, plaintext_mean, run_federation
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from secagg.messages import BUNDLE_SIZE, KeyList, ShareKeys
from transport.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from transport.client import FederationClient, _ActiveRound
from transport.codec import FrameLimits, decode_from_server, encode
from transport.errors import CloseCode
from transport.identity import generate_identities, load_roster
from transport.records import ServerEvent
from transport.server import FederationServer, FederationSettings
from transport.tls import generate_self_signed
from transport.wire import Challenge, Hello

BIG_DIMENSION = 100_000  # the server's frame limit is then about 800 kB


async def _peer(port: int, frames: list[bytes]) -> int | None:
    """Connect, read the challenge, send ``frames``, and return the close code the server sent."""
    async with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        await ws.recv()  # challenge
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await ws.send(frame)
                if frame is frames[0] and len(frames) > 1:
                    await ws.recv()  # welcome
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.wait_closed(), 10)
        return ws.close_code


def test_an_unregistered_peer_cannot_make_the_server_buffer_a_model_sized_frame() -> None:
    settings = FederationSettings(num_clients=3, rounds=1, hello_timeout=5.0)

    async def scenario() -> tuple[int | None, int | None]:
        server = FederationServer(ZeroModel(BIG_DIMENSION), settings)
        assert server.limits.max_frame_bytes > 500_000
        await server.start()
        try:
            before = await _peer(server.port, [b"\x00" * 400_000])
            # A registered client still gets the full, config-derived limit: a big malformed
            # frame is decoded (and refused as invalid), not refused for its size.
            after = await _peer(server.port, [encode(Hello(1)), b"\x00" * 400_000])
        finally:
            await server.stop()
        return before, after

    before, after = asyncio.run(scenario())
    assert before == CloseCode.MESSAGE_TOO_BIG
    assert after == CloseCode.INVALID_DATA


def test_a_client_with_an_identity_key_must_pin_the_roster() -> None:
    trainer = fixed_trainers(1, 4)[1]
    with pytest.raises(ValueError, match="roster"):
        FederationClient(1, trainer, "ws://127.0.0.1:1", identity_key=Ed25519PrivateKey.generate())


def _forge(path: Path, vector: np.ndarray, records: object) -> None:
    data = np.ascontiguousarray(vector, dtype="<f8").tobytes()
    state = {
        "v": 1,
        "next_round": 2,
        "dimension": int(vector.shape[0]),
        "vector": data,
        "sha256": hashlib.sha256(data).hexdigest(),  # the checksum is recomputed by the forger
        "records": records,
    }
    path.write_bytes(msgpack.packb(state, use_bin_type=True))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_checkpoint_with_a_non_finite_model_is_refused(tmp_path: Path, bad: float) -> None:
    vector = np.zeros(10)
    vector[3] = bad
    _forge(tmp_path / "ck", vector, [])
    with pytest.raises(CheckpointError, match="finite"):
        load_checkpoint(tmp_path / "ck", 10)


@pytest.mark.parametrize(
    "records", [[{"bogus": 1}], [1, 2], [{"round": 1, "status": "completed", "dropped": 5}]]
)
def test_a_checkpoint_with_malformed_records_is_a_checkpoint_error(tmp_path: Path, records: object) -> None:
    _forge(tmp_path / "ck", np.zeros(10), records)
    with pytest.raises(CheckpointError):
        FederationServer(
            ZeroModel(10), FederationSettings(num_clients=3, rounds=3), checkpoint_path=tmp_path / "ck"
        )


def test_saving_a_checkpoint_does_not_follow_a_planted_temporary_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "ck"
    (tmp_path / f".ck.{os.getpid()}.tmp").symlink_to(victim)
    save_checkpoint(target, Checkpoint(2, np.ones(10), []))
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink()
    loaded = load_checkpoint(target, 10)
    assert loaded is not None and loaded.next_round == 2


def test_identity_keys_are_created_owner_only_and_not_through_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = tmp_path / "ids"
    folder.mkdir()
    (folder / "client-1.pem").symlink_to(victim)
    # Whatever a later chmod does, the key must never have existed with a looser mode.
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    old = os.umask(0o022)
    try:
        generate_identities(folder, 2)
    finally:
        os.umask(old)
    assert victim.read_bytes() == b"precious"
    for i in (1, 2):
        key = folder / f"client-{i}.pem"
        assert not key.is_symlink()
        assert stat.S_IMODE(key.stat().st_mode) & 0o077 == 0


def test_the_self_signed_tls_key_is_created_owner_only_and_not_through_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "key.pem").symlink_to(victim)
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    old = os.umask(0o022)
    try:
        _, key_path = generate_self_signed(tmp_path)
    finally:
        os.umask(old)
    assert victim.read_bytes() == b"precious"
    assert not key_path.is_symlink()
    assert stat.S_IMODE(key_path.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize("alias", ["01", " 1", "+1", "1_0"])
def test_a_roster_cannot_hide_a_second_key_for_an_id_under_an_alias(tmp_path: Path, alias: str) -> None:
    path = tmp_path / "roster.json"
    path.write_text(f'{{"1": "{"aa" * 32}", "2": "{"bb" * 32}", "{alias}": "{"cc" * 32}"}}')
    with pytest.raises(ValueError, match="plain decimal"):
        load_roster(path)


class JunkBundleClient(FederationClient):
    """Trains and advertises its keys honestly, then seals random bytes instead of each share
    bundle (to exactly the recipients an honest client would use, so the server cannot tell)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.junk_rounds: list[int] = []  # the rounds in which it sent junk (the attack took place)

    def _answer(self, active: _ActiveRound, message: object) -> bytes:  # type: ignore[override]
        if not isinstance(message, KeyList):
            return FederationClient._answer(active, message)
        honest = active.secagg.receive(message)
        assert isinstance(honest, ShareKeys)
        junk = ShareKeys(honest.sender, {v: os.urandom(BUNDLE_SIZE) for v in honest.ciphertexts})
        self.junk_rounds.append(active.number)
        return encode(junk, round=active.number, session=active.session_id)


JUNK_HONEST, JUNK_DIMENSION = 4, 6
JUNK_ATTACKER = JUNK_HONEST + 1


def _junk_bundle_federation() -> tuple[Any, FederationSettings, JunkBundleClient]:
    """Three rounds of 4 honest clients and one junk-bundle client (id 5), over websockets."""
    settings = FederationSettings(
        num_clients=JUNK_ATTACKER, rounds=3, clip=1.0, max_weight=256, phase_timeout=10.0, train_timeout=5.0
    )
    trainers = fixed_trainers(JUNK_ATTACKER, JUNK_DIMENSION, seed=5)

    attacker: list[JunkBundleClient] = []

    async def attack(server: FederationServer, events: list[ServerEvent]) -> None:
        url = f"ws://127.0.0.1:{server.port}"
        attacker.append(JunkBundleClient(JUNK_ATTACKER, trainers[JUNK_ATTACKER], url, give_up_after=20))
        await attacker[0].run()

    honest = {i: trainers[i] for i in range(1, JUNK_HONEST + 1)}
    run = asyncio.run(run_federation(ZeroModel(JUNK_DIMENSION), settings, honest, extra=attack))  # type: ignore[arg-type]
    return run, settings, attacker[0]


def test_a_client_sending_junk_share_bundles_is_excluded_and_every_round_completes() -> None:
    run, settings, attacker = _junk_bundle_federation()
    assert attacker.junk_rounds == [1, 2, 3]  # it took part and attacked every round
    assert [r.status for r in run.reports] == ["completed"] * 3, [r.reason for r in run.reports]
    for report in run.reports:
        assert report.survivors == list(range(1, JUNK_HONEST + 1))
        updates = [run.updates[(report.round, i)] for i in report.survivors]
        secure = run.outcomes[report.round].mean_update
        assert secure is not None and report.error_bound is not None
        assert np.max(np.abs(secure - plaintext_mean(updates, settings))) <= report.error_bound
    assert all(s.completed == [1, 2, 3] for s in run.summaries)  # the honest clients


def test_the_round_report_names_the_excluded_junk_sender() -> None:
    """The coordinator records the SecAgg server's exclusions, so a caller can keep repeat
    offenders out of later rounds (issue 8)."""
    run, _, _ = _junk_bundle_federation()
    for report in run.reports:
        recorded = {d.client: d.reason for d in report.dropped}
        assert JUNK_ATTACKER in recorded and "excluded" in recorded[JUNK_ATTACKER]
        assert "failed to open" in report.suspects[JUNK_ATTACKER]
        # The accusers are suspects too (nothing proves who lied), but nobody is *provably*
        # misbehaving: the attacker's messages were well-formed.
        assert set(report.suspects) == set(range(1, JUNK_ATTACKER + 1))
        assert report.misbehaving == {}


def test_silent_connections_cannot_lock_out_a_client_that_answers_its_challenge() -> None:
    settings = FederationSettings(
        num_clients=2, rounds=1, max_registering=2, hello_timeout=60, wait_timeout=600
    )
    events: list[ServerEvent] = []

    async def scenario() -> tuple[int, str, object]:
        server = FederationServer(ZeroModel(4), settings, on_event=events.append)  # type: ignore[arg-type]
        await server.start()
        url = f"ws://127.0.0.1:{server.port}"
        limits = FrameLimits.for_client(4)
        try:
            async with connect(url) as first, connect(url) as second:
                await first.recv()  # challenges: both now wait for a hello that never comes
                await second.recv()
                async with connect(url) as third:
                    challenge = decode_from_server(await asyncio.wait_for(third.recv(), 10), limits)
                    with pytest.raises(ConnectionClosed) as closed:  # the oldest was evicted
                        await asyncio.wait_for(first.recv(), 10)
                    assert closed.value.rcvd is not None
                    code, reason = closed.value.rcvd.code, closed.value.rcvd.reason
                    # Every slot is taken by a silent peer (second, third), yet a client that
                    # answers its challenge at once registers.
                    trainer = fixed_trainers(2, 4, seed=0)[1]
                    client = asyncio.create_task(FederationClient(1, trainer, url, give_up_after=20).run())
                    try:
                        for _ in range(1000):
                            if any(e.kind == "registered" and e.client == 1 for e in events):
                                break
                            assert not client.done(), client
                            await asyncio.sleep(0.02)
                    finally:
                        client.cancel()
            return code, reason, challenge.message
        finally:
            await server.stop()

    code, reason, message = asyncio.run(scenario())
    assert (
        code == CloseCode.TRY_AGAIN and reason == "server busy: 2 connections waiting to register, try again"
    )
    assert isinstance(message, Challenge)
    assert any(e.kind == "registered" and e.client == 1 for e in events)


def test_max_registering_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_registering must be positive, got 0"):
        FederationSettings(num_clients=2, rounds=1, max_registering=0)
