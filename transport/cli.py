"""Console scripts: ``secagg-server`` and ``secagg-client`` (``secagg-demo`` is in ``demo``).

Both run an app (``transport.apps``): your own with ``--app module:object``, or a built-in one
with ``--task digits-mlp`` (the default) or ``--task digits-logreg``. The server and every
client pass the same app, ``--clients``, ``--seed`` and ``--app-option`` values; client i trains
on its own data only. The server writes the final global model with ``--export PATH`` (a torch
``state_dict`` ``.pt`` for torch apps, ``.npz`` otherwise). Also runnable as
``python -m transport.cli server|client ...``.

Exit statuses:

- 0: finished (or the server was stopped by SIGINT/SIGTERM after closing every connection);
- 1: an error while rounds were running;
- 2: a bad argument or input (a value, a file, an ``--app``, a missing optional dependency, a
  port that cannot be listened on, a checkpoint that is already finished), reported in one line
  before any round runs; also a client that cannot join this federation (security mode, TLS) or
  that the server refused for good (unknown identity, failed identity proof, another task, model,
  quantization or wire version: the reason names the field and both values), within seconds;
- 3: a client gave up after ``--give-up-after`` seconds without registering (server not up, or
  refusing for now: id still in use, server full);
- 4: a client completed no round: it refused, or saw aborted, every round it was offered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

from secagg.config import DEFAULT_DROPOUT_FRACTION, MAX_CLIENTS

from . import audit
from .apps import App, export_model, export_suffix
from .arguments import (
    EXIT_ERROR,
    EXIT_NO_ROUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ArgumentParser,
    UsageError,
    add_federation_arguments,
    add_task_arguments,
    add_version,
    app_from_args,
    app_spec,
    checked,
    fail,
    federation_settings,
    fraction,
    int_at_least,
    key_value,
    load_file,
    log_level,
    open_fraction,
    port_number,
    positive_float,
    readable_file,
    writable_target,
)
from .checkpoint import CheckpointError
from .client import ClientSummary, FatalClientError, FederationClient
from .identity import (
    RosterFile,
    enrol,
    generate_identities,
    init_identity,
    load_identity_key,
    parse_public_key,
)
from .records import ServerEvent
from .server import FederationServer
from .tasks import LearnerTrainer, LocalBudget
from .tls import client_context, server_context
from .wire import QuantizationTerms

__all__ = [
    "EventLog",
    "add_federation_arguments",
    "add_task_arguments",
    "client_main",
    "client_parser",
    "federation_settings",
    "main",
    "make_client",
    "server_main",
    "server_parser",
]

log = logging.getLogger("transport.cli")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # a client forked by the demo inherits the demo's handlers
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)


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
    parser = ArgumentParser(
        prog="secagg-server", description="Run a FedAvg federation with secure aggregation over websockets."
    )
    add_version(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=port_number, default=8765, help="port, 0 = any free one (default: %(default)s)"
    )
    parser.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss://")
    parser.add_argument("--keyfile", help="TLS private key (PEM), if not in --certfile")
    parser.add_argument(
        "--roster",
        help="active mode: roster of client identity keys (JSON), re-read when an unknown id registers",
    )
    parser.add_argument(
        "--enrol",
        metavar="ID=KEY",
        type=key_value,
        help="add client ID's public key (64 hex digits or its .pub file) to --roster; exit",
    )
    parser.add_argument(
        "--checkpoint", help="checkpoint file: written after each round, resumed from at start"
    )
    parser.add_argument(
        "--export", metavar="PATH", help="write the final global model here (.pt for torch apps, else .npz)"
    )
    parser.add_argument("--json", help="write the round reports to this JSON file at the end")
    parser.add_argument("--events", help="append progress events as JSON lines to this file")
    parser.add_argument(
        "--generate-identities", metavar="DIR", help="write N identity keys and a roster; exit"
    )
    parser.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="DEBUGGING ONLY, INSECURE: clients (with --allow-insecure-plaintext) send their updates "
        "unmasked and the server sees each one",
    )
    parser.add_argument("--log-level", type=log_level, default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    add_task_arguments(parser)
    add_federation_arguments(parser)
    return parser


def _check_server_files(args: argparse.Namespace, app: App) -> None:
    """Every file option, before the app trains anything; ``UsageError`` naming the file."""
    if args.mode == "active" and not args.roster:
        raise UsageError(
            "the active mode needs --roster, the enrolled public keys "
            "(see --enrol and secagg-client --init-identity)"
        )
    if args.keyfile and not args.certfile:
        raise UsageError("--keyfile needs --certfile")
    if args.keyfile:
        readable_file("--keyfile", args.keyfile)
    for option in ("--checkpoint", "--json", "--events", "--export"):
        value = getattr(args, option[2:])
        if value:
            writable_target(option, value)
    if args.export:
        suffix = export_suffix(app)
        if suffix is None:
            raise UsageError(f"--export {args.export}: this app has no export method")
        if Path(args.export).suffix != suffix:
            raise UsageError(f"--export {args.export}: this app exports a {suffix} file; name it *{suffix}")


def _build_server(
    args: argparse.Namespace, app: App, events: EventLog | None
) -> tuple[FederationServer, ssl.SSLContext | None]:
    """The server, checked against everything that can be checked before listening."""
    settings = federation_settings(args)
    if args.insecure_plaintext:
        settings = replace(settings, insecure_plaintext=True)
    ssl_context: ssl.SSLContext | None = None
    if args.certfile:
        label = "--certfile" + (f" (with --keyfile {args.keyfile})" if args.keyfile else "")
        ssl_context = load_file(
            label, args.certfile, lambda path: server_context(path, args.keyfile), "a PEM certificate and key"
        )
    roster = load_file("--roster", args.roster, RosterFile, "a JSON roster") if args.roster else None
    model = checked(app.server_model)
    try:
        server = FederationServer(
            model,
            settings,
            roster=roster,
            task=app_spec(args),
            checkpoint_path=args.checkpoint,
            on_event=events,
        )
    except CheckpointError as exc:
        raise UsageError(f"--checkpoint {exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return server, ssl_context


async def _serve(
    args: argparse.Namespace, server: FederationServer, ssl_context: ssl.SSLContext | None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await server.start(args.host, args.port, ssl_context)
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
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
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_json() for r in reports], indent=1) + "\n")
    return EXIT_OK


def server_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secagg-server``."""
    args = server_parser().parse_args(argv)
    _setup_logging(args.log_level)
    prog = "secagg-server"
    if args.generate_identities:
        roster = generate_identities(args.generate_identities, args.clients)
        print(f"wrote {args.clients} identity keys and {roster}")
        return EXIT_OK
    if args.enrol:
        return _enrol(prog, args.roster, *args.enrol)
    events: EventLog | None = None
    try:
        app = app_from_args(args)
        _check_server_files(args, app)
        events = EventLog(args.events) if args.events else None
        server, ssl_context = _build_server(args, app, events)
        if server.next_round > args.rounds:
            done = server.next_round - 1
            if not args.export:
                raise UsageError(
                    f"--checkpoint {args.checkpoint} already holds {done} rounds (--rounds {args.rounds}): "
                    "nothing to run; raise --rounds to train further, or --export PATH to write the model"
                )
            export_model(app, server.vector, args.export)
            print(f"{prog}: the checkpoint holds {done} finished rounds; wrote the model to {args.export}")
            return EXIT_OK
        status = asyncio.run(_serve(args, server, ssl_context))
    except UsageError as exc:
        return fail(prog, str(exc))
    except (ValueError, OSError, CheckpointError) as exc:
        return fail(prog, str(exc), EXIT_ERROR)
    finally:
        if events is not None:
            events.close()
    if args.export:
        export_model(app, server.vector, args.export)
        log.info("wrote the final global model to %s", args.export)
    return status


def _enrol(prog: str, roster: str | None, client: str, key: str) -> int:
    """``--enrol ID=KEY``: add one public key to the roster file (a running server picks it up)."""
    if not roster:
        return fail(prog, "--enrol needs --roster FILE (created if missing)")
    try:
        client_id = int(client)
        added = enrol(roster, client_id, parse_public_key(key))
    except (ValueError, OSError) as exc:
        return fail(prog, f"--enrol {client}=...: {exc}")
    print(f"{'enrolled' if added else 'already enrolled:'} client {client_id} in {roster}")
    return EXIT_OK


# --- secagg-client -----------------------------------------------------------------------------


def client_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="secagg-client", description="Join a secure FedAvg federation as one client."
    )
    add_version(parser)
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server URL, ws:// or wss://")
    parser.add_argument("--id", type=int, required=True, help="this client's id, 1..N")
    parser.add_argument("--cafile", help="trust only this CA / self-signed certificate for wss://")
    parser.add_argument("--identity-key", help="active mode: this client's Ed25519 key (PEM)")
    parser.add_argument(
        "--init-identity",
        metavar="PATH",
        help="active mode: make this client's Ed25519 key at PATH (owner-only) and PATH.pub; print the "
        "public key to enrol; exit",
    )
    parser.add_argument(
        "--roster", help="active mode: the roster this client trusts (JSON), re-read at each round start"
    )
    parser.add_argument(
        "--expect-quantization",
        metavar="SPEC",
        type=_quantization_terms,
        help="refuse a server with another quantization, e.g. 'clip=2 bits=16 max_weight=1024' "
        "(default: accept the server's)",
    )
    parser.add_argument(
        "--require-dp",
        action="store_true",
        help="refuse rounds without distributed differential privacy (implied by --max-dp-*)",
    )
    parser.add_argument(
        "--max-dp-epsilon",
        type=positive_float,
        metavar="EPS",
        help="refuse rounds whose DP budget spends more than epsilon EPS over the run",
    )
    parser.add_argument(
        "--max-dp-delta", type=open_fraction, metavar="D", help="refuse rounds whose DP delta exceeds D"
    )
    parser.add_argument(
        "--min-collusion-fraction",
        type=fraction,
        default=1 / 3,
        metavar="GAMMA",
        help="refuse rounds whose config assumes fewer colluding clients than this fraction "
        "(default: 1/3), so a server cannot lower the threshold by claiming that nobody colludes",
    )
    parser.add_argument(
        "--min-dropout-fraction",
        type=fraction,
        default=DEFAULT_DROPOUT_FRACTION,
        metavar="DELTA",
        help="refuse SecAgg+ rounds whose graph is not secure if this fraction of the clients "
        "drops out (default: %(default)s), so a server cannot shrink the graph by claiming that "
        "nobody drops",
    )
    parser.add_argument(
        "--local-epochs", type=int_at_least(1), help="this client's own local epochs (default: the server's)"
    )
    parser.add_argument(
        "--time-budget",
        type=positive_float,
        metavar="SECONDS",
        help="stop local training after this many seconds (at a minibatch boundary)",
    )
    parser.add_argument(
        "--allow-insecure-plaintext",
        action="store_true",
        help="DEBUGGING ONLY, INSECURE: answer a server's plaintext rounds with the update unmasked",
    )
    parser.add_argument("--give-up-after", type=positive_float, default=60.0, help="seconds without a server")
    parser.add_argument("--backoff-max", type=positive_float, default=5.0, help="longest reconnection delay")
    parser.add_argument("--audit-dir", help="DEMO ONLY: also write plaintext updates here (defeats privacy)")
    parser.add_argument("--log-level", type=log_level, default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    add_task_arguments(parser)
    return parser


def _quantization_terms(text: str) -> QuantizationTerms:
    try:
        return QuantizationTerms.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _init_identity(prog: str, path: str, client_id: int) -> int:
    """``--init-identity PATH``: a new identity key; print the public key and how to enrol it."""
    try:
        public = init_identity(path)
    except FileExistsError as exc:
        return fail(prog, f"--init-identity {path}: {exc.filename or path} exists; not overwritten")
    except OSError as exc:
        return fail(prog, f"--init-identity {path}: {exc.strerror or exc}")
    print(f"wrote {path} (private, mode 0600) and {path}.pub")
    print(f"public key: {public.hex()}")
    print(f"the operator enrols it with: secagg-server --roster ROSTER --enrol {client_id}={public.hex()}")
    return EXIT_OK


def make_client(args: argparse.Namespace, app: App | None = None) -> FederationClient:
    """A ``FederationClient`` from parsed ``secagg-client`` arguments; ``UsageError`` (one line
    naming the value or file) for anything that cannot work."""
    if not args.url.startswith(("ws://", "wss://")):
        raise UsageError(f"--url {args.url}: the server URL must start with ws:// or wss://")
    if not 1 <= args.id <= MAX_CLIENTS:  # the app may allow fewer (the digits apps: 1..--clients)
        raise UsageError(f"--id {args.id}: client ids are 1..{MAX_CLIENTS}")
    use_tls = args.url.startswith("wss://")
    if args.cafile and not use_tls:
        raise UsageError(f"--cafile {args.cafile}: only used with a wss:// --url, got {args.url}")
    if bool(args.identity_key) != bool(args.roster):
        raise UsageError("the active mode needs both --identity-key and --roster")
    ssl_context = None
    if use_tls:
        ssl_context = (
            load_file("--cafile", args.cafile, client_context, "a PEM certificate")
            if args.cafile
            else client_context(None)
        )
    identity = None
    if args.identity_key:
        identity = load_file("--identity-key", args.identity_key, load_identity_key, "an Ed25519 key (PEM)")
    roster = load_file("--roster", args.roster, RosterFile, "a JSON roster") if args.roster else None
    app = app or app_from_args(args)
    trainer = checked(lambda: app.client_trainer(args.id))
    if args.local_epochs is not None or args.time_budget is not None:
        if not isinstance(trainer, LearnerTrainer):
            raise UsageError("--local-epochs and --time-budget need an app whose trainer is a LearnerTrainer")
        trainer.budget = LocalBudget(args.local_epochs, args.time_budget)
    # The initial model's digest is declared when the trainer can build it without server data.
    initial = checked(trainer.learner.initial_vector) if isinstance(trainer, LearnerTrainer) else None
    on_update = None
    if args.audit_dir:
        directory = args.audit_dir

        def on_update(round_number: int, update: Any) -> None:
            audit.write_update(directory, round_number, args.id, update)

    try:
        return FederationClient(
            args.id,
            trainer,
            args.url,
            ssl_context=ssl_context,
            identity_key=identity,
            roster=roster,
            task=app_spec(args),
            initial_vector=initial,
            quantization=args.expect_quantization,
            give_up_after=args.give_up_after,
            backoff_max=args.backoff_max,
            on_update=on_update,
            require_dp=args.require_dp,
            max_dp_epsilon=args.max_dp_epsilon,
            max_dp_delta=args.max_dp_delta,
            min_collusion_fraction=args.min_collusion_fraction,
            min_dropout_fraction=args.min_dropout_fraction,
            allow_insecure_plaintext=args.allow_insecure_plaintext,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _outcome(summary: ClientSummary) -> int:
    """Exit status 4 when the client was offered rounds but completed none."""
    offered = sorted({*summary.aborted, *summary.refused})
    if summary.completed or not offered:
        log.info("done: completed rounds %s, aborted %s", summary.completed, summary.aborted)
        return EXIT_OK
    refused = "; ".join(f"round {r}: {reason}" for r, reason in sorted(summary.refused.items()))
    aborted = ", ".join(map(str, summary.aborted))
    what = (f"refused {refused}" if refused else "") + (
        f"{'; ' if refused else ''}aborted rounds {aborted}" if aborted else ""
    )
    return fail(f"secagg-client {summary.client_id}", f"completed no round ({what})", EXIT_NO_ROUND)


def client_main(argv: Sequence[str] | None = None, app: App | None = None) -> int:
    """Entry point of ``secagg-client``; ``app``: the app already loaded (the demo's forked
    clients inherit it) instead of the one ``--app``/``--task`` names."""
    args = client_parser().parse_args(argv)
    _setup_logging(args.log_level)
    prog = "secagg-client"
    if args.init_identity:
        return _init_identity(prog, args.init_identity, args.id)
    try:
        client = make_client(args, app)
    except UsageError as exc:
        return fail(prog, str(exc))
    if isinstance(client.trainer, LearnerTrainer):
        client.trainer.warm_up()
    try:
        summary = asyncio.run(client.run())
    except KeyboardInterrupt:
        return EXIT_ERROR
    except FatalClientError as exc:
        return fail(prog, str(exc), EXIT_USAGE)
    except ConnectionError as exc:
        hint = ""
        if args.url.startswith("wss://"):
            # A ws:// server resets a TLS handshake without a reason; say what that usually means.
            hint = " (if the server runs without --certfile, it serves ws://, not wss://)"
        return fail(prog, f"{exc}{hint}", EXIT_UNREACHABLE)
    return _outcome(summary)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transport.cli server|client ...`` (the demo: ``python -m transport.demo``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"server": server_main, "client": client_main}
    if not argv or argv[0] not in commands:
        return fail("python -m transport.cli", "usage: python -m transport.cli {server,client} ...")
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
