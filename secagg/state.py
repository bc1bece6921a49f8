"""The round table: which message each side expects in which round, and what comes next.

Like h11's state table, this file owns every transition; a message that is not in the table for
the current round is, by that fact, a protocol error (for the server: a wrong-round message that
drops its sender; for a client: a server that broke the protocol, so the client aborts).
"""

from __future__ import annotations

from enum import Enum

from .messages import (
    AdvertiseKeys,
    BundleReport,
    ConsistencyRequest,
    ConsistencySignature,
    KeyList,
    MaskedInput,
    MaskingRequest,
    ShareBundles,
    ShareKeys,
    UnmaskingRequest,
    UnmaskingShares,
)


class Round(str, Enum):
    """Protocol rounds (Bonawitz et al. 2017, Fig. 4), plus the two final states.

    ``REPORT_BUNDLES`` is not in the paper: after the share bundles are routed, each client
    reports the senders whose bundle failed to open, and the server excludes them as if they had
    dropped in round 1 before anyone masks (DESIGN.md section 3, robustness to malicious clients).
    """

    ADVERTISE_KEYS = "advertise_keys"  # Fig. 4 round 0
    SHARE_KEYS = "share_keys"  # Fig. 4 round 1
    REPORT_BUNDLES = "report_bundles"  # between Fig. 4 rounds 1 and 2
    MASKED_INPUT = "masked_input"  # Fig. 4 round 2
    CONSISTENCY_CHECK = "consistency_check"  # Fig. 4 round 3, active mode only
    UNMASKING = "unmasking"  # Fig. 4 round 4
    DONE = "done"
    ABORTED = "aborted"

    @property
    def number(self) -> int:
        """The round's index on the wire, 0..5 in order (DONE and ABORTED have none).

        Fig. 4's rounds 0 and 1 keep their numbers; the report round is 2, so the paper's rounds
        2, 3 and 4 are 3, 4 and 5 here.
        """
        return _INDEX[self]


_INDEX = {
    Round.ADVERTISE_KEYS: 0,
    Round.SHARE_KEYS: 1,
    Round.REPORT_BUNDLES: 2,
    Round.MASKED_INPUT: 3,
    Round.CONSISTENCY_CHECK: 4,
    Round.UNMASKING: 5,
}

PROTOCOL_ROUNDS = tuple(_INDEX)

# The server collects, in each round, exactly one message of this type from each live client.
SERVER_EXPECTS: dict[Round, type] = {
    Round.ADVERTISE_KEYS: AdvertiseKeys,
    Round.SHARE_KEYS: ShareKeys,
    Round.REPORT_BUNDLES: BundleReport,
    Round.MASKED_INPUT: MaskedInput,
    Round.CONSISTENCY_CHECK: ConsistencySignature,
    Round.UNMASKING: UnmaskingShares,
}

# A client in round r waits for this server message and answers it with its round-r message.
CLIENT_EXPECTS: dict[Round, type] = {
    Round.SHARE_KEYS: KeyList,
    Round.REPORT_BUNDLES: ShareBundles,
    Round.MASKED_INPUT: MaskingRequest,
    Round.CONSISTENCY_CHECK: ConsistencyRequest,
    Round.UNMASKING: UnmaskingRequest,
}

_NEXT_SEMI_HONEST = {
    Round.ADVERTISE_KEYS: Round.SHARE_KEYS,
    Round.SHARE_KEYS: Round.REPORT_BUNDLES,
    Round.REPORT_BUNDLES: Round.MASKED_INPUT,
    Round.MASKED_INPUT: Round.UNMASKING,
    Round.UNMASKING: Round.DONE,
}
_NEXT_ACTIVE = {
    Round.ADVERTISE_KEYS: Round.SHARE_KEYS,
    Round.SHARE_KEYS: Round.REPORT_BUNDLES,
    Round.REPORT_BUNDLES: Round.MASKED_INPUT,
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
