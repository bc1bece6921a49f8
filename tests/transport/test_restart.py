"""The server process is SIGKILLed between rounds and restarted: it resumes from its checkpoint.

The server runs as ``python -m transport.cli server`` with ``--checkpoint``; three clients run in
the test. Right after the server has checkpointed round 2 and announced round 3 (the first
client has finished training for it), the test SIGKILLs the server and starts it again on the
same port. The clients reconnect with backoff; the new server must resume at round 3 with the
checkpointed model bit for bit, finish the federation, and keep every completed round.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import REPO, free_port
from websockets.asyncio.client import connect

from fedavg_core import ClientUpdate
from transport.checkpoint import load_checkpoint, vector_digest
from transport.client import FederationClient
from transport.codec import encode
from transport.errors import CloseCode
from transport.tasks import DigitsTask, LearnerTrainer, TrainingSettings
from transport.wire import Hello

ROUNDS = 4


class RecordingTrainer:
    """Delegates to a real trainer and remembers the global model of every round it trained on."""

    def __init__(self, inner: LearnerTrainer) -> None:
        self.inner = inner
        self.received: list[tuple[int, bytes]] = []

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def train(self, vector: np.ndarray, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        self.received.append((round_number, vector.tobytes()))
        return self.inner.train(vector, settings, round_number)


@pytest.mark.slow
def test_a_killed_server_resumes_from_its_checkpoint_and_loses_no_round(tmp_path: Path) -> None:
    task = DigitsTask("digits-logreg", num_clients=3, alpha=0.5, seed=2)
    port = free_port()
    checkpoint = tmp_path / "federation.ckpt"
    events = tmp_path / "events.jsonl"
    argv = [
        sys.executable, "-m", "transport.cli", "server", "--host", "127.0.0.1", "--port", str(port),
        "--task", task.name, "--clients", "3", "--alpha", "0.5", "--seed", "2",
        "--rounds", str(ROUNDS), "--epochs", "1", "--batch-size", "16", "--lr", "0.1",
        "--checkpoint", str(checkpoint), "--events", str(events), "--wait-timeout", "60",
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "ab")  # noqa: SIM115 - closed below
    servers = [subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)]
    saved: list[Path] = []

    def kill_and_restart(round_number: int, update: ClientUpdate) -> None:
        if round_number == 3 and not saved:
            servers[0].send_signal(signal.SIGKILL)
            servers[0].wait()
            saved.append(Path(shutil.copy(checkpoint, tmp_path / "at-kill.ckpt")))
            servers.append(subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log))

    trainers = {i: RecordingTrainer(task.trainer(i)) for i in (1, 2, 3)}

    async def clients() -> list[object]:
        runs = [
            FederationClient(
                i,
                trainer,  # type: ignore[arg-type]
                f"ws://127.0.0.1:{port}",
                backoff_initial=0.1,
                backoff_max=0.5,
                give_up_after=60,
                on_update=kill_and_restart if i == 1 else None,
            ).run()
            for i, trainer in trainers.items()
        ]
        return list(await asyncio.wait_for(asyncio.gather(*runs), 120))

    try:
        summaries = asyncio.run(clients())
        assert servers[-1].wait(timeout=30) == 0
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()
                server.wait()
        log.close()

    assert len(servers) == 2 and saved, "the server was never killed"
    at_kill = load_checkpoint(saved[0], task.trainer(1).dimension)
    assert at_kill is not None and at_kill.next_round == 3
    assert [r["round"] for r in at_kill.records] == [1, 2]

    # The restarted server said where it resumed, and sent exactly the checkpointed model.
    resumed = [json.loads(line) for line in events.read_text().splitlines()]
    resumed = [e for e in resumed if e["kind"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["round"] == 3
    assert vector_digest(at_kill.vector) in resumed[0]["detail"]
    for trainer in trainers.values():
        starts = [vector for r, vector in trainer.received if r == 3]
        assert starts and all(vector == at_kill.vector.tobytes() for vector in starts)

    # Every completed round is in the final checkpoint, once, and the first two untouched.
    final = load_checkpoint(checkpoint, task.trainer(1).dimension)
    assert final is not None and final.next_round == ROUNDS + 1
    assert [r["round"] for r in final.records] == [1, 2, 3, 4]
    assert all(r["status"] == "completed" for r in final.records)
    assert final.records[:2] == at_kill.records
    for summary in summaries:
        assert summary.finished and summary.completed == [1, 2, 3, 4]  # type: ignore[attr-defined]
        assert summary.connections >= 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_close_every_connection_and_exit_cleanly(tmp_path: Path, signum: int) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "transport.cli", "server", "--port", str(port), "--task", "digits-logreg",
        "--clients", "3", "--rounds", "2", "--checkpoint", str(tmp_path / "ck"),
    ]  # fmt: skip
    server = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    async def registered_peer() -> tuple[int | None, str | None]:
        for _ in range(100):  # the server needs a moment to start listening
            try:
                ws = await connect(f"ws://127.0.0.1:{port}")
                break
            except OSError:
                await asyncio.sleep(0.1)
        await ws.recv()  # challenge
        await ws.send(encode(Hello(1)))
        await ws.recv()  # welcome
        server.send_signal(signum)
        await asyncio.wait_for(ws.wait_closed(), 20)
        return ws.close_code, ws.close_reason

    try:
        closed = asyncio.run(registered_peer())
        output, _ = server.communicate(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert closed == (CloseCode.GOING_AWAY, "server shutting down")
    assert server.returncode == 0
    assert b"stopped by signal" in output
    assert not (tmp_path / "ck").exists()  # no round finished, so nothing was checkpointed
