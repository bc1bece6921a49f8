"""Round parameters of SecAgg / SecAgg+ and the checks that make them safe (DESIGN.md section 3).

A ``SecAggConfig`` is fixed before a round and shared by the server and every client. It is
frozen and validates itself: a threshold that would let a colluding coalition (a fraction
``collusion_fraction`` of all the round's clients, together with the server) unmask a client,
or SecAgg+ parameters that fail the bounds of ``secagg.parameters``, are refused with a message
that names the numbers and the computed probabilities.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from .parameters import (
    CORRECTNESS_BITS,
    SECURITY_BITS,
    GraphParameters,
    assess_complete,
    assess_harary,
    complete_threshold,
    find_parameters,
    harary_threshold,
)
from .primitives.field import DEFAULT_MODULUS, check_modulus

GraphKind = Literal["complete", "harary"]
MAX_CLIENTS = 1 << 20
MAX_VECTOR_LENGTH = 1 << 30
DEFAULT_DROPOUT_FRACTION = 0.1


def _suggestion(n: int, gamma: float, delta: float, mode: str) -> str:
    try:
        found = find_parameters(n, gamma, delta, mode)
    except ValueError as exc:
        return f"No parameters fit this threat model: {exc}"
    if found.graph == "harary":
        where = f"k={found.degree}, t={found.threshold}"
    else:
        where = f"the complete graph, t={found.threshold}"
    return f"find_parameters({n}, {gamma:.4g}, {delta:.4g}, {mode!r}) gives {where}."


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


def check_fraction(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in [0, 1) (a gamma or a delta).

    NaN is refused too: it would pass every "gamma < minimum" comparison.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


@dataclass(frozen=True, init=False)
class SecAggConfig:
    """Parameters of one secure-aggregation round.

    Attributes:
        num_clients: n, the clients selected for the round, with ids ``1..n``.
        threshold: t, the number of shares that reconstruct a secret, and the fewest clients of a
            neighbourhood (the client itself included) that must remain for it to reveal shares.
            Omitted: the smallest safe value for the graph and threat model.
        vector_length: m, the number of field elements each client contributes.
        modulus: p, a prime from ``SUPPORTED_PRIMES``.
        graph: ``"complete"`` (SecAgg) or ``"harary"`` (SecAgg+). ``"harary"`` with neither
            ``degree`` nor ``threshold`` takes both from ``find_parameters`` (and becomes
            ``"complete"`` when the threat model leaves no sparser choice).
        degree: k, the number of neighbours of each client in the Harary graph (even).
        mode: ``"semi_honest"`` or ``"active"`` (see ``SecurityMode``).
        collusion_fraction: gamma, the fraction of **all n clients** that may collude with the
            server (DESIGN.md section 3).
        dropout_fraction: delta, the fraction of the n clients expected to drop out; sizes the
            SecAgg+ graph so every client keeps t surviving neighbours (except with 2^-20).
        assessment: the probabilities behind k and t (``secagg.parameters.GraphParameters``).

    Rules (refused with the numbers in the message): complete graph t >= floor(gamma*n) + 2
    (two honest inputs in any released sum), active mode also t > (1+gamma)*n/2; Harary graph:
    the security events of ``secagg.parameters`` at most 2^-41 each and the correctness event at
    most 2^-20, over the random labelling.
    """

    num_clients: int
    threshold: int
    vector_length: int
    modulus: int = DEFAULT_MODULUS
    graph: GraphKind = "complete"
    degree: int | None = None
    mode: SecurityMode | str = SecurityMode.SEMI_HONEST
    collusion_fraction: float = 1 / 3
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION
    assessment: GraphParameters = field(init=False, compare=False, repr=False)

    def __init__(
        self,
        num_clients: int,
        threshold: int | None = None,
        vector_length: int | None = None,
        modulus: int = DEFAULT_MODULUS,
        graph: GraphKind = "complete",
        degree: int | None = None,
        mode: SecurityMode | str = SecurityMode.SEMI_HONEST,
        collusion_fraction: float = 1 / 3,
        dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
    ) -> None:
        values = {
            "num_clients": num_clients,
            "threshold": threshold,
            "vector_length": vector_length,
            "modulus": modulus,
            "graph": graph,
            "degree": degree,
            "mode": mode,
            "collusion_fraction": collusion_fraction,
            "dropout_fraction": dropout_fraction,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        n, m = self.num_clients, self.vector_length
        if m is None:
            raise ValueError("vector_length is required")
        for name, value in (("num_clients", n), ("vector_length", m)):
            if not _is_int(value):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if self.threshold is not None and not _is_int(self.threshold):
            raise ValueError(f"threshold must be an int, got {self.threshold!r}")
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
        check_fraction("collusion_fraction", self.collusion_fraction)
        check_fraction("dropout_fraction", self.dropout_fraction)
        if self.graph == "complete":
            if self.degree not in (None, n - 1):
                raise ValueError(f"the complete graph has degree n-1={n - 1}; got degree={self.degree}")
            object.__setattr__(self, "degree", None)
        elif self.graph == "harary":
            if self.degree is None and self.threshold is None:
                self._use_finder()
            elif self.degree is None:
                raise ValueError(
                    "the harary graph needs its degree with an explicit threshold (or give neither "
                    "and the parameter finder picks both)"
                )
        else:
            raise ValueError(f"graph must be 'complete' or 'harary', got {self.graph!r}")
        if self.graph == "harary":
            k = self.degree
            if k is None or not _is_int(k) or k < 2 or k % 2 or k >= n:
                raise ValueError(f"the harary graph needs an even degree k with 2 <= k < n={n}, got {k!r}")
        if self.threshold is None:
            low = self.minimum_safe_threshold()
            if self.graph == "harary" and low > self.neighbourhood_size:
                raise ValueError(
                    f"degree k={self.degree} is too small for gamma={self.collusion_fraction:.4g} of "
                    f"n={n} colluding: the smallest safe threshold, t={low}, exceeds the neighbourhood "
                    f"of {self.neighbourhood_size}. "
                    + _suggestion(n, self.collusion_fraction, self.dropout_fraction, self.security_mode.value)
                )
            object.__setattr__(self, "threshold", low)
        self._check_threshold()

    def _use_finder(self) -> None:
        found = find_parameters(
            self.num_clients, self.collusion_fraction, self.dropout_fraction, self.security_mode.value
        )
        object.__setattr__(self, "graph", found.graph)
        object.__setattr__(self, "degree", found.degree if found.graph == "harary" else None)
        object.__setattr__(self, "threshold", found.threshold)

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
        """The smallest threshold the security rules accept for this graph (correctness aside).

        Complete graph: floor(gamma*n) + 2, and in the active mode more than (1+gamma)*n/2.
        Harary graph: the smallest t whose security events stay within 2^-41 for this degree.
        """
        gamma, active = self.collusion_fraction, self.is_active
        if self.graph == "complete":
            return complete_threshold(self.num_clients, gamma, active)
        assert self.degree is not None
        return harary_threshold(self.num_clients, self.degree, gamma, active)

    def _check_threshold(self) -> None:
        t, n, size = self.threshold, self.num_clients, self.neighbourhood_size
        gamma, delta, active = self.collusion_fraction, self.dropout_fraction, self.is_active
        if t < 2:
            raise ValueError(f"threshold must be at least 2, got t={t}")
        if t > size:
            where = "clients" if self.graph == "complete" else f"neighbourhood (degree {self.degree} + 1)"
            raise ValueError(f"threshold t={t} exceeds the {size} {where} that hold shares")
        if self.graph == "complete":
            assessment = assess_complete(n, t, gamma, delta, active)
            low = self.minimum_safe_threshold()
            if t < low:
                rule = "floor(gamma*n)+2 and (1+gamma)*n/2" if active else "floor(gamma*n)+2"
                raise ValueError(
                    f"threshold t={t} is unsafe in {self.security_mode.value} mode: with gamma={gamma:.4g} "
                    f"of n={n} clients colluding it must be at least {rule}, so t >= {low}"
                )
        else:
            assert self.degree is not None
            assessment = assess_harary(n, self.degree, t, gamma, delta, active)
            if not (assessment.secure and assessment.correct):
                what = "unsafe" if not assessment.secure else "too fragile (rounds would fail)"
                raise ValueError(
                    f"threshold t={t} with degree k={self.degree} is {what} in "
                    f"{self.security_mode.value} mode: {assessment.describe()}; the bounds are "
                    f"2^-{SECURITY_BITS + 1} per security event and 2^-{CORRECTNESS_BITS} for correctness. "
                    f"{_suggestion(n, gamma, delta, self.security_mode.value)}"
                )
        object.__setattr__(self, "assessment", assessment)

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


def threat_model_shortfall(
    config: SecAggConfig, min_collusion_fraction: float, min_dropout_fraction: float
) -> str | None:
    """Why a client must refuse ``config`` under its own threat model, or None if it may join.

    The server chooses gamma and delta, and a config is only checked against the values it
    states. A client states the least it assumes: at least ``min_collusion_fraction`` of the
    round's clients collude with the server (gamma sizes t, so a lower claim lowers t), and at
    least ``min_dropout_fraction`` drop out (in SecAgg+, a k sized for fewer dropouts can leave the
    honest survivors' graph disconnected, and the server then learns the sum of each part). Only
    the security bounds count here; a config that is merely fragile at the client's delta (rounds
    may fail for lack of shares) is the server's risk, not the client's.
    """
    gamma, delta = config.collusion_fraction, config.dropout_fraction
    if gamma < min_collusion_fraction:
        return (
            f"the config assumes a collusion fraction of {gamma:.4g}, this client requires at "
            f"least {min_collusion_fraction:.4g}"
        )
    if config.graph != "harary" or delta >= min_dropout_fraction:
        return None  # the complete graph's rules do not depend on delta
    assert config.degree is not None
    assessment = assess_harary(
        config.num_clients, config.degree, config.threshold, gamma, min_dropout_fraction, config.is_active
    )
    if assessment.secure:
        return None
    return (
        f"the SecAgg+ graph is sized for a dropout fraction of {delta:.4g}; this client assumes at "
        f"least {min_dropout_fraction:.4g}, and then {assessment.describe()} (the security bound "
        f"is 2^-{SECURITY_BITS + 1} per event)"
    )
