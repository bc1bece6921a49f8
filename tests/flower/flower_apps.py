"""Flower apps for the adapter tests: deterministic clients, injected dropouts, a recording workflow.

Every client's update is a fixed function of its node id (``client_delta``), so the test can
compute the plaintext FedAvg aggregate of exactly the survivors the workflow reports.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from secagg import Round
from secagg.messages import UnmaskingRequest
from transport.codec import FrameLimits, decode_from_server, encode
from transport.flower import SecureAggregationWorkflow, secure_aggregation_mod
from transport.flower.workflow import _RoundState

SHAPES = ((3, 4), (5,))
CLIP = 1.0
MAX_WEIGHT = 100


def initial_arrays() -> list[np.ndarray]:
    return [np.full(s, 0.25, dtype=np.float64) for s in SHAPES]


def _rng(node_id: int, label: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{label}/{node_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def client_delta(node_id: int) -> list[np.ndarray]:
    """The update node ``node_id`` adds to the global model (some elements beyond the clip)."""
    rng = _rng(node_id, "delta")
    return [rng.uniform(-1.3, 1.3, size=s) for s in SHAPES]


def client_examples(node_id: int) -> int:
    return 20 + node_id % 60


def client_metric(node_id: int) -> float:
    """A distinctive per-client metric that must never leave the client in the clear."""
    return 0.123456789012 + (node_id % 997) * 1.0009765625


class DeterministicClient(NumPyClient):
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id

    def fit(
        self, parameters: list[np.ndarray], config: Mapping[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        out = [p + d for p, d in zip(parameters, client_delta(self.node_id), strict=True)]
        return out, client_examples(self.node_id), {"secret_metric": client_metric(self.node_id)}


def client_fn(context: Context) -> Any:
    return DeterministicClient(context.node_id).to_client()


def stage_counter(ctxt: Context, group: str) -> int:
    """How many fit messages of ``group`` (the server round) this node saw before this one."""
    record = ctxt.state.config_records.get("test.stages")
    count = int(record.get(group, 0)) if record is not None else 0  # type: ignore[arg-type]
    updated = ConfigRecord(dict(record) if record is not None else {})
    updated[group] = count + 1
    ctxt.state.config_records["test.stages"] = updated
    return count


class DropoutMod:
    """Outermost mod: ``plan[server round][partition id] = k`` makes that node fail at the k-th
    fit message of the round (the k-th SecAgg stage), as a crashed client would."""

    def __init__(self, plan: Mapping[int, Mapping[int, int]]) -> None:
        self.plan = {int(r): dict(p) for r, p in plan.items()}

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN:
            stage = stage_counter(ctxt, msg.metadata.group_id)
            plan = self.plan.get(int(msg.metadata.group_id), {})
            if plan.get(int(ctxt.node_config["partition-id"])) == stage:
                raise RuntimeError(f"injected dropout at stage {stage}")
        return call_next(msg, ctxt)


HANG_MARKER = "secagg-flower-test: hanging"
HANG_SECONDS = 600.0  # a hanging node waits this long to be killed, then fails


class HangMod:
    """Outermost mod for the deployment engine: in round ``hang-round`` (run config) the node of
    partition ``hang-partition`` prints ``HANG_MARKER`` with its node id and process id at its
    ``hang-stage``-th fit message and stops answering, so that a test can kill it right there."""

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN:
            cfg = ctxt.run_config
            stage = stage_counter(ctxt, msg.metadata.group_id)
            planned = (cfg["hang-round"], cfg["hang-partition"], cfg["hang-stage"])
            here = (int(msg.metadata.group_id), int(ctxt.node_config["partition-id"]), stage)
            if planned == here:
                # The ClientApp process writes to its SuperNode's output, which the test reads.
                print(f"{HANG_MARKER} node={ctxt.node_id} stage={stage} pid={os.getpid()}", flush=True)
                threading.Event().wait(HANG_SECONDS)
                raise RuntimeError(f"node {ctxt.node_id} was not killed within {HANG_SECONDS} s")
        return call_next(msg, ctxt)


def client_app(drop_plan: Mapping[int, Mapping[int, int]]) -> ClientApp:
    return ClientApp(client_fn=client_fn, mods=[DropoutMod(drop_plan), secure_aggregation_mod])


class RecordingWorkflow(SecureAggregationWorkflow):
    """Records every reply and the aggregate; in ``dishonest_round`` it asks one node for both
    shares of one of its neighbours."""

    def __init__(self, dishonest_round: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dishonest_round = dishonest_round
        self.replies: dict[int, list[tuple[str, Message]]] = {}  # round -> (stage, reply)
        self.before: dict[int, list[np.ndarray]] = {}
        self.after: dict[int, list[np.ndarray]] = {}
        self.means: dict[int, np.ndarray] = {}
        self.tampered: dict[int, tuple[int, int]] = {}  # round -> (victim node, node asked)

    def _exchange(
        self,
        grid: Grid,
        state: _RoundState,
        stage: Round,
        outgoing: Mapping[int, bytes],
        *,
        setup_frame: bool,
    ) -> list[Message]:
        record = state.record
        outgoing = dict(outgoing)
        if stage is Round.UNMASKING and record.server_round == self.dishonest_round:
            i = min(outgoing)
            limits = FrameLimits.for_client(state.setup.config.vector_length, state.setup.config.num_clients)
            frame = decode_from_server(outgoing[i], limits)
            request = frame.message
            assert isinstance(request, UnmaskingRequest)
            victim = max(request.survivors - {i})
            forged = UnmaskingRequest(i, request.survivors, request.dropped | {victim})
            outgoing[i] = encode(forged, round=frame.round, session=frame.session)
            self.tampered[record.server_round] = (record.node_of[victim], record.node_of[i])
        replies = super()._exchange(grid, state, stage, outgoing, setup_frame=setup_frame)
        self.replies.setdefault(record.server_round, []).extend((stage.value, r) for r in replies)
        return replies

    def _hand_to_strategy(self, context: LegacyContext, state: _RoundState, mean: Any) -> None:
        r = state.record.server_round
        self.before[r] = parameters_to_ndarrays(state.parameters)
        self.means[r] = mean.mean
        super()._hand_to_strategy(context, state, mean)
        record = context.state.array_records[MAIN_PARAMS_RECORD]
        self.after[r] = parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))


def run_rounds(
    grid: Grid, context: Context, workflow: SecureAggregationWorkflow, num_rounds: int, num_nodes: int
) -> None:
    """FedAvg over all ``num_nodes`` nodes (it waits for them) with ``workflow`` as fit workflow."""
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=num_nodes,
        min_available_clients=num_nodes,
        initial_parameters=ndarrays_to_parameters(initial_arrays()),
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=num_rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)


def server_app(workflow: SecureAggregationWorkflow, num_rounds: int, num_nodes: int) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_rounds(grid, context, workflow, num_rounds, num_nodes)

    return app
