"""Writing private keys to disk: owner-only from the first byte, never through a symlink."""

from __future__ import annotations

import os
from pathlib import Path


def write_secret_file(path: Path, data: bytes) -> None:
    """Replace whatever is at ``path`` with a new file readable by its owner only, holding ``data``."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with open(fd, "wb") as handle:
        handle.write(data)
