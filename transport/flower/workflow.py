"""The ServerApp fit workflow: a drop-in for ``flwr.server.workflow.SecAggPlusWorkflow``.

``DefaultWorkflow(fit_workflow=SecureAggregationWorkflow(...))`` runs each fit round as one
SecAgg / SecAgg+ round of this project (Bonawitz et al. 2017; Bell et al. 2020) over Flower's
Grid/Message API, with ``secure_aggregation_mod`` on the clients:

1. the strategy's ``configure_fit`` samples n nodes; they get round-local ids 1..n in a random
   order, and the round's ``SecAggConfig`` comes from the threat model (``ThreatModel``: gamma,
   delta, graph, mode) and n;
2. the workflow drives ``secagg.SecAggServer`` generically: it sends each live node the frame
   the server produced for it (the setup frame first), collects the replies until all arrived
   or the stage's timeout passed, feeds them to the server and advances, until the server is
   done. The frame whose reply is the masked input also carries the node's fit instructions;
   a node that fails, times out or sends a bad frame is out of the round, which completes as
   long as t remain (also when nodes drop before masking);
3. the server releases only the sum over U3; the workflow decodes the weighted mean update
   (``fedavg_core.decode_weighted_sum``), adds it to the global model, and hands the result to
   ``strategy.aggregate_fit`` the way Flower's workflow does: one ``FitRes`` per survivor, each
   holding the aggregate (with ``num_examples=1`` and no metrics: the example counts stay hidden).

``history`` keeps one ``RoundRecord`` per fit round (survivors, drops with reasons, seconds
per stage and for the server's aggregation).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import log
from flwr.server import Grid, LegacyContext
from flwr.server.client_proxy import ClientProxy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

from fedavg_core.quantize import QuantizationConfig
from fedavg_core.weighting import WeightedMean, decode_weighted_sum
from secagg import AbortedError, Round, RoundSetup, SecAggConfig, SecAggServer
from secagg.session import NONCE_SIZE

from ..codec import FrameLimits, decode_from_client, encode
from ..errors import DecodeError
from ..wire import RoundStart
from .params import ThreatModel, flatten, unflatten
from .records import RecordError, frame_content, put_frame, read_frame

STAGE_NAMES = frozenset(r.value for r in Round) - {Round.DONE.value, Round.ABORTED.value}


@dataclass
class RoundRecord:
    """What one secure fit round did.

    Attributes:
        server_round: the Flower round.
        sampled: node ids the strategy sampled (round-local ids ``1..n`` in ``node_of``).
        node_of: round-local id -> node id.
        config: the round's ``SecAggConfig`` (None when the round could not be configured).
        survivors: node ids whose updates are in the aggregate (U3).
        dropped: node id -> ``"stage: reason"`` for every node that left the round.
        stage_seconds: wall time of each stage (send, wait, receive), by stage name.
        server_seconds: the server's own compute (checking replies, advancing, removing masks,
            decoding and the strategy's aggregation), by stage name; ``"aggregate"`` is the
            decoding and the strategy's aggregation.
        total_weight: the sum of the survivors' hidden weights (None unless completed).
        error_bound: per-element quantization bound of the decoded mean update.
        halted: why the round stopped without a result (None when it completed).
    """

    server_round: int
    sampled: tuple[int, ...] = ()
    node_of: dict[int, int] = field(default_factory=dict)
    config: SecAggConfig | None = None
    survivors: tuple[int, ...] = ()
    dropped: dict[int, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)
    total_weight: int | None = None
    error_bound: float | None = None
    halted: str | None = None

    @property
    def completed(self) -> bool:
        """True when the strategy received the secure aggregate."""
        return self.halted is None and self.total_weight is not None


@dataclass
class _RoundState:
    record: RoundRecord
    proxies: dict[int, ClientProxy]  # node id -> proxy
    fitins: dict[int, RecordDict]  # node id -> fit instructions
    local_of: dict[int, int]  # node id -> round-local id
    setup: RoundSetup
    quantization: QuantizationConfig
    parameters: Parameters
    failures: list[BaseException] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # message id -> node id, current stage


class SecureAggregationWorkflow:
    """The fit workflow (see the module docstring).

    Args:
        clip, max_weight, bits, graph, collusion_fraction, dropout_fraction, threshold, degree:
            the threat model and quantization (``ThreatModel``). The default graph is SecAgg+'s
            Harary graph with k and t from the parameter finder, which falls back to the
            complete graph when n leaves no sparser safe choice.
        timeout: seconds to wait for the replies of each stage (None: wait for all, as Flower).
        stage_timeouts: per-stage overrides, by stage name (e.g. ``{"masked_input": 600}``:
            that stage includes local training).
    """

    def __init__(
        self,
        *,
        clip: float = 1.0,
        max_weight: int = 1000,
        bits: int = 16,
        graph: str = "harary",
        collusion_fraction: float = 1 / 3,
        dropout_fraction: float = 0.1,
        threshold: int | None = None,
        degree: int | None = None,
        timeout: float | None = None,
        stage_timeouts: Mapping[str, float | None] | None = None,
    ) -> None:
        self.threat_model = ThreatModel(
            clip=clip,
            max_weight=max_weight,
            bits=bits,
            graph=graph,  # type: ignore[arg-type]
            collusion_fraction=collusion_fraction,
            dropout_fraction=dropout_fraction,
            threshold=threshold,
            degree=degree,
        )
        for name, value in (("timeout", timeout), *dict(stage_timeouts or {}).items()):
            if value is not None and not value > 0:
                raise ValueError(f"{name} timeout must be positive seconds or None, got {value!r}")
        unknown = set(stage_timeouts or {}) - STAGE_NAMES
        if unknown:
            raise ValueError(
                f"unknown stages in stage_timeouts: {sorted(unknown)}; stages are {sorted(STAGE_NAMES)}"
            )
        self.timeout = timeout
        self.stage_timeouts = dict(stage_timeouts or {})
        self.history: list[RoundRecord] = []

    # -- the workflow -------------------------------------------------------------------------

    def __call__(self, grid: Grid, context: Context) -> None:
        """Run one secure fit round (called by ``DefaultWorkflow`` once per round)."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        record = RoundRecord(server_round=cast(int, cfg[Key.CURRENT_ROUND]))
        self.history.append(record)
        try:
            state = self._configure(context, record)
            if state is None:
                return
            mean = self._run_protocol(grid, state)
            self._hand_to_strategy(context, state, mean)
        except _Halt as halt:
            record.halted = str(halt)
            log(WARNING, "Secure aggregation halted in round %s: %s", record.server_round, halt)

    def _configure(self, context: LegacyContext, record: RoundRecord) -> _RoundState | None:
        parameters = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
        instructions = context.strategy.configure_fit(record.server_round, parameters, context.client_manager)
        if not instructions:
            log(INFO, "configure_fit: no clients selected, cancel")
            record.halted = "no clients selected"
            return None
        log(
            INFO,
            "configure_fit: strategy sampled %s clients (out of %s)",
            len(instructions),
            context.client_manager.num_available(),
        )
        nodes = [proxy.node_id for proxy, _ in instructions]
        if len(set(nodes)) != len(nodes) or len(nodes) < 2:
            raise _Halt(f"secure aggregation needs at least 2 distinct nodes, got {len(set(nodes))}")
        secrets.SystemRandom().shuffle(nodes)  # ids 1..n in a random order
        node_of = {i + 1: node for i, node in enumerate(nodes)}
        record.sampled = tuple(sorted(nodes))
        record.node_of = node_of
        n = len(nodes)
        length = sum(int(a.size) for a in parameters_to_ndarrays(parameters)) + 1
        try:
            quantization = self.threat_model.quantization(n)
            config = self.threat_model.secagg_config(n, length, quantization.modulus)
        except ValueError as exc:
            raise _Halt(f"cannot configure a round of {n} clients: {exc}") from None
        record.config = config
        return _RoundState(
            record=record,
            proxies={proxy.node_id: proxy for proxy, _ in instructions},
            fitins={proxy.node_id: compat.fitins_to_recorddict(ins, True) for proxy, ins in instructions},
            local_of={node: i for i, node in node_of.items()},
            setup=RoundSetup(config, os.urandom(NONCE_SIZE)),
            quantization=quantization,
            parameters=parameters,
        )

    def _run_protocol(self, grid: Grid, state: _RoundState) -> WeightedMean:
        """Drive the server state machine until it releases the sum; decode the weighted mean."""
        record, setup = state.record, state.setup
        server = SecAggServer(setup)
        config = setup.config
        start = RoundStart(config, setup.nonce, None, state.quantization, np.zeros(0, dtype=np.float64), {})
        frame = encode(start, round=record.server_round)
        outgoing: dict[int, bytes] = {i: frame for i in record.node_of}
        first = True
        limits = FrameLimits.for_server(config)
        while server.round is not Round.DONE:
            stage = server.round.value
            began = time.perf_counter()
            replies = self._exchange(grid, state, server.round, outgoing, setup_frame=first)
            record.stage_seconds[stage] = time.perf_counter() - began
            first = False
            compute = time.perf_counter()
            self._feed(server, state, stage, outgoing, replies, limits)
            try:
                messages = server.advance()
            except AbortedError as exc:
                self._note_server_drops(server, state)
                raise _Halt(f"{exc} (dropped: {len(record.dropped)} of {len(record.node_of)})") from None
            outgoing = {
                i: encode(m, round=record.server_round, session=setup.session_id) for i, m in messages.items()
            }
            record.server_seconds[stage] = time.perf_counter() - compute
        self._note_server_drops(server, state)
        assert server.result is not None
        record.survivors = tuple(sorted(record.node_of[i] for i in server.survivors))
        try:
            return decode_weighted_sum(server.result, state.quantization, len(server.survivors))
        except ValueError as exc:
            raise _Halt(f"the secure sum does not decode: {exc}") from None

    def _exchange(
        self,
        grid: Grid,
        state: _RoundState,
        stage: Round,
        outgoing: Mapping[int, bytes],
        *,
        setup_frame: bool,
    ) -> list[Message]:
        """Send each round-local id its frame; return the replies that came back in time."""
        record = state.record
        messages = []
        for i, frame in outgoing.items():
            node = record.node_of[i]
            if stage is Round.MASKED_INPUT:  # the reply is the masked update: train first
                content = put_frame(state.fitins.pop(node), frame)
            else:
                content = frame_content(frame, client_id=i if setup_frame else None)
            messages.append(
                Message(
                    content=content,
                    dst_node_id=node,
                    message_type=MessageType.TRAIN,
                    group_id=str(record.server_round),
                )
            )
        timeout = self.stage_timeouts.get(stage.value, self.timeout)
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        # The grid gives each message its id when it pushes it: replies refer to it.
        state.sent = {
            m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id
        }
        return replies

    def _feed(
        self,
        server: SecAggServer,
        state: _RoundState,
        stage: str,
        outgoing: Mapping[int, bytes],
        replies: Iterable[Message],
        limits: FrameLimits,
    ) -> None:
        record, session = state.record, state.setup.session_id
        answered: set[int] = set()
        for reply in replies:
            node = _answered_node(reply, state.sent)
            i = state.local_of.get(node) if node is not None else None
            if node is None or i is None or i not in outgoing or i in answered:
                continue  # not asked in this stage (or a second reply): ignore
            answered.add(i)
            if reply.has_error():
                self._drop(
                    state, node, stage, f"node error {reply.error.code}: {_last_line(reply.error.reason)}"
                )
                continue
            try:
                frame = decode_from_client(read_frame(reply.content).frame, limits)
            except (RecordError, DecodeError) as exc:
                self._drop(state, node, stage, f"bad reply: {exc}")
                continue
            sender = getattr(frame.message, "sender", None)
            if frame.round != record.server_round or frame.session != session or sender != i:
                self._drop(state, node, stage, f"frame of another round, session or client ({sender!r})")
                continue
            server.receive(frame.message)
        for i in set(outgoing) - answered:
            self._drop(state, record.node_of[i], stage, "no reply before the timeout")

    def _hand_to_strategy(self, context: LegacyContext, state: _RoundState, mean: WeightedMean) -> None:
        """Global model + mean update -> ``strategy.aggregate_fit``, as Flower's workflow does."""
        record = state.record
        began = time.perf_counter()
        record.total_weight, record.error_bound = mean.total_weight, mean.error_bound
        arrays = parameters_to_ndarrays(state.parameters)
        aggregate = ndarrays_to_parameters(unflatten(flatten(arrays) + mean.mean, arrays))
        results = [
            (state.proxies[node], FitRes(Status(Code.OK, "secure aggregate"), aggregate, 1, {}))
            for node in record.survivors
        ]
        log(INFO, "aggregate_fit: secure sum of %s clients (%s dropped)", len(results), len(record.dropped))
        parameters_aggregated, metrics = context.strategy.aggregate_fit(
            record.server_round,
            results,
            state.failures,  # type: ignore[arg-type]
        )
        if parameters_aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                parameters_aggregated, True
            )
            context.history.add_metrics_distributed_fit(server_round=record.server_round, metrics=metrics)
        record.server_seconds["aggregate"] = time.perf_counter() - began

    # -- bookkeeping --------------------------------------------------------------------------

    @staticmethod
    def _drop(state: _RoundState, node: int, stage: str, reason: str) -> None:
        if node in state.record.dropped:
            return
        state.record.dropped[node] = f"{stage}: {reason}"
        state.failures.append(Exception(f"node {node} left secure aggregation at {stage}: {reason}"))

    def _note_server_drops(self, server: SecAggServer, state: _RoundState) -> None:
        for i, drop in server.dropped.items():
            self._drop(state, state.record.node_of[i], drop.round.value, drop.reason)


def _answered_node(reply: Message, sent: Mapping[str, int]) -> int | None:
    """The node a reply answers for (None: not a reply of this stage's nodes).

    A node's own reply comes from it. In the deployment engine the SuperLink also answers on a
    node's behalf, from ``SUPERLINK_NODE_ID``, with an error (``NODE_UNAVAILABLE`` when the
    node shut down or stopped sending heartbeats while it held the message): that error belongs
    to the node the request went to, found by ``reply_to_message_id``.
    """
    node = sent.get(reply.metadata.reply_to_message_id)
    src = reply.metadata.src_node_id
    if node is None:  # a grid that does not report message ids: trust the sender
        return src
    if src == node or (src == SUPERLINK_NODE_ID and reply.has_error()):
        return node
    return None


def _last_line(text: str | None, limit: int = 300) -> str:
    """The last non-empty line of an error report (Ray wraps the reason in a traceback)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text or "").splitlines() if line.strip()]
    return (lines[-1] if lines else "no reason given")[:limit]


class _Halt(Exception):
    """The round stops without a result; the global model stays as it was."""
