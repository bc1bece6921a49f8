"""Protocol messages: one frozen, self-validating dataclass per message, one union per direction.

Construction checks what a message can check alone (types, id ranges, fixed sizes) and raises
``RemoteProtocolError`` (a message is normally built from network data); what depends on the
round (vector length, modulus, who may appear) is checked by the receiving state machine.
Round numbers follow Bonawitz et al. 2017, Fig. 4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .errors import RemoteProtocolError
from .primitives.aead import TAG_SIZE
from .primitives.commitment import COMMITMENT_SIZE
from .primitives.key_agreement import KEY_SIZE
from .primitives.shamir import SHARE_SIZE
from .primitives.signatures import SIGNATURE_SIZE

MAX_CLIENT_ID = (1 << 32) - 1
# One encrypted share bundle: sender id, recipient id, a share of s_SK and a share of b.
BUNDLE_PLAINTEXT_SIZE = 4 + 4 + SHARE_SIZE + SHARE_SIZE
BUNDLE_SIZE = BUNDLE_PLAINTEXT_SIZE + TAG_SIZE


def _check_id(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CLIENT_ID:
        raise RemoteProtocolError(f"{what} must be a client id in [1, 2**32), got {value!r}")
    return value


def _check_bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise RemoteProtocolError(f"{what} must be {size} bytes")
    return value


def _frozen_map(value: object, size: int, what: str) -> Mapping[int, bytes]:
    if not isinstance(value, Mapping):
        raise RemoteProtocolError(f"{what} must be a mapping from client id to bytes")
    checked = {_check_id(k, f"{what} key"): _check_bytes(v, size, f"{what}[{k}]") for k, v in value.items()}
    return MappingProxyType(checked)


def _frozen_ids(value: object, what: str) -> frozenset[int]:
    if not isinstance(value, (set, frozenset, list, tuple)):
        raise RemoteProtocolError(f"{what} must be a set of client ids")
    ids = [_check_id(v, f"{what} member") for v in value]
    if len(set(ids)) != len(ids):
        raise RemoteProtocolError(f"{what} lists a client twice")
    return frozenset(ids)


def _check_advertised(c_pk: object, s_pk: object, signature: object) -> None:
    """The fields of advertised keys, as sent in round 0 and as forwarded in the key list."""
    _check_bytes(c_pk, KEY_SIZE, "c_pk")
    _check_bytes(s_pk, KEY_SIZE, "s_pk")
    if signature is not None:
        _check_bytes(signature, SIGNATURE_SIZE, "signature")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


# --- client -> server -------------------------------------------------------------------------


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 0: the client's X25519 public keys c_PK (channel) and s_PK (masking).

    ``signature`` (active mode only): Ed25519 over session id, sender and both keys.
    ``b_commitment``: a hash of the self-mask seed b_u bound to the session and the sender
    (``primitives.commitment``), against which the server checks the b_u it reconstructs
    (s_PK plays that part for s_SK).
    """

    sender: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes | None = None
    b_commitment: bytes = b""

    def __post_init__(self) -> None:
        _check_id(self.sender, "sender")
        _check_advertised(self.c_pk, self.s_pk, self.signature)
        _check_bytes(self.b_commitment, COMMITMENT_SIZE, "b_commitment")


@dataclass(frozen=True)
class ShareKeys:
    """Round 1: for each neighbour v in U1, an AES-GCM bundle (u, v, share of s_u^SK, share of b_u)."""

    sender: int
    ciphertexts: Mapping[int, bytes]  # recipient -> bundle

    def __post_init__(self) -> None:
        _check_id(self.sender, "sender")
        _set(self, "ciphertexts", _frozen_map(self.ciphertexts, BUNDLE_SIZE, "ciphertexts"))


@dataclass(frozen=True)
class BundleReport:
    """After round 1: the senders whose share bundle failed to open (usually none).

    The server cuts the pair of each accusation (the two never mask with each other) and
    excludes a client from the round only when too few clients hold its shares, or too few
    neighbours are left for it to mask with (``SecAggServer`` docs).
    """

    sender: int
    accused: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        _check_id(self.sender, "sender")
        _set(self, "accused", _frozen_ids(self.accused, "accused"))
        if self.sender in self.accused:
            raise RemoteProtocolError("a client cannot accuse itself")


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Round 2: y_u = x_u + PRG(b_u) + sum over neighbours v in U2 of +/-PRG(s_uv), mod p."""

    sender: int
    vector: np.ndarray  # uint64, length m, values < p (checked by server)

    def __post_init__(self) -> None:
        _check_id(self.sender, "sender")
        if not isinstance(self.vector, np.ndarray) or self.vector.ndim != 1:
            raise RemoteProtocolError("masked input must be a 1-D numpy array")


@dataclass(frozen=True)
class ConsistencySignature:
    """Round 3 (active mode): Ed25519 signature over the session id and the set U3."""

    sender: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_id(self.sender, "sender")
        _check_bytes(self.signature, SIGNATURE_SIZE, "signature")


@dataclass(frozen=True)
class UnmaskingShares:
    """Round 4: shares of b_v for neighbours v in U3, shares of s_v^SK for v in U2 minus U3."""

    sender: int
    self_mask_shares: Mapping[int, bytes]  # v -> share of b_v
    secret_key_shares: Mapping[int, bytes]  # v -> share of s_v^SK

    def __post_init__(self) -> None:
        _check_id(self.sender, "sender")
        _set(self, "self_mask_shares", _frozen_map(self.self_mask_shares, SHARE_SIZE, "self_mask_shares"))
        _set(self, "secret_key_shares", _frozen_map(self.secret_key_shares, SHARE_SIZE, "secret_key_shares"))
        both = set(self.self_mask_shares) & set(self.secret_key_shares)
        if both:
            raise RemoteProtocolError(f"both shares revealed for clients {sorted(both)[:5]}")


ClientMessage = (
    AdvertiseKeys | ShareKeys | BundleReport | MaskedInput | ConsistencySignature | UnmaskingShares
)


# --- server -> client -------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKeys:
    """One neighbour's advertised keys, as forwarded by the server."""

    c_pk: bytes
    s_pk: bytes
    signature: bytes | None = None

    def __post_init__(self) -> None:
        _check_advertised(self.c_pk, self.s_pk, self.signature)


@dataclass(frozen=True)
class KeyList:
    """Sent after round 0: the keys of the recipient's neighbours in U1."""

    recipient: int
    keys: Mapping[int, PublicKeys]

    def __post_init__(self) -> None:
        _check_id(self.recipient, "recipient")
        if not isinstance(self.keys, Mapping) or not all(
            isinstance(v, PublicKeys) for v in self.keys.values()
        ):
            raise RemoteProtocolError("keys must map client ids to PublicKeys")
        _set(self, "keys", MappingProxyType({_check_id(k, "keys key"): v for k, v in self.keys.items()}))


@dataclass(frozen=True)
class ShareBundles:
    """Sent after round 1: the bundles addressed to the recipient by its neighbours in U2."""

    recipient: int
    ciphertexts: Mapping[int, bytes]  # sender -> bundle

    def __post_init__(self) -> None:
        _check_id(self.recipient, "recipient")
        _set(self, "ciphertexts", _frozen_map(self.ciphertexts, BUNDLE_SIZE, "ciphertexts"))


@dataclass(frozen=True)
class MaskingRequest:
    """Sent after the report round: which of the recipient's U2 neighbours it must not mask with.

    ``unpaired``: neighbours still in the round whose pair with the recipient was cut by an
    accusation (either way); the recipient keeps the shares it holds of them.
    ``excluded``: neighbours removed from the round (as if dropped in round 1: too few clients
    hold their shares, or too few neighbours are left to mask with); the recipient forgets their
    shares and never reveals one.
    """

    recipient: int
    excluded: frozenset[int] = frozenset()
    unpaired: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        _check_id(self.recipient, "recipient")
        _set(self, "excluded", _frozen_ids(self.excluded, "excluded"))
        _set(self, "unpaired", _frozen_ids(self.unpaired, "unpaired"))
        both = self.excluded & self.unpaired
        if both:
            raise RemoteProtocolError(f"clients both excluded and unpaired: {sorted(both)[:5]}")


@dataclass(frozen=True)
class ConsistencyRequest:
    """Sent after round 2 in the active mode: the set U3 for the recipient to sign."""

    recipient: int
    survivors: frozenset[int]

    def __post_init__(self) -> None:
        _check_id(self.recipient, "recipient")
        _set(self, "survivors", _frozen_ids(self.survivors, "survivors"))


@dataclass(frozen=True)
class UnmaskingRequest:
    """Sent before round 4: which neighbours survived (U3) and which dropped (in U2, not U3).

    ``signatures`` (active mode): the U4 clients' signatures over U3, so the recipient can check
    that every honest client was shown the same U3.
    """

    recipient: int
    survivors: frozenset[int]
    dropped: frozenset[int]
    signatures: Mapping[int, bytes] | None = None

    def __post_init__(self) -> None:
        _check_id(self.recipient, "recipient")
        _set(self, "survivors", _frozen_ids(self.survivors, "survivors"))
        _set(self, "dropped", _frozen_ids(self.dropped, "dropped"))
        if self.signatures is not None:
            _set(self, "signatures", _frozen_map(self.signatures, SIGNATURE_SIZE, "signatures"))


ServerMessage = KeyList | ShareBundles | MaskingRequest | ConsistencyRequest | UnmaskingRequest
