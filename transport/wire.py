"""Transport-level messages: registration, round start and end, client abort, finish.

The SecAgg protocol messages themselves are ``secagg.messages``; these frozen dataclasses are
what the transport adds around them. ``codec`` turns both into frames and back.

Registration (one per connection)::

    server -> Challenge(nonce)           on connect
    client -> Hello(client_id, proof)    proof: Ed25519 over registration_payload(), active mode
    server -> Welcome(client_id, ...)    the connection is now bound to client_id

Each FedAvg round: ``RoundStart`` (config, fresh nonce, global model), the SecAgg rounds, then
``RoundEnd``. ``Finished`` ends the federation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Challenge:
    """Server -> client on connect: a fresh nonce to sign, and what the federation is."""

    nonce: bytes
    num_clients: int
    active: bool


@dataclass(frozen=True)
class Hello:
    """Client -> server: the id to register; in the active mode, a signature over the challenge."""

    client_id: int
    signature: bytes | None = None


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
