"""Helpers for the transport tests: in-process federations, fixed-update clients, client
processes. Servers listen on 127.0.0.1 only (port 0 or a port just found free) and are stopped by
the test that started them."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedavg_core import ClientUpdate, PlaintextAggregator
from transport.client import ClientSummary, FederationClient
from transport.records import RoundReport, ServerEvent
from transport.server import FederationServer, FederationSettings, RoundOutcome
from transport.tasks import DigitsTask, LocalTrainer, ServerModel, TrainingSettings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FixedTrainer:
    """A client whose 'training' returns a fixed update: the expected sums are known exactly."""

    def __init__(self, update: np.ndarray, num_examples: int) -> None:
        self.update = np.asarray(update, dtype=np.float64)
        self.num_examples = num_examples
        self.seen: list[tuple[int, np.ndarray]] = []  # (round, global vector received)

    @property
    def dimension(self) -> int:
        return int(self.update.shape[0])

    def train(self, vector: np.ndarray, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        self.seen.append((round_number, np.array(vector)))
        return ClientUpdate(self.update.copy(), self.num_examples)


class ZeroModel:
    """A server model of ``dimension`` zeros and no evaluation."""

    def __init__(self, dimension: int) -> None:
        self._dimension = dimension

    @property
    def dimension(self) -> int:
        return self._dimension

    def initial_vector(self) -> np.ndarray:
        return np.zeros(self._dimension)

    def evaluate(self, vector: np.ndarray) -> float | None:
        return None


def fixed_trainers(num_clients: int, dimension: int, seed: int = 0) -> dict[int, FixedTrainer]:
    """Clients 1..n with random updates in [-1, 1] and example counts in [20, 200]."""
    rng = np.random.default_rng(seed)
    return {
        i: FixedTrainer(rng.uniform(-1, 1, dimension), int(rng.integers(20, 201)))
        for i in range(1, num_clients + 1)
    }


def plaintext_mean(updates: Sequence[ClientUpdate], settings: FederationSettings) -> np.ndarray:
    """The plaintext FedAvg aggregate the secure one must match (same clip and weight cap)."""
    result = PlaintextAggregator(settings.clip, settings.max_weight).aggregate(
        updates, np.random.default_rng(0)
    )
    return result.mean_update


@dataclass
class Federation:
    """What an in-process federation run produced."""

    reports: list[RoundReport]
    outcomes: dict[int, RoundOutcome]
    summaries: list[ClientSummary | BaseException]
    events: list[ServerEvent]
    updates: dict[tuple[int, int], ClientUpdate] = field(default_factory=dict)  # (round, client)
    server: FederationServer | None = None


async def run_federation(
    model: ServerModel,
    settings: FederationSettings,
    trainers: dict[int, LocalTrainer],
    *,
    client_options: Callable[[int], dict[str, Any]] | None = None,
    server_options: dict[str, Any] | None = None,
    extra: Callable[[FederationServer, list[ServerEvent]], Any] | None = None,
) -> Federation:
    """Start a server on a free port, run in-process clients to the end, stop the server."""
    outcomes: dict[int, RoundOutcome] = {}
    events: list[ServerEvent] = []
    updates: dict[tuple[int, int], ClientUpdate] = {}
    options = dict(server_options or {})
    ssl_context = options.pop("ssl_context", None)
    server = FederationServer(
        model,
        settings,
        on_event=events.append,
        on_round=lambda report, outcome: outcomes.__setitem__(report.round, outcome),
        **options,
    )
    await server.start("127.0.0.1", 0, ssl_context)
    scheme = "wss" if ssl_context is not None else "ws"
    url = f"{scheme}://127.0.0.1:{server.port}"

    def recorder(client_id: int) -> Callable[[int, ClientUpdate], None]:
        return lambda r, u: updates.__setitem__((r, client_id), u)

    clients = [
        FederationClient(
            i,
            trainer,
            url,
            on_update=recorder(i),
            give_up_after=20,
            **(client_options(i) if client_options else {}),
        )
        for i, trainer in trainers.items()
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    side = asyncio.create_task(extra(server, events)) if extra is not None else None
    try:
        reports = await asyncio.wait_for(server.run(), 120)
        summaries = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        if side is not None:
            await asyncio.wait_for(side, 30)
    finally:
        for task in tasks:
            task.cancel()
        await server.stop()
    return Federation(reports, outcomes, list(summaries), events, updates, server)


def digits_settings(num_clients: int, rounds: int, **overrides: Any) -> FederationSettings:
    """Full-batch softmax regression on digits: deterministic local training."""
    values: dict[str, Any] = {
        "num_clients": num_clients,
        "rounds": rounds,
        "clip": 2.0,
        "max_weight": 1024,
        "training": TrainingSettings(epochs=5, batch_size=None, learning_rate=0.05),
        "phase_timeout": 20.0,
        "train_timeout": 20.0,
    }
    values.update(overrides)
    return FederationSettings(**values)


@dataclass
class ClientProcesses:
    """Client processes (``python -m transport.cli client``), killed at the end of the test."""

    url: str
    task: DigitsTask
    audit_dir: Path
    log_dir: Path
    extra_args: list[str] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, client_id: int) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable, "-m", "transport.cli", "client",
            "--url", self.url, "--id", str(client_id), "--task", self.task.name,
            "--clients", str(self.task.num_clients), "--alpha", str(self.task.alpha),
            "--seed", str(self.task.seed), "--audit-dir", str(self.audit_dir),
            "--log-level", "INFO", "--give-up-after", "30", "--backoff-max", "0.5",
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_dir / f"client-{client_id}.log", "ab") as log:
            process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.processes[client_id] = process
        return process

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
