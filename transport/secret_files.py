"""Writing private keys to disk: owner-only from the first byte, never through a symlink."""

from __future__ import annotations

import os
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def write_secret_file(path: Path, data: bytes) -> None:
    """Replace whatever is at ``path`` with a new file readable by its owner only, holding ``data``."""
    path.unlink(missing_ok=True)
    create_secret_file(path, data)


def create_secret_file(path: Path, data: bytes) -> None:
    """A new file at ``path`` readable by its owner only, holding ``data``; ``FileExistsError``
    if anything (a file, a symlink) is already there."""
    fd = os.open(path, _FLAGS, 0o600)
    with open(fd, "wb") as handle:
        handle.write(data)
