"""Transport errors and the websocket close codes the federation uses.

A peer that breaks the wire format raises ``DecodeError`` (one type for every malformed frame);
the server then closes that peer's connection with one of the ``CloseCode`` values below and a
reason, and records both.
"""

from __future__ import annotations

from enum import IntEnum

from secagg import RemoteProtocolError


class DecodeError(RemoteProtocolError):
    """A frame is not a valid message: not msgpack, truncated, oversized, wrong types or fields."""


class WireVersionError(DecodeError):
    """A frame in another wire version than this side speaks (``version``: the peer's)."""

    def __init__(self, version: object, ours: int) -> None:
        super().__init__(f"unsupported wire version {version!r:.20} (this side speaks {ours})")
        self.version = version
        self.ours = ours


class CloseCode(IntEnum):
    """Close codes sent when the server ends a connection (RFC 6455 section 7.4, plus 4000s).

    ``MESSAGE_TOO_BIG`` is sent by ``websockets`` itself when a frame exceeds ``max_size``.
    """

    NORMAL = 1000  # the federation finished
    GOING_AWAY = 1001  # the server is shutting down
    INVALID_DATA = 1007  # a frame that does not decode
    POLICY_VIOLATION = 1008  # wrong round or session, duplicate, impersonation, dropped by SecAgg
    MESSAGE_TOO_BIG = 1009  # a frame above the per-connection limit
    TRY_AGAIN = 1013  # the server is busy or full: try again later (RFC 6455 registry)
    DEADLINE = 4000  # the client missed a round's deadline (or sent no hello in time)
    ID_IN_USE = 4001  # another live connection already registered this client id
    REGISTRATION_FAILED = 4002  # unknown id or bad identity proof
    MISMATCH = 4003  # the client's terms (task, model, quantization) or wire version differ


PERMANENT_REFUSALS = frozenset(
    {CloseCode.INVALID_DATA, CloseCode.POLICY_VIOLATION, CloseCode.REGISTRATION_FAILED, CloseCode.MISMATCH}
)
"""Close codes that refuse a registration for good: retrying would send the same hello. Any
other code during registration (id in use, busy, deadline, going away) is worth a retry."""
