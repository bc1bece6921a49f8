"""Registration: what the server and a client must agree on, and how a client takes a refusal.

The hello carries the client's terms (task, model dimension, digest of the initial model,
quantization); the envelope carries the wire version. A mismatch is refused with a close reason
that names the field and both values, logged by the server and printed by the client, which
exits with status 2 at once. Unknown identities and failed proofs are permanent too; a refusal
for now (id in use, server full) is retried until ``--give-up-after``, then exit status 3.

The process tests run ``python -m transport.cli`` for the server and the clients on 127.0.0.1;
the app is this module's ``app`` (numpy softmax regression whose size and initial weights come
from ``--app-option``), so no torch is imported.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
from federation_helpers import REPO, ZeroModel, fixed_trainers, free_port
from websockets.asyncio.client import connect

from fedavg_core import Dataset, LogisticRegression
from secagg.primitives import signatures
from transport.apps import AppContext, LearnerApp
from transport.client import FederationClient, RegistrationRefused
from transport.codec import WIRE_VERSION, FrameLimits, decode_from_client, encode
from transport.errors import CloseCode
from transport.identity import (
    RosterFile,
    enrol,
    init_identity,
    load_identity_key,
    parse_public_key,
    save_roster,
)
from transport.records import ServerEvent
from transport.server import FederationServer, FederationSettings
from transport.wire import Hello, QuantizationTerms, Terms, model_digest, terms_mismatch

HERE = Path(__file__).resolve().parent
MAX_CLOSE_REASON = 123  # RFC 6455: a close frame's reason is at most 123 bytes


# -- the app the processes run ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftedRegression(LogisticRegression):
    """Softmax regression whose initial weights are all ``start`` (another initial model)."""

    start: float = 0.0

    def initial_vector(self) -> np.ndarray:
        return np.full(self.spec.size, self.start)


def app(context: AppContext) -> LearnerApp:
    """``--app-option features=F`` changes the model size, ``start=S`` its initial weights."""
    features = context.option("features", 6, int)
    start = context.option("start", 0.0, float)

    def data(client_id: int) -> Dataset:
        rng = np.random.default_rng(client_id)
        return Dataset(rng.normal(size=(30, features)), rng.integers(0, 3, 30))

    return LearnerApp(lambda: ShiftedRegression(features, 3, start=start), data, seed=1)


other_app = app  # the same model under another task name


# -- processes -------------------------------------------------------------------------------------


@dataclass
class Process:
    """A ``python -m transport.cli`` process with its log file and wall time."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float
    elapsed: float | None = None

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self.elapsed = time.monotonic() - self.started
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Processes:
    """Starts CLI processes in ``folder``; kills whatever is still running at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[Process] = []

    def start(
        self, name: str, argv: Sequence[str], *, python: Sequence[str] = ("-m", "transport.cli")
    ) -> Process:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as handle:
            popen = subprocess.Popen(
                [sys.executable, *python, *argv],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
            )
        process = Process(name, popen, log, time.monotonic())
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            if process.popen.poll() is None:
                process.popen.kill()
            process.popen.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path)
    yield group
    group.stop_all()


APP = ["--app-dir", str(HERE), "--clients", "3"]


def start_server(processes: Processes, port: int, *extra: str) -> Process:
    server = processes.start(
        "server",
        ["server", "--app", "test_registration:app", *APP, "--port", str(port), "--rounds", "1", *extra],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.popen.poll() is None, server.output()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    raise AssertionError(f"the server did not listen within 60 s:\n{server.output()}")


def client_argv(port: int, client_id: int, *extra: str, app_name: str = "app") -> list[str]:
    return [
        "client", "--app", f"test_registration:{app_name}", *APP, "--url", f"ws://127.0.0.1:{port}",
        "--id", str(client_id), "--give-up-after", "120", "--backoff-max", "0.5", *extra,
    ]  # fmt: skip


def wait_for_line(process: Process, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.output():
        assert time.monotonic() < deadline, f"no {text!r} in the {process.name} log:\n{process.output()}"
        assert process.popen.poll() is None, process.output()
        time.sleep(0.1)


def digest_of(start: float) -> str:
    return model_digest(np.full(6 * 3 + 3, start)).hex()[:16]


# -- terms on the wire -----------------------------------------------------------------------------


def test_terms_travel_in_the_hello_and_mismatches_name_the_field_and_both_values() -> None:
    server = Terms("a:app", 21, model_digest(np.zeros(21)), QuantizationTerms(2.0, 16, 1024))
    hello = Hello(4, b"s" * 64, server)
    decoded = decode_from_client(encode(hello), FrameLimits(4096, 8, 8)).message
    assert decoded == hello
    assert decode_from_client(encode(Hello(4)), FrameLimits(4096, 8, 8)).message == Hello(4, None, Terms())

    assert terms_mismatch(server, server) is None
    assert terms_mismatch(server, Terms()) is None  # a client without expectations
    assert terms_mismatch(Terms(), server) is None  # an embedded server without a task name
    cases = {
        "task: server 'a:app', client 'b:app'": Terms(task="b:app"),
        "dimension: server 21, client 18": Terms(dimension=18),
        f"model_digest: server {digest_of(0.0)}, client {digest_of(0.5)}": Terms(
            model_digest=model_digest(np.full(21, 0.5))
        ),
        "quantization: server clip=2 bits=16 max_weight=1024, client clip=1 bits=16 max_weight=1024": Terms(
            quantization=QuantizationTerms(1.0, 16, 1024)
        ),
    }
    for reason, client in cases.items():
        assert terms_mismatch(server, client) == reason
        assert len(reason.encode()) <= MAX_CLOSE_REASON
    long_task = Terms(task="x" * 500)
    assert len((terms_mismatch(Terms(task="y" * 500), long_task) or "").encode()) <= MAX_CLOSE_REASON
    assert QuantizationTerms.parse("clip=2, bits=16, max_weight=1024") == QuantizationTerms(2.0, 16, 1024)
    with pytest.raises(ValueError, match="expected clip=C bits=B max_weight=W"):
        QuantizationTerms.parse("clip=2 bits=16")


# -- real processes: permanent and transient refusals -------------------------------------------


def test_mismatched_clients_exit_2_within_seconds_with_the_reason_and_a_duplicate_id_gives_up(
    processes: Processes,
) -> None:
    port = free_port()
    server = start_server(processes, port, "--wait-timeout", "600")
    url = f"ws://127.0.0.1:{port}"
    expected = {
        "task": "task: server 'test_registration:app', client 'test_registration:other_app'",
        "dimension": "dimension: server 21, client 18",
        "digest": f"model_digest: server {digest_of(0.0)}, client {digest_of(0.5)}",
        "quantization": "quantization: server clip=2 bits=16 max_weight=1024, "
        "client clip=1 bits=16 max_weight=1024",
        "version": f"wire version: server {WIRE_VERSION}, client {WIRE_VERSION - 1}",
    }
    clients = {
        "task": processes.start("task", client_argv(port, 2, app_name="other_app")),
        "dimension": processes.start("dimension", client_argv(port, 2, "--app-option", "features=5")),
        "digest": processes.start("digest", client_argv(port, 2, "--app-option", "start=0.5")),
        "quantization": processes.start(
            "quantization", client_argv(port, 2, "--expect-quantization", "clip=1 bits=16 max_weight=1024")
        ),
        # A client of the previous wire version: the same CLI with the codec's version lowered.
        "version": processes.start(
            "version",
            client_argv(port, 2),
            python=(
                "-c",
                "import sys, transport.codec as c; c.WIRE_VERSION -= 1; from transport.cli import main; "
                "sys.exit(main(sys.argv[1:]))",
            ),
        ),
    }
    holder = processes.start("holder", client_argv(port, 1))  # the same app: welcome, then wait
    for name, client in clients.items():
        assert client.wait(90) == 2, client.output()
        out = client.output()
        assert expected[name] in out, out
        assert out.count("refused by the server") == (name != "version"), out  # once: no retry
        assert client.elapsed is not None and client.elapsed < 45, (name, client.elapsed)
    wait_for_line(server, "client 1 registered")
    log = server.output()
    for name in ("task", "dimension", "digest", "quantization"):
        assert f"{expected[name]} (close code {int(CloseCode.MISMATCH)})" in log
    assert f"gave up registering: {expected['version']} (close code {int(CloseCode.MISMATCH)})" in log

    # The same id again while client 1 is connected: refused for now, retried, given up after 3 s.
    duplicate = processes.start(
        "duplicate", [*client_argv(port, 1), "--give-up-after", "3", "--log-level", "INFO"]
    )
    assert duplicate.wait(90) == 3, duplicate.output()
    out = duplicate.output()
    assert "not registered at " + url + " for 3s" in out
    assert "client id 1 is already connected (close code 4001)" in out
    assert out.count("refused for now") >= 2, out  # it retried
    assert duplicate.elapsed is not None and 3 <= duplicate.elapsed < 45
    assert holder.popen.poll() is None  # the connected client was not disturbed


def test_unknown_identity_and_failed_proof_exit_2_within_seconds(
    processes: Processes, tmp_path: Path
) -> None:
    keys = {name: init_identity(tmp_path / f"{name}.pem") for name in ("one", "two", "three", "impostor")}
    save_roster(tmp_path / "server-roster.json", {1: keys["one"], 2: keys["two"]})
    # Each client trusts a roster listing its own key under its id (the server's lacks it).
    save_roster(tmp_path / "three-roster.json", {1: keys["one"], 2: keys["two"], 3: keys["three"]})
    save_roster(tmp_path / "impostor-roster.json", {1: keys["one"], 2: keys["impostor"]})
    port = free_port()
    server = start_server(
        processes,
        port,
        "--mode",
        "active",
        "--roster",
        str(tmp_path / "server-roster.json"),
        "--wait-timeout",
        "600",
    )
    unknown = processes.start(
        "unknown",
        client_argv(
            port,
            3,
            "--identity-key",
            str(tmp_path / "three.pem"),
            "--roster",
            str(tmp_path / "three-roster.json"),
        ),
    )
    impostor = processes.start(
        "impostor",
        client_argv(
            port,
            2,
            "--identity-key",
            str(tmp_path / "impostor.pem"),
            "--roster",
            str(tmp_path / "impostor-roster.json"),
        ),
    )
    for client, reason in (
        (unknown, "unknown client id 3 (not enrolled)"),
        (impostor, "identity proof for client 2 failed"),
    ):
        assert client.wait(90) == 2, client.output()
        out = client.output()
        assert f"refused this client (close code {int(CloseCode.REGISTRATION_FAILED)}): {reason}" in out
        assert out.count("refused by the server") == 1, out  # no retry
        assert client.elapsed is not None and client.elapsed < 45
        assert reason in server.output()


# -- in process: a full server, and a client enrolled while the server runs ---------------------


def test_a_full_server_is_retried_until_give_up_after() -> None:
    settings = FederationSettings(num_clients=3, rounds=1, max_population=1, wait_timeout=600)
    trainers = fixed_trainers(2, 4)

    async def scenario() -> tuple[BaseException | None, int, float]:
        registered = asyncio.Event()
        server = FederationServer(
            ZeroModel(4), settings, on_event=lambda e: registered.set() if e.kind == "registered" else None
        )
        await server.start()
        url = f"ws://127.0.0.1:{server.port}"
        first = FederationClient(1, trainers[1], url)
        second = FederationClient(
            2, trainers[2], url, give_up_after=1.5, backoff_initial=0.1, backoff_max=0.2
        )
        holder = asyncio.create_task(first.run())
        try:
            await asyncio.wait_for(registered.wait(), 30)
            began = asyncio.get_running_loop().time()
            error: BaseException | None = None
            try:
                await asyncio.wait_for(second.run(), 30)
            except ConnectionError as exc:
                error = exc
            return error, second.summary.connections, asyncio.get_running_loop().time() - began
        finally:
            holder.cancel()
            await server.stop()

    error, attempts, elapsed = asyncio.run(scenario())
    assert isinstance(error, ConnectionError)
    assert "server full: 1 clients connected (cap 1) (close code 1013)" in str(error)
    assert attempts >= 3 and 1.5 <= elapsed < 10


def test_a_client_enrolled_while_the_server_runs_joins_a_later_round(tmp_path: Path) -> None:
    roster_path = tmp_path / "roster.json"
    for i in (1, 2, 3, 4):
        init_identity(tmp_path / f"client-{i}.pem")  # each client makes its own key
    for i in (1, 2, 3):  # the operator enrols their public keys
        enrol(roster_path, i, parse_public_key(str(tmp_path / f"client-{i}.pem.pub")))
    key4 = load_identity_key(tmp_path / "client-4.pem")
    public4 = signatures.identity_public_bytes(key4)
    # N = 4: each round waits up to wait_timeout for all four, then starts with the three.
    settings = FederationSettings(
        num_clients=4, rounds=2, mode="active", clip=1.0, max_weight=256, wait_timeout=3.0, phase_timeout=20.0
    )
    trainers = fixed_trainers(4, 6, seed=2)
    events: list[ServerEvent] = []

    async def scenario() -> tuple[FederationServer, list[object], str]:
        server = FederationServer(
            ZeroModel(6), settings, roster=RosterFile(roster_path), on_event=events.append
        )
        await server.start()
        url = f"ws://127.0.0.1:{server.port}"

        def client(i: int, roster: object) -> FederationClient:
            key = load_identity_key(tmp_path / f"client-{i}.pem")
            return FederationClient(i, trainers[i], url, identity_key=key, roster=roster, give_up_after=30)  # type: ignore[arg-type]

        tasks = [asyncio.create_task(client(i, RosterFile(roster_path)).run()) for i in (1, 2, 3)]
        runner = asyncio.create_task(server.run())
        try:
            # Before enrolment client 4 is refused for good, though it trusts its own key.
            early = client(4, {**RosterFile(roster_path).current(), 4: public4})
            refusal = ""
            try:
                await asyncio.wait_for(early.run(), 30)
            except RegistrationRefused as exc:
                refusal = exc.reason
            while not any(e.kind == "round_end" for e in events):
                assert not runner.done(), runner
                await asyncio.sleep(0.01)
            enrol(roster_path, 4, public4)  # the operator enrols the public key only
            tasks.append(asyncio.create_task(client(4, RosterFile(roster_path)).run()))
            reports = await asyncio.wait_for(runner, 120)
            summaries = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        finally:
            for task in [*tasks, runner]:
                task.cancel()
            await server.stop()
        assert [r.status for r in reports] == ["completed", "completed"], [r.reason for r in reports]
        return server, list(summaries), refusal

    server, summaries, refusal = asyncio.run(scenario())
    assert refusal == "unknown client id 4 (not enrolled)"
    first, second = server.reports
    assert first.survivors == [1, 2, 3]
    assert second.survivors == [1, 2, 3, 4]  # the new client, and the others trusted its key
    assert server.roster is not None and server.roster[4] == public4
    assert [getattr(s, "completed", s) for s in summaries] == [[1, 2], [1, 2], [1, 2], [2]]


def test_raw_hello_of_another_wire_version_is_refused_with_both_versions() -> None:
    settings = FederationSettings(num_clients=3, rounds=1, wait_timeout=600)

    async def scenario() -> tuple[int | None, str | None]:
        server = FederationServer(ZeroModel(4), settings)
        await server.start()
        try:
            async with connect(f"ws://127.0.0.1:{server.port}") as ws:
                await ws.recv()  # challenge
                envelope = msgpack.unpackb(encode(Hello(1)), raw=False)
                envelope["v"] = WIRE_VERSION + 1
                await ws.send(msgpack.packb(envelope, use_bin_type=True))
                await asyncio.wait_for(ws.wait_closed(), 10)
                return ws.close_code, ws.close_reason
        finally:
            await server.stop()

    code, reason = asyncio.run(scenario())
    assert code == CloseCode.MISMATCH
    assert reason == f"wire version: server {WIRE_VERSION}, client {WIRE_VERSION + 1}"
