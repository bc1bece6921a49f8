"""What the server records about each round and reports as it goes (JSON-able dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["completed", "aborted"]


@dataclass
class DropRecord:
    """A client that left a round: when, why, and the websocket close code (None: it aborted
    the round itself and stayed connected)."""

    client: int
    phase: str
    reason: str
    close_code: int | None


@dataclass
class RoundReport:
    """One FedAvg round as the server saw it.

    Attributes:
        round: 1-based FedAvg round number.
        status: ``completed`` (the global model moved) or ``aborted`` (it did not).
        reason: why the round aborted ("" when it completed).
        participants: clients sent the round start.
        survivors: U3, the clients whose updates are in the aggregate.
        dropped: clients that left the round, with reasons.
        accuracy: the global model's test accuracy after the round (None without test data).
        seconds: wall-clock seconds per phase (training is inside ``advertise_keys``).
        bytes_up / bytes_down: frame bytes received from / sent to clients during the round.
        error_bound: per-element quantization bound of the decoded mean update.
        total_weight: the summed client weight of the survivors.
        model_sha256: fingerprint of the global model after the round.
        max_abs_diff: max |secure - plaintext| mean update, when an auditor computed it.
    """

    round: int
    status: Status
    reason: str = ""
    participants: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    dropped: list[DropRecord] = field(default_factory=list)
    accuracy: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    error_bound: float | None = None
    total_weight: int | None = None
    model_sha256: str = ""
    max_abs_diff: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dict (for JSON and the checkpoint)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundReport:
        """Inverse of ``to_json``."""
        fields = dict(data)
        fields["dropped"] = [DropRecord(**d) for d in fields.get("dropped", [])]
        return cls(**fields)


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
