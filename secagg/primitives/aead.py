"""AES-256-GCM for the round-1 share bundles, bound to session, sender, recipient and round.

Associated data = ``"secagg/aead/v1" || session_id || sender || recipient || round``; the nonce is
derived from (sender, recipient): each ordered pair encrypts exactly one bundle under a key that
is fresh per session, so a nonce never repeats under one key. A ciphertext replayed from another
session or redirected to another recipient fails authentication.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import RemoteProtocolError

TAG_SIZE = 16


def associated_data(session_id: bytes, sender: int, recipient: int, round_index: int) -> bytes:
    """The bytes every share-bundle ciphertext authenticates."""
    return (
        b"secagg/aead/v1"
        + session_id
        + sender.to_bytes(4, "big")
        + recipient.to_bytes(4, "big")
        + round_index.to_bytes(1, "big")
    )


def _nonce(sender: int, recipient: int) -> bytes:
    return sender.to_bytes(6, "big") + recipient.to_bytes(6, "big")


def encrypt(
    key: bytes, plaintext: bytes, *, session_id: bytes, sender: int, recipient: int, round_index: int
) -> bytes:
    """Seal ``plaintext`` from ``sender`` to ``recipient``."""
    ad = associated_data(session_id, sender, recipient, round_index)
    return AESGCM(key).encrypt(_nonce(sender, recipient), plaintext, ad)


def decrypt(
    key: bytes, ciphertext: bytes, *, session_id: bytes, sender: int, recipient: int, round_index: int
) -> bytes:
    """Open a bundle, raising ``RemoteProtocolError`` if it was forged, replayed or redirected."""
    ad = associated_data(session_id, sender, recipient, round_index)
    try:
        return AESGCM(key).decrypt(_nonce(sender, recipient), ciphertext, ad)
    except InvalidTag:
        raise RemoteProtocolError(
            f"share bundle from client {sender} to {recipient} failed authentication"
        ) from None
