"""The round table: which message each side expects in which round, and what comes next.

Like h11's state table, this file owns every transition; a message that is not in the table for
the current round is, by that fact, a protocol error (for the server: a wrong-round message that
drops its sender; for a client: a server that broke the protocol, so the client aborts).
"""

from __future__ import annotations

from enum import Enum

from .messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeyList,
    MaskedInput,
    ShareBundles,
    ShareKeys,
    UnmaskingRequest,
    UnmaskingShares,
)


class Round(str, Enum):
    """Protocol rounds (Bonawitz et al. 2017, Fig. 4), plus the two final states."""

    ADVERTISE_KEYS = "advertise_keys"  # round 0
    SHARE_KEYS = "share_keys"  # round 1
    MASKED_INPUT = "masked_input"  # round 2
    CONSISTENCY_CHECK = "consistency_check"  # round 3, active mode only
    UNMASKING = "unmasking"  # round 4
    DONE = "done"
    ABORTED = "aborted"

    @property
    def number(self) -> int:
        """The round number of Fig. 4 (DONE and ABORTED have none)."""
        return _INDEX[self]


_INDEX = {
    Round.ADVERTISE_KEYS: 0,
    Round.SHARE_KEYS: 1,
    Round.MASKED_INPUT: 2,
    Round.CONSISTENCY_CHECK: 3,
    Round.UNMASKING: 4,
}

PROTOCOL_ROUNDS = tuple(_INDEX)

# The server collects, in each round, exactly one message of this type from each live client.
SERVER_EXPECTS: dict[Round, type] = {
    Round.ADVERTISE_KEYS: AdvertiseKeys,
    Round.SHARE_KEYS: ShareKeys,
    Round.MASKED_INPUT: MaskedInput,
    Round.CONSISTENCY_CHECK: ConsistencySignature,
    Round.UNMASKING: UnmaskingShares,
}

# A client in round r waits for this server message and answers it with its round-r message.
CLIENT_EXPECTS: dict[Round, type] = {
    Round.SHARE_KEYS: KeyList,
    Round.MASKED_INPUT: ShareBundles,
    Round.CONSISTENCY_CHECK: ConsistencyRequest,
    Round.UNMASKING: UnmaskingRequest,
}

_NEXT_SEMI_HONEST = {
    Round.ADVERTISE_KEYS: Round.SHARE_KEYS,
    Round.SHARE_KEYS: Round.MASKED_INPUT,
    Round.MASKED_INPUT: Round.UNMASKING,
    Round.UNMASKING: Round.DONE,
}
_NEXT_ACTIVE = {
    Round.ADVERTISE_KEYS: Round.SHARE_KEYS,
    Round.SHARE_KEYS: Round.MASKED_INPUT,
    Round.MASKED_INPUT: Round.CONSISTENCY_CHECK,
    Round.CONSISTENCY_CHECK: Round.UNMASKING,
    Round.UNMASKING: Round.DONE,
}


def next_round(current: Round, active: bool) -> Round:
    """The round after ``current``; the consistency check exists only in the active mode."""
    table = _NEXT_ACTIVE if active else _NEXT_SEMI_HONEST
    return table[current]


def rounds_of(active: bool) -> tuple[Round, ...]:
    """The protocol rounds of a mode, in order."""
    table = _NEXT_ACTIVE if active else _NEXT_SEMI_HONEST
    return tuple(table)
