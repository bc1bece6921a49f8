"""Review of today's transport changes as an attacker would.

- ``transport.flower.workflow._answered_node``: whose reply is it? The workflow attributes each
  reply to the node its request went to (``reply_to_message_id``). A node must not be able to
  answer for another node, nor get another node dropped; only the SuperLink may answer for a
  node, and only with an error (``NODE_UNAVAILABLE``).
- ``FederationClient``'s own threat model (``secagg.config.threat_model_shortfall``): a least
  collusion or dropout fraction it cannot compare against refuses to build the client, as
  ``SecAggMod`` and ``secagg-client`` already did.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from federation_helpers import FixedTrainer
from flwr.app import Error, Message, Metadata, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

from transport.client import FederationClient
from transport.flower.workflow import _answered_node

SENT = {"to-101": 101, "to-102": 102}  # message id -> the node it went to


def reply(src: int, reply_to: str, *, error: bool = False) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="",
        src_node_id=src,
        dst_node_id=SUPERLINK_NODE_ID,
        reply_to_message_id=reply_to,
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    if error:
        failure = Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node offline")
        return Message(metadata=metadata, error=failure)  # type: ignore[call-overload]
    return Message(metadata=metadata, content=RecordDict())  # type: ignore[call-overload]


def test_a_node_answers_only_for_itself() -> None:
    assert _answered_node(reply(101, "to-101"), SENT) == 101
    assert _answered_node(reply(101, "to-102"), SENT) is None  # 101 answering 102's request
    assert _answered_node(reply(101, "to-102", error=True), SENT) is None  # ... or failing it


def test_the_superlink_answers_for_a_node_only_with_an_error() -> None:
    assert _answered_node(reply(SUPERLINK_NODE_ID, "to-102", error=True), SENT) == 102
    assert _answered_node(reply(SUPERLINK_NODE_ID, "to-102"), SENT) is None


# -- FederationClient's own threat model (threat_model_shortfall) ----------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("min_collusion_fraction", float("nan")),
        ("min_collusion_fraction", -0.1),
        ("min_collusion_fraction", 1.0),
        ("min_dropout_fraction", float("nan")),
        ("min_dropout_fraction", float("inf")),
        ("min_dropout_fraction", True),
    ],
)
def test_a_client_refuses_a_threat_model_it_cannot_check(name: str, value: float) -> None:
    # With min_collusion_fraction=nan, "gamma < nan" is False for every gamma: the client would
    # join a round that assumes nobody colludes (t = 2 over the complete graph). With
    # min_dropout_fraction=nan the check raised from inside the round start instead.
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\)"):
        FederationClient(1, FixedTrainer(np.zeros(4), 1), "ws://127.0.0.1:1", **{name: value})  # type: ignore[arg-type]
