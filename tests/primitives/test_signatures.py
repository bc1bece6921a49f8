"""secagg.primitives.signatures: Ed25519 over purpose-tagged, session-bound payloads."""

from __future__ import annotations

import pytest

from secagg.primitives import signatures

SESSION = bytes(range(32))
ALICE = signatures.generate_identity(bytes(range(32)))
BOB = signatures.generate_identity(bytes(range(1, 33)))
ALICE_PK = signatures.identity_public_bytes(ALICE)
BOB_PK = signatures.identity_public_bytes(BOB)
C_PK, S_PK = b"\x11" * 32, b"\x22" * 32
PAYLOAD = signatures.advertise_payload(SESSION, 4, C_PK, S_PK)
SIGNATURE = signatures.sign(ALICE, PAYLOAD)


def test_roundtrip() -> None:
    assert len(SIGNATURE) == signatures.SIGNATURE_SIZE == 64
    assert len(ALICE_PK) == signatures.PUBLIC_KEY_SIZE == 32
    assert signatures.verify(ALICE_PK, SIGNATURE, PAYLOAD)
    consistency = signatures.consistency_payload(SESSION, {3, 1, 2})
    assert signatures.verify(BOB_PK, signatures.sign(BOB, consistency), consistency)


def test_wrong_key_is_rejected() -> None:
    assert not signatures.verify(BOB_PK, SIGNATURE, PAYLOAD)


@pytest.mark.parametrize(
    "payload",
    [
        signatures.advertise_payload(bytes(32), 4, C_PK, S_PK),  # other session
        signatures.advertise_payload(SESSION, 5, C_PK, S_PK),  # other client id
        signatures.advertise_payload(SESSION, 4, S_PK, C_PK),  # keys swapped
        signatures.advertise_payload(SESSION, 4, C_PK, b"\x23" * 32),  # other masking key
        PAYLOAD[:-1],
        PAYLOAD + b"\x00",
        signatures.consistency_payload(SESSION, {4}),
    ],
    ids=["session", "client-id", "swapped-keys", "s-key", "truncated", "extended", "other-purpose"],
)
def test_wrong_payload_is_rejected(payload: bytes) -> None:
    assert payload != PAYLOAD
    assert not signatures.verify(ALICE_PK, SIGNATURE, payload)


@pytest.mark.parametrize(
    "signature",
    [
        b"",
        SIGNATURE[:-1],
        SIGNATURE + b"\x00",
        bytes(64),
        b"\xff" * 64,
        bytes([SIGNATURE[0] ^ 1]) + SIGNATURE[1:],
        SIGNATURE[:63] + bytes([SIGNATURE[63] ^ 0x80]),
        bytearray(SIGNATURE),
        SIGNATURE.hex(),
        None,
    ],
    ids=["empty", "short", "long", "zeros", "ones", "flip-first", "flip-last", "bytearray", "hex", "none"],
)
def test_garbage_signature_is_rejected(signature: object) -> None:
    assert not signatures.verify(ALICE_PK, signature, PAYLOAD)


@pytest.mark.parametrize("public_key", [b"", ALICE_PK[:31], ALICE_PK + b"\x00"])
def test_malformed_public_key_is_rejected_not_raised(public_key: bytes) -> None:
    assert not signatures.verify(public_key, SIGNATURE, PAYLOAD)


def test_consistency_payload_is_the_sorted_set_bound_to_the_session() -> None:
    assert signatures.consistency_payload(SESSION, [3, 1, 2]) == signatures.consistency_payload(
        SESSION, {1, 2, 3}
    )
    assert signatures.consistency_payload(SESSION, [1, 2]) != signatures.consistency_payload(
        SESSION, [1, 2, 3]
    )
    assert signatures.consistency_payload(SESSION, [1, 2]) != signatures.consistency_payload(
        bytes(32), [1, 2]
    )
    # 4-byte ids: {1, 2} and {258} cannot collide as they would with a variable-width encoding
    assert signatures.consistency_payload(SESSION, [1, 2]) != signatures.consistency_payload(SESSION, [258])
    assert signatures.consistency_payload(SESSION, [1, 2]).endswith(bytes([0, 0, 0, 1, 0, 0, 0, 2]))


def test_purposes_are_tagged() -> None:
    assert PAYLOAD.startswith(b"secagg/sig/v1/advertise" + SESSION)
    assert signatures.consistency_payload(SESSION, []).startswith(b"secagg/sig/v1/consistency" + SESSION)


def test_identity_key_needs_32_bytes() -> None:
    with pytest.raises(ValueError):
        signatures.generate_identity(bytes(31))
