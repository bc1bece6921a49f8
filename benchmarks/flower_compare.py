"""Flower's own SecAgg+ next to this project's drop-in, in one Flower simulation (Ray backend).

One ``run_simulation`` with N nodes: odd fit rounds run ``flwr.server.workflow.SecAggPlusWorkflow``
(clients answer with ``secaggplus_mod``), even rounds run ``transport.flower.SecureAggregationWorkflow``
(clients answer with ``secure_aggregation_mod``); the same nodes, model size and dropouts. Both use
the complete graph with the same threshold t (this project's smallest safe t for gamma = 1/3).
Optionally one node fails at the last stage of each round (``--drop-last-stage``), which both
workflows survive (a node lost before masking halts Flower's own round, so it is not compared).

After one warm-up round each (Ray starts its actors in the first), per round: the fit round's
wall time, and the server's own compute, which is that wall time minus the time spent inside
``grid.send_and_receive`` (client work and message passing), the same measure for both.
Prints one JSON object with medians and the ratios Flower / this project.

    python -m benchmarks.flower_compare --nodes 10 --parameters 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.simulation import run_simulation

from secagg.state import rounds_of
from transport.flower import SecureAggregationWorkflow, secure_aggregation_mod
from transport.flower.records import RECORD_KEY

from .common import median


class TimedGrid(Grid):
    """Delegates to a Grid and adds up the time spent in ``send_and_receive``."""

    def __init__(self, inner: Grid) -> None:
        self.inner = inner
        self.waiting = 0.0

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        began = time.perf_counter()
        try:
            return list(self.inner.send_and_receive(messages, timeout=timeout))
        finally:
            self.waiting += time.perf_counter() - began

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # Grid's abstract methods, delegated.
    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Any:
        return self.inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)


class Alternating:
    """The fit workflow of the comparison: Flower's in odd rounds, ours in even rounds; timed."""

    def __init__(self, flower: SecAggPlusWorkflow, ours: SecureAggregationWorkflow) -> None:
        self.flower, self.ours = flower, ours
        self.rows: dict[str, list[dict[str, float]]] = {"flower": [], "ours": []}

    def __call__(self, grid: Grid, context: Context) -> None:
        current = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])  # type: ignore[arg-type]
        name, workflow = ("flower", self.flower) if current % 2 else ("ours", self.ours)
        timed = TimedGrid(grid)
        model = context.state.array_records[MAIN_PARAMS_RECORD]
        began = time.perf_counter()
        workflow(timed, context)
        wall = time.perf_counter() - began
        done = context.state.array_records[MAIN_PARAMS_RECORD] is not model  # a new global model
        self.rows[name].append({"fit_round_s": wall, "server_s": wall - timed.waiting, "completed": done})


class FakeTrainer(NumPyClient):
    """'Training' that moves every parameter by a small random step (the model size is what counts)."""

    def __init__(self, seed: int, examples: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.examples = examples

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        return [p + self.rng.uniform(-0.1, 0.1, p.shape) for p in parameters], self.examples, {}


def _client_fn(context: Context) -> Any:
    partition = int(context.node_config["partition-id"])
    return FakeTrainer(partition, 20 + 7 * partition).to_client()


class Dispatch:
    """Routes each fit message to the mod of the workflow that sent it; fails the planned node."""

    def __init__(self, drop: dict[str, int], drop_partition: int | None) -> None:
        self.drop, self.drop_partition = drop, drop_partition

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        ours = RECORD_KEY in msg.content.config_records
        counter = ctxt.state.config_records.get("bench.stage")
        stage = int(counter.get(msg.metadata.group_id, 0)) if counter is not None else 0  # type: ignore[arg-type]
        ctxt.state.config_records["bench.stage"] = ConfigRecord({msg.metadata.group_id: stage + 1})
        if (
            int(ctxt.node_config["partition-id"]) == self.drop_partition
            and stage == self.drop["ours" if ours else "flower"]
        ):
            raise RuntimeError(f"injected dropout at stage {stage}")
        return (secure_aggregation_mod if ours else secaggplus_mod)(msg, ctxt, call_next)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--parameters", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="fit rounds per workflow")
    parser.add_argument(
        "--drop-last-stage", action="store_true", help="one node fails at each round's last stage"
    )
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)

    n = args.nodes
    ours = SecureAggregationWorkflow(clip=1.0, max_weight=1000, graph="complete")
    t = ours.threat_model.secagg_config(
        n, args.parameters + 1, ours.threat_model.quantization(n).modulus
    ).threshold
    flower = SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=t, max_weight=1000, clipping_range=8.0)
    alternating = Alternating(flower, ours)
    initial = ndarrays_to_parameters([np.zeros(args.parameters, dtype=np.float32)])

    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=initial,
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=2 * (args.rounds + 1)), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=alternating)(grid, legacy)

    last = {"flower": 3, "ours": len(rounds_of(False)) - 1}
    client = ClientApp(client_fn=_client_fn, mods=[Dispatch(last, 0 if args.drop_last_stage else None)])
    began = time.perf_counter()
    run_simulation(
        server_app=app,
        client_app=client,
        num_supernodes=n,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": os.cpu_count() or 2}},
    )
    total = time.perf_counter() - began

    def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "fit_round_s_median": median(r["fit_round_s"] for r in rows),
            "server_s_median": median(r["server_s"] for r in rows),
            "rounds": rows,
        }

    # The first round of each is a warm-up (Ray starts its actors during the very first one).
    f, o = summary(alternating.rows["flower"][1:]), summary(alternating.rows["ours"][1:])
    result = {
        "benchmark": "flower_compare",
        "nodes": n,
        "parameters": args.parameters,
        "threshold": t,
        "drop_last_stage": args.drop_last_stage,
        "simulation_s": total,
        "flower_secaggplus": f,
        "this_project": o,
        "ratio_fit_round": f["fit_round_s_median"] / o["fit_round_s_median"],
        "ratio_server": f["server_s_median"] / o["server_s_median"],
        "ours_completed": [r.completed for r in ours.history],
        "note": "ratios are Flower / this project (above 1: this project is faster); medians per round",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
