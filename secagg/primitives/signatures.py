"""Ed25519 signatures for the active mode (Bonawitz et al. 2017, Fig. 4, rounds 0 and 3).

Each client has a long-term identity key; the server and the clients know the roster of identity
public keys before the round. Clients sign their advertised keys (round 0) and their view of U3
(round 3); every signed message starts with a purpose tag and the session id.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32


def advertise_payload(session_id: bytes, client_id: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """What a client signs in round 0: its two X25519 public keys, bound to session and id."""
    return b"secagg/sig/v1/advertise" + session_id + client_id.to_bytes(4, "big") + c_pk + s_pk


def consistency_payload(session_id: bytes, survivors: Iterable[int]) -> bytes:
    """What a client signs in round 3: the sorted set U3, bound to the session."""
    ids = b"".join(i.to_bytes(4, "big") for i in sorted(survivors))
    return b"secagg/sig/v1/consistency" + session_id + ids


def sign(key: Ed25519PrivateKey, payload: bytes) -> bytes:
    """A 64-byte Ed25519 signature."""
    return key.sign(payload)


def verify(public_key: bytes, signature: object, payload: bytes) -> bool:
    """True when ``signature`` is a valid signature of ``payload`` under ``public_key``."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_identity(random_bytes: bytes) -> Ed25519PrivateKey:
    """A long-term identity key from 32 injected random bytes."""
    return Ed25519PrivateKey.from_private_bytes(random_bytes)


def identity_public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte identity public key (what the roster lists)."""
    return key.public_key().public_bytes_raw()
