"""The server's checkpoint: the global model and the round records, written atomically.

After every finished FedAvg round the server writes the new global vector, the number of the next
round and the records of all rounds so far. The file is written to a temporary name in the same
directory, flushed and fsynced, then renamed over the old one (``os.replace`` is atomic on POSIX
and Windows), and the directory is fsynced: a crash at any point leaves either the old or the new
checkpoint, never a torn one. A restarted server loads it and resumes with the next round.

Format: one msgpack map ``{"v", "next_round", "dimension", "vector", "sha256", "records"}``; the
vector is raw little-endian float64 and its SHA-256 is checked on load.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from fedavg_core.vectorize import FloatVector

CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """The checkpoint file is unreadable, corrupt, or for another model."""


def vector_digest(vector: FloatVector) -> str:
    """SHA-256 (hex) of a model vector's little-endian float64 bytes: a fingerprint for logs."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f8").tobytes()).hexdigest()


@dataclass
class Checkpoint:
    """The state a server needs to resume.

    Attributes:
        next_round: the FedAvg round to run next (1-based).
        vector: the global model after round ``next_round - 1``.
        records: one JSON-able record per finished round, oldest first.
    """

    next_round: int
    vector: FloatVector
    records: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename, fsync dir)."""
    target = Path(path)
    data = np.ascontiguousarray(checkpoint.vector, dtype="<f8").tobytes()
    payload = msgpack.packb(
        {
            "v": CHECKPOINT_VERSION,
            "next_round": checkpoint.next_round,
            "dimension": int(np.asarray(checkpoint.vector).shape[0]),
            "vector": data,
            "sha256": hashlib.sha256(data).hexdigest(),
            "records": checkpoint.records,
        },
        use_bin_type=True,
    )
    # mkstemp: a fresh name opened with O_EXCL (mode 0600), so a planted symlink is never followed.
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    temporary = Path(name)
    try:
        with open(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str], dimension: int) -> Checkpoint | None:
    """The checkpoint at ``path``, or None if there is none. ``CheckpointError`` if it is corrupt
    or holds a model of another ``dimension``."""
    target = Path(path)
    if not target.exists():
        return None
    try:
        state = msgpack.unpackb(target.read_bytes(), raw=False)
    except Exception as exc:
        raise CheckpointError(f"{target}: not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("v") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{target}: not a version-{CHECKPOINT_VERSION} checkpoint")
    data, next_round, records = state.get("vector"), state.get("next_round"), state.get("records")
    if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != state.get("sha256"):
        raise CheckpointError(f"{target}: the model vector does not match its checksum")
    if state.get("dimension") != dimension or len(data) != 8 * dimension:
        raise CheckpointError(
            f"{target}: holds a model of {state.get('dimension')} parameters, this task has {dimension}"
        )
    if not isinstance(next_round, int) or next_round < 1 or not isinstance(records, list):
        raise CheckpointError(f"{target}: bad round counter or records")
    if not all(isinstance(r, dict) for r in records):
        raise CheckpointError(f"{target}: bad round counter or records")
    vector: FloatVector = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(vector)):
        raise CheckpointError(f"{target}: the model holds NaN or infinite values (not finite)")
    return Checkpoint(next_round, vector, records)
