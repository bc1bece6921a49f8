"""secagg.primitives.aead: share bundles open only in their session, for their recipient, in their
round, from their sender, unmodified (DESIGN.md section 3: replayed or redirected messages fail)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import RemoteProtocolError
from secagg.primitives import aead

KEY = bytes(range(32))
SESSION = bytes(range(100, 132))
CONTEXT = {"session_id": SESSION, "sender": 3, "recipient": 8, "round_index": 1}
PLAINTEXT = b"\x00\x00\x00\x03\x00\x00\x00\x08" + bytes(range(64))


@settings(max_examples=50, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    plaintext=st.binary(max_size=300),
    session=st.binary(min_size=32, max_size=32),
    pair=st.lists(st.integers(1, 2**20), min_size=2, max_size=2, unique=True),
    round_index=st.integers(0, 4),
)
def test_roundtrip(key: bytes, plaintext: bytes, session: bytes, pair: list[int], round_index: int) -> None:
    context = {"session_id": session, "sender": pair[0], "recipient": pair[1], "round_index": round_index}
    ciphertext = aead.encrypt(key, plaintext, **context)
    assert len(ciphertext) == len(plaintext) + aead.TAG_SIZE
    if len(plaintext) >= 8:  # shorter ones can appear in random bytes by chance (1 byte: ~7%)
        assert plaintext not in ciphertext
    assert aead.decrypt(key, ciphertext, **context) == plaintext


CIPHERTEXT = aead.encrypt(KEY, PLAINTEXT, **CONTEXT)


@pytest.mark.parametrize(
    "change",
    [
        {"session_id": bytes(range(101, 133))},  # replayed from another session
        {"session_id": SESSION[:-1] + bytes([SESSION[-1] ^ 1])},
        {"recipient": 9},  # redirected to another client
        {"sender": 4},  # claimed to come from another client
        {"sender": 8, "recipient": 3},  # reflected back to its sender
        {"round_index": 4},  # replayed in another round
        {"round_index": 0},
    ],
    ids=["session", "session-1-bit", "recipient", "sender", "reflected", "round-4", "round-0"],
)
def test_context_change_fails_authentication(change: dict) -> None:
    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        aead.decrypt(KEY, CIPHERTEXT, **{**CONTEXT, **change})


def test_wrong_key_fails() -> None:
    with pytest.raises(RemoteProtocolError):
        aead.decrypt(bytes(32), CIPHERTEXT, **CONTEXT)


def test_every_tampered_byte_is_detected() -> None:
    for i in range(len(CIPHERTEXT)):
        for bit in (0x01, 0x80):
            tampered = bytearray(CIPHERTEXT)
            tampered[i] ^= bit
            with pytest.raises(RemoteProtocolError):
                aead.decrypt(KEY, bytes(tampered), **CONTEXT)


@pytest.mark.parametrize(
    "ciphertext", [b"", CIPHERTEXT[:15], CIPHERTEXT[:-1], CIPHERTEXT + b"\x00", CIPHERTEXT[16:]]
)
def test_truncated_or_extended_ciphertext_fails(ciphertext: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        aead.decrypt(KEY, ciphertext, **CONTEXT)


def test_error_names_sender_and_recipient_without_leaking_plaintext() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        aead.decrypt(KEY, CIPHERTEXT, **{**CONTEXT, "recipient": 9})
    assert "3" in str(info.value) and "9" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_associated_data_is_unambiguous_per_context() -> None:
    """Every field of the context changes the associated data, and the fixed-width fields keep
    distinct contexts distinct (e.g. sender 1 / recipient 23 vs sender 12 / recipient 3)."""
    seen = set()
    for sender in (1, 2, 12, 2**20):
        for recipient in (3, 23, 2**20 - 1):
            for round_index in (1, 4):
                seen.add(aead.associated_data(SESSION, sender, recipient, round_index))
    assert len(seen) == 4 * 3 * 2
    assert aead.associated_data(SESSION, 1, 2, 1) != aead.associated_data(bytes(32), 1, 2, 1)


def test_the_two_directions_of_a_pair_use_different_nonces() -> None:
    """Both clients of a pair derive the same channel key; u->v and v->u must not reuse a
    (key, nonce) pair. With the same plaintext and a shared key, identical keystreams would show
    up as identical ciphertext bodies."""
    forward = aead.encrypt(KEY, bytes(64), session_id=SESSION, sender=3, recipient=8, round_index=1)
    backward = aead.encrypt(KEY, bytes(64), session_id=SESSION, sender=8, recipient=3, round_index=1)
    assert forward[:64] != backward[:64]
