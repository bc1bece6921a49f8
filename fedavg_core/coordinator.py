"""The federation coordinator: population, cohorts, rounds, phases, deadlines, records; sans I/O.

Like ``secagg.SecAggServer`` one level down, the coordinator never touches a socket, a clock or
a thread. A transport (the websocket server, an in-memory test harness, a Flower adapter) feeds
it events with the current clock value and carries out the actions it returns:

- events: ``join`` (a registered client is available), ``leave`` (its connection is gone),
  ``receive`` (a SecAgg message from a client), ``client_abort`` (a client refused the round),
  ``tick`` (the clock reached ``next_timeout()``, or the transport just wants progress);
- actions: ``Note`` (progress, for displays), ``StartTraining`` (the round start for one cohort
  member), ``Deliver`` (a SecAgg server message), ``Dismiss`` (a straggler: the cohort filled
  without it; it stays connected), ``Disconnect`` (cut a client off, with the reason),
  ``RoundClosed`` (checkpoint, then tell ``recipients`` how the round ended), ``Finished``.

A round (Bonawitz et al. 2019, section 2):

1. selection: when ``policy.ready_at()`` clients are available, or the wait deadline passed with
   at least ``policy.min_clients``, ``select_cohort`` draws the cohort (seeded, recorded); each
   member gets a round-local id 1..N and the SecAgg config is sized for N;
2. training and round 0 (AdvertiseKeys) close when n = ``cohort.target`` members answered (the
   others are dismissed as stragglers: they never advertised keys, so they cost the protocol
   nothing), when nobody is left to wait for, or at the deadline (late members are cut off);
3. every later SecAgg phase closes when every live member answered, or at its deadline (late
   members are cut off); ``SecAggServer.advance`` aborts the round below the threshold;
4. the sum over U3 is decoded into the weighted mean update and the global model moves.

With distributed DP (``aggregator.dp``; ``fedavg_core.dp_federation``) the round start also
carries the DP terms and a fresh rotation seed, the noise is planned for the cohort's threshold t,
and every round that produced a secure sum is charged to the run's privacy ledger by the clients
actually summed (before decoding: the server holds the noisy sum whatever the decoding says);
``RoundReport.epsilon`` is the epsilon spent so far.

The coordinator holds one round's state at a time. Drops carry the member's stable id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from secagg import AbortedError, Round, RoundSetup, SecAggConfig, SecAggServer

from .aggregators import SecureAggregator
from .cohort import Cohort, CohortPolicy, select_cohort
from .dp_federation import DPRound, PrivacyAccount
from .plaintext_round import INSECURE_PLAINTEXT, PlaintextPhase, PlaintextSum
from .quantize import QuantizationConfig
from .records import DropRecord, RoundReport
from .vectorize import FloatVector
from .weighting import decode_weighted_sum

Setting = bool | int | float | str
CLOSE_CODES = {"deadline": 4000, "protocol": 1008}
"""The websocket close code recorded for each kind of ``Disconnect`` (RFC 6455 policy violation;
4000, the federation's own code for a missed deadline)."""

# -- actions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """Progress: ``kind`` is waiting, round_start, phase, stragglers, round_end or finished."""

    kind: str
    round: int
    phase: str = ""
    detail: str = ""


@dataclass(frozen=True, eq=False)
class StartTraining:
    """Send the round start to ``client`` (its round-local id is ``local_id``)."""

    client: int
    local_id: int
    round: int
    setup: RoundSetup
    quantization: QuantizationConfig
    parameters: FloatVector
    settings: Mapping[str, Setting]


@dataclass(frozen=True, eq=False)
class Deliver:
    """Send a SecAgg server message to ``client`` in ``round`` (session ``session``)."""

    client: int
    round: int
    session: bytes
    message: object


@dataclass(frozen=True)
class Dismiss:
    """``client`` is a straggler of ``round``: the cohort filled without it; it stays available."""

    client: int
    round: int
    reason: str


@dataclass(frozen=True)
class Disconnect:
    """Cut ``client`` off. ``kind``: ``deadline`` (too slow) or ``protocol`` (misbehaved)."""

    client: int
    kind: str
    reason: str


@dataclass(frozen=True, eq=False)
class RoundClosed:
    """A round ended: checkpoint (``Coordinator.vector``, ``next_round``, ``reports``) first,
    then tell ``recipients`` (the members still in) how it ended."""

    report: RoundReport
    start_vector: FloatVector
    mean_update: FloatVector | None
    recipients: tuple[int, ...]


@dataclass(frozen=True)
class Finished:
    """Every round ran; tell every client and close."""

    rounds_completed: int


Action = Note | StartTraining | Deliver | Dismiss | Disconnect | RoundClosed | Finished


# -- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadlines:
    """Seconds: each SecAgg phase (``train`` is added to the first), and the wait for clients."""

    phase: float = 30.0
    train: float = 120.0
    wait: float = 30.0

    def __post_init__(self) -> None:
        for name in ("phase", "train", "wait"):
            if not getattr(self, name) > 0:
                raise ValueError(f"deadline {name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class CoordinatorSettings:
    """What the coordinator decides.

    Attributes:
        rounds: FedAvg rounds in total (a resumed coordinator counts the finished ones).
        aggregator: quantization and SecAgg parameters, sized per cohort
            (``SecureAggregator.quantization(N)`` and ``secagg_config(N, m + 1)``).
        cohort: the selection policy.
        deadlines: phase, training and wait deadlines.
        training: round -> the local-training settings sent with the round start (a client
            learning-rate schedule lives here).
        server_learning_rate: the global model moves by this times the mean update.
        insecure_plaintext: INSECURE debugging mode (``fedavg_core.plaintext_round``): members
            upload their encoded updates unmasked and the server sums them in the clear; the
            round records say ``insecure plaintext``. Clients must opt in.
    """

    rounds: int
    aggregator: SecureAggregator
    cohort: CohortPolicy = field(default_factory=CohortPolicy)
    deadlines: Deadlines = field(default_factory=Deadlines)
    training: Callable[[int], Mapping[str, Setting]] = lambda _round: {}
    server_learning_rate: float = 1.0
    insecure_plaintext: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.insecure_plaintext and self.aggregator.dp is not None:
            raise ValueError(
                "distributed DP needs secure aggregation: in the insecure plaintext mode the server "
                "sees each update with only 1/t of the noise"
            )


# -- the coordinator ------------------------------------------------------------------------------


@dataclass(eq=False)
class _RoundState:
    cohort: Cohort
    setup: RoundSetup
    secagg: SecAggServer | PlaintextSum  # PlaintextSum: the insecure debugging mode
    quantization: QuantizationConfig
    local: dict[int, int]  # stable id -> round-local id
    members: set[int]  # stable ids still in the round
    report: RoundReport
    start_vector: FloatVector
    deadline: float
    began: float
    stragglers: set[int] = field(default_factory=set)
    dp: DPRound | None = None  # distributed DP: the round's terms and plan

    @property
    def number(self) -> int:
        return self.cohort.round

    @property
    def phase(self) -> Round | PlaintextPhase:
        return self.secagg.round

    def stable(self, local_ids: frozenset[int] | set[int]) -> list[int]:
        members = self.cohort.members
        return sorted(members[i - 1] for i in local_ids)


class Coordinator:
    """Runs FedAvg rounds with secure aggregation over a changing population of clients.

    Args:
        settings: rounds, cohort policy, deadlines, aggregation parameters.
        initial_vector: the global model to start from (or to resume from).
        evaluate: the global model's accuracy on held-out data, or None.
        next_round: the first round to run (a resumed federation: one past the last finished).
        reports: the finished rounds' reports (a resumed federation).
        roster: active mode: stable id -> raw Ed25519 identity public key of every enrolled
            client; may grow between rounds (``enrol``).
        random_bytes: the source of session nonces (default ``os.urandom``; inject in tests).
    """

    def __init__(
        self,
        settings: CoordinatorSettings,
        initial_vector: FloatVector,
        *,
        evaluate: Callable[[FloatVector], float | None] = lambda _v: None,
        next_round: int = 1,
        reports: list[RoundReport] | None = None,
        roster: Mapping[int, bytes] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings
        self.vector: FloatVector = np.array(initial_vector, dtype=np.float64)
        self.dimension = int(self.vector.shape[0])
        self.evaluate = evaluate
        self.next_round = next_round
        self.reports: list[RoundReport] = list(reports or [])
        self.roster: dict[int, bytes] | None = dict(roster) if roster is not None else None
        self.active = SecAggConfig(2, 2, 1, mode=settings.aggregator.mode).is_active
        if self.active and self.roster is None:
            raise ValueError("the active mode needs a roster of identity public keys")
        self.random_bytes = random_bytes
        self.connected: set[int] = set()
        self.finished = False
        self.round: _RoundState | None = None
        self._wait_deadline: float | None = None
        dp = settings.aggregator.dp
        self.privacy = None if dp is None else PrivacyAccount(dp.delta, self.reports)
        """Distributed DP: the privacy the run has spent (rebuilt from ``reports`` on resume)."""

    # -- what the transport asks ----------------------------------------------------------------

    def next_timeout(self) -> float | None:
        """The clock value at which ``tick`` must be called next (None: only on events)."""
        if self.finished:
            return None
        if self.round is not None:
            return self.round.deadline
        return self._wait_deadline

    @property
    def current_report(self) -> RoundReport | None:
        """The running round's report (the transport adds bytes on the wire to it)."""
        return None if self.round is None else self.round.report

    def config(self) -> SecAggConfig | None:
        """The running round's SecAgg config."""
        return None if self.round is None else self.round.setup.config

    def local_id(self, client: int) -> int | None:
        """``client``'s round-local id in the running round (None: not in it)."""
        return None if self.round is None else self.round.local.get(client)

    # -- events ---------------------------------------------------------------------------------

    def enrol(self, roster: Mapping[int, bytes]) -> None:
        """Active mode: add identities to the roster (an enrolled key never changes)."""
        if self.roster is None:
            raise ValueError("enrolment is for the active mode (a roster of identity keys)")
        for client, key in roster.items():
            known = self.roster.get(client)
            if known is not None and known != key:
                raise ValueError(f"client {client} is enrolled with a different identity key")
            self.roster[client] = key

    def join(self, client: int, now: float) -> list[Action]:
        """A registered client is connected and available for the next cohort."""
        if self.roster is not None and client not in self.roster:
            raise ValueError(f"client {client} is not enrolled")
        self.connected.add(client)
        return self._progress(now)

    def leave(self, client: int, now: float, reason: str, close_code: int | None = None) -> list[Action]:
        """``client``'s connection is gone (idempotent)."""
        self.connected.discard(client)
        self._drop(client, reason, close_code)
        return self._progress(now)

    def receive(
        self, client: int, round_number: int, session: bytes, message: object, now: float
    ) -> list[Action]:
        """A SecAgg message from ``client`` for round ``round_number`` and ``session``."""
        current = self.round
        if current is not None and client in current.stragglers and round_number == current.number:
            return []  # a straggler's late answer: expected, harmless
        problem = self._envelope_problem(client, round_number, session, getattr(message, "sender", None))
        if problem is not None:
            return [self._disconnect(client, "protocol", problem), *self._progress(now)]
        assert current is not None
        secagg = current.secagg
        rejected = len(secagg.rejected)
        secagg.receive(message)
        local = current.local[client]
        actions: list[Action] = []
        drop = secagg.dropped.get(local)
        if drop is not None:
            actions.append(
                self._disconnect(client, "protocol", f"dropped in {drop.round.value}: {drop.reason}")
            )
        elif len(secagg.rejected) > rejected:
            actions.append(self._disconnect(client, "protocol", f"rejected: {secagg.rejected[-1].reason}"))
        return actions + self._progress(now)

    def client_abort(
        self, client: int, round_number: int, session: bytes, sender: int, reason: str, now: float
    ) -> list[Action]:
        """``client`` refused the round (an honest client that caught the server misbehaving, or
        one that cannot take part); it stays connected and waits for the next round."""
        current = self.round
        if current is not None and client in current.stragglers and round_number == current.number:
            return []
        problem = self._envelope_problem(client, round_number, session, sender)
        if problem is not None:
            return [self._disconnect(client, "protocol", problem), *self._progress(now)]
        self._drop(client, f"client aborted: {reason}", None)
        return self._progress(now)

    def tick(self, now: float) -> list[Action]:
        """The clock moved: start a round, close a phase, apply a deadline, or finish."""
        return self._progress(now)

    # -- internals ------------------------------------------------------------------------------

    def _envelope_problem(self, client: int, round_number: int, session: bytes, sender: object) -> str | None:
        current = self.round
        if current is None or client not in current.members:
            return "protocol message while not in a round"
        local = current.local[client]
        if round_number != current.number or session != current.setup.session_id:
            return (
                f"wrong round: message for round {round_number} (session {session.hex()[:8] or '-'}), "
                f"current round {current.number} (session {current.setup.session_id.hex()[:8]})"
            )
        if sender != local:
            return (
                f"impersonation: message claims sender {sender} on the connection of client {client} "
                f"(round-local id {local})"
            )
        return None

    def _drop(self, client: int, reason: str, close_code: int | None) -> None:
        current = self.round
        if current is not None and client in current.members:
            current.members.discard(client)
            current.report.dropped.append(DropRecord(client, current.phase.value, reason, close_code))

    def _disconnect(self, client: int, kind: str, reason: str) -> Disconnect:
        code = CLOSE_CODES[kind]
        self.connected.discard(client)
        self._drop(client, reason, code)
        return Disconnect(client, kind, reason)

    def _progress(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while not self.finished:
            before = len(actions)
            if self.round is None:
                actions += self._maybe_start(now)
            else:
                actions += self._maybe_close_phase(now)
            if len(actions) == before:
                break
        return actions

    def _maybe_start(self, now: float) -> list[Action]:
        if self.next_round > self.settings.rounds:
            self.finished = True
            return [Note("finished", self.next_round - 1), Finished(self.next_round - 1)]
        policy = self.settings.cohort
        available = len(self.connected)
        if self._wait_deadline is None:
            self._wait_deadline = now + self.settings.deadlines.wait
            if available < policy.ready_at():
                detail = f"{available} clients available, waiting for {policy.ready_at()}"
                return [Note("waiting", self.next_round, detail=detail)]
        if available >= policy.ready_at() or (now >= self._wait_deadline and available >= policy.min_clients):
            return self._start_round(now)
        return []

    def _start_round(self, now: float) -> list[Action]:
        number = self.next_round
        self._wait_deadline = None
        cohort = select_cohort(self.connected, number, self.settings.cohort)
        size = len(cohort.members)
        report = RoundReport(
            number,
            "aborted",
            participants=list(cohort.members),
            target=cohort.target,
            available=list(cohort.available),
            selection_seed=cohort.seed,
        )
        local = cohort.local_ids()
        start_vector = self.vector.copy()
        aggregator = self.settings.aggregator
        try:
            quantization = aggregator.quantization(size)
            config = aggregator.secagg_config(size, aggregator.vector_length(self.dimension))
            dp_round = None
            if aggregator.dp is not None:  # noise for the t fewest survivors the round may release
                dp_round = DPRound.start(
                    aggregator.dp, aggregator.max_weight, size, config.threshold, self.dimension,
                    self.random_bytes,
                )  # fmt: skip
            roster = None
            if self.roster is not None:
                roster = {i: self.roster[client] for client, i in local.items()}
            setup = RoundSetup(config, self.random_bytes(32), roster)
        except (ValueError, KeyError) as exc:
            report.reason = f"no valid SecAgg round for a cohort of {size}: {exc}"
            return self._close(report, start_vector, None, ())
        report.threshold = config.threshold
        deadline = now + self.settings.deadlines.train + self.settings.deadlines.phase
        plaintext = self.settings.insecure_plaintext
        aggregation = PlaintextSum(config) if plaintext else SecAggServer(setup)
        self.round = _RoundState(
            cohort, setup, aggregation, quantization, local, set(cohort.members), report,
            start_vector, deadline, now, dp=dp_round,
        )  # fmt: skip
        detail = f"cohort of {size} (target {cohort.target}) from {len(cohort.available)} available"
        settings = dict(self.settings.training(number))
        if dp_round is not None:
            settings.update(dp_round.settings())
            detail += f" (distributed DP, noise for t={config.threshold})"
        if plaintext:
            report.aggregation = "insecure plaintext"
            settings[INSECURE_PLAINTEXT] = True
            detail += " (INSECURE PLAINTEXT: updates are sent unmasked)"
        actions: list[Action] = [
            Note("round_start", number, detail=detail),
            Note("phase", number, phase=aggregation.round.value),
        ]
        for client, i in local.items():
            actions.append(StartTraining(client, i, number, setup, quantization, start_vector, settings))
        return actions

    def _maybe_close_phase(self, now: float) -> list[Action]:
        current = self.round
        assert current is not None
        secagg = current.secagg
        members = {current.local[c] for c in current.members}
        pending = secagg.waiting_for & members
        actions: list[Action] = []
        first = current.phase in (Round.ADVERTISE_KEYS, PlaintextPhase.UPLOAD)
        if first and pending and len(secagg.responded) >= current.cohort.target:
            for client in current.stable(pending):
                current.members.discard(client)
                current.stragglers.add(client)
                actions.append(Dismiss(client, current.number, "the cohort filled without this client"))
            current.report.stragglers = sorted(current.stragglers)
            actions.insert(
                0, Note("stragglers", current.number, current.phase.value, f"{len(pending)} dismissed")
            )
        elif pending and now < current.deadline:
            return []
        elif pending:
            timeout = self.settings.deadlines.phase + (self.settings.deadlines.train if first else 0)
            for client in current.stable(pending):
                actions.append(
                    self._disconnect(
                        client, "deadline", f"missed the {current.phase.value} deadline ({timeout:g}s)"
                    )
                )
        phase = current.phase
        current.report.seconds[phase.value] = round(now - current.began, 4)
        try:
            outgoing = secagg.advance()
        except AbortedError as exc:
            current.report.reason = str(exc)
            self._note_misbehaving()
            return actions + self._close(current.report, current.start_vector, None, self._recipients())
        # Clients the server dropped inside advance() (excluded after share-bundle accusations)
        # get no message of the next phase: cut them off with the reason, like any protocol drop.
        for local in sorted(secagg.dropped):
            client = current.cohort.members[local - 1]
            if client in current.members and local not in outgoing:
                drop = secagg.dropped[local]
                actions.append(
                    self._disconnect(client, "protocol", f"dropped in {drop.round.value}: {drop.reason}")
                )
        current.began = now
        if secagg.round in (Round.DONE, PlaintextPhase.DONE):
            return actions + self._finish_round(now)
        current.deadline = now + self.settings.deadlines.phase
        actions.append(Note("phase", current.number, phase=secagg.round.value))
        session = current.setup.session_id
        stable = current.cohort.members
        for i, message in sorted(outgoing.items()):
            client = stable[i - 1]
            if client in current.members:
                actions.append(Deliver(client, current.number, session, message))
        return actions

    def _recipients(self) -> tuple[int, ...]:
        return () if self.round is None else tuple(sorted(self.round.members))

    def _note_misbehaving(self) -> None:
        """Copy the SecAgg server's list of caught clients into the report, by stable id."""
        current = self.round
        assert current is not None
        stable = current.cohort.members
        current.report.misbehaving = {
            stable[local - 1]: reason for local, reason in sorted(current.secagg.misbehaving.items())
        }
        current.report.suspects = {
            stable[local - 1]: reason for local, reason in sorted(current.secagg.suspects.items())
        }

    def _finish_round(self, now: float) -> list[Action]:
        current = self.round
        assert current is not None and current.secagg.result is not None
        self._note_misbehaving()
        report = current.report
        survivors = current.stable(current.secagg.survivors)
        report.survivors = survivors
        if current.dp is not None:
            return self._finish_dp_round(current, current.dp)
        try:
            decoded = decode_weighted_sum(current.secagg.result, current.quantization, len(survivors))
        except ValueError as exc:
            report.reason = f"the aggregate is not a sum of valid updates: {exc}"
            return self._close(report, current.start_vector, None, self._recipients())
        report.total_weight = decoded.total_weight
        return self._complete(current, decoded.mean, decoded.error_bound)

    def _finish_dp_round(self, current: _RoundState, dp: DPRound) -> list[Action]:
        assert self.privacy is not None and current.secagg.result is not None
        report = current.report
        summed = len(report.survivors)
        # The server holds the noisy sum now: charge it before decoding, whatever decoding says.
        report.epsilon, report.privacy_curves = self.privacy.charge(dp.plan.round_privacy(summed))
        try:
            decoded = dp.decode(current.secagg.result, summed)
        except ValueError as exc:
            report.reason = f"the aggregate is not a sum of valid DP updates: {exc}"
            return self._close(report, current.start_vector, None, self._recipients())
        report.noise_stddev = decoded.noise_stddev
        report.total_weight = summed
        return self._complete(current, decoded.mean, decoded.rounding_bound)

    def _complete(self, current: _RoundState, mean: FloatVector, error_bound: float) -> list[Action]:
        """Move the global model by the decoded mean update and close the round as completed."""
        report = current.report
        self.vector = current.start_vector + self.settings.server_learning_rate * mean
        report.status = "completed"
        report.error_bound = error_bound
        return self._close(report, current.start_vector, np.asarray(mean), self._recipients())

    def _close(
        self,
        report: RoundReport,
        start_vector: FloatVector,
        mean: FloatVector | None,
        recipients: tuple[int, ...],
    ) -> list[Action]:
        if report.status == "aborted":
            report.survivors = []
        if self.privacy is not None and report.epsilon is None:
            report.epsilon = self.privacy.epsilon  # nothing released: spent so far, unchanged
        report.accuracy = self.evaluate(self.vector)
        self.reports.append(report)
        self.next_round = report.round + 1
        self.round = None
        self._wait_deadline = None
        return [
            RoundClosed(report, start_vector, mean, recipients),
            Note("round_end", report.round, detail=report.status),
        ]
