"""The Flower workflow's reply attribution (``transport.flower.workflow._answered_node``).

The workflow attributes each reply to the node its request went to (``reply_to_message_id``).
A node must not be able to answer for another node, nor get another node dropped; only the
SuperLink may answer for a node, and only with an error (``NODE_UNAVAILABLE``).
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("flwr")

from flwr.app import Error, Message, Metadata, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

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
