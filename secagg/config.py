"""Round parameters of SecAgg / SecAgg+ and the checks that make them safe (DESIGN.md section 3).

A ``SecAggConfig`` is fixed before a round and shared by the server and every client. It is
frozen and validates itself: a threshold that would let a colluding coalition (a fraction
``collusion_fraction`` of a neighbourhood, together with the server) unmask a client is refused
with a message that names the numbers.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from .primitives.field import DEFAULT_MODULUS, check_modulus

GraphKind = Literal["complete", "harary"]
MAX_CLIENTS = 1 << 20
MAX_VECTOR_LENGTH = 1 << 30


class SecurityMode(str, Enum):
    """Threat model of a round.

    ``SEMI_HONEST``: the server follows the protocol but tries to learn from what it sees.
    ``ACTIVE``: the server may lie to clients; clients sign their keys and their view of U3 with
    long-term Ed25519 identity keys (Bonawitz et al. 2017, Fig. 4, rounds 0 and 3).
    """

    SEMI_HONEST = "semi_honest"
    ACTIVE = "active"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters of one secure-aggregation round.

    Attributes:
        num_clients: n, the clients selected for the round, with ids ``1..n``.
        threshold: t, the number of shares that reconstruct a secret, and the fewest clients the
            server may ever aggregate over. Over a SecAgg+ graph it is counted within a
            neighbourhood (the client and its ``degree`` neighbours).
        vector_length: m, the number of field elements each client contributes.
        modulus: p, a prime from ``SUPPORTED_PRIMES``.
        graph: ``"complete"`` (SecAgg) or ``"harary"`` (SecAgg+, needs an even ``degree``).
        degree: k, the number of neighbours of each client in the Harary graph.
        mode: ``"semi_honest"`` or ``"active"`` (see ``SecurityMode``).
        collusion_fraction: gamma, the fraction of a neighbourhood that may collude with the server.
    """

    num_clients: int
    threshold: int
    vector_length: int
    modulus: int = DEFAULT_MODULUS
    graph: GraphKind = "complete"
    degree: int | None = None
    mode: SecurityMode | str = SecurityMode.SEMI_HONEST
    collusion_fraction: float = 1 / 3

    def __post_init__(self) -> None:
        n, t, m = self.num_clients, self.threshold, self.vector_length
        for name, value in (("num_clients", n), ("threshold", t), ("vector_length", m)):
            if not _is_int(value):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not 2 <= n <= MAX_CLIENTS:
            raise ValueError(f"num_clients must be in [2, {MAX_CLIENTS}], got {n}")
        if not 1 <= m <= MAX_VECTOR_LENGTH:
            raise ValueError(f"vector_length must be in [1, {MAX_VECTOR_LENGTH}], got {m}")
        if not _is_int(self.modulus):
            raise ValueError(f"modulus must be an int, got {self.modulus!r}")
        check_modulus(self.modulus)
        try:
            object.__setattr__(self, "mode", SecurityMode(self.mode))
        except ValueError:
            raise ValueError(f"mode must be 'semi_honest' or 'active', got {self.mode!r}") from None
        gamma = self.collusion_fraction
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not 0 <= gamma < 1:
            raise ValueError(f"collusion_fraction must be in [0, 1), got {gamma!r}")
        if self.graph == "complete":
            if self.degree not in (None, n - 1):
                raise ValueError(f"the complete graph has degree n-1={n - 1}; got degree={self.degree}")
        elif self.graph == "harary":
            k = self.degree
            if k is None or not _is_int(k) or k < 2 or k % 2 or k >= n:
                raise ValueError(f"the harary graph needs an even degree k with 2 <= k < n={n}, got {k!r}")
        else:
            raise ValueError(f"graph must be 'complete' or 'harary', got {self.graph!r}")
        self._check_threshold()

    @property
    def neighbourhood_size(self) -> int:
        """Clients that hold shares of one client's secrets: the client and its neighbours."""
        if self.graph == "harary":
            assert self.degree is not None
            return self.degree + 1
        return self.num_clients

    @property
    def security_mode(self) -> SecurityMode:
        """``mode`` as a ``SecurityMode`` (normalised on construction)."""
        return SecurityMode(self.mode)

    @property
    def is_active(self) -> bool:
        """True in the active (malicious-server) mode."""
        return self.security_mode is SecurityMode.ACTIVE

    def minimum_safe_threshold(self) -> int:
        """The smallest threshold that the security mode accepts for this neighbourhood size.

        Semi-honest server: t > gamma * N. Active server: t > (1 + gamma) * N / 2
        (2N/3 at gamma = 1/3), with N the neighbourhood size.
        """
        size = self.neighbourhood_size
        gamma = self.collusion_fraction
        bound = (1 + gamma) * size / 2 if self.is_active else gamma * size
        return max(1, math.floor(bound + 1e-9) + 1)

    def _check_threshold(self) -> None:
        t, size = self.threshold, self.neighbourhood_size
        if t > size:
            where = "clients" if self.graph == "complete" else f"neighbourhood (degree {self.degree} + 1)"
            raise ValueError(f"threshold t={t} exceeds the {size} {where} that hold shares")
        low = self.minimum_safe_threshold()
        if t < low:
            gamma = self.collusion_fraction
            rule = "(1+gamma)*N/2" if self.is_active else "gamma*N"
            raise ValueError(
                f"threshold t={t} is unsafe in {self.security_mode.value} mode: it must exceed "
                f"{rule} with gamma={gamma:.4g} and neighbourhood N={size}, so t >= {low}"
            )

    def canonical_bytes(self) -> bytes:
        """A stable encoding of every parameter, hashed into the session id."""
        return b"secagg/config/v1" + struct.pack(
            ">IIIQBIBd",
            self.num_clients,
            self.threshold,
            self.vector_length,
            self.modulus,
            1 if self.graph == "harary" else 0,
            self.degree if self.graph == "harary" else 0,  # complete: degree None == n-1
            1 if self.is_active else 0,
            float(self.collusion_fraction),
        )
