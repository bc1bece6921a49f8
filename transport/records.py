"""What the server records about each round and reports as it goes (JSON-able dataclasses).

``DropRecord`` and ``RoundReport`` live in ``fedavg_core.records`` (the coordinator writes them).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedavg_core.records import DropRecord, RoundReport, Status

__all__ = ["DropRecord", "RoundReport", "ServerEvent", "Status"]


@dataclass(frozen=True)
class ServerEvent:
    """A progress event: ``kind`` is one of registered, left, waiting, resumed, round_start,
    phase, round_end, finished."""

    kind: str
    round: int
    alive: int
    phase: str = ""
    detail: str = ""
    client: int | None = None
    accuracy: float | None = None
