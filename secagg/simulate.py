"""An in-memory federation: one server, n clients, a router between them (public API).

``simulate`` runs one round of SecAgg / SecAgg+ with every message passed in memory, which is
what the tests, the benchmarks and the FedAvg loop's secure aggregator share. Clients listed in
``drop[round]`` go silent from that round on; a client that aborts (an honest client refusing a
round) goes silent too. The server advances when every live client has answered.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .client import RandomBytes, SecAggClient
from .config import SecAggConfig
from .errors import AbortedError, LocalProtocolError
from .primitives import signatures
from .primitives.field import FieldVector
from .server import Drop, SecAggServer
from .session import NONCE_SIZE, RoundSetup
from .state import PROTOCOL_ROUNDS, Round
from .unmasking import JobExecutor

ROUND_NAMES = tuple(r.value for r in PROTOCOL_ROUNDS)


def seeded_random_bytes(seed: int | bytes, label: str) -> RandomBytes:
    """A deterministic ``random_bytes`` (AES-256-CTR keyed by seed and label). For tests and
    reproducible simulations only: never use a guessable seed for a real round."""
    seed_bytes = seed if isinstance(seed, bytes) else str(seed).encode()
    key = hashlib.sha256(b"secagg/seeded-random/v1" + seed_bytes + b"|" + label.encode()).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def random_bytes(n: int) -> bytes:
        return encryptor.update(bytes(n))

    return random_bytes


@dataclass
class SimulationResult:
    """What one simulated round produced.

    Attributes:
        total: the sum mod p of the inputs of exactly the clients in ``survivors``.
        survivors: U3, the clients whose inputs are in ``total``.
        dropped: clients the server dropped, with the round and reason.
        aborted_clients: honest clients that refused to continue, with the reason.
        rounds: U1..U5 (the clients whose message was accepted in each round).
        client_seconds / server_seconds: per-round compute time, when a ``timer`` was given.
    """

    total: FieldVector
    survivors: frozenset[int]
    dropped: dict[int, Drop]
    aborted_clients: dict[int, AbortedError]
    rounds: dict[str, frozenset[int]]
    client_seconds: dict[str, dict[int, float]] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)


def _check_drop(drop: Mapping[str, Iterable[int]] | None) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for name, ids in (drop or {}).items():
        if name not in ROUND_NAMES:
            raise ValueError(f"unknown round {name!r} in drop; rounds are {', '.join(ROUND_NAMES)}")
        out[name] = set(ids)
    return out


def simulate(
    config: SecAggConfig,
    inputs: Mapping[int, object],
    drop: Mapping[str, Iterable[int]] | None = None,
    *,
    seed: int | bytes | None = None,
    observer: Callable[[object], None] | None = None,
    timer: Callable[[], float] | None = None,
    workers: int | None = None,
    executor: JobExecutor | None = None,
) -> SimulationResult:
    """Run one round in memory and return the unmasked sum.

    Args:
        config: the round parameters; client ids are 1..n.
        inputs: client id -> its input vector (m integers in [0, p)), for every id 1..n.
        drop: round name -> clients that go silent from that round on.
        seed: makes every key, nonce and mask reproducible (tests); default: ``os.urandom``.
        observer: called with every message crossing the in-memory link, both directions.
        timer: a clock (e.g. ``time.perf_counter``) to time each party's work per round.
        workers: processes for the server's final mask removal (None: automatic, see
            ``secagg.unmasking.default_workers``; 1: in this process).
        executor: where the server's mask removal runs (see ``SecAggServer``).

    Raises:
        AbortedError: the server could not complete the round (fewer than t left).
    """
    ids = set(range(1, config.num_clients + 1))
    if set(inputs) != ids:
        raise ValueError(f"inputs must be given for exactly the client ids 1..{config.num_clients}")
    silent_from = _check_drop(drop)
    for name, dropped_ids in silent_from.items():
        if not dropped_ids <= ids:
            raise ValueError(f"drop[{name!r}] names unknown clients {sorted(dropped_ids - ids)[:5]}")

    def rng(label: str) -> RandomBytes:
        return os.urandom if seed is None else seeded_random_bytes(seed, label)

    identities: dict[int, Ed25519PrivateKey] = {}
    roster = None
    if config.is_active:
        identities = {i: signatures.generate_identity(rng(f"identity/{i}")(32)) for i in sorted(ids)}
        roster = {i: signatures.identity_public_bytes(k) for i, k in identities.items()}
    setup = RoundSetup(config, rng("nonce")(NONCE_SIZE), roster)
    server = SecAggServer(setup, workers=workers, executor=executor)
    clients = {
        i: SecAggClient(setup, i, inputs[i], random_bytes=rng(f"client/{i}"), identity_key=identities.get(i))
        for i in sorted(ids)
    }
    silent: set[int] = set()
    aborted: dict[int, AbortedError] = {}
    client_seconds: dict[str, dict[int, float]] = {}
    server_seconds: dict[str, float] = {}

    def server_call(name: str, call: Callable[[], object]) -> object:
        if timer is None:
            return call()
        begin = timer()
        try:
            return call()
        finally:
            server_seconds[name] = server_seconds.get(name, 0.0) + timer() - begin

    requests: Mapping[int, object] = {}
    for current in PROTOCOL_ROUNDS:
        silent |= silent_from.get(current.value, set())  # also a round the mode skips: silent after it
        if current is Round.CONSISTENCY_CHECK and not config.is_active:
            continue
        times = client_seconds.setdefault(current.value, {}) if timer is not None else {}
        for i in sorted(ids if current is Round.ADVERTISE_KEYS else requests):
            if i in silent:
                continue
            client = clients[i]
            request = requests.get(i)
            if request is not None and observer is not None:
                observer(request)
            begin = timer() if timer is not None else 0.0
            try:
                reply = client.start() if request is None else client.receive(request)  # type: ignore[arg-type]
            except AbortedError as exc:
                aborted[i] = exc
                silent.add(i)
                continue
            if timer is not None:
                times[i] = timer() - begin
            if observer is not None:
                observer(reply)
            server_call(current.value, lambda r=reply: server.receive(r))  # type: ignore[misc]
        requests = server_call(current.value, server.advance)  # type: ignore[assignment]
    if server.result is None:  # pragma: no cover - advance() raises instead
        raise LocalProtocolError("server finished without a result")
    return SimulationResult(
        total=server.result,
        survivors=server.survivors,
        dropped=dict(server.dropped),
        aborted_clients=aborted,
        rounds={r.value: ids_ for r, ids_ in server.closed_rounds.items()},
        client_seconds=client_seconds,
        server_seconds=server_seconds,
    )
