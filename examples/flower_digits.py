"""A Flower simulation (Ray backend) of the digits MLP with this project's secure aggregation.

Flower's usual app, with the two names of the drop-in:

    DefaultWorkflow(fit_workflow=SecureAggregationWorkflow(...))   # was SecAggPlusWorkflow(...)
    ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod])  # was secaggplus_mod

Ten nodes train a small torch MLP on non-IID digits (scikit-learn's bundled ``load_digits``,
Dirichlet 0.5). Each round every node fails with probability ``--dropout`` at a random SecAgg
stage (before masking too); the round completes as long as t remain. The server only ever sees
the masked updates and the sum; it prints the test accuracy of the global model per round.

    python examples/flower_digits.py [--nodes 10] [--rounds 5] [--dropout 0.2] [--graph harary]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Error, Message, MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarrays_to_parameters
from flwr.common.constant import ErrorCode
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.simulation import run_simulation

from fedavg_core import dirichlet_partition, load_digits_dataset
from secagg.state import rounds_of
from transport.flower import SecureAggregationWorkflow, secure_aggregation_mod

SEED = 0


def make_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def get_arrays(model: torch.nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_arrays(model: torch.nn.Module, arrays: list[np.ndarray]) -> None:
    keys = list(model.state_dict())
    model.load_state_dict({k: torch.from_numpy(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)})


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(torch.from_numpy(x).float())
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y).long()).item()
        return loss, float((logits.argmax(1).numpy() == y).mean())


class DigitsClient(NumPyClient):
    """Local SGD on this node's share of the digits (5 epochs, batch 16, lr 0.1)."""

    def __init__(self, partition: int, num_nodes: int) -> None:
        train, _ = load_digits_dataset(seed=SEED)
        parts = dirichlet_partition(train.y, num_nodes, alpha=0.5, rng=np.random.default_rng(SEED))
        self.data = train.subset(parts[partition])
        self.partition = partition

    def fit(
        self, parameters: list[np.ndarray], config: Mapping[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        model = make_model()
        set_arrays(model, parameters)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.from_numpy(self.data.x).float()
        y = torch.from_numpy(self.data.y).long()
        generator = torch.Generator().manual_seed(SEED + self.partition)
        for _ in range(5):
            for batch in torch.randperm(len(y), generator=generator).split(16):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
        # The example count and metrics stay on this node: the mod sends only the masked update.
        return get_arrays(model), len(y), {}


class RandomDropout:
    """Outermost mod: each round a node fails with probability ``rate`` at a random stage,
    replying with an error as a crashed or vanished client would look to the server."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.stages = len(rounds_of(False))

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        group = msg.metadata.group_id
        counter = ctxt.state.config_records.get("example.stage")
        stage = int(counter.get(group, 0)) if counter is not None else 0  # type: ignore[arg-type]
        ctxt.state.config_records["example.stage"] = ConfigRecord({group: stage + 1})
        digest = hashlib.sha256(f"{SEED}/{ctxt.node_config['partition-id']}/{group}".encode()).digest()
        draw = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        if draw.random() < self.rate and stage == int(draw.integers(self.stages)):
            return Message(
                Error(code=ErrorCode.CLIENT_APP_CRASHED, reason=f"simulated dropout at stage {stage}"),
                reply_to=msg,
            )
        return call_next(msg, ctxt)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--graph", choices=("complete", "harary"), default="complete")
    parser.add_argument("--verbose", action="store_true", help="show Flower's own log")
    args = parser.parse_args()
    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)

    _, test = load_digits_dataset(seed=SEED)
    workflow = SecureAggregationWorkflow(clip=1.0, max_weight=400, graph=args.graph, dropout_fraction=0.1)

    def evaluate(
        server_round: int, arrays: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, dict[str, Any]]:
        model = make_model()
        set_arrays(model, arrays)
        loss, acc = accuracy(model, test.x, test.y)
        if server_round == 0:
            print(f"round 0: accuracy {acc:.3f} (initial model)", flush=True)
        else:
            record = workflow.history[-1]
            lost = sorted(reason.split(":")[0] for reason in record.dropped.values())
            status = "completed" if record.completed else f"halted ({record.halted})"
            t = record.config.threshold if record.config else "?"
            print(
                f"round {server_round}: accuracy {acc:.3f}  secure sum of {len(record.survivors)}/"
                f"{len(record.sampled)} nodes (t={t}), lost at {lost or 'no stage'}, {status}",
                flush=True,
            )
        return loss, {"accuracy": acc}

    def client_fn(context: Context) -> Any:
        return DigitsClient(int(context.node_config["partition-id"]), args.nodes).to_client()

    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=args.nodes,
            min_available_clients=args.nodes,
            initial_parameters=ndarrays_to_parameters(get_arrays(make_model())),
            evaluate_fn=evaluate,
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=args.rounds), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    client = ClientApp(client_fn=client_fn, mods=[RandomDropout(args.dropout), secure_aggregation_mod])
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=args.nodes,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": os.cpu_count() or 2}},
    )


if __name__ == "__main__":
    main()
