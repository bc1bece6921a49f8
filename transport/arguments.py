"""Command-line arguments shared by ``secagg-server``, ``secagg-client`` and ``secagg-demo``.

Every value is checked when it is parsed and every file before any round runs, so a bad input
ends the program with one line that names the option and the value or file, and exit status 2
(``UsageError``); ``ArgumentParser`` prints that line instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from fedavg_core import DistributedDP

from . import __version__
from .apps import BUILTIN_APPS, App, AppContext, AppError, load_app, missing_extra_message
from .server import FederationSettings
from .tasks import TrainingSettings

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NO_ROUND = 0, 1, 2, 3, 4
"""Exit statuses of the console scripts (see ``transport.cli``)."""

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """A bad argument or input file, found before any round runs (exit status 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (``prog: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: the package version."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


# -- value types: argparse reports their ValueError/ArgumentTypeError as "argument --x: ..." -------


def _number(kind: Callable[[str], float], text: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None


def int_at_least(low: int) -> Callable[[str], int]:
    """An int >= ``low``."""

    def parse(text: str) -> int:
        value = int(_number(int, text))
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = _number(float, text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def open_fraction(text: str) -> float:
    """A float strictly between 0 and 1."""
    value = _number(float, text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def fraction(text: str) -> float:
    """A float in [0, 1)."""
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port)."""
    value = int(_number(int, text))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in 0..65535, got {value}")
    return value


def log_level(text: str) -> str:
    """A logging level name, case-insensitive."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


# -- argument groups ------------------------------------------------------------------------------


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """What the server and every client must agree on: the app, N, its options and the seed."""
    group = parser.add_argument_group("app (identical on the server and every client)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--app", metavar="MODULE:OBJECT", help="your app (see transport.apps), e.g. my_project:app"
    )
    choice.add_argument(
        "--task",
        choices=tuple(BUILTIN_APPS),
        help="a built-in app: non-IID digits with a torch MLP or numpy softmax regression "
        "(default: digits-mlp)",
    )
    group.add_argument(
        "--app-option",
        metavar="KEY=VALUE",
        type=key_value,
        action="append",
        default=[],
        help="an option for the app (repeatable)",
    )
    group.add_argument("--app-dir", default=".", help="put this folder on sys.path (default: %(default)s)")
    group.add_argument(
        "--clients", type=int_at_least(2), default=8, help="number of clients N (default: %(default)s)"
    )
    group.add_argument("--alpha", type=positive_float, help="digits apps: Dirichlet label skew (0.5)")
    group.add_argument(
        "--seed", type=int, default=0, help="data split and initial model (default: %(default)s)"
    )
    parser.set_defaults(log_level="INFO")


def add_federation_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's protocol, quantization, training and deadline options."""
    group = parser.add_argument_group("secure aggregation")
    group.add_argument(
        "--threshold", type=int_at_least(1), help="t (default: a majority, raised to what the mode needs)"
    )
    group.add_argument("--graph", choices=("complete", "harary"), default="complete")
    group.add_argument("--degree", type=int_at_least(2), help="even degree k of the harary graph")
    group.add_argument("--mode", choices=("semi_honest", "active"), default="semi_honest")
    group.add_argument(
        "--collusion-fraction",
        type=fraction,
        default=1 / 3,
        metavar="GAMMA",
        help="fraction of a round's clients that may collude with the server; sizes t (and the "
        "harary degree) with --dropout-fraction (default: 1/3; clients refuse less than their "
        "--min-collusion-fraction)",
    )
    group.add_argument(
        "--dropout-fraction",
        type=fraction,
        default=0.1,
        metavar="DELTA",
        help="fraction of a round's clients expected to drop out (default: %(default)s); "
        "--graph harary without --degree/--threshold takes both from secagg.find_parameters",
    )
    group.add_argument(
        "--clip", type=positive_float, default=2.0, help="clip update elements (default: %(default)s)"
    )
    group.add_argument(
        "--max-weight",
        type=int_at_least(1),
        help="FedAvg weight of a client = its example count, capped at this (default: 1024; with "
        "--dp-epsilon 1: a DP update is scaled by min(count, cap) / cap, so a cap far above the "
        "counts drowns the updates in the noise)",
    )
    group = parser.add_argument_group("training")
    group.add_argument(
        "--rounds", type=int_at_least(1), default=5, help="FedAvg rounds (default: %(default)s)"
    )
    group.add_argument(
        "--epochs", type=int_at_least(1), default=2, help="local epochs E (default: %(default)s)"
    )
    group.add_argument(
        "--batch-size",
        type=int_at_least(0),
        default=8,
        help="local batch size B, 0 = all (default: %(default)s)",
    )
    group.add_argument(
        "--lr", type=positive_float, default=0.1, help="local learning rate (default: %(default)s)"
    )
    group.add_argument(
        "--lr-decay",
        type=positive_float,
        default=1.0,
        help="client learning rate of round r: lr * lr_decay**(r-1), in (0, 1] (default: %(default)s)",
    )
    group.add_argument(
        "--proximal-mu",
        type=float,
        default=0.0,
        help="FedProx mu: clients minimise f(w) + mu/2 ||w - w_global||^2 (default: %(default)s)",
    )
    group.add_argument(
        "--server-lr", type=positive_float, default=1.0, help="server learning rate (default: %(default)s)"
    )
    group = parser.add_argument_group("cohorts (default: every connected client in every round)")
    group.add_argument(
        "--cohort", type=int_at_least(2), help="n: clients selected per round from those connected"
    )
    group.add_argument(
        "--cohort-fraction", type=positive_float, help="C: fraction of the connected clients per round"
    )
    group.add_argument(
        "--over-selection",
        type=positive_float,
        default=1.0,
        help="select ceil(this * n), close training when n answered (e.g. 1.3; default: %(default)s)",
    )
    group.add_argument(
        "--selection-seed", type=int, default=0, help="seed of the recorded cohort selection (default: 0)"
    )
    group = parser.add_argument_group("deadlines (seconds)")
    group.add_argument(
        "--phase-timeout", type=positive_float, default=30.0, help="per SecAgg phase (default: %(default)s)"
    )
    group.add_argument("--train-timeout", type=positive_float, default=120.0, help="extra for local training")
    group.add_argument(
        "--wait-timeout", type=positive_float, default=30.0, help="wait this long for all clients per round"
    )
    group.add_argument(
        "--min-clients",
        type=int_at_least(1),
        help="start a round once this many are connected (default: all)",
    )
    group = parser.add_argument_group(
        "distributed differential privacy (needs secagg-fedavg[dp]; fedavg_core.DistributedDP)"
    )
    group.add_argument(
        "--dp-epsilon",
        type=positive_float,
        metavar="EPS",
        help="clients add discrete noise before masking so the whole run (--rounds) is "
        "(EPS, --dp-delta)-DP at client level; noise sized for each round's threshold t (default: no DP)",
    )
    group.add_argument(
        "--dp-delta",
        type=open_fraction,
        default=1e-5,
        metavar="D",
        help="delta of the run (default: %(default)s)",
    )
    group.add_argument(
        "--dp-clip",
        type=positive_float,
        default=1.0,
        metavar="C",
        help="with DP: L2 norm bound of a client's update, replaces --clip (default: %(default)s)",
    )
    group.add_argument("--dp-mechanism", choices=("ddgauss", "skellam"), default="ddgauss")
    group.add_argument(
        "--dp-colluders",
        type=int_at_least(0),
        default=0,
        metavar="K",
        help="survivors whose noise the server may know (colluding clients); noise sized for t - K "
        "(default: %(default)s)",
    )


def dp_budget(args: argparse.Namespace) -> DistributedDP | None:
    """The ``DistributedDP`` of ``--dp-*`` (None without ``--dp-epsilon``); ``UsageError`` when
    it cannot be used."""
    if args.dp_epsilon is None:
        return None
    if importlib.util.find_spec("dp_accounting") is None:
        raise UsageError("--dp-epsilon needs dp-accounting: pip install 'secagg-fedavg[dp]'")
    if not math.isfinite(args.dp_epsilon):  # positive_float refuses it; a caller may not
        raise UsageError(f"--dp-epsilon must be finite, got {args.dp_epsilon}")
    try:
        return DistributedDP(
            epsilon=args.dp_epsilon,
            delta=args.dp_delta,
            rounds=args.rounds,
            clip=args.dp_clip,
            mechanism=args.dp_mechanism,
            colluders=args.dp_colluders,
        )
    except ValueError as exc:
        raise UsageError(f"--dp-*: {exc}") from None


def federation_settings(args: argparse.Namespace) -> FederationSettings:
    """``FederationSettings`` from parsed arguments; ``UsageError`` for values that do not fit."""
    try:
        return FederationSettings(
            num_clients=args.clients,
            rounds=args.rounds,
            threshold=args.threshold,
            graph=args.graph,
            degree=args.degree,
            mode=args.mode,
            collusion_fraction=args.collusion_fraction,
            dropout_fraction=args.dropout_fraction,
            clip=args.clip,
            max_weight=args.max_weight or (1 if args.dp_epsilon is not None else 1024),
            training=TrainingSettings(
                args.epochs,
                args.batch_size or None,
                args.lr,
                proximal_mu=args.proximal_mu,
                learning_rate_decay=args.lr_decay,
            ),
            server_learning_rate=args.server_lr,
            phase_timeout=args.phase_timeout,
            train_timeout=args.train_timeout,
            wait_timeout=args.wait_timeout,
            min_clients=args.min_clients,
            cohort=args.cohort,
            cohort_fraction=args.cohort_fraction,
            over_selection=args.over_selection,
            selection_seed=args.selection_seed,
            dp=dp_budget(args),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def app_spec(args: argparse.Namespace) -> str:
    """The ``--app`` spec, or the built-in one named by ``--task`` (default digits-mlp)."""
    return str(args.app) if args.app else BUILTIN_APPS[args.task or "digits-mlp"]


def app_from_args(args: argparse.Namespace) -> App:
    """Load the app named by ``--app``/``--task``; ``UsageError`` (one line) when it cannot be."""
    options = dict(args.app_option)
    if args.alpha is not None:
        options["alpha"] = repr(args.alpha)
    context = AppContext(args.clients, args.seed, options)
    return checked(lambda: load_app(app_spec(args), context, args.app_dir))


def checked(call: Callable[[], T]) -> T:
    """Run ``call`` (loading or using an app): an ``AppError`` or a missing optional dependency
    becomes a one-line ``UsageError``."""
    try:
        return call()
    except AppError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise UsageError(missing_extra_message(exc)) from None


# -- files ----------------------------------------------------------------------------------------


def readable_file(option: str, path: str) -> Path:
    """``path`` if it is a readable file; else ``UsageError`` naming the option and the file."""
    target = Path(path)
    if not target.is_file():
        raise UsageError(f"{option} {path}: no such file")
    if not os.access(target, os.R_OK):
        raise UsageError(f"{option} {path}: not readable")
    return target


def writable_target(option: str, path: str) -> Path:
    """``path`` if a file can be written there (its folder exists and is writable)."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a directory, expected a file name")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path}: the folder {folder} is not writable")
    return target


def load_file(option: str, path: str, loader: Callable[[str], T], what: str) -> T:
    """``loader(path)``; any failure is a ``UsageError`` naming the option, the file and ``what``
    the file should hold."""
    readable_file(option, path)
    try:
        return loader(path)
    except Exception as exc:  # the loaders raise ValueError, OSError, ssl.SSLError, json errors
        reason = str(exc) or type(exc).__name__
        raise UsageError(f"{option} {path}: not {what} ({reason})") from None


def fail(prog: str, message: str, status: int = EXIT_USAGE) -> int:
    """Print ``prog: message`` on stderr; return ``status``."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return status
