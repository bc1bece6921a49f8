"""The three error types of the protocol (after h11's split).

- ``LocalProtocolError``: you misused the API (wrong call for the state, bad argument).
- ``RemoteProtocolError``: a peer broke the protocol; the server drops such a client with a reason.
- ``AbortedError``: the round cannot continue safely; carries the round and the reason.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base class of every error this package raises on purpose."""


class LocalProtocolError(SecAggError):
    """The caller misused the API: a call that does not fit the current state, or bad arguments."""


class RemoteProtocolError(SecAggError):
    """A peer sent a message that breaks the protocol (malformed, out of range, wrong round...)."""


class AbortedError(SecAggError):
    """The round was aborted; nothing partial is released.

    ``round`` names the protocol round (e.g. ``"masked_input"``), ``reason`` says why.
    """

    def __init__(self, round: str, reason: str) -> None:
        super().__init__(f"round aborted at {round}: {reason}")
        self.round = round
        self.reason = reason
