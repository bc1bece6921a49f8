"""The federation server: websockets, framing, timers and a worker thread around the coordinator.

The rounds themselves (population, cohort selection, phases, deadlines, model updates, records)
are ``fedavg_core.coordinator.Coordinator``, a sans-I/O state machine; this module only

- accepts connections and registers them (one connection is bound to one stable client id;
  in the active mode proven with the client's Ed25519 identity key from the roster);
- decodes frames and hands events to the coordinator, with the event loop's clock;
- encodes and sends the coordinator's actions, closes connections it cuts off, and calls
  ``tick`` at ``next_timeout()``;
- checkpoints the global model atomically after every round, before telling the clients.

All coordinator and SecAgg work (checking and filing messages, ``advance()``, mask removal,
encoding) runs in one worker thread, never on the event loop, so pings and other connections are
served meanwhile, and one thread at a time touches the round's state.

A client that sends a malformed, oversized, wrong-round, duplicate or impersonating frame, or that
the protocol drops, is cut off: its websocket is closed with a ``CloseCode`` and the reason is
logged and recorded in the round's ``dropped``; the round goes on without it.

Decisions the design left open:

- Clients come and go: any id (1..2**20; in the active mode, any enrolled id) may register at any
  time; a round's cohort is drawn from the clients connected when it starts (``--cohort``, or all
  of them by default); the others wait connected. A client that connects during a round waits
  for the next one; the SecAgg state of a round is bound to the connection that received its
  ``RoundStart``.
- Before each round the server waits until the cohort policy's ``ready_at()`` clients are
  connected (default: all N of ``num_clients``, or the over-selected cohort), or ``wait_timeout``
  has passed with at least ``min_clients``.
- Over-selection: stragglers (selected, not among the first n to finish training) are told the
  round ended without them and stay connected; they are not drops.
- An aborted round leaves the global model unchanged and still counts as one of ``rounds``.
- The checkpoint is written before the clients hear ``RoundEnd``, so no round a client saw
  complete can be lost; a round interrupted by a crash is run again, with a fresh nonce.
- A cut-off client may reconnect and join a later round; nothing is banned for good.
- Registration (``_register``): the identity proof first (active mode; the roster file is
  re-read when an id not enrolled registers), then the client's terms against ``terms`` (task,
  dimension, initial-model digest, quantization), the id, ``max_population``. At most
  ``max_registering`` connections may wait for their hello at once: a new one evicts the oldest
  (1013), so silent connections cannot lock out a client that answers its challenge at once,
  unless they arrive faster than its round trip. Refusals close with
  a code the client sorts into permanent (4002, 4003, 1007, 1008: it exits) and transient
  (4001, 1013, 4000: it retries); a mismatch's reason names the field and both values.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fedavg_core import DistributedDP, QuantizationConfig, SecureAggregator
from fedavg_core.cohort import CohortPolicy
from fedavg_core.coordinator import (
    Action,
    Coordinator,
    CoordinatorSettings,
    Deadlines,
    Deliver,
    Disconnect,
    Dismiss,
    Note,
    RoundClosed,
    StartTraining,
)
from fedavg_core.coordinator import (
    Finished as FederationDone,
)
from fedavg_core.plaintext_round import WARNING as PLAINTEXT_WARNING
from fedavg_core.vectorize import FloatVector
from secagg import SecAggConfig
from secagg.config import DEFAULT_DROPOUT_FRACTION, MAX_CLIENTS, GraphKind
from secagg.primitives import signatures

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint, vector_digest
from .codec import FrameLimits, decode_from_client, encode
from .errors import CloseCode, DecodeError, WireVersionError
from .identity import RosterFile
from .records import RoundReport, ServerEvent
from .tasks import ServerModel, TrainingSettings
from .wire import (
    CHALLENGE_SIZE,
    LOCAL_ID,
    Challenge,
    ClientAbort,
    Finished,
    Hello,
    QuantizationTerms,
    RoundEnd,
    RoundStart,
    Terms,
    Welcome,
    model_digest,
    registration_payload,
    terms_mismatch,
)

log = logging.getLogger("transport.server")
_T = TypeVar("_T")

MAX_CLOSE_REASON = 120  # a close frame's reason is at most 123 UTF-8 bytes
REGISTRATION_MAX_FRAME = 1024
"""The largest frame an unregistered peer may send (a hello is under 200 bytes); the round's
config-derived limit applies only once the connection is bound to a client id."""

DEFAULT_BITS = 16
"""Quantization bits when neither bits nor modulus is set (error per element about clip / 2**15)."""

DEFAULT_MAX_WEIGHT = 1024
"""A client's weight is its example count capped at this (FedAvg's n_k / n, with a cap so one
client cannot dominate and so the quantization keeps its resolution)."""


@dataclass(frozen=True)
class FederationSettings:
    """Everything the server decides for the federation.

    Attributes:
        num_clients: N, the population the first round waits for when every connected client
            takes part (no ``cohort``); with a cohort, only a size hint.
        rounds: FedAvg rounds to run in total (a resumed server counts the finished ones).
        cohort: n, the target cohort size per round (None: every connected client takes part).
        cohort_fraction: C, the fraction of the connected clients per round (used without
            ``cohort``).
        over_selection: select ``ceil(over_selection * n)`` and close training at n (e.g. 1.3).
        selection_seed: seeds the cohort selection (recorded with every round).
        threshold, graph, degree, mode: the SecAgg round parameters, sized per cohort
            (threshold None: the rule of ``fedavg_core.SecureAggregator``; ``graph="harary"``
            without degree and threshold: ``secagg.find_parameters`` for each cohort).
        collusion_fraction, dropout_fraction: gamma and delta of the threat model (README),
            from which the threshold and the SecAgg+ degree are derived.
        clip, max_weight, bits, modulus: quantization (see ``fedavg_core.QuantizationConfig``).
            A client's weight is its example count capped at ``max_weight``. With neither bits
            nor modulus given, updates are quantized to ``DEFAULT_BITS`` bits and the modulus
            is the smallest supported prime with headroom for the round's cohort.
        training: local training knobs sent to the clients.
        server_learning_rate: the global model moves by this times the mean update.
        phase_timeout: seconds for each SecAgg phase; ``train_timeout`` is added to round 0.
        hello_timeout: seconds a new connection has to register.
        max_population: refuse registrations (close code 1013, try again later) while this
            many clients are connected (None: no cap).
        max_registering: connections that may wait for their hello at once (challenge sent,
            each for at most ``hello_timeout``); a new connection beyond it evicts the oldest
            waiting one (1013, try again later), so a flood of silent connections holds bounded
            server memory and cannot lock out clients that answer their challenge promptly.
        min_clients: start a round as soon as this many are connected (None: all N, or the
            over-selected cohort) ...
        wait_timeout: ... or when this many seconds passed and at least the minimum (t for N,
            or the cohort size n) are connected.
        insecure_plaintext: INSECURE debugging mode: clients (that opt in) send their updates
            unmasked and the server sums them in the clear; logged loudly, recorded per round.
        dp: distributed differential privacy (``fedavg_core.DistributedDP``): clients clip their
            update to the L2 norm ``dp.clip`` (``clip`` is then unused), rotate, round and add
            discrete noise before masking, sized for each cohort's threshold t; the round start
            carries the DP terms and the rotation seed (``fedavg_core.dp_federation``); each
            report carries the epsilon spent so far. ``dp.rounds`` must cover ``rounds``.
    """

    num_clients: int
    rounds: int
    cohort: int | None = None
    cohort_fraction: float | None = None
    over_selection: float = 1.0
    selection_seed: int = 0
    threshold: int | None = None
    graph: GraphKind = "complete"
    degree: int | None = None
    mode: str = "semi_honest"
    collusion_fraction: float = 1 / 3
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION
    clip: float = 1.0
    max_weight: int = DEFAULT_MAX_WEIGHT
    bits: int | None = None
    modulus: int | None = None
    training: TrainingSettings = field(default_factory=TrainingSettings)
    server_learning_rate: float = 1.0
    phase_timeout: float = 30.0
    train_timeout: float = 120.0
    hello_timeout: float = 10.0
    max_population: int | None = None
    max_registering: int = 1024
    min_clients: int | None = None
    wait_timeout: float = 30.0
    insecure_plaintext: bool = False
    dp: DistributedDP | None = None

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.dp is not None and self.dp.rounds < self.rounds:
            raise ValueError(
                f"the DP budget covers {self.dp.rounds} rounds (dp.rounds), the federation runs {self.rounds}"
            )
        if self.dp is not None and self.insecure_plaintext:
            raise ValueError("distributed DP needs secure aggregation, not the insecure plaintext mode")
        if not 2 <= self.num_clients <= MAX_CLIENTS:
            raise ValueError(f"num_clients must be in [2, {MAX_CLIENTS}], got {self.num_clients}")
        for name in ("phase_timeout", "train_timeout", "hello_timeout", "wait_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_population is not None and self.max_population < 1:
            raise ValueError(f"max_population must be positive, got {self.max_population}")
        if self.max_registering < 1:
            raise ValueError(f"max_registering must be positive, got {self.max_registering}")
        if self.min_clients is not None and not 2 <= self.min_clients <= self.largest_round():
            raise ValueError(f"min_clients must be in 2..{self.largest_round()}, got {self.min_clients}")
        self.cohort_policy()  # validates cohort, fraction, over-selection

    def aggregator(self) -> SecureAggregator:
        """Quantization and SecAgg parameters (sized per round by the coordinator)."""
        return SecureAggregator(
            clip=self.clip,
            max_weight=self.max_weight,
            bits=DEFAULT_BITS if self.bits is None and self.modulus is None else self.bits,
            modulus=self.modulus,
            threshold=self.threshold,
            graph=self.graph,
            degree=self.degree,
            mode=self.mode,
            collusion_fraction=self.collusion_fraction,
            dropout_fraction=self.dropout_fraction,
            dp=self.dp,
        )

    def largest_round(self) -> int:
        """The most clients one round selects (N, or the over-selected cohort)."""
        if self.cohort is not None:
            return max(2, math.ceil(self.over_selection * self.cohort - 1e-9))
        return self.num_clients

    def cohort_policy(self) -> CohortPolicy:
        """Who takes part in each round, and when a round may start."""
        if self.cohort is None and self.cohort_fraction is None:
            # Every connected client, as soon as all N are connected (or, after wait_timeout,
            # at least the threshold t of a round of N).
            minimum = self.secagg_config(1).threshold
            wanted = self.min_clients or self.num_clients
            return CohortPolicy(
                min_clients=max(2, min(minimum, wanted)), wait_for=wanted, seed=self.selection_seed
            )
        minimum = self.min_clients or (self.cohort if self.cohort is not None else 2)
        return CohortPolicy(
            size=self.cohort,
            fraction=self.cohort_fraction,
            over_selection=self.over_selection,
            min_clients=max(2, minimum),
            wait_for=self.min_clients,
            seed=self.selection_seed,
        )

    def quantization(self, num_clients: int | None = None) -> QuantizationConfig:
        """How clients encode their updates in a round of ``num_clients`` (default: the largest)."""
        return self.aggregator().quantization(num_clients or self.largest_round())

    def secagg_config(self, dimension: int, num_clients: int | None = None) -> SecAggConfig:
        """The SecAgg parameters of a round of ``num_clients`` (default: the largest) for a model
        of ``dimension`` (plus one weight element)."""
        aggregator = self.aggregator()
        length = aggregator.vector_length(dimension)
        return aggregator.secagg_config(num_clients or self.largest_round(), length)

    def coordinator_settings(self) -> CoordinatorSettings:
        """The coordinator's view of these settings."""
        return CoordinatorSettings(
            rounds=self.rounds,
            aggregator=self.aggregator(),
            cohort=self.cohort_policy(),
            deadlines=Deadlines(self.phase_timeout, self.train_timeout, self.wait_timeout),
            training=lambda r: self.training.for_round(r).to_wire(),  # the lr schedule
            server_learning_rate=self.server_learning_rate,
            insecure_plaintext=self.insecure_plaintext,
        )


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
    cut: tuple[int, str] | None = None  # (close code, reason) once the server cut it off
    closing: asyncio.Task[None] | None = None  # our close(code, reason), once cut off


# What the worker thread hands back to the event loop, in order.
@dataclass(frozen=True)
class _Send:
    client: int
    data: bytes
    counted: bool  # count into the running round's bytes_down


@dataclass(frozen=True)
class _Cut:
    client: int
    code: CloseCode
    reason: str


@dataclass(frozen=True, eq=False)
class _Closed:
    closed: RoundClosed


_Op = _Send | _Cut | Note | _Closed | FederationDone

_CLOSE_CODES = {"deadline": CloseCode.DEADLINE, "protocol": CloseCode.POLICY_VIOLATION}


class FederationServer:
    """Runs FedAvg rounds with secure aggregation over websockets, for a changing population.

    Args:
        model: the server's side of the task (initial vector, evaluation).
        settings: the federation's parameters.
        roster: active mode: stable client id -> raw Ed25519 identity public key of every
            enrolled client (``enrol`` adds more while the server runs), or a
            ``transport.identity.RosterFile``, re-read whenever an id not enrolled registers.
        task: the app's name; a client declaring another one is refused (None: not compared).
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
        roster: Mapping[int, bytes] | RosterFile | None = None,
        task: str | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        on_event: Callable[[ServerEvent], None] | None = None,
        on_round: Callable[[RoundReport, RoundOutcome], None] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.quantization = settings.quantization()
        self.config = settings.secagg_config(model.dimension)
        if settings.dp is not None:  # a budget the largest round cannot meet fails here, not per round
            settings.dp.plan(self.config.num_clients, self.config.threshold, model.dimension)
        self._roster_file = roster if isinstance(roster, RosterFile) else None
        if isinstance(roster, RosterFile):
            roster = roster.current()
        if self.config.is_active and roster is None:
            raise ValueError("the active mode needs a roster of identity public keys")
        if not self.config.is_active and roster is not None:
            raise ValueError("a roster is only used in the active mode")
        for client_id, key in (roster or {}).items():
            if not 1 <= client_id <= MAX_CLIENTS or len(key) != signatures.PUBLIC_KEY_SIZE:
                raise ValueError(f"roster entry {client_id}: ids are 1..{MAX_CLIENTS}, keys 32 bytes")
        self.limits = FrameLimits.for_server(self.config)
        self.checkpoint_path = checkpoint_path
        self._on_event = on_event
        self._on_round = on_round
        vector: FloatVector = model.initial_vector()
        quantization = QuantizationTerms.of(self.quantization)
        self.terms = Terms(task, model.dimension, model_digest(vector), quantization)
        """What a client must agree on to register (the initial model's digest, not a resumed one)."""
        next_round = 1
        reports: list[RoundReport] = []
        if checkpoint_path is not None:
            saved = load_checkpoint(checkpoint_path, model.dimension)
            if saved is not None:
                vector, next_round = saved.vector, saved.next_round
                try:
                    reports = [RoundReport.from_json(r) for r in saved.records]
                except (TypeError, ValueError, KeyError) as exc:
                    raise CheckpointError(f"{checkpoint_path}: malformed round records ({exc})") from None
        self.coordinator = Coordinator(
            settings.coordinator_settings(),
            vector,
            evaluate=model.evaluate,
            next_round=next_round,
            reports=reports,
            roster=roster,
        )
        self.initial_accuracy = model.evaluate(vector)
        self._connections: dict[int, _Connection] = {}
        self._awaiting_hello: dict[ServerConnection, None] = {}  # oldest first
        self._evictions: set[asyncio.Task[None]] = set()
        self._outbox: list[_Op] = []
        self._changed = asyncio.Event()
        self._server: Server | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._finished = False
        # All coordinator and SecAgg work runs in this one thread, never on the event loop, so
        # pings are answered meanwhile and one thread at a time touches the round's state.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="secagg-server")
        self._stopped = False

    @property
    def vector(self) -> FloatVector:
        """The global model."""
        return self.coordinator.vector

    @property
    def next_round(self) -> int:
        """The next FedAvg round to run."""
        return self.coordinator.next_round

    @property
    def reports(self) -> list[RoundReport]:
        """The finished rounds' reports."""
        return self.coordinator.reports

    @property
    def roster(self) -> dict[int, bytes] | None:
        """Active mode: the enrolled identities."""
        return self.coordinator.roster

    async def enrol(self, roster: Mapping[int, bytes]) -> None:
        """Active mode: enrol more clients' identity public keys while the server runs."""
        await self._in_worker(self.coordinator.enrol, roster)

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
            backlog=max(128, 2 * self.settings.largest_round()),
        )
        log.info("listening on %s:%d (%s)", host, self.port, "wss" if ssl_context else "ws")
        if self.settings.insecure_plaintext:
            log.warning("!" * 40 + "\n%s\n" + "!" * 40, PLAINTEXT_WARNING)
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
        loop = asyncio.get_running_loop()
        while not self._finished:
            if self._outbox:
                await self._dispatch()
                continue
            now = loop.time()
            self._post(await self._in_worker(self._tick, now))
            if self._outbox:
                continue
            deadline = self.coordinator.next_timeout()
            if deadline is not None and deadline <= now:
                # A deadline the tick just passed without acting on (a cohort wait that timed out
                # with too few clients): only an event can change that; do not spin on it.
                deadline = None
            self._changed.clear()
            if self._outbox:
                continue
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            # asyncio.wait, not wait_for: before Python 3.12, wait_for can swallow a cancellation
            # (SIGTERM) that arrives just as the event is set.
            waiter = loop.create_task(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                waiter.cancel()
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
        self._stopped = True
        self._worker.shutdown(wait=False, cancel_futures=True)

    # -- the worker thread ----------------------------------------------------------------------

    async def _in_worker(self, function: Callable[..., _T], *args: object) -> _T:
        """Run ``function(*args)`` in the worker thread (see the module docstring)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    def _tick(self, now: float) -> list[_Op]:
        return self._prepare(self.coordinator.tick(now))

    def _join(self, client_id: int, now: float) -> list[_Op]:
        return self._prepare(self.coordinator.join(client_id, now))

    def _leave(self, client_id: int, now: float, reason: str, code: int | None) -> list[_Op]:
        return self._prepare(self.coordinator.leave(client_id, now, reason, code))

    def _on_frame(self, connection: _Connection, data: str | bytes, now: float) -> list[_Op]:
        """Decode one frame and hand it to the coordinator (in the worker thread)."""
        client_id = connection.client_id
        report = self.coordinator.current_report
        if report is not None and self.coordinator.local_id(client_id) is not None:
            report.bytes_up += len(data)
        try:
            frame = decode_from_client(data, self.limits)
        except DecodeError as exc:
            return self._refuse_frame(client_id, now, CloseCode.INVALID_DATA, f"malformed frame: {exc}")
        message = frame.message
        if isinstance(message, Hello):
            return self._refuse_frame(
                client_id, now, CloseCode.POLICY_VIOLATION, "hello on a registered connection"
            )
        if isinstance(message, ClientAbort):
            log.warning("client %d aborted round %d: %s", client_id, frame.round, message.reason)
            actions = self.coordinator.client_abort(
                client_id, frame.round, frame.session, message.sender, message.reason, now
            )
        else:
            actions = self.coordinator.receive(client_id, frame.round, frame.session, message, now)
        return self._prepare(actions)

    def _refuse_frame(self, client_id: int, now: float, code: CloseCode, reason: str) -> list[_Op]:
        return [_Cut(client_id, code, reason), *self._leave(client_id, now, reason, int(code))]

    def _prepare(self, actions: list[Action]) -> list[_Op]:
        """The coordinator's actions as frames and steps for the event loop (in the worker)."""
        ops: list[_Op] = []
        encoded: dict[int, bytes] = {}  # one message for many clients is encoded once
        for action in actions:
            if isinstance(action, StartTraining):
                config = action.setup.config
                self.limits = FrameLimits.for_server(config)
                start = RoundStart(
                    config,
                    action.setup.nonce,
                    action.setup.roster,
                    action.quantization,
                    action.parameters,
                    {**action.settings, LOCAL_ID: action.local_id},
                )
                data = encode(start, round=action.round, session=action.setup.session_id)
                ops.append(_Send(action.client, data, True))
            elif isinstance(action, Deliver):
                key = id(action.message)
                if key not in encoded:
                    encoded[key] = encode(action.message, round=action.round, session=action.session)
                ops.append(_Send(action.client, encoded[key], True))
            elif isinstance(action, Dismiss):
                end = RoundEnd("aborted", f"straggler: {action.reason}")
                ops.append(_Send(action.client, encode(end, round=action.round), False))
            elif isinstance(action, Disconnect):
                ops.append(_Cut(action.client, _CLOSE_CODES[action.kind], action.reason))
            elif isinstance(action, RoundClosed):
                ops.append(_Closed(action))
            elif isinstance(action, (Note, FederationDone)):
                ops.append(action)
        return ops

    # -- the event loop: carrying out the coordinator's actions ---------------------------------

    def _post(self, ops: list[_Op]) -> None:
        """Queue steps for ``run``; cut-offs happen at once (also before ``run`` started)."""
        for op in ops:
            if isinstance(op, _Cut):
                connection = self._connections.get(op.client)
                if connection is not None:
                    self._cut_off(connection, op.code, op.reason)
            else:
                self._outbox.append(op)
        if ops:
            self._changed.set()

    async def _dispatch(self) -> None:
        """Carry out queued steps in order; consecutive sends go out together."""
        while self._outbox:
            ops, self._outbox = self._outbox, []
            batch: list[_Send] = []
            for op in ops:
                if isinstance(op, _Send):
                    batch.append(op)
                    continue
                await self._flush(batch)
                batch = []
                if isinstance(op, _Cut):
                    connection = self._connections.get(op.client)
                    if connection is not None:
                        self._cut_off(connection, op.code, op.reason)
                elif isinstance(op, Note):
                    self._note(op)
                elif isinstance(op, _Closed):
                    await self._round_closed(op.closed)
                elif isinstance(op, FederationDone):
                    await self._finish(op.rounds_completed)
            await self._flush(batch)

    async def _flush(self, batch: list[_Send]) -> None:
        if batch:
            await asyncio.gather(*(self._send_frame(op.client, op.data, op.counted) for op in batch))

    def _note(self, note: Note) -> None:
        if note.kind == "round_start":
            log.info("round %d starts: %s", note.round, note.detail)
        elif note.kind == "stragglers":
            log.info("round %d: %s stragglers", note.round, note.detail)
        if note.kind not in ("round_end", "finished"):  # emitted with more detail elsewhere
            self._emit(note.kind, note.round, phase=note.phase, detail=note.detail)

    async def _round_closed(self, closed: RoundClosed) -> None:
        """Report, checkpoint, then tell the cohort (a round a client saw complete is never lost)."""
        report = closed.report
        report.model_sha256 = vector_digest(self.vector)
        if report.status == "completed":
            log.info(
                "round %d completed: %d survivors, accuracy %s",
                report.round,
                len(report.survivors),
                "n/a" if report.accuracy is None else f"{report.accuracy:.4f}",
            )
        else:
            log.warning("round %d aborted: %s", report.round, report.reason)
        if self._on_round is not None:
            self._on_round(report, RoundOutcome(closed.start_vector, closed.mean_update))
        if self.checkpoint_path is not None:
            done = [r.to_json() for r in self.reports if r.round <= report.round]
            checkpoint = Checkpoint(report.round + 1, self.vector.copy(), done)
            await self._in_worker(save_checkpoint, self.checkpoint_path, checkpoint)
        end = RoundEnd(report.status, report.reason, len(report.survivors), report.accuracy)
        await self._broadcast(closed.recipients, end, report.round)
        self._emit("round_end", report.round, detail=report.status, accuracy=report.accuracy)

    async def _finish(self, done: int) -> None:
        self._finished = True
        await self._broadcast(list(self._connections), Finished(done))
        await self._close_all(CloseCode.NORMAL, "federation finished")
        self._emit("finished", done)

    # -- connections ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self._admit(ws)
        try:
            connection = await self._register(ws)
        finally:
            self._awaiting_hello.pop(ws, None)
        if connection is None:
            return
        loop = asyncio.get_running_loop()
        reason, code = "connection closed", None
        try:
            async for data in ws:
                self._post(await self._in_worker(self._on_frame, connection, data, loop.time()))
                if connection.closed:
                    # Returning would let websockets close with 1000; send our code first.
                    if connection.closing is not None:
                        await asyncio.shield(connection.closing)
                    break
            else:
                code = ws.close_code
                reason = f"client closed the connection (code {code}: {ws.close_reason or 'no reason'})"
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
        if connection.cut is not None:
            code, reason = connection.cut
        await self._left(connection, code, reason)

    def _admit(self, ws: ServerConnection) -> None:
        """Count ``ws`` as waiting for its hello; past ``max_registering``, evict the oldest."""
        cap = self.settings.max_registering
        while len(self._awaiting_hello) >= cap:
            oldest = next(iter(self._awaiting_hello))
            del self._awaiting_hello[oldest]
            log.info("evicting a connection from %s that has not sent its hello", oldest.remote_address)
            reason = f"server busy: {cap} connections waiting to register, try again"
            task = asyncio.get_running_loop().create_task(oldest.close(CloseCode.TRY_AGAIN, reason))
            self._evictions.add(task)
            task.add_done_callback(self._evictions.discard)
        self._awaiting_hello[ws] = None

    async def _register(self, ws: ServerConnection) -> _Connection | None:
        """Challenge, hello, checks, welcome; the bound connection, or None when refused.

        Refusals close with a code the client classifies (``errors.PERMANENT_REFUSALS``): an
        unknown id or a failed proof (4002), other terms or wire version (4003), a malformed or
        wrong first frame (1007, 1008) are permanent; an id in use (4001), a full server (1013)
        and a missing hello (4000) are worth a retry.
        """
        challenge = os.urandom(CHALLENGE_SIZE)
        try:
            hint = min(max(2, self.settings.largest_round()), MAX_CLIENTS)
            await ws.send(encode(Challenge(challenge, hint, self.config.is_active)))
            data = await asyncio.wait_for(ws.recv(), self.settings.hello_timeout)
            self._awaiting_hello.pop(ws, None)
        except (TimeoutError, asyncio.TimeoutError):
            await self._refuse(ws, CloseCode.DEADLINE, "no hello in time")
            return None
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.reason:  # e.g. a client of another wire version
                log.warning(
                    "a peer at %s gave up registering: %s (close code %d)",
                    ws.remote_address,
                    exc.rcvd.reason,
                    exc.rcvd.code,
                )
            return None
        try:
            hello = decode_from_client(data, self.limits).message
        except WireVersionError as exc:
            reason = f"wire version: server {exc.ours}, client {exc.version!r:.20}"
            await self._refuse(ws, CloseCode.MISMATCH, reason)
            return None
        except DecodeError as exc:
            await self._refuse(ws, CloseCode.INVALID_DATA, f"malformed hello: {exc}")
            return None
        if not isinstance(hello, Hello):
            await self._refuse(ws, CloseCode.POLICY_VIOLATION, f"expected hello, got {type(hello).__name__}")
            return None
        refusal = await self._check_hello(hello, challenge)
        if refusal is not None:
            await self._refuse(ws, *refusal)
            return None
        client_id = hello.client_id
        if self._finished:
            await ws.send(encode(Finished(self.next_round - 1)))
            await ws.close(CloseCode.NORMAL, "federation finished")
            return None
        ws.protocol.max_message_size = max(
            self.limits.max_frame_bytes, FrameLimits.for_server(self.config).max_frame_bytes
        )
        connection = _Connection(ws, client_id)
        self._connections[client_id] = connection
        try:
            await ws.send(encode(Welcome(client_id, self.next_round, self.settings.rounds)))
        except ConnectionClosed:
            self._connections.pop(client_id, None)
            return None
        log.info("client %d registered from %s", client_id, ws.remote_address)
        self._emit("registered", client=client_id)
        self._post(await self._in_worker(self._join, client_id, asyncio.get_running_loop().time()))
        return connection

    async def _check_hello(self, hello: Hello, challenge: bytes) -> tuple[CloseCode, str] | None:
        """Why ``hello`` is refused (close code, reason), or None: identity first, so that only an
        enrolled client learns the server's terms from a mismatch; then terms, id, population."""
        client_id = hello.client_id
        if self.coordinator.roster is not None:
            key = self.coordinator.roster.get(client_id)
            if key is None and self._roster_file is not None:
                key = await self._in_worker(self._reload_roster, client_id)
            if key is None:
                return CloseCode.REGISTRATION_FAILED, f"unknown client id {client_id} (not enrolled)"
            if not signatures.verify(key, hello.signature, registration_payload(challenge, client_id)):
                return CloseCode.REGISTRATION_FAILED, f"identity proof for client {client_id} failed"
        elif hello.signature is not None:  # a signature means the client expects a roster
            return (
                CloseCode.REGISTRATION_FAILED,
                "identity proof sent, but this server runs the semi_honest mode without a roster",
            )
        mismatch = terms_mismatch(self.terms, hello.terms)
        if mismatch is not None:
            return CloseCode.MISMATCH, mismatch
        if client_id in self._connections:
            return CloseCode.ID_IN_USE, f"client id {client_id} is already connected"
        cap = self.settings.max_population
        if cap is not None and len(self._connections) >= cap:
            return CloseCode.TRY_AGAIN, f"server full: {len(self._connections)} clients connected (cap {cap})"
        return None

    def _reload_roster(self, client_id: int) -> bytes | None:
        """Re-read the roster file (if it changed), enrol what is new; ``client_id``'s key (worker)."""
        assert self._roster_file is not None and self.coordinator.roster is not None
        fresh = self._roster_file.current()
        added = {i: key for i, key in fresh.items() if i not in self.coordinator.roster}
        if added:
            self.coordinator.enrol(added)
            log.info("enrolled clients %s from %s", sorted(added), self._roster_file.path)
        return self.coordinator.roster.get(client_id)

    async def _refuse(self, ws: ServerConnection, code: CloseCode, reason: str) -> None:
        log.warning("refused a connection from %s: %s (close code %d)", ws.remote_address, reason, code)
        await ws.close(code, reason[:MAX_CLOSE_REASON])

    def _cut_off(self, connection: _Connection, code: CloseCode, reason: str) -> None:
        """Close a misbehaving or late client's connection; its handler then reports it gone."""
        if connection.closed:
            return
        connection.closed = True
        connection.cut = (int(code), reason)
        if self._connections.get(connection.client_id) is connection:
            del self._connections[connection.client_id]
        task = asyncio.get_running_loop().create_task(connection.ws.close(code, reason[:MAX_CLOSE_REASON]))
        connection.closing = task
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _left(self, connection: _Connection, code: int | None, reason: str) -> None:
        """The connection is gone: unbind its id, tell the coordinator, log why."""
        connection.closed = True
        client_id = connection.client_id
        if self._connections.get(client_id) is connection:
            del self._connections[client_id]
        in_round = self.coordinator.local_id(client_id) is not None
        log.log(
            logging.WARNING if in_round or code not in (1000, 1001) else logging.INFO,
            "client %d left%s: %s (close code %s)",
            client_id,
            " during a round" if in_round else "",
            reason,
            code,
        )
        if not self._stopped:
            loop = asyncio.get_running_loop()
            self._post(await self._in_worker(self._leave, client_id, loop.time(), reason, code))
        self._emit("left", client=client_id, detail=reason)

    async def _close_all(self, code: CloseCode, reason: str) -> None:
        for connection in list(self._connections.values()):
            self._cut_off(connection, code, reason)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    # -- sending --------------------------------------------------------------------------------

    async def _send_frame(self, client_id: int, data: bytes, counted: bool = False) -> None:
        """Send one frame; count it into the round's bytes; cut off a client that stalls."""
        connection = self._connections.get(client_id)
        if connection is None:
            return
        report = self.coordinator.current_report
        if counted and report is not None:
            report.bytes_down += len(data)
        try:
            await asyncio.wait_for(connection.ws.send(data), self.settings.phase_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            self._cut_off(connection, CloseCode.DEADLINE, "did not read its messages in time")
        except ConnectionClosed:
            pass  # the handler records the disconnection

    async def _broadcast(self, client_ids: Iterable[int], message: object, round_number: int = 0) -> None:
        data = encode(message, round=round_number)
        await asyncio.gather(*(self._send_frame(i, data) for i in sorted(client_ids)))

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
