"""The ClientApp mod: a drop-in for ``flwr.client.mod.secaggplus_mod``.

``ClientApp(client_fn=..., mods=[secure_aggregation_mod])`` makes a Flower client answer
``SecureAggregationWorkflow``. Each fit message from the workflow carries one frame of this project's codec
(``transport.flower.records``); the mod decodes it, feeds it to ``secagg.SecAggClient`` and
answers with the client's next frame:

- the setup frame (``RoundStart``: config, fresh nonce, quantization, round-local id 1..n)
  creates the round's ``SecAggClient``; its reply is round 0 (AdvertiseKeys);
- the frame whose reply is the masked input also carries the strategy's fit instructions: the
  mod runs the wrapped ClientApp's fit, takes the update (returned parameters minus the global
  ones) and the example count, encodes ``[quantize(w / w_max * update) | w]`` with
  ``fedavg_core.encode_weighted_update`` and masks it. The fit result's parameters, example
  count and metrics are dropped: only the masked vector leaves the client;
- every other frame goes straight to the state machine, whatever the protocol's rounds are.

The mod refuses (replies with a Flower ``Error``, keeps nothing) whatever the state machine
refuses, e.g. an unmasking request that asks for both shares of one client, and also a frame of
another round or session, a malformed record or frame, and a fit request that comes without
secure aggregation. Evaluate and query messages pass through unchanged.
"""

from __future__ import annotations

import logging
import os

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, parameters_to_ndarrays
from flwr.common.constant import ErrorCode

from fedavg_core.weighting import encode_weighted_update
from secagg import AbortedError, LocalProtocolError, Round, RoundSetup, SecAggClient
from secagg.config import DEFAULT_DROPOUT_FRACTION, MAX_VECTOR_LENGTH, check_fraction, threat_model_shortfall
from secagg.messages import ServerMessage
from secagg.primitives.field import FieldVector

from ..codec import FrameLimits, decode_from_server, encode
from ..errors import DecodeError
from ..wire import RoundStart
from .client_state import ClientSession, StateError, dump_session, load_session
from .params import flatten
from .records import RecordError, frame_content, take_frame

logger = logging.getLogger(__name__)

STATE_KEY = "secagg_fedavg.state"
REFUSED = ErrorCode.MOD_FAILED_PRECONDITION


class Refused(Exception):
    """The client mod refuses a message (the reason goes back to the server as an Error)."""


class SecAggMod:
    """The client mod; ``secure_aggregation_mod`` is an instance with the default limits.

    Args:
        max_parameters: the largest model (number of parameters) this client accepts a round
            for; bounds what it decodes before knowing the round.
        max_clients: the largest round (n) it accepts.
        min_collusion_fraction: refuse rounds whose config assumes fewer colluders than this
            (the server's gamma sizes t; a lower claim lowers it).
        min_dropout_fraction: refuse SecAgg+ rounds whose graph is not secure when this fraction
            of the nodes drops out (``secagg.config.threat_model_shortfall``).
    """

    def __init__(
        self,
        *,
        max_parameters: int = MAX_VECTOR_LENGTH - 1,
        max_clients: int = 1 << 16,
        min_collusion_fraction: float = 1 / 3,
        min_dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
    ) -> None:
        if not 1 <= max_parameters < MAX_VECTOR_LENGTH:
            raise ValueError(f"max_parameters must be in [1, {MAX_VECTOR_LENGTH - 1}], got {max_parameters}")
        check_fraction("min_collusion_fraction", min_collusion_fraction)
        check_fraction("min_dropout_fraction", min_dropout_fraction)
        self.max_parameters = max_parameters
        self.max_clients = max_clients
        self.min_collusion_fraction = min_collusion_fraction
        self.min_dropout_fraction = min_dropout_fraction

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        """Handle one message (see the module docstring)."""
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        try:
            reply = self._handle(msg, ctxt, call_next)
        except (Refused, AbortedError, LocalProtocolError, DecodeError, RecordError, StateError) as exc:
            ctxt.state.config_records.pop(STATE_KEY, None)
            reason = f"secure_aggregation_mod refused: {exc}"
            logger.warning("node %s: %s", ctxt.node_id, reason)
            return Message(Error(code=REFUSED, reason=reason), reply_to=msg)
        return Message(reply, reply_to=msg)

    # -- one message --------------------------------------------------------------------------

    def _handle(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> RecordDict:
        if not msg.has_content():
            raise Refused("the fit message has no content")
        try:
            record = take_frame(msg.content)
        except RecordError:
            raise Refused(
                "a fit request without secure aggregation: this client sends its update only "
                "masked (run the server with SecureAggregationWorkflow)"
            ) from None
        if record.client_id is not None:
            return self._start(record.frame, record.client_id, ctxt)
        session = self._load(ctxt)
        frame = decode_from_server(
            record.frame,
            FrameLimits.for_client(session.client.config.vector_length, session.client.config.num_clients),
        )
        if frame.round != session.fedavg_round or frame.session != session.session_id:
            raise Refused(
                f"frame of round {frame.round} and another session; this client is in round "
                f"{session.fedavg_round} of its current session"
            )
        client = session.client
        if client.round is Round.MASKED_INPUT:
            client.set_input(self._train(msg, ctxt, call_next, session))
        elif msg.content.array_records:
            raise Refused(f"fit instructions sent in round {client.round.value}, before the masked input")
        message = frame.message
        if not isinstance(message, ServerMessage):  # pragma: no cover - the codec decodes only these
            raise Refused(f"unexpected {type(message).__name__} frame")
        reply = client.receive(message)
        if client.round is Round.DONE:
            ctxt.state.config_records.pop(STATE_KEY, None)
        else:
            self._save(ctxt, session)
        return frame_content(
            encode(
                reply, round=session.fedavg_round, session=session.session_id, modulus=client.config.modulus
            )
        )

    def _start(self, frame_bytes: bytes, client_id: int, ctxt: Context) -> RecordDict:
        """The setup frame: a fresh SecAggClient for the round; reply with round 0."""
        ctxt.state.config_records.pop(STATE_KEY, None)  # a new round replaces any unfinished one
        frame = decode_from_server(
            frame_bytes, FrameLimits.for_client(self.max_parameters + 1, self.max_clients)
        )
        start = frame.message
        if not isinstance(start, RoundStart):
            raise Refused(f"a round must start with RoundStart, got {type(start).__name__}")
        config, quant = start.config, start.quantization
        if start.roster is not None or config.is_active:
            raise Refused("the active mode is not supported by the Flower adapter")
        if quant.modulus != config.modulus or quant.num_clients < config.num_clients:
            raise Refused(
                f"quantization (p={quant.modulus}, n={quant.num_clients}) does not match the round "
                f"(p={config.modulus}, n={config.num_clients})"
            )
        if start.parameters.size:
            raise Refused("the setup frame must not carry parameters (they come with the fit instructions)")
        if config.num_clients > self.max_clients:
            raise Refused(
                f"round of {config.num_clients} clients exceeds this client's limit {self.max_clients}"
            )
        shortfall = threat_model_shortfall(config, self.min_collusion_fraction, self.min_dropout_fraction)
        if shortfall is not None:
            raise Refused(shortfall)
        setup = RoundSetup(config, start.nonce)
        client = SecAggClient(setup, client_id, random_bytes=os.urandom)
        reply = client.start()
        session = ClientSession(client, quant, frame.round, setup.session_id)
        self._save(ctxt, session)
        return frame_content(
            encode(reply, round=frame.round, session=setup.session_id, modulus=config.modulus)
        )

    def _train(
        self, msg: Message, ctxt: Context, call_next: ClientAppCallable, session: ClientSession
    ) -> FieldVector:
        """Run the wrapped fit and return the encoded weighted update (m + 1 field elements)."""
        if not msg.content.array_records:
            raise Refused("the masked-input request carries no fit instructions")
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        out = call_next(msg, ctxt)
        if out.has_error():
            raise Refused(f"local training failed: {out.error.reason}")
        fitres = compat.recorddict_to_fitres(out.content, keep_input=False)
        if fitres.status.code != Code.OK:
            raise Refused(f"local training failed: {fitres.status.message}")
        before = flatten(parameters_to_ndarrays(fitins.parameters))
        after = flatten(parameters_to_ndarrays(fitres.parameters))
        expected = session.client.config.vector_length - 1
        if before.size != expected or after.size != expected:
            raise Refused(
                f"the round is for a model of {expected} parameters; the global model has "
                f"{before.size} and the fit returned {after.size}"
            )
        return encode_weighted_update(
            after - before, int(fitres.num_examples), session.quantization, np.random.default_rng()
        )

    # -- state between messages ---------------------------------------------------------------

    @staticmethod
    def _load(ctxt: Context) -> ClientSession:
        record = ctxt.state.config_records.get(STATE_KEY)
        if record is None or not isinstance(record.get("session"), bytes):
            raise Refused("no round in progress on this client (the round must start with its setup frame)")
        return load_session(record["session"])  # type: ignore[arg-type]

    @staticmethod
    def _save(ctxt: Context, session: ClientSession) -> None:
        ctxt.state.config_records[STATE_KEY] = ConfigRecord({"session": dump_session(session)})


secure_aggregation_mod = SecAggMod()
"""The client mod with default limits: ``ClientApp(client_fn, mods=[secure_aggregation_mod])``."""
