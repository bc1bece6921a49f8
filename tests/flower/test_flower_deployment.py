"""The Flower drop-in in Flower's deployment engine: a SuperLink, four SuperNodes and ``flwr run``.

``test_the_drop_in_runs_on_superlink_and_supernodes`` starts ``flower-superlink`` and four
``flower-supernode`` processes on free ports of 127.0.0.1 (``--insecure``, Flower's state in
memory, ``FLWR_HOME`` in a temporary folder that holds the SuperLink connection in
``config.toml``), then ``flwr run --stream`` of the app in ``deployment_app/`` (bundled with
``flower_apps.py``) for two rounds:

1. a clean round: the secure aggregate equals plaintext FedAvg of the four nodes' updates within
   the quantization bound, and FedAvg installed global model + mean update;
2. a round in which one node is killed after it received its fit instructions (the masked-input
   stage, where Flower's own SecAgg+ halts): the app's ``HangMod`` makes it announce itself and
   wait; the test then stops its SuperNode (SIGTERM: the SuperLink marks it offline and answers
   the pending message with ``NODE_UNAVAILABLE``) and kills the ClientApp process holding the
   round. The round completes with the three survivors (t = 3): their FedAvg, within the bound.

Everything is driven by the processes' output (readiness lines, the hanging node's line, the end
of ``flwr run``), never by sleeps. Each process runs in its own session; Flower detaches its
SuperExec and app processes into sessions of their own, so teardown stops every descendant it
finds under the started processes, then the processes themselves.

A run takes one to three minutes (each SuperNode starts a ``flwr-clientapp`` process per message
and polls every 3 s), so the test is marked slow; run it with
``python -m pytest tests/flower/test_flower_deployment.py``.

``test_an_error_the_superlink_sends_for_a_node_drops_that_node`` is the in-process regression test
for what the deployment engine revealed: the SuperLink answers for an unavailable node from
``SUPERLINK_NODE_ID``, and the workflow must attribute that error to the node it asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

import flwr.compat.common.recorddict_compat as compat
from flower_apps import (
    CLIP,
    HANG_MARKER,
    MAX_WEIGHT,
    client_app,
    client_delta,
    client_examples,
    initial_arrays,
)
from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from secagg import RoundSetup
from secagg.state import rounds_of
from transport.flower import SecureAggregationWorkflow
from transport.flower.workflow import RoundRecord, _RoundState

HERE = Path(__file__).resolve().parent
APP = HERE / "deployment_app"
BIN = Path(sys.executable).parent
NUM_NODES = 4
CLEAN, KILLED = 1, 2
STAGES = [r.value for r in rounds_of(False)]
KILL_STAGE = STAGES.index("masked_input")  # the k-th fit message of a round is stage STAGES[k]
KILL_PARTITION = 3
READY_SECONDS = 120.0  # a process prints its readiness line within this (loaded 2-core machine)
STAGE_SECONDS = 120.0  # the workflow's timeout per stage (a stage takes about 10 s here)
RUN_SECONDS = 360.0  # the whole `flwr run` (two rounds), inside pytest's 600 s timeout


def _plaintext_mean(nodes: list[int]) -> np.ndarray:
    """Plaintext FedAvg of the nodes' clipped updates, weighted by their example counts."""
    weights = np.array([min(client_examples(v), MAX_WEIGHT) for v in nodes], dtype=np.float64)
    updates = np.stack([np.concatenate([d.ravel() for d in client_delta(v)]) for v in nodes])
    mean: np.ndarray = (weights @ np.clip(updates, -CLIP, CLIP)) / weights.sum()
    return mean


# -- processes ----------------------------------------------------------------------------------


class _Process:
    """A started command whose output (stdout and stderr) is read line by line as it comes."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self._log = (folder / f"{name}.log").open("w")
        self.popen = subprocess.Popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group
        )
        threading.Thread(target=self._read, name=f"read-{name}", daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._log.write(line)
            self._log.flush()
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``, waiting up to ``timeout`` seconds for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    why = f"exited ({self.popen.poll()})" if self._closed else f"timed out ({timeout} s)"
                    raise AssertionError(f"{self.name} {why} before printing {pattern!r}:\n{self.tail()}")
                self._changed.wait(remaining)

    def tail(self, count: int = 40) -> str:
        return "".join(self.lines[-count:])


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process now running (from /proc)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(roots: list[int]) -> set[int]:
    tree, found, todo = _children(), set(), list(roots)
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
            os.kill(pid, sig)


def _is_flower_process(pid: int) -> bool:
    try:
        return b"flwr" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_all(processes: list[_Process], extra: set[int]) -> None:
    """Stop the started processes and every process under them, also those Flower detached.

    They are frozen first (SIGSTOP), so none exits and leaves an orphan outside the tree or starts
    a new child, then killed. ``extra``: Flower processes known to have left the tree.
    """
    roots = [p.popen.pid for p in processes if p.popen.poll() is None]
    frozen: set[int] = set(roots) | {pid for pid in extra if _is_flower_process(pid)}
    _signal(frozen, signal.SIGSTOP)
    while new := _descendants(roots) - frozen:
        _signal(new, signal.SIGSTOP)
        frozen |= new
    _signal(frozen, signal.SIGKILL)
    for process in processes:
        process.popen.wait(timeout=60)


def _free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that were free a moment ago (all bound at once: distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class _Deployment:
    app: Path  # the app folder to `flwr run`
    env: dict[str, str]
    folder: Path  # logs and results
    nodes: list[_Process]  # the SuperNodes, by partition id
    node_ids: list[int]  # their node ids, by partition id
    processes: list[_Process]  # everything teardown stops
    extra: set[int]  # Flower processes that left the tree (teardown kills them too)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[_Deployment]:
    """A running SuperLink and NUM_NODES SuperNodes; yields what the test needs to drive them."""
    home, app = tmp_path / "flwr-home", tmp_path / "app"
    home.mkdir()
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(HERE / "flower_apps.py", app / "flower_apps.py")  # the bundle holds both
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # Flower starts its helpers by name
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    link_port, *node_ports = _free_ports(1 + NUM_NODES)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local-test"\n\n'
        f'[superlink.local-test]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    processes: list[_Process] = []
    extra: set[int] = set()  # processes found detached from the tree (the hanging ClientApp)
    try:
        link = _Process(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host=127.0.0.1",
                f"--port={link_port}",
                "--disable-runtime-dependency-installation",
            ],
            env,
            tmp_path,
        )
        processes.append(link)
        link.wait_for(rf"Uvicorn running on http://127\.0\.0\.1:{link_port}", READY_SECONDS)
        nodes = []
        for partition, port in enumerate(node_ports):
            node = _Process(
                f"supernode-{partition}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    f"--superlink=127.0.0.1:{link_port}",
                    "--host=127.0.0.1",
                    f"--port={port}",
                    f"--node-config=partition-id={partition} num-partitions={NUM_NODES}",
                ],
                env,
                tmp_path,
            )
            processes.append(node)
            nodes.append(node)
        node_ids = [int(n.wait_for(r"SuperNode ID: (\d+)", READY_SECONDS).group(1)) for n in nodes]
        yield _Deployment(app, env, tmp_path, nodes, node_ids, processes, extra)
    finally:
        _stop_all(processes, extra)


# -- the deployment test ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_drop_in_runs_on_superlink_and_supernodes(deployment: _Deployment) -> None:
    folder, nodes, node_ids = deployment.folder, deployment.nodes, deployment.node_ids
    result_path = folder / "result.json"
    run_config = (
        f"num-nodes={NUM_NODES} num-rounds=2 timeout={STAGE_SECONDS} "
        f'result-path="{result_path}" hang-round={KILLED} hang-partition={KILL_PARTITION} '
        f"hang-stage={KILL_STAGE}"
    )
    run = _Process(
        "flwr-run",
        [
            str(BIN / "flwr"),
            "run",
            str(deployment.app),
            "local-test",
            "--stream",
            "--run-config",
            run_config,
        ],
        deployment.env,
        folder,
    )
    deployment.processes.append(run)

    # Kill the planned node once it holds its fit instructions of round KILLED.
    victim = nodes[KILL_PARTITION]
    hang = victim.wait_for(rf"{HANG_MARKER} node=(\d+) stage=(\d+) pid=(\d+)", RUN_SECONDS)
    killed, stage, clientapp = (int(x) for x in hang.groups())
    assert (killed, stage) == (node_ids[KILL_PARTITION], KILL_STAGE)
    deployment.extra.add(clientapp)
    victim.popen.send_signal(signal.SIGTERM)  # the SuperNode leaves (deactivates itself)
    os.kill(clientapp, signal.SIGKILL)  # and the ClientApp process holding the round dies
    assert victim.popen.wait(timeout=READY_SECONDS) is not None

    run.wait_for(r"Run finished 2 round\(s\)", RUN_SECONDS)
    assert run.popen.wait(timeout=READY_SECONDS) == 0, run.tail()
    rounds = json.loads(result_path.read_text())["rounds"]
    assert [r["server_round"] for r in rounds] == [CLEAN, KILLED]

    clean = rounds[CLEAN - 1]
    assert clean["completed"], clean["halted"]
    assert clean["dropped"] == {}
    assert sorted(clean["sampled"]) == sorted(clean["survivors"]) == sorted(node_ids)
    _check_aggregate(clean)

    lost = rounds[KILLED - 1]
    assert lost["completed"], lost["halted"]
    assert sorted(lost["sampled"]) == sorted(node_ids)
    assert set(lost["dropped"]) == {str(killed)}
    assert lost["dropped"][str(killed)].startswith(
        f"masked_input: node error {int(ErrorCode.NODE_UNAVAILABLE)}"
    )
    assert sorted(lost["survivors"]) == sorted(set(node_ids) - {killed})
    assert len(lost["survivors"]) >= lost["threshold"] == 3
    _check_aggregate(lost)
    everyone = _plaintext_mean(node_ids)
    assert np.max(np.abs(np.array(lost["mean"]) - everyone)) > 10 * lost["error_bound"]  # really left out


def _check_aggregate(record: dict[str, Any]) -> None:
    """Secure mean = plaintext FedAvg of the survivors within the bound; FedAvg installed it."""
    mean, bound = np.array(record["mean"]), record["error_bound"]
    survivors = record["survivors"]
    assert np.max(np.abs(mean - _plaintext_mean(survivors))) <= bound
    assert record["total_weight"] == sum(min(client_examples(v), MAX_WEIGHT) for v in survivors)
    np.testing.assert_allclose(
        np.array(record["after"]), np.array(record["before"]) + mean, rtol=0, atol=1e-12
    )


# -- the regression test, in process ------------------------------------------------------------


class _Grid:
    """Runs the test ClientApp in process; for ``unavailable`` it answers as the SuperLink does for
    a node that went offline: an error from ``SUPERLINK_NODE_ID`` that replies to the message."""

    def __init__(self, nodes: list[int], unavailable: int) -> None:
        self.app = client_app({})
        self.contexts = {
            n: Context(
                run_id=1, node_id=n, node_config={"partition-id": i}, state=RecordDict(), run_config={}
            )
            for i, n in enumerate(nodes)
        }
        self.unavailable = unavailable

    def send_and_receive(self, messages: list[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as a grid does when it pushes
            node = msg.metadata.dst_node_id
            if node == self.unavailable:
                metadata = Metadata(
                    run_id=1,
                    message_id="",
                    src_node_id=SUPERLINK_NODE_ID,
                    dst_node_id=SUPERLINK_NODE_ID,
                    reply_to_message_id=msg.metadata.message_id,
                    group_id=msg.metadata.group_id,
                    created_at=time.time(),
                    ttl=60.0,
                    message_type=msg.metadata.message_type,
                )
                error = Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node offline")
                replies.append(Message(metadata=metadata, error=error))  # type: ignore[call-overload]
            else:
                replies.append(self.app(msg, self.contexts[node]))
        return replies


def test_an_error_the_superlink_sends_for_a_node_drops_that_node(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the ServerApp process knows about itself (messages are stamped with it).
    for name, value in (("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    nodes = [101, 102, 103, 104]
    workflow = SecureAggregationWorkflow(clip=CLIP, max_weight=MAX_WEIGHT, graph="complete", timeout=5)
    quantization = workflow.threat_model.quantization(len(nodes))
    parameters = ndarrays_to_parameters(initial_arrays())
    length = sum(a.size for a in initial_arrays()) + 1
    config = workflow.threat_model.secagg_config(len(nodes), length, quantization.modulus)
    record = RoundRecord(
        server_round=1, sampled=tuple(nodes), node_of=dict(enumerate(nodes, start=1)), config=config
    )
    state = _RoundState(
        record=record,
        proxies={},
        fitins={n: compat.fitins_to_recorddict(FitIns(parameters, {}), True) for n in nodes},
        local_of={n: i for i, n in enumerate(nodes, start=1)},
        setup=RoundSetup(config, os.urandom(32)),
        quantization=quantization,
        parameters=parameters,
    )
    mean = workflow._run_protocol(_Grid(nodes, unavailable=104), state)  # type: ignore[arg-type]
    assert record.dropped == {
        104: f"advertise_keys: node error {int(ErrorCode.NODE_UNAVAILABLE)}: node offline"
    }
    assert record.survivors == (101, 102, 103)
    assert np.max(np.abs(mean.mean - _plaintext_mean([101, 102, 103]))) <= mean.error_bound
