"""A commitment to the self-mask seed b_u, sent in round 0 and checked by the server.

``commit(session_id, client_id, seed) = SHA-256("secagg/commit/b/v1" || session id || id || b_u)``.
b_u is 32 uniformly random bytes, so the hash hides it; SHA-256 binds the client to it. The server
checks every reconstructed b_u against its commitment, so a wrong Shamir share (from a malicious
holder in round 4, or a malicious dealer in round 1) can never silently corrupt the sum
(DESIGN.md section 3, robustness to malicious clients). s_SK needs no extra commitment: s_PK is one.
"""

from __future__ import annotations

import hashlib
import hmac

COMMITMENT_SIZE = 32
_LABEL = b"secagg/commit/b/v1"


def commit(session_id: bytes, client_id: int, seed: bytes) -> bytes:
    """The commitment of client ``client_id`` to its self-mask seed in the session."""
    return hashlib.sha256(_LABEL + session_id + client_id.to_bytes(4, "big") + seed).digest()


def opens(commitment: bytes, session_id: bytes, client_id: int, seed: bytes) -> bool:
    """True when ``seed`` is what client ``client_id`` committed to."""
    return hmac.compare_digest(commitment, commit(session_id, client_id, seed))
