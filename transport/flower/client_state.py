"""A client mod's protocol state between Flower messages, kept in the node's ``Context.state``.

Flower hands a ClientApp one message at a time and keeps, per node, a ``Context`` whose
``state`` (records of scalars and bytes) survives between messages; in the simulation engine
the messages of one node may even run in different Ray actors (processes). So the
``SecAggClient`` of a round is serialized after every message and restored before the next.

The client object is owned by ``secagg`` and changes as the protocol grows, so it is pickled as a
whole rather than field by field. Key objects of ``cryptography`` are reduced to their raw bytes.
Loading only resolves classes from an allow-list of modules (this project's packages, numpy,
cryptography and a few builtins), so a blob that is not one of ours is refused rather than run.
The blob holds the client's private keys and shares: it stays in the node's own context, like
the key material Flower's own ``secaggplus_mod`` keeps there.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedavg_core.quantize import QuantizationConfig
from secagg import SecAggClient

_ALLOWED_MODULES = (
    "secagg",
    "numpy",
    "cryptography",
    "fedavg_core.quantize",
    "transport.flower.client_state",
)
_ALLOWED_BUILTINS = {
    ("builtins", "frozenset"),
    ("builtins", "set"),
    ("builtins", "dict"),
    ("builtins", "bytearray"),
    ("builtins", "getattr"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("posix", "urandom"),
    ("nt", "urandom"),
    ("os", "urandom"),
    ("_codecs", "encode"),
}


class StateError(ValueError):
    """A stored client state cannot be restored."""


@dataclass
class ClientSession:
    """What a client mod keeps between the messages of one round.

    Attributes:
        client: the protocol state machine.
        quantization: how the update is turned into field elements (from the round start).
        fedavg_round: the Flower server round; every frame of the session must carry it.
        session_id: the protocol session id; every frame of the session must carry it.
    """

    client: SecAggClient
    quantization: QuantizationConfig
    fedavg_round: int
    session_id: bytes


def _x25519_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def _x25519_public(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


def _ed25519_private(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, X25519PrivateKey):
            return _x25519_private, (obj.private_bytes_raw(),)
        if isinstance(obj, X25519PublicKey):
            return _x25519_public, (obj.public_bytes_raw(),)
        if isinstance(obj, Ed25519PrivateKey):
            return _ed25519_private, (obj.private_bytes_raw(),)
        if isinstance(obj, Ed25519PublicKey):
            return _ed25519_public, (obj.public_bytes_raw(),)
        if isinstance(obj, MappingProxyType):
            return _mapping_proxy, (dict(obj),)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _ALLOWED_BUILTINS or any(
            module == m or module.startswith(m + ".") for m in _ALLOWED_MODULES
        )
        if not allowed:
            raise StateError(f"stored client state refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def dump_session(session: ClientSession) -> bytes:
    """Serialize a client's session between two messages of its round."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(session)
    return buffer.getvalue()


def load_session(blob: bytes) -> ClientSession:
    """Restore a session stored by ``dump_session``; ``StateError`` for anything else."""
    try:
        session = _Unpickler(io.BytesIO(blob)).load()
    except StateError:
        raise
    except Exception as exc:  # a truncated or foreign blob: any unpickling error
        raise StateError(f"stored client state is unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(session, ClientSession) or not isinstance(session.client, SecAggClient):
        raise StateError(f"stored client state is a {type(session).__name__}, not a ClientSession")
    return session
