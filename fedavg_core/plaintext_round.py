"""INSECURE plaintext aggregation: the debugging stand-in for a SecAgg round. Never in production.

Each cohort member sends its encoded weighted update (``encode_weighted_update``: the quantized
``w * x`` and the weight ``w``) **unmasked**, as a ``secagg.MaskedInput`` whose vector carries no
mask. The server therefore sees every client's update and weight: no privacy at all. It exists to
debug a federation (is it the model or the protocol?) and to measure what secure aggregation
costs against the same federation without it (``benchmarks/websocket_round.py``).

``PlaintextSum`` answers the calls the coordinator makes of ``secagg.SecAggServer`` (``round``,
``receive``, ``responded``, ``waiting_for``, ``advance``, ``dropped``, ``rejected``,
``misbehaving``, ``survivors``, ``result``), with one phase, ``plaintext_upload``: training
and the upload, closed by the coordinator's cohort and deadline rules like round 0 of SecAgg.
The sum is taken mod p exactly as the secure round's, so the decoded mean is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from secagg import AbortedError, SecAggConfig
from secagg.masking import FieldAccumulator
from secagg.messages import MaskedInput
from secagg.primitives.field import FieldVector, is_field_vector

INSECURE_PLAINTEXT = "insecure_plaintext"
"""The ``RoundStart.settings`` key (True) that asks a client for its update unmasked; a client
must opt in to answer it."""

WARNING = (
    "INSECURE PLAINTEXT AGGREGATION: clients send their updates and example counts unmasked and "
    "the server sees each one. A debugging mode only; never run it with real data."
)


class PlaintextPhase(str, Enum):
    """The phases of a plaintext round (``done`` and ``aborted`` as in ``secagg.Round``)."""

    UPLOAD = "plaintext_upload"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True)
class PlaintextDrop:
    """Why and when a client was dropped."""

    round: PlaintextPhase
    reason: str


@dataclass(frozen=True)
class PlaintextRejection:
    """A message ignored without dropping anyone (unknown or departed sender)."""

    round: PlaintextPhase
    sender: object
    reason: str


class PlaintextSum:
    """The server side of one insecure plaintext round of ``config.num_clients`` members.

    The round completes with the sum of the uploads received when the coordinator closes the
    phase, if at least ``config.threshold`` members uploaded (the same rule as the secure round,
    so both modes complete and abort alike); else it aborts.
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.round = PlaintextPhase.UPLOAD
        self.dropped: dict[int, PlaintextDrop] = {}
        self.rejected: list[PlaintextRejection] = []
        self.result: FieldVector | None = None
        self._uploaded: set[int] = set()
        self._live = frozenset(range(1, config.num_clients + 1))
        self._sum = FieldAccumulator(config.vector_length, config.modulus)
        self._survivors: frozenset[int] = frozenset()

    @property
    def responded(self) -> frozenset[int]:
        """Members whose upload was accepted."""
        return frozenset(self._uploaded)

    @property
    def waiting_for(self) -> frozenset[int]:
        """Members still expected to upload."""
        if self.round is not PlaintextPhase.UPLOAD:
            return frozenset()
        return frozenset(self._live - self._uploaded - set(self.dropped))

    @property
    def survivors(self) -> frozenset[int]:
        """The members whose uploads are in the sum."""
        return self._survivors

    @property
    def misbehaving(self) -> dict[int, str]:
        """Members dropped for a bad upload, with why."""
        return {u: drop.reason for u, drop in self.dropped.items()}

    @property
    def suspects(self) -> dict[int, str]:
        """None: the plaintext path has no shares or accusations to be unsure about."""
        return {}

    def receive(self, message: object) -> None:
        """Take one upload. Never raises for anything a client may send."""
        sender = getattr(message, "sender", None)
        if not isinstance(sender, int) or isinstance(sender, bool) or sender not in self._live:
            self.rejected.append(PlaintextRejection(self.round, sender, f"unknown client id {sender!r}"))
            return
        if self.round is not PlaintextPhase.UPLOAD:
            self.rejected.append(PlaintextRejection(self.round, sender, f"round is {self.round.value}"))
            return
        if sender in self.dropped:
            self.rejected.append(PlaintextRejection(self.round, sender, "client is no longer in the round"))
            return
        if not isinstance(message, MaskedInput):
            self._drop(sender, f"wrong message: sent {type(message).__name__}, expected the plaintext upload")
            return
        if sender in self._uploaded:
            self._drop(sender, "duplicate upload")  # its first upload is already in the sum
            return
        m, p = self.config.vector_length, self.config.modulus
        if not is_field_vector(message.vector, m, p):
            self._drop(
                sender, f"the upload must be {m} integers in [0, {p}); got shape {message.vector.shape}"
            )
            return
        self._sum.add(message.vector.astype(np.uint64, copy=False))
        self._uploaded.add(sender)

    def advance(self) -> dict[int, object]:
        """Close the upload phase: the sum, or ``AbortedError`` below the threshold."""
        if self.round is not PlaintextPhase.UPLOAD:
            raise AbortedError(self.round.value, "the plaintext round is over")
        # A member that uploaded and then misbehaved (a duplicate) is in the sum: it stays in.
        included = frozenset(self._uploaded)
        if len(included) < self.config.threshold:
            self.round = PlaintextPhase.ABORTED
            raise AbortedError(
                PlaintextPhase.UPLOAD.value,
                f"only {len(included)} plaintext uploads, the round needs {self.config.threshold}",
            )
        self._survivors = included
        self.result = self._sum.value()
        self.round = PlaintextPhase.DONE
        return {}

    def _drop(self, sender: int, reason: str) -> None:
        self.dropped[sender] = PlaintextDrop(self.round, reason)
