"""Transport-level messages: registration, round start and end, client abort, finish.

The SecAgg protocol messages themselves are ``secagg.messages``; these frozen dataclasses are
what the transport adds around them. ``codec`` turns both into frames and back.

Registration (one per connection)::

    server -> Challenge(nonce)                  on connect
    client -> Hello(client_id, proof, terms)    proof: Ed25519 over registration_payload(), active
                                                mode; terms: what the client was built for
    server -> Welcome(client_id, ...)           the connection is now bound to client_id

The server compares the client's ``Terms`` (task, model dimension, digest of the initial model,
quantization) with its own after the identity proof and refuses a mismatch, naming the field and
both values (``terms_mismatch``); the wire version is the envelope's ``v`` (``codec``).

Each FedAvg round: ``RoundStart`` (config, fresh nonce, global model), the SecAgg rounds, then
``RoundEnd``. ``Finished`` ends the federation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Literal

import numpy as np
import numpy.typing as npt

from fedavg_core.quantize import QuantizationConfig
from secagg import SecAggConfig

FloatVector = npt.NDArray[np.float64]
Setting = bool | int | float | str
CHALLENGE_SIZE = 32
LOCAL_ID = "local_id"
"""The ``RoundStart.settings`` key that gives a cohort member its round-local SecAgg id (1..n);
a client's stable id (``Hello``) stays the same across rounds."""


def registration_payload(challenge: bytes, client_id: int) -> bytes:
    """What a client signs with its Ed25519 identity key to register as ``client_id``."""
    return b"secagg/transport/v1/register" + challenge + client_id.to_bytes(4, "big")


def model_digest(vector: npt.ArrayLike) -> bytes:
    """SHA-256 of a model vector as little-endian float64 (the initial model's fingerprint)."""
    return sha256(np.ascontiguousarray(vector, dtype="<f8").tobytes()).digest()


@dataclass(frozen=True)
class QuantizationTerms:
    """The federation-wide quantization: clip, bit width and weight cap (the modulus and the
    headroom follow from each round's cohort size)."""

    clip: float
    bits: int
    max_weight: int

    @classmethod
    def of(cls, quantization: QuantizationConfig) -> QuantizationTerms:
        """The terms of a round's quantization config."""
        return cls(float(quantization.clip), quantization.bits, quantization.max_weight)

    def __str__(self) -> str:
        return f"clip={self.clip:g} bits={self.bits} max_weight={self.max_weight}"

    @classmethod
    def parse(cls, text: str) -> QuantizationTerms:
        """The inverse of ``str``: ``"clip=2 bits=16 max_weight=1024"`` (commas also separate)."""
        fields: dict[str, str] = {}
        for part in text.replace(",", " ").split():
            name, sep, value = part.partition("=")
            if not sep or name not in ("clip", "bits", "max_weight") or name in fields:
                raise ValueError(f"expected clip=C bits=B max_weight=W, got {text!r}")
            fields[name] = value
        if len(fields) != 3:
            raise ValueError(f"expected clip=C bits=B max_weight=W, got {text!r}")
        return cls(float(fields["clip"]), int(fields["bits"]), int(fields["max_weight"]))


@dataclass(frozen=True)
class Terms:
    """What the server and a client must agree on before the client joins.

    A client leaves a field None when it has no expectation (e.g. a trainer that cannot build
    the initial model), a server when it does not know (an embedded server given no task name).

    Attributes:
        task: the app, e.g. ``transport.apps:digits_mlp``.
        dimension: the number of model parameters.
        model_digest: ``model_digest`` of the initial global model (32 bytes).
        quantization: clip, bits and weight cap.
    """

    task: str | None = None
    dimension: int | None = None
    model_digest: bytes | None = None
    quantization: QuantizationTerms | None = None

    def __post_init__(self) -> None:
        if self.model_digest is not None and len(self.model_digest) != 32:
            raise ValueError("model_digest must be 32 bytes (SHA-256)")
        if self.dimension is not None and self.dimension < 1:
            raise ValueError(f"dimension must be positive, got {self.dimension}")


def _shown(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()[:16]  # enough to tell two digests apart; fits a close reason
    if isinstance(value, str):
        return repr(value[:40])
    return str(value)


def terms_mismatch(server: Terms, client: Terms) -> str | None:
    """The first field the client declared differently from the server, as ``"field: server X,
    client Y"``; None when they agree (a field either side left None is not compared)."""
    for name in ("task", "dimension", "model_digest", "quantization"):
        ours, theirs = getattr(server, name), getattr(client, name)
        if ours is not None and theirs is not None and ours != theirs:
            return f"{name}: server {_shown(ours)}, client {_shown(theirs)}"
    return None


@dataclass(frozen=True)
class Challenge:
    """Server -> client on connect: a fresh nonce to sign, and what the federation is."""

    nonce: bytes
    num_clients: int
    active: bool


@dataclass(frozen=True)
class Hello:
    """Client -> server: the id to register; in the active mode, a signature over the challenge;
    the terms this client was built for."""

    client_id: int
    signature: bytes | None = None
    terms: Terms = field(default_factory=Terms)


@dataclass(frozen=True)
class Welcome:
    """Server -> client: registration accepted; the next FedAvg round and the total."""

    client_id: int
    next_round: int
    rounds: int


@dataclass(frozen=True, eq=False)
class RoundStart:
    """Server -> client: one FedAvg round with one SecAgg round.

    ``nonce`` comes from ``os.urandom`` on the server; with ``config`` (and ``roster``) it fixes
    the session id. ``parameters`` is the global model; ``settings`` the local-training knobs.
    """

    config: SecAggConfig
    nonce: bytes
    roster: Mapping[int, bytes] | None
    quantization: QuantizationConfig
    parameters: FloatVector
    settings: Mapping[str, Setting] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundEnd:
    """Server -> client: how the round ended (``completed`` or ``aborted``) and why."""

    status: Literal["completed", "aborted"]
    reason: str = ""
    survivors: int = 0
    accuracy: float | None = None


@dataclass(frozen=True)
class ClientAbort:
    """Client -> server: this client refuses the round (the server broke a protocol rule)."""

    sender: int
    reason: str


@dataclass(frozen=True)
class Finished:
    """Server -> client: the federation is over; do not reconnect."""

    rounds_completed: int
