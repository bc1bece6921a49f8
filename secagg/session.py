"""What the server and every client agree on before a round: config, nonce, roster, session id.

The session id is ``SHA-256("secagg/session/v1" || config || nonce || roster)``. It salts every
derived key, is part of every AEAD associated data and every signature, and seeds the neighbour
graph, so nothing from one round can be replayed into another.

Decision (differs from DESIGN.md, which also hashes all advertised keys into the session id): the
advertised public keys are bound pairwise instead, in the HKDF info of every derived key
(``primitives.key_agreement``). Hashing all n keys would make every client download all n keys,
which breaks SecAgg+'s cost of O(k) per client; the pairwise binding gives the same guarantee
for each key a client actually uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from types import MappingProxyType

from .config import SecAggConfig
from .graph import NeighbourGraph
from .primitives.signatures import PUBLIC_KEY_SIZE

NONCE_SIZE = 32


class RoundSetup:
    """The fixed context of one round, shared by the server and the clients.

    Args:
        config: the round parameters.
        nonce: 32 fresh random bytes chosen for this round (by the server or the coordinator).
        roster: active mode only: client id -> raw Ed25519 identity public key, for all ids 1..n.
    """

    def __init__(self, config: SecAggConfig, nonce: bytes, roster: Mapping[int, bytes] | None = None) -> None:
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            raise ValueError(f"session nonce must be {NONCE_SIZE} bytes")
        if config.is_active:
            if roster is None:
                raise ValueError("the active mode needs a roster of Ed25519 identity public keys")
            ids = set(roster)
            expected = set(range(1, config.num_clients + 1))
            if ids != expected:
                raise ValueError(
                    f"the roster must list exactly the ids 1..{config.num_clients}; "
                    f"missing {sorted(expected - ids)[:5]}, extra {sorted(ids - expected)[:5]}"
                )
            for client_id, key in roster.items():
                if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
                    raise ValueError(f"roster key of client {client_id} must be 32 bytes")
        elif roster is not None:
            raise ValueError("a roster is only used in the active mode")
        self.config = config
        self.nonce = nonce
        self.roster: Mapping[int, bytes] | None = (
            MappingProxyType(dict(roster)) if roster is not None else None
        )

    @cached_property
    def session_id(self) -> bytes:
        """32 bytes that name this round: config, nonce and roster."""
        h = hashlib.sha256(b"secagg/session/v1")
        h.update(self.config.canonical_bytes())
        h.update(self.nonce)
        if self.roster is not None:
            for client_id in sorted(self.roster):
                h.update(client_id.to_bytes(4, "big") + self.roster[client_id])
        return h.digest()

    @cached_property
    def graph(self) -> NeighbourGraph:
        """The neighbour graph of this round."""
        return NeighbourGraph(self.config, self.session_id)
