"""Real client processes SIGKILLed at each SecAgg round.

The server runs in the test; the clients are ``python -m transport.cli client`` processes on
digits. When the server announces a phase (before it sends that phase's prompts), the planned
victims get SIGKILL, and fresh processes with the same ids are started to rejoin the next round.
A round completes when at least t clients remain and then equals the plaintext FedAvg aggregate
of exactly its survivors; otherwise it aborts without touching the model; either way the next
round proceeds.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import ClientProcesses, plaintext_mean

from transport import audit
from transport.identity import generate_identities, load_roster
from transport.records import RoundReport, ServerEvent
from transport.server import FederationServer, FederationSettings, RoundOutcome
from transport.tasks import DigitsTask, TrainingSettings

Plan = dict[tuple[int, str], set[int]]


@dataclass
class KillRun:
    reports: list[RoundReport]
    outcomes: dict[int, RoundOutcome]
    clients: ClientProcesses


def run_with_kills(
    task: DigitsTask,
    settings: FederationSettings,
    plan: Plan,
    make_processes: Callable[..., ClientProcesses],
    identities: Path | None = None,
) -> KillRun:
    """Run the federation with client processes, SIGKILLing ``plan[(round, phase)]`` as the
    phase begins and restarting them at once."""
    roster = load_roster(identities / "roster.json") if identities is not None else None
    outcomes: dict[int, RoundOutcome] = {}

    async def main() -> KillRun:
        clients: ClientProcesses | None = None

        def on_event(event: ServerEvent) -> None:
            if event.kind != "phase" or clients is None:
                return
            for victim in sorted(plan.get((event.round, event.phase), ())):
                process = clients.processes[victim]
                process.send_signal(signal.SIGKILL)
                process.wait()
                start(victim)  # rejoins with the next round

        def start(client_id: int) -> None:
            assert clients is not None
            if identities is not None:
                clients.extra_args = [
                    "--roster", str(identities / "roster.json"),
                    "--identity-key", str(identities / f"client-{client_id}.pem"),
                ]  # fmt: skip
            clients.start(client_id)

        server = FederationServer(
            task.server_model(),
            settings,
            roster=roster,
            on_event=on_event,
            on_round=lambda report, outcome: outcomes.__setitem__(report.round, outcome),
        )
        await server.start()
        clients = make_processes(f"ws://127.0.0.1:{server.port}", task)
        for client_id in range(1, task.num_clients + 1):
            start(client_id)
        try:
            reports = await asyncio.wait_for(server.run(), 180)
        finally:
            await server.stop()
        return KillRun(reports, outcomes, clients)

    return asyncio.run(main())


@pytest.mark.slow
def test_sigkilled_clients_at_each_round_complete_or_abort_cleanly(
    client_processes: Callable[..., ClientProcesses],
) -> None:
    task = DigitsTask("digits-logreg", num_clients=6, alpha=0.5, seed=5)
    settings = FederationSettings(
        num_clients=6,
        rounds=6,
        threshold=4,
        clip=2.0,
        max_weight=1024,
        training=TrainingSettings(epochs=2, batch_size=16, learning_rate=0.1),
        phase_timeout=30,
        train_timeout=30,
        wait_timeout=60,
    )
    plan: Plan = {
        (1, "advertise_keys"): {1, 2},  # killed while training: never in U1
        (2, "share_keys"): {3, 4},  # in U1, never in U2
        (3, "masked_input"): {5, 6},  # in U2, their masks are removed via s_SK shares
        (4, "unmasking"): {1, 6},  # in U3: their inputs count, the others unmask them
        (5, "masked_input"): {2, 3, 4},  # only 3 masked inputs left, t = 4: abort
    }
    run = run_with_kills(task, settings, plan, client_processes)
    reports = run.reports

    assert [r.status for r in reports] == ["completed"] * 4 + ["aborted", "completed"]
    everyone = [1, 2, 3, 4, 5, 6]
    expected_survivors = {1: [3, 4, 5, 6], 2: [1, 2, 5, 6], 3: [1, 2, 3, 4], 4: everyone, 6: everyone}
    for report in reports:
        killed = {v: phase for (r, phase), vs in plan.items() if r == report.round for v in vs}
        assert {d.client: d.phase for d in report.dropped} == killed
        assert all(d.close_code == 1006 and "connection lost" in d.reason for d in report.dropped)
        if report.status == "completed":
            assert report.survivors == expected_survivors[report.round]
            updates = audit.read_updates(run.clients.audit_dir, report.round, report.survivors)
            mean = run.outcomes[report.round].mean_update
            assert mean is not None and report.error_bound is not None
            assert np.max(np.abs(mean - plaintext_mean(updates, settings))) <= report.error_bound
    aborted = reports[4]
    assert re.search(r"masked_input: only 3 .*threshold is 4", aborted.reason)
    assert aborted.survivors == [] and aborted.model_sha256 == reports[3].model_sha256
    # Round 6 starts from the model of round 4: the aborted round left it alone.
    assert run.outcomes[6].start_vector.tobytes() == run.outcomes[5].start_vector.tobytes()


@pytest.mark.slow
def test_sigkilled_clients_in_the_active_mode_consistency_check(
    client_processes: Callable[..., ClientProcesses], tmp_path: Path
) -> None:
    task = DigitsTask("digits-logreg", num_clients=6, alpha=0.5, seed=6)
    generate_identities(tmp_path / "ids", 6)
    settings = FederationSettings(
        num_clients=6,
        rounds=3,
        mode="active",  # t > 2n/3: t = 5 of 6
        clip=2.0,
        max_weight=1024,
        phase_timeout=30,
        train_timeout=30,
        wait_timeout=60,
    )
    plan: Plan = {(1, "consistency_check"): {2}, (2, "consistency_check"): {1, 2}}
    reports = run_with_kills(task, settings, plan, client_processes, tmp_path / "ids").reports
    assert [r.status for r in reports] == ["completed", "aborted", "completed"]
    assert reports[0].survivors == [1, 2, 3, 4, 5, 6]  # client 2's input was already in the sum
    assert [d.client for d in reports[0].dropped] == [2]
    assert re.search(r"consistency_check: only 4 .*threshold is 5", reports[1].reason)
    assert reports[2].survivors == [1, 2, 3, 4, 5, 6]
