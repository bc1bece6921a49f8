"""Fixtures for the transport tests (helpers live in ``federation_helpers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from federation_helpers import ClientProcesses

from transport.tasks import DigitsTask


@pytest.fixture
def digits_task() -> DigitsTask:
    return DigitsTask("digits-logreg", num_clients=4, alpha=0.5, seed=3)


@pytest.fixture
def client_processes(tmp_path: Path) -> Iterator[Callable[..., ClientProcesses]]:
    made: list[ClientProcesses] = []

    def make(url: str, task: DigitsTask, extra_args: Sequence[str] = ()) -> ClientProcesses:
        log_dir = tmp_path / "logs"
        log_dir.mkdir(exist_ok=True)
        group = ClientProcesses(url, task, tmp_path / "audit", log_dir, list(extra_args))
        made.append(group)
        return group

    yield make
    for group in made:
        group.stop_all()
