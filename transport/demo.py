"""``secagg-demo``: a whole federation on 127.0.0.1 with one command.

It starts a ``FederationServer`` in this process and N ``secagg-client`` processes (or, with
``--in-process``, N client tasks in this event loop), trains a torch MLP on non-IID digits with
secure FedAvg (or your own app, ``--app module:object``), and optionally SIGKILLs a fraction of
the clients in the middle of each round at a random SecAgg phase (``--dropout``); killed clients
are restarted and rejoin the next round. On POSIX the client processes are forked from a helper
that has already imported the app (``transport.warm``), so neither the N first starts nor the
restarts pay the seconds of importing torch again.

To show that secure aggregation computes the right thing, clients started by the demo also write
their plaintext update to a private audit directory (``transport.audit``; never in real use), and
after each round the demo compares the secure mean update with the plaintext FedAvg mean over the
same survivors: the difference must stay within the quantization bound. The reference curve of
the plot is plaintext FedAvg over the same clients: each round exactly the secure round's
survivors train with the same local randomness (minibatch order) from the plaintext model, so
the two curves differ only by quantization (and by where that leads the models).

With ``--dp-epsilon EPS`` the federation runs distributed differential privacy
(``fedavg_core.dp_federation``): the clients clip their update to the L2 norm ``--dp-clip``,
rotate, round and add discrete noise before masking, and require DP with at most that epsilon.
The reference is then the same FedAvg without noise (each round's noise-free mean of the same
survivors' clipped, weight-scaled updates: the non-private run), the audit bound is the rounding
bound plus the noise bound (``dp_federation.error_bound``, failure probability 1e-6 per round),
and the output and the plot's legend give the epsilon spent.

Output: live progress, a PNG of accuracy per round (``--plot``), and with ``--json PATH`` one
record per round: round, survivors, dropped (with reasons), accuracy, seconds per phase, bytes up
and down, and the max abs difference between the secure and the plaintext aggregate.
Exit status 0 when every completed round matched its plaintext aggregate within the bound and at
least one round completed; 1 otherwise; 2 for a bad argument or file (checked before any round).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedavg_core import ClientUpdate, PlaintextAggregator
from fedavg_core.dp_federation import error_bound as dp_error_bound
from fedavg_core.dp_federation import reference_mean
from fedavg_core.vectorize import FloatVector
from secagg.state import rounds_of

from . import audit, warm
from .apps import App
from .arguments import (
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
    port_number,
    writable_target,
)
from .cli import client_main
from .client import FederationClient
from .identity import generate_identities, load_identity_key, load_roster
from .records import RoundReport, ServerEvent
from .server import FederationServer, FederationSettings, RoundOutcome
from .tasks import LearnerTrainer, LocalTrainer, ServerModel
from .tls import client_context, generate_self_signed, server_context

log = logging.getLogger("transport.demo")


def demo_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="secagg-demo",
        description="Run a secure FedAvg federation (server + N clients) on 127.0.0.1 and report it.",
    )
    add_version(parser)
    parser.add_argument(
        "--dropout",
        type=dropout_fraction,
        default=0.25,
        metavar="FRACTION",
        help="SIGKILL this fraction of the clients mid-round, every round (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="write per-round records to this JSON file")
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help="PNG of accuracy per round (default: next to --json, else secagg-demo.png)",
    )
    parser.add_argument("--in-process", action="store_true", help="run the clients as tasks in this process")
    parser.add_argument(
        "--cold-start", action="store_true", help="start every client as a fresh process (no fork server)"
    )
    parser.add_argument("--tls", action="store_true", help="wss:// with a self-signed certificate")
    parser.add_argument("--port", type=port_number, default=0, help="server port (default: a free one)")
    parser.add_argument("--workdir", help="keep logs, audit files and checkpoint here (default: a temp dir)")
    parser.add_argument("--quiet", action="store_true", help="no live progress, only the summary")
    parser.add_argument("--verbose", action="store_true", help="log the server's and clients' details")
    add_task_arguments(parser)
    add_federation_arguments(parser)
    # The demo starts every client itself: wait for all of them (a slow machine may need a while
    # to start N processes that import torch) rather than starting a round without some.
    parser.set_defaults(wait_timeout=300.0)
    return parser


def dropout_fraction(text: str) -> float:
    """A fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"--dropout must be in [0, 1), got {text}")
    return value


@dataclass
class _Kill:
    client: int
    phase: str


@dataclass
class _ClientSlot:
    client_id: int
    process: subprocess.Popen[bytes] | None = None  # a fresh process (--cold-start)
    pid: int | None = None  # a process forked by the fork server
    task: asyncio.Task[Any] | None = None  # --in-process
    restarts: int = 0


@dataclass
class _RoundNotes:
    killed: list[_Kill] = field(default_factory=list)


PLAINTEXT_REFERENCE = "plaintext FedAvg, same survivors and local randomness, no quantization"
"""What the demo's reference curve is (in the plot's legend and the JSON)."""

NON_PRIVATE_REFERENCE = "non-private FedAvg: same survivors, local randomness and L2 clip, no noise"
"""The reference curve of a DP run."""

DP_AUDIT_FAILURE = 1e-6
"""A DP round's audit bound fails with at most this probability (``dp_federation.error_bound``)."""


class Demo:
    """One demo run; ``run()`` returns the exit status.

    Args:
        args: the parsed ``secagg-demo`` arguments.
        workdir: logs, audit files, checkpoint (and keys) go here.
        app: the app every client and the server run.
        temporary: ``workdir`` is deleted at exit (said so in the header).
    """

    def __init__(self, args: argparse.Namespace, workdir: Path, app: App, temporary: bool = False) -> None:
        self.args = args
        self.workdir = workdir
        self.temporary = temporary
        self.app = app
        self.settings: FederationSettings = federation_settings(args)
        self.server_model: ServerModel = checked(app.server_model)
        try:
            config = self.settings.secagg_config(self.server_model.dimension)
            if self.settings.dp is not None:  # a budget the rounds cannot meet: refused now
                self.settings.dp.plan(config.num_clients, config.threshold, self.server_model.dimension)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.audit_dir = workdir / "audit"
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.roster_path: Path | None = None
        if args.mode == "active":
            self.roster_path = generate_identities(workdir / "identities", args.clients)
        self.cert: tuple[Path, Path] | None = generate_self_signed(workdir / "tls") if args.tls else None
        self.slots = {i: _ClientSlot(i) for i in range(1, args.clients + 1)}
        self.notes: dict[int, _RoundNotes] = {}
        self.plan = self._dropout_plan()
        self.url = ""
        self.live = sys.stdout.isatty() and not args.quiet
        self.fork_server: warm.ForkServer | None = None
        self._status_width = 0
        self._stopping = False
        self._between_rounds = True
        self._server: FederationServer | None = None
        self._killed: set[int] = set()  # clients killed in the current round
        self._last_accuracy: float | None = None

    def warm_up(self) -> None:
        """Build one client's trainer and take one training step, so that forked clients
        inherit every import (torch's optimizer pulls in ``torch._dynamo`` lazily)."""
        trainer = checked(lambda: self.app.client_trainer(1))
        if isinstance(trainer, LearnerTrainer):
            trainer.warm_up()

    # -- dropout plan ---------------------------------------------------------------------------

    def _dropout_plan(self) -> dict[tuple[int, str], list[int]]:
        """(round, phase) -> clients to SIGKILL when that phase starts."""
        n, rounds = self.args.clients, self.args.rounds
        count = round(self.args.dropout * n)
        phases = [r.value for r in rounds_of(self.args.mode == "active")]
        rng = np.random.default_rng([self.args.seed, 7])
        plan: dict[tuple[int, str], list[int]] = {}
        for number in range(1, rounds + 1):
            victims = rng.choice(n, size=count, replace=False) + 1
            for victim in victims:
                phase = phases[int(rng.integers(len(phases)))]
                plan.setdefault((number, phase), []).append(int(victim))
        return plan

    # -- clients --------------------------------------------------------------------------------

    def _client_argv(self, client_id: int) -> list[str]:
        """``secagg-client`` arguments for one client (the same app options as the server)."""
        a = self.args
        argv = [
            "--url", self.url, "--id", str(client_id), "--clients", str(a.clients), "--seed", str(a.seed),
            "--app-dir", str(Path(a.app_dir).resolve()),
            "--audit-dir", str(self.audit_dir), "--log-level", "INFO" if a.verbose else "WARNING",
        ]  # fmt: skip
        argv += ["--app", a.app] if a.app else ["--task", a.task or "digits-mlp"]
        for key, value in a.app_option:
            argv += ["--app-option", f"{key}={value}"]
        if a.alpha is not None:
            argv += ["--alpha", repr(a.alpha)]
        if self.cert is not None:
            argv += ["--cafile", str(self.cert[0])]
        if self.roster_path is not None:
            argv += ["--identity-key", str(self.roster_path.parent / f"client-{client_id}.pem")]
            argv += ["--roster", str(self.roster_path)]
        if a.dp_epsilon is not None:  # the clients require DP with at most the demo's epsilon
            argv += ["--max-dp-epsilon", repr(a.dp_epsilon)]
        argv += ["--min-collusion-fraction", repr(a.collusion_fraction)]  # the demo's own threat model
        argv += ["--min-dropout-fraction", repr(a.dropout_fraction)]
        return argv

    def _in_process_client(self, client_id: int) -> FederationClient:
        directory = self.audit_dir
        trainer: LocalTrainer = self.app.client_trainer(client_id)
        return FederationClient(
            client_id,
            trainer,
            self.url,
            ssl_context=client_context(self.cert[0]) if self.cert is not None else None,
            identity_key=(
                load_identity_key(self.roster_path.parent / f"client-{client_id}.pem")
                if self.roster_path is not None
                else None
            ),
            roster=load_roster(self.roster_path) if self.roster_path is not None else None,
            on_update=lambda r, u: audit.write_update(directory, r, client_id, u),
            max_dp_epsilon=self.args.dp_epsilon,
            min_collusion_fraction=self.args.collusion_fraction,
            min_dropout_fraction=self.args.dropout_fraction,
        )

    def _start_client(self, slot: _ClientSlot) -> None:
        if self.args.in_process:
            slot.task = asyncio.get_running_loop().create_task(self._in_process_client(slot.client_id).run())
            return
        log_path = self.log_dir / f"client-{slot.client_id}.log"
        if self.fork_server is not None:
            slot.pid = self.fork_server.spawn(self._client_argv(slot.client_id), str(log_path))
            return
        log_file = open(log_path, "ab")  # noqa: SIM115
        try:
            slot.process = subprocess.Popen(
                [sys.executable, "-m", "transport.cli", "client", *self._client_argv(slot.client_id)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        finally:
            log_file.close()

    def _kill_client(self, slot: _ClientSlot) -> None:
        """SIGKILL (or cancel) a client, then start a fresh one that rejoins the next round."""
        if slot.process is not None:
            slot.process.send_signal(signal.SIGKILL)
            slot.process.wait()
        if slot.pid is not None:
            warm.kill(slot.pid)
            slot.pid = None
        if slot.task is not None:
            slot.task.cancel()
        slot.restarts += 1
        if not self._stopping:
            self._start_client(slot)

    async def _stop_clients(self, timeout: float) -> None:
        """Let the clients exit after the server's Finished; kill whatever is left."""
        deadline = time.monotonic() + timeout
        for slot in self.slots.values():
            if slot.process is not None:
                try:
                    while slot.process.poll() is None and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                finally:
                    if slot.process.poll() is None:
                        slot.process.kill()
                        slot.process.wait()
            if slot.pid is not None:
                try:
                    while warm.is_running(slot.pid) and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                finally:
                    warm.kill(slot.pid)
            if slot.task is not None:
                with contextlib.suppress(
                    asyncio.TimeoutError, TimeoutError, asyncio.CancelledError, Exception
                ):
                    await asyncio.wait_for(slot.task, max(0.1, deadline - time.monotonic()))

    # -- server callbacks -----------------------------------------------------------------------

    def on_event(self, event: ServerEvent) -> None:
        if event.kind == "round_start":
            self._killed = set()
        if event.kind in ("round_start", "round_end"):
            self._between_rounds = event.kind == "round_end"
        if event.kind == "phase":
            victims = self.plan.get((event.round, event.phase), [])
            for victim in victims:
                self.notes.setdefault(event.round, _RoundNotes()).killed.append(_Kill(victim, event.phase))
                self._killed.add(victim)
                self._kill_client(self.slots[victim])
            accuracy = "" if self._last_accuracy is None else f" | accuracy {self._last_accuracy:.3f}"
            killed = f" | killed {', '.join(map(str, victims))}" if victims else ""
            self._status(
                f"round {event.round}/{self.args.rounds} | phase {event.phase:<17} | "
                f"{self._in_round(event)}{accuracy}{killed}"
            )
        elif event.kind in ("waiting", "registered") and self._waiting_for_start(event):
            self._status(
                f"round {event.round}/{self.args.rounds} | waiting for clients: "
                f"{event.alive}/{self.args.clients} connected"
            )

    def _in_round(self, event: ServerEvent) -> str:
        """``clients in the round k/n``: the round's cohort minus its drops and the clients just
        killed (the server notices a killed connection a moment later; a restarted client waits
        for the next round and is not counted)."""
        report = self._server.coordinator.current_report if self._server is not None else None
        if report is None:
            return f"clients connected {event.alive}"
        gone = {d.client for d in report.dropped} | self._killed | set(report.stragglers)
        left = [c for c in report.participants if c not in gone]
        text = f"clients in the round {len(left)}/{len(report.participants)}"
        if self.args.cohort is None and self.args.cohort_fraction is None:
            return text
        # Partial participation: the population, the cohort drawn from it, the stragglers dismissed.
        target = report.target if report.target is not None else len(report.participants)
        return (
            f"population {event.alive}/{self.args.clients} | cohort {target} "
            f"(selected {len(report.participants)}, stragglers {len(report.stragglers)}) | {text}"
        )

    def _waiting_for_start(self, event: ServerEvent) -> bool:
        """Between rounds (or before the first), while not every client is connected."""
        return self._between_rounds and event.alive < self.args.clients

    def reference(self, updates: list[ClientUpdate]) -> FloatVector:
        """The aggregate the secure round estimates, in the clear: the weighted mean with the same
        clip and weight cap, or with DP the noise-free ``sum(f_i clip(x_i)) / m``."""
        s = self.settings
        if s.dp is not None:
            return reference_mean(updates, s.dp.clip, s.max_weight)
        return (
            PlaintextAggregator(s.clip, s.max_weight).aggregate(updates, np.random.default_rng(0)).mean_update
        )

    def bound(self, report: RoundReport) -> float | None:
        """How far a round's secure aggregate may be from ``reference``: the quantization bound,
        or with DP the rounding bound plus the noise bound."""
        if report.error_bound is None or self.settings.dp is None:
            return report.error_bound
        if report.noise_stddev is None:
            return None
        dimension = self.server_model.dimension
        return dp_error_bound(report.noise_stddev, report.error_bound, dimension, DP_AUDIT_FAILURE)

    def on_round(self, report: RoundReport, outcome: RoundOutcome) -> None:
        if report.status == "completed" and outcome.mean_update is not None:
            updates = audit.read_updates(self.audit_dir, report.round, report.survivors)
            report.max_abs_diff = float(np.max(np.abs(outcome.mean_update - self.reference(updates))))
        self._last_accuracy = report.accuracy
        self._status("")
        if not self.args.quiet:
            print(self._round_line(report), flush=True)

    def _status(self, text: str) -> None:
        if self.args.quiet:
            return
        if self.live:
            padded = text.ljust(self._status_width)
            self._status_width = len(text)
            sys.stdout.write("\r" + padded + ("\r" if not text else ""))
            sys.stdout.flush()
        elif text:
            print(text, flush=True)

    def _round_line(self, report: RoundReport) -> str:
        head = f"round {report.round}/{self.args.rounds} {report.status}"
        n = len(report.participants)
        if report.status == "aborted":
            body = f": {report.reason}"
        else:
            diff = "n/a" if report.max_abs_diff is None else f"{report.max_abs_diff:.2e}"
            limit = self.bound(report)
            bound = "n/a" if limit is None else f"{limit:.2e}"
            accuracy = "n/a" if report.accuracy is None else f"{report.accuracy:.3f}"
            reference = "non-private" if self.settings.dp is not None else "plaintext"
            body = (
                f": {len(report.survivors)}/{n} clients in the sum, accuracy {accuracy}, "
                f"|secure - {reference}| {diff} (bound {bound})"
            )
        if report.epsilon is not None:
            body += f", epsilon spent {report.epsilon:.3g}"
        dropped = "; ".join(f"client {d.client} in {d.phase}: {d.reason}" for d in report.dropped)
        seconds = sum(report.seconds.values())
        traffic = f"{seconds:.1f}s, up {report.bytes_up / 1e6:.2f} MB, down {report.bytes_down / 1e6:.2f} MB"
        return f"{head}{body}; {traffic}" + (f"\n    dropped: {dropped}" if dropped else "")

    # -- the run --------------------------------------------------------------------------------

    def _describe_app(self) -> str:
        a = self.args
        if a.app:
            return f"the app {a.app}"
        alpha = 0.5 if a.alpha is None else a.alpha
        return f"{a.task or 'digits-mlp'} on non-IID digits (alpha {alpha:g})"

    async def run(self) -> int:
        a = self.args
        began = time.monotonic()
        server = FederationServer(
            self.server_model,
            self.settings,
            roster=load_roster(self.roster_path) if self.roster_path is not None else None,
            checkpoint_path=self.workdir / "checkpoint.msgpack",
            on_event=self.on_event,
            on_round=self.on_round,
        )
        self._server = server
        ssl_context = server_context(*self.cert) if self.cert is not None else None
        await server.start("127.0.0.1", a.port, ssl_context)
        self.url = f"{'wss' if self.cert else 'ws'}://127.0.0.1:{server.port}"
        config = server.config
        if a.in_process:
            where = "tasks in this process"
        elif self.fork_server is not None:
            where = "processes forked warm"
        else:
            where = "separate processes"
        kept = (
            f"a temporary folder, deleted at exit (keep them with --workdir DIR): {self.workdir}"
            if self.temporary
            else str(self.workdir)
        )
        print(
            f"secagg-demo: {a.clients} clients ({where}), {a.rounds} rounds of {self._describe_app()}\n"
            f"  SecAgg: {config.graph} graph, t={config.threshold}, {config.security_mode.value}, "
            f"p={config.modulus}, vector length {config.vector_length}; dropout {a.dropout:g}\n"
            f"  server {self.url}; logs, audit files and checkpoint in {kept}",
            flush=True,
        )
        dp = self.settings.dp
        if dp is not None:
            print(
                f"  distributed DP: epsilon {dp.epsilon:g}, delta {dp.delta:g} over {dp.rounds} rounds "
                f"({dp.mechanism}, L2 clip {dp.clip:g}, {dp.colluders} colluders), noise for the "
                f"t={config.threshold} fewest survivors; the reference is the same FedAvg without noise",
                flush=True,
            )
        kills = round(a.dropout * a.clients)
        if a.clients - kills < config.threshold:
            print(
                f"  note: killing {kills} of {a.clients} clients per round leaves fewer than "
                f"t={config.threshold}: those rounds must abort (lower --dropout, or add clients)",
                flush=True,
            )
        self._last_accuracy = server.initial_accuracy
        for slot in self.slots.values():
            self._start_client(slot)
        finished = False
        try:
            reports = await server.run()
            finished = True
        finally:
            self._stopping = True
            await server.stop()
            await self._stop_clients(timeout=15.0 if finished else 0.0)
        seconds = time.monotonic() - began
        plaintext = self.plaintext_curve(reports)
        return self._report(server, reports, plaintext, seconds)

    def plaintext_curve(self, reports: list[RoundReport]) -> list[float]:
        """Accuracy per round of plaintext FedAvg over the same clients as the secure run.

        In each completed round exactly that round's survivors train, from the plaintext global
        model, with the same local randomness as in the secure round (``LocalTrainer.train`` is
        called with the same round number; ``LearnerTrainer`` seeds its minibatch order from
        client id and round); their updates are averaged in the clear with the same clip and
        weight cap. An aborted round leaves the model unchanged, as it does in the secure run.
        """
        s = self.settings
        vector: FloatVector = self.server_model.initial_vector()
        trainers: dict[int, LocalTrainer] = {}
        curve: list[float] = []
        for report in reports:
            if report.status == "completed" and report.survivors:
                updates = []
                for client_id in report.survivors:
                    if client_id not in trainers:
                        trainers[client_id] = self.app.client_trainer(client_id)
                    updates.append(trainers[client_id].train(vector, s.training, report.round))
                vector = vector + s.server_learning_rate * self.reference(updates)
            accuracy = self.server_model.evaluate(vector)
            curve.append(float("nan") if accuracy is None else accuracy)
        return curve

    def _report(
        self, server: FederationServer, reports: list[RoundReport], plaintext: list[float], seconds: float
    ) -> int:
        a = self.args
        rows = []
        for report in reports:
            notes = self.notes.get(report.round, _RoundNotes())
            row = report.to_json()
            row["plaintext_accuracy"] = (
                plaintext[report.round - 1] if report.round <= len(plaintext) else None
            )
            limit = self.bound(report)
            row["audit_bound"] = limit
            row["within_bound"] = (
                None if report.max_abs_diff is None or limit is None else report.max_abs_diff <= limit
            )
            row["killed"] = [{"client": k.client, "phase": k.phase} for k in notes.killed]
            rows.append(row)
        completed = [r for r in reports if r.status == "completed"]
        agree = all(row["within_bound"] is True for row in rows if row["status"] == "completed")
        epsilon = reports[-1].epsilon if reports else None
        config = server.config
        summary = {
            "completed_rounds": len(completed),
            "aborted_rounds": len(reports) - len(completed),
            "dropped_clients": sum(len(r.dropped) for r in reports),
            "all_within_bound": agree,
            "initial_accuracy": server.initial_accuracy,
            "final_accuracy": reports[-1].accuracy if reports else None,
            "final_plaintext_accuracy": plaintext[-1] if plaintext else None,
            "epsilon_spent": epsilon,
            "seconds": round(seconds, 2),
        }
        dp = self.settings.dp
        document = {
            "settings": {
                "clients": a.clients,
                "rounds": a.rounds,
                "dropout": a.dropout,
                "task": a.task or ("digits-mlp" if not a.app else None),
                "app": app_spec(a),
                "alpha": a.alpha,
                "seed": a.seed,
                "processes": not a.in_process,
                "warm_processes": self.fork_server is not None,
                "tls": bool(a.tls),
                "graph": config.graph,
                "degree": config.degree,
                "threshold": config.threshold,
                "mode": config.security_mode.value,
                "modulus": config.modulus,
                "vector_length": config.vector_length,
                "bits": server.quantization.bits,
                "clip": self.settings.clip,
                "max_weight": self.settings.max_weight,
                "epochs": self.settings.training.epochs,
                "batch_size": self.settings.training.batch_size,
                "learning_rate": self.settings.training.learning_rate,
                "dp": None
                if dp is None
                else {
                    "epsilon": dp.epsilon,
                    "delta": dp.delta,
                    "rounds": dp.rounds,
                    "clip": dp.clip,
                    "mechanism": dp.mechanism,
                    "bits": dp.bits,
                    "colluders": dp.colluders,
                },
            },
            "initial_accuracy": server.initial_accuracy,
            "rounds": rows,
            "plaintext_accuracy": plaintext,
            "plaintext_reference": NON_PRIVATE_REFERENCE if dp is not None else PLAINTEXT_REFERENCE,
            "summary": summary,
        }
        if a.json:
            Path(a.json).write_text(json.dumps(document, indent=1) + "\n")
        plot_path = plot_target(a)
        plotted = self._plot(plot_path, server, reports, plaintext)
        within = "the quantization bound" if dp is None else "the rounding plus noise bound"
        reference = "plaintext FedAvg" if dp is None else "non-private FedAvg"
        if not completed:
            verdict = f"no round completed, so nothing to compare with {reference}"
        elif agree:
            verdict = f"the secure aggregate matches {reference} within {within}"
        else:
            verdict = f"the secure aggregate DOES NOT match {reference} within {within}"
        if dp is not None:
            verdict += f"; epsilon spent {epsilon:.3g} of {dp.epsilon:g} (delta {dp.delta:g})"
        secure_curve = " ".join("  x  " if r.accuracy is None else f"{r.accuracy:.3f}" for r in reports)
        names = ("secure DP  ", "non-private") if dp is not None else ("secure     ", "plaintext  ")
        print(
            f"\naccuracy per round, {names[0]}: {secure_curve}\n"
            f"accuracy per round, {names[1]}: {' '.join(f'{x:.3f}' for x in plaintext)}"
            " (same survivors and local randomness)\n"
            f"{len(completed)}/{len(reports)} rounds completed, {summary['dropped_clients']} client drops; "
            f"{verdict}; {seconds:.1f}s",
            flush=True,
        )
        outputs = [p for p in (a.json, plot_path if plotted else None) if p]
        if outputs:
            print("wrote " + ", ".join(map(str, outputs)))
        return 0 if completed and agree else 1

    def _plot(
        self, path: Path, server: FederationServer, reports: list[RoundReport], plaintext: list[float]
    ) -> bool:
        if importlib.util.find_spec("matplotlib") is None:
            return False  # said before the run
        from .plot import plot_accuracy

        dp = self.settings.dp
        title = f"secure FedAvg ({self.args.clients} clients, dropout {self.args.dropout:g}) vs plaintext"
        secure_label = "secure FedAvg over websockets"
        if dp is not None:
            spent = next((r.epsilon for r in reversed(reports) if r.epsilon is not None), 0.0)
            title = title.replace("secure FedAvg", "distributed DP FedAvg").replace(
                "plaintext", "non-private"
            )
            secure_label = (
                f"secure FedAvg with distributed DP ({dp.mechanism}): epsilon {spent:.3g} spent "
                f"of {dp.epsilon:g}, delta {dp.delta:g}"
            )
        plot_accuracy(
            path,
            server.initial_accuracy or 0.0,
            [r.accuracy for r in reports],
            plaintext,
            aborted=[r.round for r in reports if r.status == "aborted"],
            dropped=[len(r.dropped) for r in reports],
            title=title,
            plaintext_label=PLAINTEXT_REFERENCE if dp is None else NON_PRIVATE_REFERENCE,
            secure_label=secure_label,
        )
        return True


def plot_target(args: argparse.Namespace) -> Path:
    """``--plot``, else next to ``--json``, else ``secagg-demo.png``."""
    if args.plot:
        return Path(args.plot)
    return Path(args.json).with_suffix(".png") if args.json else Path("secagg-demo.png")


def _check_outputs(args: argparse.Namespace) -> None:
    """The output files can be written (checked before any round runs)."""
    if args.json:
        writable_target("--json", args.json)
    writable_target("--plot", str(plot_target(args)))
    if args.workdir and Path(args.workdir).exists() and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir}: not a folder")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``secagg-demo``."""
    args = demo_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("websockets").setLevel(logging.CRITICAL)
    try:
        _check_outputs(args)
        if importlib.util.find_spec("matplotlib") is None:
            print(
                "secagg-demo: matplotlib is not installed, so no plot: pip install 'secagg-fedavg[examples]'"
            )
        app = app_from_args(args)
        with contextlib.ExitStack() as stack:
            if args.workdir:
                workdir = Path(args.workdir)
                workdir.mkdir(parents=True, exist_ok=True)
            else:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="secagg-demo-")))
            demo = Demo(args, workdir, app, temporary=not args.workdir)
            if not args.in_process and not args.cold_start and warm.ForkServer.available():
                demo.warm_up()
                # Forked clients inherit the loaded app (and its data) instead of loading it again.
                demo.fork_server = warm.ForkServer(lambda argv: client_main(argv, app))
                stack.callback(demo.fork_server.close)
            try:
                return asyncio.run(demo.run())
            except KeyboardInterrupt:
                print("\ninterrupted", file=sys.stderr)
                return 130
    except UsageError as exc:
        return fail("secagg-demo", str(exc), EXIT_USAGE)


if __name__ == "__main__":
    raise SystemExit(main())
