"""Long-term Ed25519 identities for the active mode: key files and the roster file.

- a client's identity key: PEM (PKCS#8), readable only by its owner. Each client makes its own
  (``init_identity``, ``secagg-client --init-identity PATH``) and hands out only its public key;
- the roster: JSON ``{"1": "<64 hex digits>", ...}``, stable client id -> raw identity public
  key. The operator enrols public keys into it (``enrol``, ``secagg-server --enrol ID=KEY``); a
  connection registers as id i only by signing the server's fresh challenge with the key the
  roster lists for i, and a client takes part only in rounds whose members are all in its own
  copy of the roster. The server never holds a client's private key.

The roster may grow while the federation runs: ``RosterFile`` re-reads the file when it changed
(the server when an id it does not know registers, a client at each round start). Entries are
only ever added; an entry whose key changed or that disappeared is ignored with a warning until
a restart (an enrolled key never changes under a running server). ``save_roster`` replaces the
file atomically, so a reader never sees half a roster.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.primitives import signatures

from .secret_files import create_secret_file, write_secret_file

log = logging.getLogger("transport.identity")


def load_roster(path: str | os.PathLike[str]) -> dict[int, bytes]:
    """Client id -> raw 32-byte Ed25519 public key, from a roster file."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a roster is a JSON object of client id -> hex public key")
    roster: dict[int, bytes] = {}
    for key, value in data.items():
        try:
            client_id, public = int(key), bytes.fromhex(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: bad roster entry {key!r}") from None
        if key != str(client_id):  # "01", " 1", "1_0": aliases that could hide a second key for an id
            raise ValueError(f"{path}: roster key {key!r} is not a plain decimal client id")
        if len(public) != signatures.PUBLIC_KEY_SIZE or client_id < 1:
            raise ValueError(f"{path}: roster entry {key!r} must be a 32-byte key for an id >= 1")
        roster[client_id] = public
    return roster


def save_roster(path: str | os.PathLike[str], roster: Mapping[int, bytes]) -> None:
    """Write a roster file (atomically: a temporary file in the same folder, then a rename)."""
    target = Path(path)
    text = json.dumps({str(i): roster[i].hex() for i in sorted(roster)}, indent=1) + "\n"
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with open(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def parse_public_key(text: str) -> bytes:
    """A raw Ed25519 public key from 64 hex digits, or from a ``.pub`` file holding them."""
    value = text.strip()
    if len(value) != 2 * signatures.PUBLIC_KEY_SIZE and Path(value).is_file():
        value = Path(value).read_text().strip()
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{text!r} is neither 64 hex digits nor a file holding them") from None
    if len(key) != signatures.PUBLIC_KEY_SIZE:
        digits = 2 * signatures.PUBLIC_KEY_SIZE
        raise ValueError(f"an Ed25519 public key is {digits} hex digits, got {len(value)}")
    return key


def enrol(path: str | os.PathLike[str], client_id: int, public_key: bytes) -> bool:
    """Add ``client_id`` with ``public_key`` to the roster at ``path`` (created if missing);
    False if it is already enrolled with that key. ``ValueError`` if the id holds another key
    or the key is enrolled under another id."""
    if client_id < 1 or len(public_key) != signatures.PUBLIC_KEY_SIZE:
        raise ValueError("enrolment needs a client id >= 1 and a 32-byte Ed25519 public key")
    roster = load_roster(path) if Path(path).exists() else {}
    known = roster.get(client_id)
    if known == public_key:
        return False
    if known is not None:
        raise ValueError(f"client {client_id} is already enrolled with another key ({known.hex()[:16]}...)")
    holders = [i for i, key in roster.items() if key == public_key]
    if holders:
        raise ValueError(f"this key is already enrolled as client {holders[0]}")
    roster[client_id] = public_key
    save_roster(path, roster)
    return True


class RosterFile:
    """A roster file that may grow while it is in use; ``current()`` re-reads it when it changed.

    Raises ``ValueError``/``OSError`` if the file cannot be read at construction; later read
    errors (a half-edited file) keep the last good roster and are logged.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp = self._stat()
        self._roster = load_roster(self.path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return status.st_mtime_ns, status.st_size, status.st_ino

    def current(self) -> dict[int, bytes]:
        """The roster: the entries read so far plus any added to the file since."""
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                fresh = load_roster(self.path)
            except (OSError, ValueError) as exc:
                log.warning("%s: keeping the last roster, cannot re-read it: %s", self.path, exc)
                return dict(self._roster)
            for client_id, key in fresh.items():
                known = self._roster.get(client_id)
                if known is None:
                    self._roster[client_id] = key
                    log.info("%s: enrolled client %d", self.path, client_id)
                elif known != key:
                    log.warning("%s: client %d's key changed; ignored until a restart", self.path, client_id)
            gone = sorted(set(self._roster) - set(fresh))
            if gone:
                log.warning("%s: clients %s were removed; still enrolled until a restart", self.path, gone)
        return dict(self._roster)


def load_identity_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A client's Ed25519 identity key from a PEM file."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def init_identity(path: str | os.PathLike[str]) -> bytes:
    """Generate this client's identity key into a new owner-only file at ``path`` and its public
    key (hex) into ``path.pub``; the raw public key. ``FileExistsError`` if either exists."""
    target = Path(path)
    public_path = target.with_name(target.name + ".pub")
    for existing in (target, public_path):
        if existing.exists() or existing.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(existing))
    key = Ed25519PrivateKey.generate()
    create_secret_file(target, _pem(key))
    public = signatures.identity_public_bytes(key)
    public_path.write_text(public.hex() + "\n")
    return public


def generate_identities(directory: str | os.PathLike[str], num_clients: int) -> Path:
    """Create ``client-<i>.pem`` for i in 1..N and ``roster.json`` in ``directory``; the roster's path.

    A shortcut for tests and the demo, where one operator plays every client; in a deployment
    each client runs ``init_identity`` and the operator enrols its public key (``enrol``).
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    roster: dict[int, bytes] = {}
    for client_id in range(1, num_clients + 1):
        key = Ed25519PrivateKey.generate()
        write_secret_file(folder / f"client-{client_id}.pem", _pem(key))
        roster[client_id] = signatures.identity_public_bytes(key)
    roster_path = folder / "roster.json"
    save_roster(roster_path, roster)
    return roster_path
