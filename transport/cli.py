"""Console scripts: ``secagg-server`` and ``secagg-client`` (``secagg-demo`` is in ``demo``).

Both run the built-in digits task (``--task digits-mlp`` or ``digits-logreg``). Every process
derives the same non-IID split from ``--clients``, ``--alpha`` and ``--seed``; client i trains on
part i only. Also runnable as ``python -m transport.cli server|client ...``.

Exit codes: 0 finished (or the server was stopped by SIGINT/SIGTERM after closing every
connection), 1 error, 2 bad arguments, 3 a client gave up reaching the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from . import audit
from .checkpoint import CheckpointError
from .client import FatalClientError, FederationClient
from .identity import generate_identities, load_identity_key, load_roster
from .records import ServerEvent
from .server import FederationServer, FederationSettings
from .tasks import TASKS, DigitsTask, LearnerTrainer, TrainingSettings
from .tls import client_context, server_context

log = logging.getLogger("transport.cli")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """--task, --clients, --alpha, --seed: what every process of a federation must agree on."""
    group = parser.add_argument_group("task (identical on the server and every client)")
    group.add_argument("--task", choices=TASKS, default="digits-mlp", help="model (default: %(default)s)")
    group.add_argument("--clients", type=int, default=8, help="number of clients N (default: %(default)s)")
    group.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew (default: %(default)s)")
    group.add_argument(
        "--seed", type=int, default=0, help="data split and initial model (default: %(default)s)"
    )


def add_federation_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's protocol, quantization, training and deadline options."""
    group = parser.add_argument_group("secure aggregation")
    group.add_argument("--threshold", type=int, help="t (default: a majority, raised to what the mode needs)")
    group.add_argument("--graph", choices=("complete", "harary"), default="complete")
    group.add_argument("--degree", type=int, help="even degree k of the harary graph")
    group.add_argument("--mode", choices=("semi_honest", "active"), default="semi_honest")
    group.add_argument("--clip", type=float, default=2.0, help="clip update elements (default: %(default)s)")
    group.add_argument("--max-weight", type=int, default=1024, help="cap on a client's weight (its examples)")
    group = parser.add_argument_group("training")
    group.add_argument("--rounds", type=int, default=5, help="FedAvg rounds (default: %(default)s)")
    group.add_argument("--epochs", type=int, default=2, help="local epochs E (default: %(default)s)")
    group.add_argument(
        "--batch-size", type=int, default=8, help="local batch size B, 0 = all (default: %(default)s)"
    )
    group.add_argument("--lr", type=float, default=0.1, help="local learning rate (default: %(default)s)")
    group.add_argument(
        "--server-lr", type=float, default=1.0, help="server learning rate (default: %(default)s)"
    )
    group = parser.add_argument_group("deadlines (seconds)")
    group.add_argument(
        "--phase-timeout", type=float, default=30.0, help="per SecAgg phase (default: %(default)s)"
    )
    group.add_argument("--train-timeout", type=float, default=120.0, help="extra for local training")
    group.add_argument(
        "--wait-timeout", type=float, default=30.0, help="wait this long for all clients per round"
    )
    group.add_argument(
        "--min-clients", type=int, help="start a round once this many are connected (default: all)"
    )


def federation_settings(args: argparse.Namespace) -> FederationSettings:
    """``FederationSettings`` from parsed arguments."""
    return FederationSettings(
        num_clients=args.clients,
        rounds=args.rounds,
        threshold=args.threshold,
        graph=args.graph,
        degree=args.degree,
        mode=args.mode,
        clip=args.clip,
        max_weight=args.max_weight,
        training=TrainingSettings(args.epochs, args.batch_size or None, args.lr),
        server_learning_rate=args.server_lr,
        phase_timeout=args.phase_timeout,
        train_timeout=args.train_timeout,
        wait_timeout=args.wait_timeout,
        min_clients=args.min_clients,
    )


class EventLog:
    """Appends every server event as one JSON line (with a timestamp) to a file."""

    def __init__(self, path: str) -> None:
        self._handle: TextIO = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def __call__(self, event: ServerEvent) -> None:
        self._handle.write(json.dumps({"time": time.time(), **asdict(event)}) + "\n")

    def close(self) -> None:
        self._handle.close()


# --- secagg-server -----------------------------------------------------------------------------


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secagg-server", description="Run a FedAvg federation with secure aggregation over websockets."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port, 0 = any free one (default: %(default)s)"
    )
    parser.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss://")
    parser.add_argument("--keyfile", help="TLS private key (PEM), if not in --certfile")
    parser.add_argument("--roster", help="active mode: roster of client identity keys (JSON)")
    parser.add_argument(
        "--checkpoint", help="checkpoint file: written after each round, resumed from at start"
    )
    parser.add_argument("--json", help="write the round reports to this JSON file at the end")
    parser.add_argument("--events", help="append progress events as JSON lines to this file")
    parser.add_argument(
        "--generate-identities", metavar="DIR", help="write N identity keys and a roster; exit"
    )
    parser.add_argument("--log-level", default="INFO")
    add_task_arguments(parser)
    add_federation_arguments(parser)
    return parser


async def _serve(args: argparse.Namespace) -> int:
    task = DigitsTask(args.task, args.clients, args.alpha, args.seed)
    roster = load_roster(args.roster) if args.roster else None
    events = EventLog(args.events) if args.events else None
    server = FederationServer(
        task.server_model(),
        federation_settings(args),
        roster=roster,
        checkpoint_path=args.checkpoint,
        on_event=events,
    )
    ssl_context = server_context(args.certfile, args.keyfile) if args.certfile else None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(args.host, args.port, ssl_context)
        runner = loop.create_task(server.run())
        stopper = loop.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not runner.done():
            runner.cancel()
            await asyncio.wait({runner}, timeout=5)
            log.info("stopped by signal; the last checkpoint holds round %d", server.next_round - 1)
            reports = server.reports
        else:
            reports = runner.result()
    finally:
        await server.stop()
        if events is not None:
            events.close()
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_json() for r in reports], indent=1) + "\n")
    return 0


def server_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secagg-server``."""
    args = server_parser().parse_args(argv)
    _setup_logging(args.log_level)
    if args.generate_identities:
        roster = generate_identities(args.generate_identities, args.clients)
        print(f"wrote {args.clients} identity keys and {roster}")
        return 0
    if args.mode == "active" and not args.roster:
        print("secagg-server: the active mode needs --roster (see --generate-identities)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args))
    except (ValueError, OSError, CheckpointError) as exc:
        log.error("%s", exc)
        return 1


# --- secagg-client -----------------------------------------------------------------------------


def client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secagg-client", description="Join a secure FedAvg federation as one client."
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server URL, ws:// or wss://")
    parser.add_argument("--id", type=int, required=True, help="this client's id, 1..N")
    parser.add_argument("--cafile", help="trust only this CA / self-signed certificate for wss://")
    parser.add_argument("--identity-key", help="active mode: this client's Ed25519 key (PEM)")
    parser.add_argument("--roster", help="active mode: the roster this client trusts (JSON)")
    parser.add_argument("--give-up-after", type=float, default=60.0, help="seconds without a server")
    parser.add_argument("--backoff-max", type=float, default=5.0, help="longest reconnection delay")
    parser.add_argument("--audit-dir", help="DEMO ONLY: also write plaintext updates here (defeats privacy)")
    parser.add_argument("--log-level", default="INFO")
    add_task_arguments(parser)
    return parser


def make_client(args: argparse.Namespace, task: DigitsTask | None = None) -> FederationClient:
    """A ``FederationClient`` from parsed ``secagg-client`` arguments."""
    task = task or DigitsTask(args.task, args.clients, args.alpha, args.seed)
    on_update = None
    if args.audit_dir:
        directory = args.audit_dir

        def on_update(round_number: int, update: Any) -> None:
            audit.write_update(directory, round_number, args.id, update)

    use_tls = args.url.startswith("wss://")
    return FederationClient(
        args.id,
        task.trainer(args.id),
        args.url,
        ssl_context=client_context(args.cafile) if use_tls else None,
        identity_key=load_identity_key(args.identity_key) if args.identity_key else None,
        roster=load_roster(args.roster) if args.roster else None,
        give_up_after=args.give_up_after,
        backoff_max=args.backoff_max,
        on_update=on_update,
    )


def client_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secagg-client``."""
    args = client_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        client = make_client(args)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    if isinstance(client.trainer, LearnerTrainer):
        client.trainer.warm_up()
    try:
        summary = asyncio.run(client.run())
    except KeyboardInterrupt:
        return 1
    except FatalClientError as exc:
        log.error("%s", exc)
        return 2
    except ConnectionError as exc:
        log.error("%s", exc)
        return 3
    log.info("done: completed rounds %s, aborted %s", summary.completed, summary.aborted)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transport.cli server|client|demo ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"server": server_main, "client": client_main}
    if not argv or argv[0] not in (*commands, "demo"):
        print("usage: python -m transport.cli {server,client,demo} ...", file=sys.stderr)
        return 2
    if argv[0] == "demo":
        from .demo import main as demo_main

        return demo_main(argv[1:])
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
