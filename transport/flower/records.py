"""This project's protocol frames inside Flower records.

Every SecAgg message between the workflow and a client mod is one frame of the existing wire
codec (``transport.codec``: msgpack in a versioned envelope tagged with the FedAvg round and the
session id). In a Flower ``Message`` it travels as the ``bytes`` value ``"frame"`` of one
``ConfigRecord`` named ``RECORD_KEY``. The setup frame (``RoundStart``) also names the
round-local client id (1..n) the node plays in this round, as ``"client_id"``.

Nothing else is put in the records: no example count, metric or parameter leaves a client in
the clear (its update travels masked, inside a ``MaskedInput`` frame).
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, RecordDict

RECORD_KEY = "secagg_fedavg"
FRAME_KEY = "frame"
CLIENT_ID_KEY = "client_id"


class RecordError(ValueError):
    """A Flower message does not hold a well-formed protocol record."""


@dataclass(frozen=True)
class FrameRecord:
    """The protocol record of one message: the codec frame and, in the setup, the client id."""

    frame: bytes
    client_id: int | None = None


def has_frame(content: RecordDict) -> bool:
    """True when ``content`` carries a protocol record."""
    return RECORD_KEY in content.config_records


def put_frame(content: RecordDict, frame: bytes, *, client_id: int | None = None) -> RecordDict:
    """Add the protocol record to ``content`` (in place) and return it."""
    if not isinstance(frame, bytes):
        raise TypeError(f"a frame must be bytes, got {type(frame).__name__}")
    values: dict[str, bytes | int] = {FRAME_KEY: frame}
    if client_id is not None:
        values[CLIENT_ID_KEY] = int(client_id)
    content.config_records[RECORD_KEY] = ConfigRecord(values)  # type: ignore[arg-type]
    return content


def frame_content(frame: bytes, *, client_id: int | None = None) -> RecordDict:
    """A fresh ``RecordDict`` holding only the protocol record."""
    return put_frame(RecordDict(), frame, client_id=client_id)


def take_frame(content: RecordDict) -> FrameRecord:
    """Remove the protocol record from ``content`` and return it; ``RecordError`` if malformed."""
    record = content.config_records.pop(RECORD_KEY, None)
    if record is None:
        raise RecordError(f"the message has no {RECORD_KEY!r} config record")
    return _parse(record)


def read_frame(content: RecordDict) -> FrameRecord:
    """The protocol record of ``content`` (left in place); ``RecordError`` if missing or malformed."""
    record = content.config_records.get(RECORD_KEY)
    if record is None:
        raise RecordError(f"the message has no {RECORD_KEY!r} config record")
    return _parse(record)


def _parse(record: ConfigRecord) -> FrameRecord:
    keys = set(record)
    if not {FRAME_KEY} <= keys <= {FRAME_KEY, CLIENT_ID_KEY}:
        raise RecordError(
            f"the {RECORD_KEY!r} record must hold {FRAME_KEY!r} (and {CLIENT_ID_KEY!r}), got {sorted(keys)}"
        )
    frame = record[FRAME_KEY]
    if not isinstance(frame, bytes):
        raise RecordError(f"{RECORD_KEY}.{FRAME_KEY} must be bytes, got {type(frame).__name__}")
    client_id = record.get(CLIENT_ID_KEY)
    if client_id is not None and (not isinstance(client_id, int) or isinstance(client_id, bool)):
        raise RecordError(f"{RECORD_KEY}.{CLIENT_ID_KEY} must be an int, got {client_id!r}")
    return FrameRecord(frame, client_id)
