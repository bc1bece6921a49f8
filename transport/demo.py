"""``secagg-demo``: a whole federation on 127.0.0.1 with one command.

It starts a ``FederationServer`` in this process and N ``secagg-client`` processes (or, with
``--in-process``, N client tasks in this event loop), trains a torch MLP on non-IID digits with
secure FedAvg, and optionally SIGKILLs a fraction of the clients in the middle of each round at a
random SecAgg phase (``--dropout``); killed clients are restarted and rejoin the next round.

To show that secure aggregation computes the right thing, clients started by the demo also write
their plaintext update to a private audit directory (``transport.audit``; never in real use), and
after each round the demo compares the secure mean update with the plaintext FedAvg mean over the
same survivors: the difference must stay within the quantization bound. It also runs plaintext
FedAvg without dropout on the same data for the reference curve of the plot.

Output: live progress, a PNG of accuracy per round (``--plot``), and with ``--json PATH`` one
record per round: round, survivors, dropped (with reasons), accuracy, seconds per phase, bytes up
and down, and the max abs difference between the secure and the plaintext aggregate.
Exit status 0 when every completed round matched its plaintext aggregate within the bound and at
least one round completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from fedavg_core import FedAvg, FedAvgConfig, PlaintextAggregator
from secagg.state import rounds_of

from . import audit
from .cli import add_federation_arguments, add_task_arguments, federation_settings
from .client import FederationClient
from .identity import generate_identities, load_identity_key, load_roster
from .records import RoundReport, ServerEvent
from .server import FederationServer, FederationSettings, RoundOutcome
from .tasks import DigitsTask
from .tls import client_context, generate_self_signed, server_context

log = logging.getLogger("transport.demo")


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secagg-demo",
        description="Run a secure FedAvg federation (server + N clients) on 127.0.0.1 and report it.",
    )
    parser.add_argument(
        "--dropout",
        type=float,
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
    parser.add_argument("--tls", action="store_true", help="wss:// with a self-signed certificate")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--workdir", help="keep logs, audit files and checkpoint here (default: a temp dir)")
    parser.add_argument("--quiet", action="store_true", help="no live progress, only the summary")
    parser.add_argument("--verbose", action="store_true", help="log the server's and clients' details")
    add_task_arguments(parser)
    add_federation_arguments(parser)
    # The demo starts every client itself: wait for all of them (a slow machine may need a while
    # to start N processes that import torch) rather than starting a round without some.
    parser.set_defaults(wait_timeout=300.0)
    return parser


@dataclass
class _Kill:
    client: int
    phase: str


@dataclass
class _ClientSlot:
    client_id: int
    process: subprocess.Popen[bytes] | None = None
    task: asyncio.Task[Any] | None = None
    restarts: int = 0


@dataclass
class _RoundNotes:
    killed: list[_Kill] = field(default_factory=list)


class Demo:
    """One demo run; ``run()`` returns the exit status."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        if not 0.0 <= args.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
        self.args = args
        self.workdir = workdir
        self.task = DigitsTask(args.task, args.clients, args.alpha, args.seed)
        self.settings: FederationSettings = federation_settings(args)
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
        self._status_width = 0
        self._stopping = False
        self._between_rounds = True

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
        a = self.args
        argv = [
            sys.executable, "-m", "transport.cli", "client",
            "--url", self.url, "--id", str(client_id),
            "--task", a.task, "--clients", str(a.clients), "--alpha", str(a.alpha), "--seed", str(a.seed),
            "--audit-dir", str(self.audit_dir), "--log-level", "INFO" if a.verbose else "WARNING",
        ]  # fmt: skip
        if self.cert is not None:
            argv += ["--cafile", str(self.cert[0])]
        if self.roster_path is not None:
            argv += ["--identity-key", str(self.roster_path.parent / f"client-{client_id}.pem")]
            argv += ["--roster", str(self.roster_path)]
        return argv

    def _in_process_client(self, client_id: int) -> FederationClient:
        directory = self.audit_dir
        return FederationClient(
            client_id,
            self.task.trainer(client_id),
            self.url,
            ssl_context=client_context(self.cert[0]) if self.cert is not None else None,
            identity_key=(
                load_identity_key(self.roster_path.parent / f"client-{client_id}.pem")
                if self.roster_path is not None
                else None
            ),
            roster=load_roster(self.roster_path) if self.roster_path is not None else None,
            on_update=lambda r, u: audit.write_update(directory, r, client_id, u),
        )

    def _start_client(self, slot: _ClientSlot) -> None:
        if self.args.in_process:
            slot.task = asyncio.get_running_loop().create_task(self._in_process_client(slot.client_id).run())
            return
        log_file = open(self.log_dir / f"client-{slot.client_id}.log", "ab")  # noqa: SIM115
        try:
            slot.process = subprocess.Popen(
                self._client_argv(slot.client_id), stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        finally:
            log_file.close()

    def _kill_client(self, slot: _ClientSlot) -> None:
        """SIGKILL (or cancel) a client, then start a fresh one that rejoins the next round."""
        if slot.process is not None:
            slot.process.send_signal(signal.SIGKILL)
            slot.process.wait()
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
            if slot.task is not None:
                with contextlib.suppress(
                    asyncio.TimeoutError, TimeoutError, asyncio.CancelledError, Exception
                ):
                    await asyncio.wait_for(slot.task, max(0.1, deadline - time.monotonic()))

    # -- server callbacks -----------------------------------------------------------------------

    def on_event(self, event: ServerEvent) -> None:
        if event.kind in ("round_start", "round_end"):
            self._between_rounds = event.kind == "round_end"
        if event.kind == "phase":
            victims = self.plan.get((event.round, event.phase), [])
            for victim in victims:
                self.notes.setdefault(event.round, _RoundNotes()).killed.append(_Kill(victim, event.phase))
                self._kill_client(self.slots[victim])
            accuracy = "" if self._last_accuracy is None else f" | accuracy {self._last_accuracy:.3f}"
            killed = f" | killed {', '.join(map(str, victims))}" if victims else ""
            self._status(
                f"round {event.round}/{self.args.rounds} | phase {event.phase:<17} | clients alive "
                f"{event.alive}/{self.args.clients}{accuracy}{killed}"
            )
        elif event.kind in ("waiting", "registered") and self._waiting_for_start(event):
            self._status(
                f"round {event.round}/{self.args.rounds} | waiting for clients: "
                f"{event.alive}/{self.args.clients} connected"
            )

    def _waiting_for_start(self, event: ServerEvent) -> bool:
        """Between rounds (or before the first), while not every client is connected."""
        return self._between_rounds and event.alive < self.args.clients

    _last_accuracy: float | None = None

    def on_round(self, report: RoundReport, outcome: RoundOutcome) -> None:
        if report.status == "completed" and outcome.mean_update is not None:
            updates = audit.read_updates(self.audit_dir, report.round, report.survivors)
            plain = PlaintextAggregator(self.settings.clip, self.settings.max_weight).aggregate(
                updates, np.random.default_rng(0)
            )
            report.max_abs_diff = float(np.max(np.abs(outcome.mean_update - plain.mean_update)))
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
            bound = "n/a" if report.error_bound is None else f"{report.error_bound:.2e}"
            body = (
                f": {len(report.survivors)}/{n} clients in the sum, accuracy {report.accuracy:.3f}, "
                f"|secure - plaintext| {diff} (bound {bound})"
            )
        dropped = "; ".join(f"client {d.client} in {d.phase}: {d.reason}" for d in report.dropped)
        seconds = sum(report.seconds.values())
        traffic = f"{seconds:.1f}s, up {report.bytes_up / 1e6:.2f} MB, down {report.bytes_down / 1e6:.2f} MB"
        return f"{head}{body}; {traffic}" + (f"\n    dropped: {dropped}" if dropped else "")

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> int:
        a = self.args
        began = time.monotonic()
        server = FederationServer(
            self.task.server_model(),
            self.settings,
            roster=load_roster(self.roster_path) if self.roster_path is not None else None,
            checkpoint_path=self.workdir / "checkpoint.msgpack",
            on_event=self.on_event,
            on_round=self.on_round,
        )
        ssl_context = server_context(*self.cert) if self.cert is not None else None
        await server.start("127.0.0.1", a.port, ssl_context)
        self.url = f"{'wss' if self.cert else 'ws'}://127.0.0.1:{server.port}"
        config = server.config
        where = "tasks in this process" if a.in_process else "separate processes"
        print(
            f"secagg-demo: {a.clients} clients ({where}),"
            f" {a.rounds} rounds of {a.task} on non-IID digits (alpha {a.alpha})\n"
            f"  SecAgg: {config.graph} graph, t={config.threshold}, {config.security_mode.value}, "
            f"p={config.modulus}, vector length {config.vector_length}; dropout {a.dropout:g}\n"
            f"  server {self.url}; logs, audit files and checkpoint in {self.workdir}",
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
        plaintext = self._plaintext_curve(server)
        return self._report(server, reports, plaintext, seconds)

    def _plaintext_curve(self, server: FederationServer) -> list[float]:
        """Plaintext FedAvg, all clients every round, same data, model and hyperparameters."""
        s = self.settings
        fedavg = FedAvg(
            self.task.learner(),
            PlaintextAggregator(s.clip, s.max_weight),
            self.task.client_data,
            FedAvgConfig(
                client_fraction=1.0,
                local_epochs=s.training.epochs,
                batch_size=s.training.batch_size,
                learning_rate=s.training.learning_rate,
                server_learning_rate=s.server_learning_rate,
            ),
            seed=self.args.seed,
            test_data=self.task.test_data,
            initial_vector=self.task.server_model().initial_vector(),
        )
        return [r.metrics.accuracy if r.metrics else float("nan") for r in fedavg.run(self.args.rounds)]

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
            row["within_bound"] = (
                None
                if report.max_abs_diff is None or report.error_bound is None
                else report.max_abs_diff <= report.error_bound
            )
            row["killed"] = [{"client": k.client, "phase": k.phase} for k in notes.killed]
            rows.append(row)
        completed = [r for r in reports if r.status == "completed"]
        agree = all(
            r.max_abs_diff is not None and r.error_bound is not None and r.max_abs_diff <= r.error_bound
            for r in completed
        )
        config = server.config
        summary = {
            "completed_rounds": len(completed),
            "aborted_rounds": len(reports) - len(completed),
            "dropped_clients": sum(len(r.dropped) for r in reports),
            "all_within_bound": agree,
            "initial_accuracy": server.initial_accuracy,
            "final_accuracy": reports[-1].accuracy if reports else None,
            "final_plaintext_accuracy": plaintext[-1] if plaintext else None,
            "seconds": round(seconds, 2),
        }
        document = {
            "settings": {
                "clients": a.clients,
                "rounds": a.rounds,
                "dropout": a.dropout,
                "task": a.task,
                "alpha": a.alpha,
                "seed": a.seed,
                "processes": not a.in_process,
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
            },
            "initial_accuracy": server.initial_accuracy,
            "rounds": rows,
            "plaintext_accuracy": plaintext,
            "summary": summary,
        }
        if a.json:
            Path(a.json).write_text(json.dumps(document, indent=1) + "\n")
        plot_path = (
            Path(a.plot)
            if a.plot
            else (Path(a.json).with_suffix(".png") if a.json else Path("secagg-demo.png"))
        )
        plotted = self._plot(plot_path, server, reports, plaintext)
        if not completed:
            verdict = "no round completed, so nothing to compare with plaintext FedAvg"
        elif agree:
            verdict = "the secure aggregate matches plaintext FedAvg within the quantization bound"
        else:
            verdict = "the secure aggregate DOES NOT match plaintext FedAvg within the quantization bound"
        secure_curve = " ".join("  x  " if r.accuracy is None else f"{r.accuracy:.3f}" for r in reports)
        print(
            f"\naccuracy per round, secure   : {secure_curve}\n"
            f"accuracy per round, plaintext: {' '.join(f'{x:.3f}' for x in plaintext)}\n"
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
        try:
            from .plot import plot_accuracy
        except ImportError:  # pragma: no cover - matplotlib is in the examples extra
            print("matplotlib is not installed: no plot (pip install 'secagg-fedavg[examples]')")
            return False
        plot_accuracy(
            path,
            server.initial_accuracy or 0.0,
            [r.accuracy for r in reports],
            plaintext,
            aborted=[r.round for r in reports if r.status == "aborted"],
            dropped=[len(r.dropped) for r in reports],
            title=f"secure FedAvg ({self.args.clients} clients, dropout {self.args.dropout:g}) vs plaintext",
        )
        return True


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
        import sklearn  # noqa: F401

        if args.task == "digits-mlp":
            import torch  # noqa: F401
    except ImportError as exc:
        print(f"secagg-demo needs {exc.name}: pip install 'secagg-fedavg[torch,examples]'", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="secagg-demo-")))
        try:
            demo = Demo(args, workdir)
        except ValueError as exc:
            print(f"secagg-demo: {exc}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(demo.run())
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
