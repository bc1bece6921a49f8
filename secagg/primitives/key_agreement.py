"""X25519 key agreement with HKDF-SHA256 bound to the session and both client ids.

Derived keys (DESIGN.md section 6): ``HKDF-SHA256(ikm = X25519(a, B), salt = session_id,
info = purpose || "|" || u || v || pk_u || pk_v)`` with ``u < v`` the two client ids (4 bytes each,
big-endian) and ``pk_u``, ``pk_v`` their public keys for this purpose, so both parties derive the
same key, and a key from another session, another pair or another purpose never matches.

Public keys from the network are untrusted: ``load_public_key`` rejects anything that is not
32 bytes or is a low-order point (whose shared secret would be all zeros, i.e. known to anyone).
"""

from __future__ import annotations

from enum import Enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import RemoteProtocolError

KEY_SIZE = 32
DERIVED_KEY_SIZE = 32
# Any clamped scalar kills the small-order component, so a public key whose shared secret with
# this fixed key is zero has small order (the check libsodium's crypto_scalarmult performs).
_PROBE = X25519PrivateKey.from_private_bytes(b"\x42" * 32)


class KeyPurpose(Enum):
    """What a derived key is for; part of the HKDF info, so purposes never share a key."""

    SHARE_CHANNEL = b"secagg/kdf/v1/share-channel"  # AES-GCM key for round-1 share bundles (c keys)
    PAIRWISE_MASK = b"secagg/kdf/v1/pairwise-mask"  # PRG seed s_uv for round-2 masks (s keys)


def generate_private_key(random_bytes: bytes) -> X25519PrivateKey:
    """A private key from 32 injected random bytes (the caller owns the randomness)."""
    if len(random_bytes) != KEY_SIZE:
        raise ValueError(f"X25519 private key needs {KEY_SIZE} random bytes, got {len(random_bytes)}")
    return X25519PrivateKey.from_private_bytes(random_bytes)


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of a private key."""
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte private key (it is what a client Shamir-shares as s_SK)."""
    return key.private_bytes_raw()


_FIELD = 2**255 - 19


def canonical_public_key(data: bytes) -> bytes:
    """The canonical encoding of the curve point ``data`` names (RFC 7748, section 5).

    X25519 ignores bit 255 and reads u-coordinates modulo 2^255 - 19, so up to four 32-byte
    strings name the same public key: compare keys by this, never by their raw bytes.
    """
    u = int.from_bytes(data, "little") & ((1 << 255) - 1)
    return (u % _FIELD).to_bytes(KEY_SIZE, "little")


def load_public_key(data: object) -> X25519PublicKey:
    """Parse an untrusted public key, raising ``RemoteProtocolError`` if it is unusable."""
    if not isinstance(data, bytes) or len(data) != KEY_SIZE:
        raise RemoteProtocolError(f"X25519 public key must be {KEY_SIZE} bytes")
    key = X25519PublicKey.from_public_bytes(data)
    try:
        _PROBE.exchange(key)
    except ValueError:
        raise RemoteProtocolError("X25519 public key has low order") from None
    return key


def is_valid_public_key(data: object) -> bool:
    """True when ``load_public_key`` accepts ``data``."""
    try:
        load_public_key(data)
    except RemoteProtocolError:
        return False
    return True


def derive_key(
    private_key: X25519PrivateKey,
    peer_public: bytes,
    *,
    purpose: KeyPurpose,
    session_id: bytes,
    own_id: int,
    own_public: bytes,
    peer_id: int,
) -> bytes:
    """The 32-byte key shared by ``own_id`` and ``peer_id`` for ``purpose`` in this session."""
    if own_id == peer_id:
        raise ValueError("a client derives no key with itself")
    if not isinstance(peer_public, bytes) or len(peer_public) != KEY_SIZE:
        raise RemoteProtocolError(f"X25519 public key must be {KEY_SIZE} bytes")
    try:
        # exchange() itself refuses a low-order peer key (all-zero shared secret).
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise RemoteProtocolError("X25519 exchange failed: low-order public key") from None
    low, high = sorted(((own_id, own_public), (peer_id, peer_public)))
    info = purpose.value + b"|" + low[0].to_bytes(4, "big") + high[0].to_bytes(4, "big") + low[1] + high[1]
    return HKDF(algorithm=hashes.SHA256(), length=DERIVED_KEY_SIZE, salt=session_id, info=info).derive(shared)
