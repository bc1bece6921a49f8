"""Long-term Ed25519 identities for the active mode: key files and the roster file.

- a client's identity key: PEM (PKCS#8), readable only by its owner;
- the roster: JSON ``{"1": "<64 hex digits>", ...}``, the raw identity public key of every
  client id 1..N. The server and every client load the same roster; a connection registers as
  id i only by signing the server's fresh challenge with the key the roster lists for i.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.primitives import signatures

from .secret_files import write_secret_file


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


def save_roster(path: str | os.PathLike[str], roster: dict[int, bytes]) -> None:
    """Write a roster file."""
    text = json.dumps({str(i): roster[i].hex() for i in sorted(roster)}, indent=1)
    Path(path).write_text(text + "\n")


def load_identity_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A client's Ed25519 identity key from a PEM file."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def generate_identities(directory: str | os.PathLike[str], num_clients: int) -> Path:
    """Create ``client-<i>.pem`` for i in 1..N and ``roster.json`` in ``directory``; the roster's path."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    roster: dict[int, bytes] = {}
    for client_id in range(1, num_clients + 1):
        key = Ed25519PrivateKey.generate()
        path = folder / f"client-{client_id}.pem"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_secret_file(path, pem)
        roster[client_id] = signatures.identity_public_bytes(key)
    roster_path = folder / "roster.json"
    save_roster(roster_path, roster)
    return roster_path
