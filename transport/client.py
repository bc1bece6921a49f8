"""The federation client: connect, register, train locally, run SecAgg, reconnect with backoff.

The client is the mirror of ``transport.server``: it decodes the server's frames, checks that a
round start is acceptable, trains (in a worker thread, so the websocket keeps answering pings),
encodes its weighted update into Z_p (``fedavg_core.encode_weighted_update``) and lets
``secagg.SecAggClient`` answer every protocol message. When the connection drops, it reconnects
with exponential backoff and jitter and joins the next round; it stops when the server says the
federation is ``Finished`` or after ``give_up_after`` seconds without a registered connection.

Registration refusals come as close codes (``transport.errors``). A permanent one (unknown
identity, failed proof, other terms or wire version, a hello the server cannot read) raises
``RegistrationRefused`` with the server's reason, which names the field and both values; the
client does not retry. A transient one (id still in use, server full, no hello in time, server
going away) and an unreachable server are retried with backoff until ``give_up_after``.

What a client checks in a ``RoundStart`` before it trains or reveals anything:

- the nonce is 32 bytes and new to this client (a replayed round start is refused);
- the session id in the envelope is the one the client computes from config, nonce and roster;
- the config is valid (``SecAggConfig`` refuses unsafe thresholds), its collusion fraction is at
  least the client's own ``min_collusion_fraction`` (so the server cannot lower the threshold by
  claiming that nobody colludes), a SecAgg+ graph stays secure at the client's own
  ``min_dropout_fraction`` (so the server cannot shrink k by claiming that nobody drops), and the
  round-local id it gives this client (``LOCAL_ID`` in
  the settings; a client's stable id stays the same, its SecAgg id is 1..n of each cohort) is in
  range;
- in the active mode the round's roster lists this client's identity key under its round-local
  id, and every other key in it is in the roster this client trusts (no stand-ins); a client with
  an identity key refuses semi-honest rounds;
- the vector length is the model size plus one (the weight element), the model is finite, and the
  quantization uses the same modulus with room for all N clients (no wrap-around);
- distributed DP (``fedavg_core.dp_federation``): the ``dp_*`` settings are complete and valid;
  a client that requires DP (``require_dp``, ``max_dp_epsilon``, ``max_dp_delta``) refuses a round
  without them, with a weaker budget than its own, or past the budget's rounds. The client derives
  the round's noise itself from the budget and the config's n and t (the vector length is then
  the rotation's power of two plus one), so the server cannot make it add less noise than the
  stated budget needs.

A refused round is answered with ``ClientAbort`` and the reason; the client stays connected.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from fedavg_core import ClientUpdate, DPPlan, encode_weighted_update
from fedavg_core.dp_federation import DPTerms, split_settings
from fedavg_core.plaintext_round import INSECURE_PLAINTEXT
from fedavg_core.rotation import padded_dimension
from secagg import AbortedError, LocalProtocolError, RoundSetup, SecAggClient
from secagg.config import DEFAULT_DROPOUT_FRACTION, check_fraction, threat_model_shortfall
from secagg.messages import MaskedInput
from secagg.primitives import signatures

from .codec import Frame, FrameLimits, decode_from_server, encode
from .errors import PERMANENT_REFUSALS, CloseCode, DecodeError, WireVersionError
from .identity import RosterFile
from .tasks import LocalTrainer, TrainingSettings
from .wire import (
    LOCAL_ID,
    Challenge,
    ClientAbort,
    Finished,
    FloatVector,
    Hello,
    QuantizationTerms,
    RoundEnd,
    RoundStart,
    Terms,
    Welcome,
    model_digest,
    registration_payload,
)

log = logging.getLogger("transport.client")


class RoundRefused(Exception):
    """The server's round start is not acceptable to this client."""


class FatalClientError(Exception):
    """The client cannot take part in this federation at all (e.g. wrong security mode)."""


class RegistrationRefused(FatalClientError):
    """The server refused this client for good (``code``: the websocket close code)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server refused this client (close code {code}): {reason}")
        self.code = code
        self.reason = reason


class _TransientRefusal(Exception):
    """The server refused this registration for now (id in use, full, going away)."""


@dataclass
class ClientSummary:
    """What a client did: rounds it finished, rounds that ended aborted or that it refused."""

    client_id: int
    completed: list[int] = field(default_factory=list)
    aborted: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    connections: int = 0
    finished: bool = False


@dataclass(eq=False)
class _ActiveRound:
    number: int
    session_id: bytes
    secagg: SecAggClient


class FederationClient:
    """One client of a federation.

    Args:
        client_id: this client's id (1..N).
        trainer: local training on this client's own data.
        url: ``ws://host:port`` or ``wss://host:port``.
        ssl_context: for wss://, e.g. ``transport.tls.client_context(cafile)``.
        identity_key: active mode: the client's long-term Ed25519 key.
        roster: active mode, required with ``identity_key``: the roster the client trusts (id ->
            identity public key), or a ``transport.identity.RosterFile`` re-read at each round
            start (so members enrolled later are trusted once the file lists them).
        task, initial_vector, quantization: the terms this client declares at registration
            (the app's name, its initial model, the clip/bits/weight cap it expects); None: not
            declared, the server's is accepted. The model dimension is always declared.
        min_collusion_fraction: refuse rounds whose config assumes fewer colluders than this.
        min_dropout_fraction: refuse SecAgg+ rounds whose graph is not secure if this fraction of
            the clients drops out (the server's own delta may be lower; see
            ``secagg.config.threat_model_shortfall``).
        backoff_initial, backoff_max: reconnection delays (seconds, doubled, with jitter).
        give_up_after: stop after this many seconds without a registered connection.
        on_update: called with (round, update) after local training (the demo's audit hook).
        allow_insecure_plaintext: answer a server's INSECURE plaintext rounds (a debugging mode:
            the update and example count go to the server unmasked); by default such a round is
            refused, so a server cannot switch secure aggregation off on its own.
        require_dp: refuse rounds without distributed DP (implied by the two below).
        max_dp_epsilon, max_dp_delta: refuse rounds whose DP budget is weaker than this.
        rng: this client's randomness for stochastic rounding and DP noise (default: OS entropy;
            inject a seeded generator for a reproducible experiment).
    """

    def __init__(
        self,
        client_id: int,
        trainer: LocalTrainer,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        identity_key: Ed25519PrivateKey | None = None,
        roster: Mapping[int, bytes] | RosterFile | None = None,
        task: str | None = None,
        initial_vector: FloatVector | None = None,
        quantization: QuantizationTerms | None = None,
        min_collusion_fraction: float = 1 / 3,
        min_dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        give_up_after: float = 60.0,
        on_update: Callable[[int, ClientUpdate], None] | None = None,
        allow_insecure_plaintext: bool = False,
        require_dp: bool = False,
        max_dp_epsilon: float | None = None,
        max_dp_delta: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if roster is not None and identity_key is None:
            raise ValueError("a roster is only used with an identity key (active mode)")
        if identity_key is not None and roster is None:
            # Without its own roster a client would accept whatever keys the server lists for the
            # other ids, letting the server stand in for all of them.
            raise ValueError("an identity key needs the roster this client trusts (active mode)")
        self._roster_file = roster if isinstance(roster, RosterFile) else None
        if isinstance(roster, RosterFile):
            roster = roster.current()
        if identity_key is not None and roster is not None:
            own = signatures.identity_public_bytes(identity_key)
            if roster.get(client_id) != own:
                raise ValueError(f"the roster does not list this identity key for client {client_id}")
        if initial_vector is not None and np.shape(initial_vector) != (trainer.dimension,):
            shape = np.shape(initial_vector)
            raise ValueError(f"the initial model has shape {shape}, not ({trainer.dimension},)")
        check_fraction("min_collusion_fraction", min_collusion_fraction)
        check_fraction("min_dropout_fraction", min_dropout_fraction)
        self.terms = Terms(
            task,
            trainer.dimension,
            None if initial_vector is None else model_digest(initial_vector),
            quantization,
        )
        self.client_id = client_id
        self.trainer = trainer
        self.url = url
        self.ssl_context = ssl_context
        self.identity_key = identity_key
        self.roster = dict(roster) if roster is not None else None
        self.min_collusion_fraction = min_collusion_fraction
        self.min_dropout_fraction = min_dropout_fraction
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.give_up_after = give_up_after
        self.on_update = on_update
        self.allow_insecure_plaintext = allow_insecure_plaintext
        self.require_dp = require_dp or max_dp_epsilon is not None or max_dp_delta is not None
        self.max_dp_epsilon = max_dp_epsilon
        self.max_dp_delta = max_dp_delta
        # A DP round's vector is padded to the rotation's power of two.
        self.limits = FrameLimits.for_client(padded_dimension(trainer.dimension))
        self.summary = ClientSummary(client_id)
        self._seen_nonces: set[bytes] = set()
        self._round: _ActiveRound | None = None
        self._rng = rng if rng is not None else np.random.default_rng()  # rounding, DP noise

    # -- connection loop ------------------------------------------------------------------------

    async def run(self) -> ClientSummary:
        """Take part until the server says the federation is finished.

        Raises ``ConnectionError`` after ``give_up_after`` seconds without a registered
        connection (server unreachable or refusing for now), ``RegistrationRefused`` when the
        server refuses this client for good, ``FatalClientError`` when this client cannot join
        this federation.
        """
        loop = asyncio.get_running_loop()
        delay = self.backoff_initial
        last_contact = loop.time()
        why = "no answer"
        while not self.summary.finished:
            registered = False
            try:
                async with connect(
                    self.url,
                    ssl=self.ssl_context,
                    max_size=self.limits.max_frame_bytes,
                    compression=None,
                    open_timeout=10,
                    close_timeout=5,
                    ping_interval=20,
                    ping_timeout=20,
                ) as ws:
                    self.summary.connections += 1
                    registered = await self._register(ws)
                    if registered:
                        delay = self.backoff_initial
                        await self._serve(ws)
            except _TransientRefusal as exc:
                why = f"refused for now: {exc}"
                log.info("client %d: %s", self.client_id, why)
            except ConnectionClosed as exc:
                why = f"connection closed: {exc}"
                log.warning("client %d: %s", self.client_id, why)
            except (ssl.SSLCertVerificationError, InvalidURI) as exc:
                raise FatalClientError(f"cannot connect securely to {self.url}: {exc}") from exc
            except (OSError, InvalidHandshake, TimeoutError, asyncio.TimeoutError) as exc:
                cause = exc.__cause__ or exc.__context__
                detail = str(exc) or (f"{type(exc).__name__} ({cause!r})" if cause else repr(exc))
                why = f"cannot reach the server: {detail}"
                log.info("client %d: cannot reach %s: %s", self.client_id, self.url, detail)
            finally:
                self._round = None
                if registered:
                    last_contact = loop.time()
            if self.summary.finished:
                break
            if loop.time() - last_contact > self.give_up_after:
                what = "no server" if why.startswith("cannot reach") else "not registered"
                raise ConnectionError(
                    f"client {self.client_id}: {what} at {self.url} for {self.give_up_after:g}s (last: {why})"
                )
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(2 * delay, self.backoff_max)
        return self.summary

    async def _register(self, ws: ClientConnection) -> bool:
        """Answer the server's challenge; True once the server welcomed this client.

        ``RegistrationRefused`` / ``_TransientRefusal`` when the server closes the connection
        instead (see ``errors.PERMANENT_REFUSALS``).
        """
        try:
            return await self._handshake(ws)
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                raise  # no close frame: a lost connection, retried
            code, reason = exc.rcvd.code, exc.rcvd.reason or "no reason given"
            if code in PERMANENT_REFUSALS:
                log.error("client %d refused by the server: %s (close code %d)", self.client_id, reason, code)
                raise RegistrationRefused(code, reason) from None
            raise _TransientRefusal(f"{reason} (close code {code})") from None

    async def _handshake(self, ws: ClientConnection) -> bool:
        try:
            challenge = self._decode(await ws.recv())
        except WireVersionError as exc:
            reason = f"wire version: server {exc.version!r:.20}, client {exc.ours}"
            await ws.close(CloseCode.MISMATCH, reason)
            raise RegistrationRefused(CloseCode.MISMATCH, reason) from None
        if isinstance(challenge.message, Finished):
            self.summary.finished = True
            return False
        if not isinstance(challenge.message, Challenge):
            raise DecodeError(f"expected a challenge, got {type(challenge.message).__name__}")
        offer = challenge.message
        if offer.active and self.identity_key is None:
            await ws.close(CloseCode.MISMATCH, "mode: server active, client semi_honest (no identity key)")
            raise FatalClientError("the server runs the active mode; this client has no identity key")
        if not offer.active and self.identity_key is not None:
            await ws.close(CloseCode.MISMATCH, "mode: server semi_honest, client active (identity key)")
            raise FatalClientError("this client requires the active mode; the server runs semi-honest")
        signature = None
        if self.identity_key is not None:
            signature = signatures.sign(self.identity_key, registration_payload(offer.nonce, self.client_id))
        await ws.send(encode(Hello(self.client_id, signature, self.terms)))
        reply = self._decode(await ws.recv())
        if isinstance(reply.message, Finished):
            self.summary.finished = True
            return False
        if not isinstance(reply.message, Welcome) or reply.message.client_id != self.client_id:
            raise DecodeError(f"expected a welcome, got {type(reply.message).__name__}")
        log.info("client %d registered; next round %d", self.client_id, reply.message.next_round)
        return True

    def _decode(self, data: str | bytes) -> Frame:
        return decode_from_server(data, self.limits)

    async def _serve(self, ws: ClientConnection) -> None:
        async for data in ws:
            try:
                # Decoding a key list of n-1 neighbours takes a while at large n: off the loop.
                frame = await asyncio.to_thread(self._decode, data)
            except DecodeError as exc:
                log.error("client %d: malformed frame from the server: %s", self.client_id, exc)
                await ws.close(CloseCode.INVALID_DATA, "malformed frame")
                return
            message = frame.message
            if isinstance(message, RoundStart):
                await self._start_round(ws, frame, message)
            elif isinstance(message, RoundEnd):
                self._end_round(frame.round, message)
            elif isinstance(message, Finished):
                self.summary.finished = True
                log.info(
                    "client %d: federation finished after %d rounds", self.client_id, message.rounds_completed
                )
                await ws.close()
                return
            elif isinstance(message, (Challenge, Welcome)):
                log.error("client %d: unexpected %s", self.client_id, type(message).__name__)
                await ws.close(CloseCode.POLICY_VIOLATION, "unexpected registration message")
                return
            else:
                await self._protocol_message(ws, frame)

    # -- rounds ---------------------------------------------------------------------------------

    def check_round_start(self, frame: Frame, start: RoundStart) -> tuple[RoundSetup, TrainingSettings, int]:
        """The round's setup, training settings and this client's round-local id if this client
        accepts the round start; else ``RoundRefused``."""
        config = start.config
        if start.nonce in self._seen_nonces:
            raise RoundRefused("the session nonce was used before (replayed round start)")
        wire = dict(start.settings)
        local_id = wire.pop(LOCAL_ID, None)
        plaintext = wire.pop(INSECURE_PLAINTEXT, False)
        if plaintext is not False and not (plaintext is True and self.allow_insecure_plaintext):
            raise RoundRefused(
                "the server asks for an insecure plaintext round (updates unmasked); this client "
                "requires secure aggregation"
            )
        try:
            dp, wire = split_settings(wire)
        except ValueError as exc:
            raise RoundRefused(str(exc)) from None
        self._check_dp(dp, frame.round)
        if not isinstance(local_id, int) or isinstance(local_id, bool):
            raise RoundRefused(f"the round start gives no round-local id ({LOCAL_ID!r})")
        if not 1 <= local_id <= config.num_clients:
            raise RoundRefused(f"round-local id {local_id} is outside 1..{config.num_clients}")
        shortfall = threat_model_shortfall(config, self.min_collusion_fraction, self.min_dropout_fraction)
        if shortfall is not None:
            raise RoundRefused(shortfall)
        if self.identity_key is not None:
            if not config.is_active or start.roster is None:
                raise RoundRefused("this client takes part only in active-mode rounds")
            own = signatures.identity_public_bytes(self.identity_key)
            if start.roster.get(local_id) != own:
                raise RoundRefused(f"the round's roster does not list this client's key as id {local_id}")
            if self._roster_file is not None:
                self.roster = self._roster_file.current()  # members enrolled since the last round
            trusted = set(self.roster.values()) if self.roster is not None else set()
            strangers = [i for i, key in start.roster.items() if key not in trusted]
            if strangers:
                # Every member must be an identity this client trusts, or the server could stand
                # in for the other members with keys of its own.
                raise RoundRefused(f"round-local ids {strangers[:5]} carry keys not in this client's roster")
            if len(set(start.roster.values())) != len(start.roster):
                raise RoundRefused("the round's roster lists one identity key twice")
        elif config.is_active:
            raise RoundRefused("an active-mode round needs an identity key")
        dimension = self.trainer.dimension
        padded = padded_dimension(dimension) if dp is not None else dimension
        if config.vector_length != padded + 1 or start.parameters.shape != (dimension,):
            raise RoundRefused(
                f"vector length {config.vector_length} and model of {start.parameters.shape[0]} parameters "
                f"do not fit this client's model of {dimension} parameters "
                f"({'padded to ' + str(padded) + ' for DP, ' if dp is not None else ''}+1 weight element)"
            )
        if not np.all(np.isfinite(start.parameters)):
            raise RoundRefused("the global model holds NaN or infinite values")
        quant = start.quantization
        if quant.modulus != config.modulus or quant.num_clients < config.num_clients:
            raise RoundRefused(
                f"quantization (modulus {quant.modulus}, headroom for {quant.num_clients} clients) does not "
                f"fit the round (modulus {config.modulus}, {config.num_clients} clients)"
            )
        try:
            settings = TrainingSettings.from_wire(wire)
            setup = RoundSetup(config, start.nonce, start.roster)
        except ValueError as exc:
            raise RoundRefused(str(exc)) from None
        if frame.session != setup.session_id:
            raise RoundRefused("the envelope's session id does not match config, nonce and roster")
        return setup, settings, local_id

    def _check_dp(self, dp: DPTerms | None, round_number: int) -> None:
        """Refuse a round whose DP terms do not meet this client's requirements."""
        if dp is None:
            if self.require_dp:
                raise RoundRefused("the round start has no distributed-DP terms; this client requires DP")
            return
        budget = dp.dp
        if self.max_dp_epsilon is not None and budget.epsilon > self.max_dp_epsilon:
            raise RoundRefused(
                f"the DP budget epsilon={budget.epsilon:g} exceeds this client's maximum "
                f"{self.max_dp_epsilon:g}"
            )
        if self.max_dp_delta is not None and budget.delta > self.max_dp_delta:
            raise RoundRefused(
                f"the DP budget delta={budget.delta:g} exceeds this client's maximum {self.max_dp_delta:g}"
            )
        if round_number > budget.rounds:
            raise RoundRefused(f"round {round_number} is past the DP budget of {budget.rounds} rounds")

    def _dp_plan(self, start: RoundStart) -> tuple[DPTerms, DPPlan] | None:
        """The round's DP terms and this client's own plan (None: no DP); ``RoundRefused`` when the
        budget cannot be met for the round's n and t or the field differs from the config's."""
        dp, _ = split_settings(start.settings)  # validated by check_round_start
        if dp is None:
            return None
        config = start.config
        try:
            plan = dp.plan(config.num_clients, config.threshold, self.trainer.dimension)
        except ValueError as exc:
            n, t = config.num_clients, config.threshold
            raise RoundRefused(f"no DP plan for n={n}, t={t}: {exc}") from None
        if plan.quantization.modulus != config.modulus or start.quantization.modulus != config.modulus:
            raise RoundRefused(
                f"the DP budget needs modulus {plan.quantization.modulus}, the round uses {config.modulus}"
            )
        return dp, plan

    async def _start_round(self, ws: ClientConnection, frame: Frame, start: RoundStart) -> None:
        self._round = None
        try:
            setup, settings, local_id = self.check_round_start(frame, start)
            private = await asyncio.to_thread(self._dp_plan, start)  # seconds the first time
        except RoundRefused as exc:
            log.warning("client %d refuses round %d: %s", self.client_id, frame.round, exc)
            self.summary.refused[frame.round] = str(exc)
            local = start.settings.get(LOCAL_ID)
            sender = local if isinstance(local, int) and not isinstance(local, bool) and local >= 1 else 1
            await ws.send(encode(ClientAbort(sender, str(exc)), round=frame.round, session=frame.session))
            return
        self._seen_nonces.add(start.nonce)
        parameters = np.array(start.parameters, dtype=np.float64)
        update = await asyncio.to_thread(self.trainer.train, parameters, settings, frame.round)
        if self.on_update is not None:
            self.on_update(frame.round, update)
        # Quantizing a large model takes seconds: off the loop, which keeps answering pings (with
        # many clients in one process, the others' too).
        if private is not None:  # distributed DP: clip, rotate, round, add noise
            dp, plan = private
            vector = await asyncio.to_thread(dp.encode, plan, update, self._rng)
        else:
            vector = await asyncio.to_thread(
                encode_weighted_update, update.update, update.num_examples, start.quantization, self._rng
            )
        if start.settings.get(INSECURE_PLAINTEXT) is True:  # accepted by check_round_start
            # INSECURE debugging mode: the encoded update goes to the server unmasked.
            upload = MaskedInput(local_id, vector)
            data = await asyncio.to_thread(
                lambda: encode(
                    upload, round=frame.round, session=setup.session_id, modulus=setup.config.modulus
                )
            )
            await ws.send(data)
            return
        secagg = SecAggClient(setup, local_id, vector, identity_key=self.identity_key)
        self._round = _ActiveRound(frame.round, setup.session_id, secagg)
        data = await asyncio.to_thread(
            lambda: encode(secagg.start(), round=frame.round, session=setup.session_id)
        )
        await ws.send(data)

    async def _protocol_message(self, ws: ClientConnection, frame: Frame) -> None:
        active = self._round
        if active is None:
            log.warning(
                "client %d: ignoring %s outside a round", self.client_id, type(frame.message).__name__
            )
            return
        if frame.round != active.number or frame.session != active.session_id:
            await self._abort(ws, active, f"message for round {frame.round} in round {active.number}")
            return
        # Key agreement, share encryption and masking run in a worker thread, so the event loop
        # keeps answering pings (and, with many clients in one process, serving the others).
        try:
            data = await asyncio.to_thread(self._answer, active, frame.message)
        except (AbortedError, LocalProtocolError) as exc:
            await self._abort(ws, active, str(exc))
            return
        await ws.send(data)

    @staticmethod
    def _answer(active: _ActiveRound, message: object) -> bytes:
        """This client's encoded reply to one protocol message (in a worker thread)."""
        reply = active.secagg.receive(message)  # type: ignore[arg-type]
        return encode(
            reply, round=active.number, session=active.session_id, modulus=active.secagg.config.modulus
        )

    async def _abort(self, ws: ClientConnection, active: _ActiveRound, reason: str) -> None:
        log.warning("client %d aborts round %d: %s", self.client_id, active.number, reason)
        self._round = None
        sender = active.secagg.client_id
        await ws.send(encode(ClientAbort(sender, reason), round=active.number, session=active.session_id))

    def _end_round(self, number: int, end: RoundEnd) -> None:
        self._round = None
        if end.status == "completed":
            self.summary.completed.append(number)
        else:
            self.summary.aborted.append(number)
        log.info("client %d: round %d %s %s", self.client_id, number, end.status, end.reason)
