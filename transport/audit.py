"""The demo's plaintext audit trail: each client's update, kept beside the federation.

Only for demonstrations and tests. A client started with an audit directory writes its
plaintext update and example count there after training, so that the demo (not the server) can
compute the plaintext FedAvg aggregate over the same survivors and show that the secure
aggregate matches it within the quantization bound. A real deployment never does this: the
whole point of secure aggregation is that nobody sees these updates.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fedavg_core import ClientUpdate


def _path(directory: str | os.PathLike[str], round_number: int, client_id: int) -> Path:
    return Path(directory) / f"round-{round_number:05d}" / f"client-{client_id:06d}.npz"


def write_update(
    directory: str | os.PathLike[str], round_number: int, client_id: int, update: ClientUpdate
) -> None:
    """Store one client's update for ``round_number`` (atomically: temporary file, rename)."""
    target = _path(directory, round_number, client_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, update=update.update, num_examples=np.int64(update.num_examples))
    os.replace(temporary, target)


def read_updates(
    directory: str | os.PathLike[str], round_number: int, client_ids: Iterable[int]
) -> list[ClientUpdate]:
    """The stored updates of ``client_ids`` for ``round_number``, in the order given."""
    out = []
    for client_id in client_ids:
        with np.load(_path(directory, round_number, client_id)) as data:
            out.append(ClientUpdate(np.array(data["update"]), int(data["num_examples"])))
    return out
