"""Neighbour graphs: who masks with whom and who holds whose shares.

- ``complete``: every client is a neighbour of every other (SecAgg, Bonawitz et al. 2017).
- ``harary``: the Harary graph H(k, n) for even k over a random labelling (SecAgg+, Bell et al.
  2020, section 3): place the clients on a ring in a permuted order and join each to the k/2
  nearest on either side. The permutation comes from the session id, so the server and every
  client derive the same graph. Caveat: whoever picks the nonce (the server) could try many nonces
  and keep a graph it likes; clients cannot detect that grinding (see the README's threat model).
"""

from __future__ import annotations

import hashlib
from functools import cached_property

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .config import SecAggConfig


class _Stream:
    """A deterministic byte stream (AES-256-CTR) for drawing the labelling."""

    def __init__(self, key: bytes) -> None:
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound), by rejection sampling."""
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            value = int.from_bytes(self._encryptor.update(bytes(8)), "big")
            if value < limit:
                return value % bound


def permutation(num_clients: int, session_id: bytes) -> list[int]:
    """A uniformly random order of the ids 1..n, derived from the session id (Fisher-Yates)."""
    key = hashlib.sha256(b"secagg/graph/v1/permutation" + session_id).digest()
    stream = _Stream(key)
    order = list(range(1, num_clients + 1))
    for i in range(num_clients - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


class NeighbourGraph:
    """The neighbour relation of one round. Ids are 1..n; a client is not its own neighbour."""

    def __init__(self, config: SecAggConfig, session_id: bytes) -> None:
        self.config = config
        self._session_id = session_id

    @cached_property
    def _ring(self) -> tuple[list[int], dict[int, int]]:
        order = permutation(self.config.num_clients, self._session_id)
        return order, {client: position for position, client in enumerate(order)}

    def neighbours(self, client_id: int) -> frozenset[int]:
        """The neighbours of ``client_id`` (excluding itself)."""
        n = self.config.num_clients
        if not 1 <= client_id <= n:
            raise ValueError(f"client id {client_id} is not in 1..{n}")
        if self.config.graph == "complete":
            return frozenset(range(1, n + 1)) - {client_id}
        assert self.config.degree is not None
        order, position = self._ring
        here = position[client_id]
        half = self.config.degree // 2
        return frozenset(order[(here + d) % n] for d in range(-half, half + 1) if d != 0)

    def closed_neighbourhood(self, client_id: int) -> frozenset[int]:
        """The client and its neighbours: the holders of its shares."""
        return self.neighbours(client_id) | {client_id}

    def are_neighbours(self, a: int, b: int) -> bool:
        """True when a and b mask with each other."""
        return a != b and b in self.neighbours(a)
