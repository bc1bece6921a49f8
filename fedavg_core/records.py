"""What the federation coordinator records about each round (JSON-able dataclasses)."""

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
        participants: the cohort: stable client ids sent the round start, in round-local id order
            (``participants[i]`` was client ``i + 1`` of the SecAgg round).
        survivors: U3, the clients (stable ids) whose updates are in the aggregate.
        dropped: clients that left the round, with reasons.
        accuracy: the global model's test accuracy after the round (None without test data).
        seconds: wall-clock seconds per phase (training is inside ``advertise_keys``).
        bytes_up / bytes_down: frame bytes received from / sent to clients during the round.
        error_bound: per-element quantization bound of the decoded mean update.
        total_weight: the summed client weight of the survivors.
        model_sha256: fingerprint of the global model after the round.
        max_abs_diff: max |secure - plaintext| mean update, when an auditor computed it.
        target: n, the answers that closed the training phase (over-selection: fewer than
            ``participants``; None in records written before cohorts existed).
        stragglers: selected clients dismissed because the cohort filled without them.
        available: the sorted ids the cohort was drawn from, and ``selection_seed`` the seed:
            ``fedavg_core.select_cohort`` replays the selection from them.
        threshold: t of the round's SecAgg config.
        misbehaving: clients (stable ids) that provably broke the protocol, with why
            (``secagg.SecAggServer.misbehaving``: a message they sent failed the server's
            checks); a caller may keep repeat offenders out of later rounds.
        suspects: clients involved in faults that cannot be pinned on one side
            (``secagg.SecAggServer.suspects``: both ends of a share-bundle accusation, shares off
            the decoded polynomial, secrets no decoding opened); for monitoring.
        aggregation: ``secure`` (SecAgg), or ``insecure plaintext`` (the debugging mode of
            ``fedavg_core.plaintext_round``: the server saw every update).
        epsilon: with distributed DP, the epsilon the run has spent up to and including this
            round (``dp-accounting``, by the clients actually summed in each round; None without
            DP, and in records written before DP existed).
        noise_stddev: with distributed DP, the standard deviation of the DP noise in each element
            of the decoded mean update (None without DP or when nothing was summed).
        privacy_curves: with distributed DP, the zCDP curves ``[rho, xi]`` this round's release
            spent (``fedavg_core.privacy_accounting``); a resumed server rebuilds its ledger from
            them. Empty when the round released nothing.
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
    target: int | None = None
    stragglers: list[int] = field(default_factory=list)
    available: list[int] = field(default_factory=list)
    selection_seed: int | None = None
    threshold: int | None = None
    misbehaving: dict[int, str] = field(default_factory=dict)
    suspects: dict[int, str] = field(default_factory=dict)
    aggregation: str = "secure"
    epsilon: float | None = None
    noise_stddev: float | None = None
    privacy_curves: list[list[float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A plain dict (for JSON and the checkpoint)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundReport:
        """Inverse of ``to_json``."""
        fields = dict(data)
        fields["dropped"] = [DropRecord(**d) for d in fields.get("dropped", [])]
        fields["misbehaving"] = {int(k): str(v) for k, v in fields.get("misbehaving", {}).items()}
        fields["suspects"] = {int(k): str(v) for k, v in fields.get("suspects", {}).items()}
        fields["privacy_curves"] = [[float(x) for x in c] for c in fields.get("privacy_curves", [])]
        return cls(**fields)
