"""The federation server: websockets in, ``SecAggServer`` in the middle, deadlines around it.

Like the ``websockets`` library's own asyncio layer over its sans-I/O ``protocol.py``, this module
only decodes frames, hands messages to the state machine (``secagg.SecAggServer``), encodes what
it returns, and decides *when* to advance. All protocol rules live in ``secagg``.

One connection is bound to one client id (``Hello``; in the active mode proven with the client's
Ed25519 identity key from the roster). Each FedAvg round is one SecAgg round:

1. a fresh nonce from ``os.urandom`` and a ``RoundStart`` (config, nonce, global model) to every
   connected client; they train locally and advertise keys;
2. each SecAgg phase ends when every expected reply is in, or at its deadline if at least t
   replied (else the round aborts, releasing nothing); clients that missed it are cut off;
3. the sum over U3 is decoded (``fedavg_core.decode_weighted_sum``) into the weighted mean
   update, the global model moves, is evaluated, and is checkpointed atomically.

A client that sends a malformed, oversized, wrong-round, duplicate or impersonating frame, or
that the protocol drops, is cut off: its websocket is closed with a ``CloseCode`` and the reason
is logged and recorded in the round's ``dropped``; the round goes on without it.

Decisions the design left open:

- A round's participants are the clients connected when it starts. A client that connects (or
  reconnects after a drop) during a round waits for the next one; the SecAgg state of a round is
  bound to the connection that received its ``RoundStart``.
- Before each round the server waits until ``min_clients`` (default: all N) are connected, or
  ``wait_timeout`` has passed with at least t connected.
- An aborted round leaves the global model unchanged and still counts as one of ``rounds``.
- The checkpoint is written before the clients hear ``RoundEnd``, so no round a client saw
  complete can be lost; a round interrupted by a crash is run again, with a fresh nonce.
- A cut-off client may reconnect and join a later round; nothing is banned for good.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fedavg_core import QuantizationConfig, SecureAggregator, decode_weighted_sum
from fedavg_core.vectorize import FloatVector
from secagg import AbortedError, Round, RoundSetup, SecAggConfig, SecAggServer
from secagg.config import GraphKind
from secagg.primitives import signatures
from secagg.state import rounds_of

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint, vector_digest
from .codec import FrameLimits, decode_from_client, encode
from .errors import CloseCode, DecodeError
from .records import DropRecord, RoundReport, ServerEvent
from .tasks import ServerModel, TrainingSettings
from .wire import (
    CHALLENGE_SIZE,
    Challenge,
    ClientAbort,
    Finished,
    Hello,
    RoundEnd,
    RoundStart,
    Welcome,
    registration_payload,
)

log = logging.getLogger("transport.server")
_T = TypeVar("_T")

MAX_CLOSE_REASON = 120  # a close frame's reason is at most 123 UTF-8 bytes
REGISTRATION_MAX_FRAME = 1024
"""The largest frame an unregistered peer may send (a hello is under 200 bytes); the round's
config-derived limit applies only once the connection is bound to a client id."""


DEFAULT_BITS = 16
"""Quantization bits when neither bits nor modulus is set (error per element about clip / 2**15)."""


@dataclass(frozen=True)
class FederationSettings:
    """Everything the server decides for the federation.

    Attributes:
        num_clients: N, client ids are 1..N.
        rounds: FedAvg rounds to run in total (a resumed server counts the finished ones).
        threshold, graph, degree, mode: the SecAgg round parameters (threshold None: the rule of
            ``fedavg_core.SecureAggregator``, a majority raised to what the mode requires).
        clip, max_weight, bits, modulus: quantization (see ``fedavg_core.QuantizationConfig``).
            With neither bits nor modulus given, updates are quantized to ``DEFAULT_BITS`` bits
            and the modulus is the smallest supported prime with headroom for N clients, which
            keeps masked inputs small on the wire (they travel at log2(p) bits per element).
        training: local training knobs sent to the clients.
        server_learning_rate: the global model moves by this times the mean update.
        phase_timeout: seconds for each SecAgg phase; ``train_timeout`` is added to round 0.
        hello_timeout: seconds a new connection has to register.
        min_clients: start a round as soon as this many are connected (None: all N) ...
        wait_timeout: ... or when this many seconds passed and at least t are connected.
    """

    num_clients: int
    rounds: int
    threshold: int | None = None
    graph: GraphKind = "complete"
    degree: int | None = None
    mode: str = "semi_honest"
    clip: float = 1.0
    max_weight: int = 1
    bits: int | None = None
    modulus: int | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)
    server_learning_rate: float = 1.0
    phase_timeout: float = 30.0
    train_timeout: float = 120.0
    hello_timeout: float = 10.0
    min_clients: int | None = None
    wait_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        for name in ("phase_timeout", "train_timeout", "hello_timeout", "wait_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.min_clients is not None and not 1 <= self.min_clients <= self.num_clients:
            raise ValueError(f"min_clients must be in 1..{self.num_clients}")

    def _aggregator(self) -> SecureAggregator:
        return SecureAggregator(
            clip=self.clip,
            max_weight=self.max_weight,
            bits=DEFAULT_BITS if self.bits is None and self.modulus is None else self.bits,
            modulus=self.modulus,
            threshold=self.threshold,
            graph=self.graph,
            degree=self.degree,
            mode=self.mode,
        )

    def quantization(self) -> QuantizationConfig:
        """How clients encode their updates (refuses settings whose sum could wrap)."""
        return self._aggregator().quantization(self.num_clients)

    def secagg_config(self, dimension: int) -> SecAggConfig:
        """The SecAgg parameters for a model of ``dimension`` (plus one weight element).

        Default threshold: a majority of the neighbourhood N (all n clients, or k + 1 over the
        harary graph), raised to what the security mode requires, at most N.
        """
        modulus = self.quantization().modulus

        def config(threshold: int) -> SecAggConfig:
            m = dimension + 1
            return SecAggConfig(self.num_clients, threshold, m, modulus, self.graph, self.degree, self.mode)

        if self.threshold is not None:
            return config(self.threshold)
        size = self.num_clients if self.graph == "complete" else (self.degree or 0) + 1
        safe = config(size).minimum_safe_threshold()  # t = N passes whenever any t does
        return config(min(size, max(size // 2 + 1, safe)))


@dataclass(frozen=True)
class RoundOutcome:
    """What a round produced, beyond its report (for auditors such as the demo)."""

    start_vector: FloatVector
    mean_update: FloatVector | None


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    client_id: int
    closed: bool = False
    closing: asyncio.Task[None] | None = None  # our close(code, reason), once cut off


@dataclass(eq=False)
class _Round:
    number: int
    setup: RoundSetup
    secagg: SecAggServer
    members: set[int]
    report: RoundReport
    phase: str = Round.ADVERTISE_KEYS.value


class FederationServer:
    """Runs FedAvg rounds with secure aggregation over websockets.

    Args:
        model: the server's side of the task (initial vector, evaluation).
        settings: the federation's parameters.
        roster: active mode: client id -> raw Ed25519 identity public key for ids 1..N.
        checkpoint_path: where to checkpoint after each round and resume from (None: nowhere).
        on_event: called with every ``ServerEvent`` (progress display, logs).
        on_round: called with each round's report and outcome before it is checkpointed; it may
            fill in ``report.max_abs_diff``.
    """

    def __init__(
        self,
        model: ServerModel,
        settings: FederationSettings,
        *,
        roster: Mapping[int, bytes] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        on_event: Callable[[ServerEvent], None] | None = None,
        on_round: Callable[[RoundReport, RoundOutcome], None] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.quantization = settings.quantization()
        self.config = settings.secagg_config(model.dimension)
        if self.quantization.modulus != self.config.modulus:  # pragma: no cover - same source
            raise ValueError("quantization and SecAgg moduli differ")
        self.roster = dict(roster) if roster is not None else None
        RoundSetup(self.config, bytes(32), self.roster)  # validates the roster against the mode
        self.limits = FrameLimits.for_server(self.config)
        self.checkpoint_path = checkpoint_path
        self._on_event = on_event
        self._on_round = on_round
        self.vector: FloatVector = model.initial_vector()
        self.next_round = 1
        self.reports: list[RoundReport] = []
        if checkpoint_path is not None:
            saved = load_checkpoint(checkpoint_path, model.dimension)
            if saved is not None:
                self.vector, self.next_round = saved.vector, saved.next_round
                try:
                    self.reports = [RoundReport.from_json(r) for r in saved.records]
                except (TypeError, ValueError, KeyError) as exc:
                    raise CheckpointError(f"{checkpoint_path}: malformed round records ({exc})") from None
        self.initial_accuracy = model.evaluate(self.vector)
        self._connections: dict[int, _Connection] = {}
        self._round: _Round | None = None
        self._changed = asyncio.Event()
        self._server: Server | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._finished = False
        # All SecAgg work (checking and filing messages, advance(), encoding, decoding the sum)
        # runs in this one thread, never on the event loop, so pings are answered meanwhile.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="secagg-server")

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """Listen on ``host:port`` (port 0: a free port, see ``port``); wss:// with ``ssl_context``."""
        self._server = await serve(
            self._handle,
            host,
            port,
            ssl=ssl_context,
            max_size=REGISTRATION_MAX_FRAME,  # raised to the round's limit once registered
            compression=None,  # masked vectors are incompressible; no decompression bombs
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            backlog=max(128, 2 * self.config.num_clients),
        )
        log.info("listening on %s:%d (%s)", host, self.port, "wss" if ssl_context else "ws")
        if self.next_round > 1:
            self._emit("resumed", detail=f"model {vector_digest(self.vector)}")
            log.info(
                "resumed from checkpoint at round %d, model %s", self.next_round, vector_digest(self.vector)
            )

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def run(self) -> list[RoundReport]:
        """Run the remaining rounds, tell the clients the federation is over; the reports."""
        if self._server is None:
            raise RuntimeError("call start() first")
        while self.next_round <= self.settings.rounds:
            await self._wait_for_clients()
            report = await self._run_round(self.next_round)
            self.reports.append(report)
            self.next_round += 1
            if self.checkpoint_path is not None:
                checkpoint = Checkpoint(self.next_round, self.vector, [r.to_json() for r in self.reports])
                save_checkpoint(self.checkpoint_path, checkpoint)
            # Checkpoint first, then tell the clients: a round they saw complete is never lost.
            members = self._round.members if self._round is not None else set()
            end = RoundEnd(report.status, report.reason, len(report.survivors), report.accuracy)
            await self._broadcast(members, end, report.round)
            self._round = None
            self._emit("round_end", report.round, detail=report.status, accuracy=report.accuracy)
        self._finished = True
        done = self.next_round - 1
        await self._broadcast(list(self._connections), Finished(done))
        await self._close_all(CloseCode.NORMAL, "federation finished")
        self._emit("finished", done)
        return self.reports

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> list[RoundReport]:
        """``start``, ``run``, and ``stop`` whatever happens (also when cancelled by a signal)."""
        await self.start(host, port, ssl_context)
        try:
            return await self.run()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Close every connection (1001, going away) and stop listening. Idempotent."""
        await self._close_all(CloseCode.GOING_AWAY, "server shutting down")
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._worker.shutdown(wait=False, cancel_futures=True)

    # -- connections ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        connection = await self._register(ws)
        if connection is None:
            return
        reason, code = "connection closed", None
        try:
            async for data in ws:
                cut = await self._in_worker(self._on_frame, connection, data)
                if cut is not None:
                    self._cut_off(connection, *cut)
                self._changed.set()
                if connection.closed:
                    # Returning would let websockets close with 1000; send our code first.
                    if connection.closing is not None:
                        await asyncio.shield(connection.closing)
                    return
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                code = exc.sent.code
                reason = f"sent a frame above the limit of {self.limits.max_frame_bytes} bytes"
            elif exc.rcvd is None and exc.sent is None:
                code = 1006  # RFC 6455: abnormal closure, no close frame
                reason = "connection lost without a close frame (process killed or network down)"
            else:
                code = exc.sent.code if exc.sent is not None else exc.rcvd.code  # type: ignore[union-attr]
                reason = f"connection failed ({exc})"
        else:
            code = ws.close_code
            reason = f"client closed the connection (code {code}: {ws.close_reason or 'no reason'})"
        self._forget(connection, code, reason)

    async def _register(self, ws: ServerConnection) -> _Connection | None:
        challenge = os.urandom(CHALLENGE_SIZE)
        try:
            await ws.send(encode(Challenge(challenge, self.config.num_clients, self.config.is_active)))
            data = await asyncio.wait_for(ws.recv(), self.settings.hello_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            await self._refuse(ws, CloseCode.REGISTRATION_FAILED, "no hello in time")
            return None
        except ConnectionClosed:
            return None
        try:
            hello = decode_from_client(data, self.limits).message
        except DecodeError as exc:
            await self._refuse(ws, CloseCode.INVALID_DATA, f"malformed hello: {exc}")
            return None
        if not isinstance(hello, Hello):
            await self._refuse(ws, CloseCode.POLICY_VIOLATION, f"expected hello, got {type(hello).__name__}")
            return None
        client_id = hello.client_id
        if not 1 <= client_id <= self.config.num_clients:
            await self._refuse(ws, CloseCode.REGISTRATION_FAILED, f"unknown client id {client_id}")
            return None
        if self.roster is not None:
            payload = registration_payload(challenge, client_id)
            if not signatures.verify(self.roster[client_id], hello.signature, payload):
                await self._refuse(
                    ws, CloseCode.REGISTRATION_FAILED, f"identity proof for client {client_id} failed"
                )
                return None
        if client_id in self._connections:
            await self._refuse(ws, CloseCode.ID_IN_USE, f"client id {client_id} is already connected")
            return None
        if self._finished:
            await ws.send(encode(Finished(self.next_round - 1)))
            await ws.close(CloseCode.NORMAL, "federation finished")
            return None
        ws.protocol.max_message_size = self.limits.max_frame_bytes
        connection = _Connection(ws, client_id)
        self._connections[client_id] = connection
        try:
            await ws.send(encode(Welcome(client_id, self.next_round, self.settings.rounds)))
        except ConnectionClosed:
            self._forget(connection, 1006, "connection lost while registering")
            return None
        log.info("client %d registered from %s", client_id, ws.remote_address)
        self._emit("registered", client=client_id)
        self._changed.set()
        return connection

    async def _refuse(self, ws: ServerConnection, code: CloseCode, reason: str) -> None:
        log.warning("refused a connection from %s: %s (close code %d)", ws.remote_address, reason, code)
        await ws.close(code, reason[:MAX_CLOSE_REASON])

    async def _in_worker(self, function: Callable[..., _T], *args: object) -> _T:
        """Run ``function(*args)`` in the SecAgg worker thread: one thread, so the round's state
        is touched by one thread at a time, and the event loop stays free to answer pings."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    def _on_frame(self, connection: _Connection, data: str | bytes) -> tuple[CloseCode, str] | None:
        """Check one frame against the connection's binding and the round, then feed SecAgg.

        Runs in the worker thread; returns the close code and reason when the sender is cut off.
        """
        current = self._round
        if current is not None and connection.client_id in current.members:
            current.report.bytes_up += len(data)
        try:
            frame = decode_from_client(data, self.limits)
        except DecodeError as exc:
            return (CloseCode.INVALID_DATA, f"malformed frame: {exc}")
        message, client_id = frame.message, connection.client_id
        if isinstance(message, Hello):
            return (CloseCode.POLICY_VIOLATION, "hello on a registered connection")
        sender = getattr(message, "sender", None)
        if sender != client_id:
            return (
                CloseCode.POLICY_VIOLATION,
                f"impersonation: message claims sender {sender} on the connection of client {client_id}",
            )
        if current is None or client_id not in current.members:
            return (CloseCode.POLICY_VIOLATION, "protocol message while not in a round")
        if frame.round != current.number or frame.session != current.setup.session_id:
            return (
                CloseCode.POLICY_VIOLATION,
                f"wrong round: message for round {frame.round} (session {frame.session.hex()[:8] or '-'}), "
                f"current round {current.number} (session {current.setup.session_id.hex()[:8]})",
            )
        if isinstance(message, ClientAbort):
            log.warning("client %d aborted round %d: %s", client_id, current.number, message.reason)
            current.members.discard(client_id)
            current.report.dropped.append(
                DropRecord(client_id, current.phase, f"client aborted: {message.reason}", None)
            )
            return None
        secagg = current.secagg
        rejected = len(secagg.rejected)
        secagg.receive(message)
        drop = secagg.dropped.get(client_id)
        if drop is not None:
            return (CloseCode.POLICY_VIOLATION, f"dropped in {drop.round.value}: {drop.reason}")
        if len(secagg.rejected) > rejected:
            return (CloseCode.POLICY_VIOLATION, f"rejected: {secagg.rejected[-1].reason}")
        return None

    def _cut_off(self, connection: _Connection, code: CloseCode, reason: str) -> None:
        """Close a misbehaving or late client's connection and record why."""
        if connection.closed:
            return
        self._forget(connection, int(code), reason)
        task = asyncio.get_running_loop().create_task(connection.ws.close(code, reason[:MAX_CLOSE_REASON]))
        connection.closing = task
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _forget(self, connection: _Connection, code: int | None, reason: str) -> None:
        """The connection is gone: unbind its id, take it out of the round, record why."""
        if connection.closed:
            return
        connection.closed = True
        client_id = connection.client_id
        if self._connections.get(client_id) is connection:
            del self._connections[client_id]
        current = self._round
        if current is not None and client_id in current.members:
            current.members.discard(client_id)
            current.report.dropped.append(DropRecord(client_id, current.phase, reason, code))
            log.warning(
                "round %d, %s: client %d dropped: %s (close code %s)",
                current.number,
                current.phase,
                client_id,
                reason,
                code,
            )
        else:
            log.log(
                logging.WARNING if code not in (1000, 1001) else logging.INFO,
                "client %d left: %s (close code %s)",
                client_id,
                reason,
                code,
            )
        self._emit("left", client=client_id, detail=reason)
        self._changed.set()

    async def _close_all(self, code: CloseCode, reason: str) -> None:
        connections = list(self._connections.values())
        for connection in connections:
            self._cut_off(connection, code, reason)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    # -- sending --------------------------------------------------------------------------------

    async def _send(
        self,
        client_id: int,
        message: object,
        round_number: int = 0,
        session: bytes = b"",
        report: RoundReport | None = None,
    ) -> None:
        """Send one message; count its bytes into ``report``; cut off a client that stalls."""
        if client_id in self._connections:
            await self._send_frame(client_id, encode(message, round=round_number, session=session), report)

    @staticmethod
    def _encode_all(outgoing: Mapping[int, object], round_number: int, session: bytes) -> dict[int, bytes]:
        """Encode a phase's messages (in the worker thread); one message shared by many clients,
        such as the round start with its model, is encoded once."""
        encoded: dict[int, bytes] = {}
        frames: dict[int, bytes] = {}
        for client_id, message in outgoing.items():
            key = id(message)
            if key not in encoded:
                encoded[key] = encode(message, round=round_number, session=session)
            frames[client_id] = encoded[key]
        return frames

    async def _send_frame(self, client_id: int, data: bytes, report: RoundReport | None = None) -> None:
        connection = self._connections.get(client_id)
        if connection is None:
            return
        if report is not None:
            report.bytes_down += len(data)
        try:
            await asyncio.wait_for(connection.ws.send(data), self.settings.phase_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            self._cut_off(connection, CloseCode.DEADLINE, "did not read its messages in time")
        except ConnectionClosed:
            pass  # the handler records the disconnection

    async def _broadcast(self, client_ids: Iterable[int], message: object, round_number: int = 0) -> None:
        await asyncio.gather(*(self._send(i, message, round_number) for i in sorted(client_ids)))

    # -- rounds ---------------------------------------------------------------------------------

    def _emit(
        self,
        kind: str,
        round_number: int | None = None,
        *,
        phase: str = "",
        detail: str = "",
        client: int | None = None,
        accuracy: float | None = None,
    ) -> None:
        if self._on_event is None:
            return
        number = self.next_round if round_number is None else round_number
        event = ServerEvent(kind, number, len(self._connections), phase, detail, client, accuracy)
        self._on_event(event)

    async def _wait_until(self, condition: Callable[[], bool], deadline: float | None) -> bool:
        """Wait until ``condition()`` or the loop time ``deadline``; the condition's last value."""
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            if condition():
                return True
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            # asyncio.wait, not wait_for: before Python 3.12, wait_for can swallow a cancellation
            # (SIGTERM) that arrives just as the event is set.
            waiter = loop.create_task(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                waiter.cancel()

    async def _wait_for_clients(self) -> None:
        """Until min_clients are connected, or wait_timeout passed with at least t connected."""
        wanted = self.settings.min_clients or self.config.num_clients
        t = self.config.threshold
        loop = asyncio.get_running_loop()
        if len(self._connections) < wanted:
            self._emit("waiting", detail=f"{len(self._connections)} of {wanted} clients connected")
        deadline = loop.time() + self.settings.wait_timeout
        if await self._wait_until(lambda: len(self._connections) >= wanted, deadline):
            return
        if len(self._connections) < t:
            log.warning(
                "round %d waits for at least t=%d clients (%d connected)",
                self.next_round,
                t,
                len(self._connections),
            )
        await self._wait_until(lambda: len(self._connections) >= t, None)

    async def _run_round(self, number: int) -> RoundReport:
        loop = asyncio.get_running_loop()
        setup = RoundSetup(self.config, os.urandom(32), self.roster)
        members = set(self._connections)
        report = RoundReport(number, "aborted", participants=sorted(members))
        current = _Round(number, setup, SecAggServer(setup), members, report)
        self._round = current
        start_vector = self.vector.copy()
        log.info("round %d starts with %d clients", number, len(members))
        self._emit("round_start", number)
        start = RoundStart(
            self.config,
            setup.nonce,
            self.roster,
            self.quantization,
            start_vector,
            self.settings.training.to_wire(),
        )
        session = setup.session_id
        secagg = current.secagg
        outgoing: Mapping[int, object] = dict.fromkeys(members, start)
        for phase in rounds_of(self.config.is_active):
            # A phase begins before its prompts go out, so observers (the demo's and the tests'
            # client killers) act before any client can answer in it.
            current.phase = phase.value
            self._emit("phase", number, phase=phase.value)
            begin = loop.time()
            frames = await self._in_worker(self._encode_all, outgoing, number, session)
            await asyncio.gather(
                *(self._send_frame(i, f, report) for i, f in sorted(frames.items()) if i in current.members)
            )
            timeout = self.settings.phase_timeout
            if phase is Round.ADVERTISE_KEYS:
                timeout += self.settings.train_timeout
            await self._wait_until(lambda: not (secagg.waiting_for & current.members), loop.time() + timeout)
            for client_id in sorted(secagg.waiting_for & current.members):
                connection = self._connections.get(client_id)
                if connection is not None:
                    reason = f"missed the {phase.value} deadline ({timeout:g}s)"
                    self._cut_off(connection, CloseCode.DEADLINE, reason)
            try:
                outgoing = await self._in_worker(secagg.advance)
            except AbortedError as exc:
                report.seconds[phase.value] = round(loop.time() - begin, 4)
                report.reason = str(exc)
                log.warning("round %d aborted: %s", number, exc)
                return self._finish(report, start_vector, None)
            report.seconds[phase.value] = round(loop.time() - begin, 4)
        begin = loop.time()
        assert secagg.result is not None
        report.survivors = sorted(secagg.survivors)
        try:
            decoded = await self._in_worker(
                decode_weighted_sum, secagg.result, self.quantization, len(report.survivors)
            )
        except ValueError as exc:
            report.reason = f"the aggregate is not a sum of valid updates: {exc}"
            log.error("round %d: %s", number, report.reason)
            return self._finish(report, start_vector, None)
        self.vector = start_vector + self.settings.server_learning_rate * decoded.mean
        report.status = "completed"
        report.error_bound = decoded.error_bound
        report.total_weight = decoded.total_weight
        report.accuracy = self.model.evaluate(self.vector)
        report.seconds["aggregate"] = round(loop.time() - begin, 4)
        log.info(
            "round %d completed: %d survivors, accuracy %s",
            number,
            len(report.survivors),
            "n/a" if report.accuracy is None else f"{report.accuracy:.4f}",
        )
        return self._finish(report, start_vector, decoded.mean)

    def _finish(
        self, report: RoundReport, start_vector: FloatVector, mean: FloatVector | None
    ) -> RoundReport:
        if report.status == "aborted":
            report.accuracy = self.model.evaluate(self.vector)
            report.survivors = []
        report.model_sha256 = vector_digest(self.vector)
        if self._on_round is not None:
            self._on_round(report, RoundOutcome(start_vector, None if mean is None else np.asarray(mean)))
        return report
