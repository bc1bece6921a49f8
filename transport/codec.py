"""The wire codec: every message as one msgpack frame in a versioned envelope.

Envelope (a msgpack map with exactly these keys)::

    {"v": 1, "type": <tag>, "round": <FedAvg round>, "session": <session id or b"">, "body": {...}}

``round`` and ``session`` say which round a message belongs to, so a stale or replayed message is
recognised before it reaches a state machine. Numpy vectors travel as raw little-endian bytes
with their dtype and length: ``{"dtype": "<u8", "len": m, "data": <8m bytes>}``; a masked input
is bit-packed at ceil(log2 p) bits per element:
``{"dtype": "packed", "bits": b, "len": m, "data": <ceil(b m / 8) bytes>}``.

Decoding is strict: the frame size, every string, map, list and vector is bounded by
``FrameLimits`` (derived from the round config), every body has exactly its fields with the right
types, and the message dataclasses validate themselves. Whatever is wrong, the one error raised is
``DecodeError``. Each side decodes only the messages the other side may send.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from fedavg_core.quantize import QuantizationConfig
from secagg import RemoteProtocolError, SecAggConfig
from secagg.config import MAX_CLIENTS
from secagg.messages import (
    BUNDLE_SIZE,
    AdvertiseKeys,
    BundleReport,
    ConsistencyRequest,
    ConsistencySignature,
    KeyList,
    MaskedInput,
    MaskingRequest,
    PublicKeys,
    ShareBundles,
    ShareKeys,
    UnmaskingRequest,
    UnmaskingShares,
)
from secagg.primitives.commitment import COMMITMENT_SIZE
from secagg.primitives.field import bit_length
from secagg.primitives.packing import pack, unpack_bits
from secagg.primitives.shamir import SHARE_SIZE

from .errors import DecodeError, WireVersionError
from .wire import (
    CHALLENGE_SIZE,
    Challenge,
    ClientAbort,
    Finished,
    Hello,
    QuantizationTerms,
    RoundEnd,
    RoundStart,
    Terms,
    Welcome,
)

WIRE_VERSION = 3  # 2: b commitments, the bundle report round, dropout_fraction; 3: terms in the hello
SESSION_ID_SIZE = 32
ENVELOPE_OVERHEAD = 4096  # envelope keys, ids, short strings, msgpack headers
MAX_TEXT = 1024  # longest string field (abort reasons, setting values)
MAX_SETTINGS = 64

Body = dict[str, Any]


@dataclass(frozen=True)
class FrameLimits:
    """Bounds applied while decoding one frame.

    Attributes:
        max_frame_bytes: the largest frame accepted (also the websocket ``max_size``).
        max_vector_length: the longest numpy vector.
        max_entries: the most entries in one map or list (neighbours, roster, id sets).
        element_bits: the width of a bit-packed field vector (``bit_length(p)`` of the round);
            None where no packed vector is expected.
    """

    max_frame_bytes: int
    max_vector_length: int
    max_entries: int
    element_bits: int | None = None

    @classmethod
    def for_server(cls, config: SecAggConfig) -> FrameLimits:
        """Limits on what clients may send in a round of ``config``.

        The largest client message is the masked input (8 bytes per element), the share bundles
        (one per neighbour) or the unmasking shares (at most one per member of the closed
        neighbourhood); each map entry costs its payload plus at most 16 bytes of msgpack headers.
        """
        k = config.neighbourhood_size - 1
        body = max(
            8 * config.vector_length + 64,
            k * (BUNDLE_SIZE + 16),
            (k + 1) * (SHARE_SIZE + 16),
            MAX_TEXT,
        )
        return cls(
            body + ENVELOPE_OVERHEAD,
            config.vector_length,
            config.neighbourhood_size,
            bit_length(config.modulus),
        )

    @classmethod
    def for_client(cls, dimension: int, max_clients: int = 1 << 16) -> FrameLimits:
        """Limits on what the server may send to a client whose model has ``dimension`` parameters.

        The largest server messages are the round start (the model, 8 bytes per parameter, and
        in the active mode a roster of 32-byte keys) and the key list (two keys and a signature
        per neighbour, at most ``max_clients - 1`` neighbours).
        """
        body = max(8 * (dimension + 1) + 64 + 48 * max_clients, 176 * max_clients)
        return cls(body + ENVELOPE_OVERHEAD + MAX_SETTINGS * MAX_TEXT, dimension + 1, max_clients)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: the message and the round and session it claims to belong to."""

    message: object
    round: int
    session: bytes


# --- encoding ----------------------------------------------------------------------------------


def _vector(array: npt.NDArray[Any], dtype: str) -> Body:
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype))
    return {"dtype": dtype, "len": int(data.shape[0]), "data": data.tobytes()}


def _field_vector(array: npt.NDArray[Any], modulus: int | None) -> Body:
    """A masked input: bit-packed at ``bit_length(p)`` bits when the modulus is known, else raw."""
    if modulus is None:
        return _vector(array, "<u8")
    return {
        "dtype": "packed",
        "bits": bit_length(modulus),
        "len": int(array.shape[0]),
        "data": pack(array, modulus),
    }


def _config_body(config: SecAggConfig) -> Body:
    return {
        "num_clients": config.num_clients,
        "threshold": config.threshold,
        "vector_length": config.vector_length,
        "modulus": config.modulus,
        "graph": config.graph,
        "degree": config.degree,
        "mode": config.security_mode.value,
        "collusion_fraction": float(config.collusion_fraction),
        "dropout_fraction": float(config.dropout_fraction),
    }


def _quantization_body(q: QuantizationConfig) -> Body:
    return {
        "clip": q.clip,
        "bits": q.bits,
        "modulus": q.modulus,
        "num_clients": q.num_clients,
        "max_weight": q.max_weight,
    }


def _terms_body(t: Terms) -> Body:
    q = t.quantization
    return {
        "task": t.task,
        "dimension": t.dimension,
        "model_digest": t.model_digest,
        "quantization": None if q is None else {"clip": q.clip, "bits": q.bits, "max_weight": q.max_weight},
    }


_ENCODERS: dict[type, tuple[str, Callable[[Any], Body]]] = {
    # client -> server
    Hello: (
        "hello",
        lambda m: {"client_id": m.client_id, "signature": m.signature, "terms": _terms_body(m.terms)},
    ),
    AdvertiseKeys: (
        "advertise_keys",
        lambda m: {
            "sender": m.sender,
            "c_pk": m.c_pk,
            "s_pk": m.s_pk,
            "signature": m.signature,
            "b_commitment": m.b_commitment,
        },
    ),
    BundleReport: ("bundle_report", lambda m: {"sender": m.sender, "accused": sorted(m.accused)}),
    ShareKeys: ("share_keys", lambda m: {"sender": m.sender, "ciphertexts": dict(m.ciphertexts)}),
    MaskedInput: ("masked_input", lambda m: {"sender": m.sender, "vector": _vector(m.vector, "<u8")}),
    # (encode() replaces this with the packed form when it is given the round's modulus)
    ConsistencySignature: (
        "consistency_signature",
        lambda m: {"sender": m.sender, "signature": m.signature},
    ),
    UnmaskingShares: (
        "unmasking_shares",
        lambda m: {
            "sender": m.sender,
            "self_mask_shares": dict(m.self_mask_shares),
            "secret_key_shares": dict(m.secret_key_shares),
        },
    ),
    ClientAbort: ("client_abort", lambda m: {"sender": m.sender, "reason": m.reason[:MAX_TEXT]}),
    # server -> client
    Challenge: (
        "challenge",
        lambda m: {"nonce": m.nonce, "num_clients": m.num_clients, "active": m.active},
    ),
    Welcome: (
        "welcome",
        lambda m: {"client_id": m.client_id, "next_round": m.next_round, "rounds": m.rounds},
    ),
    RoundStart: (
        "round_start",
        lambda m: {
            "config": _config_body(m.config),
            "nonce": m.nonce,
            "roster": None if m.roster is None else dict(m.roster),
            "quantization": _quantization_body(m.quantization),
            "parameters": _vector(m.parameters, "<f8"),
            "settings": dict(m.settings),
        },
    ),
    KeyList: (
        "key_list",
        lambda m: {
            "recipient": m.recipient,
            "keys": {v: [k.c_pk, k.s_pk, k.signature] for v, k in m.keys.items()},
        },
    ),
    ShareBundles: (
        "share_bundles",
        lambda m: {"recipient": m.recipient, "ciphertexts": dict(m.ciphertexts)},
    ),
    MaskingRequest: (
        "masking_request",
        lambda m: {
            "recipient": m.recipient,
            "excluded": sorted(m.excluded),
            "unpaired": sorted(m.unpaired),
        },
    ),
    ConsistencyRequest: (
        "consistency_request",
        lambda m: {"recipient": m.recipient, "survivors": sorted(m.survivors)},
    ),
    UnmaskingRequest: (
        "unmasking_request",
        lambda m: {
            "recipient": m.recipient,
            "survivors": sorted(m.survivors),
            "dropped": sorted(m.dropped),
            "signatures": None if m.signatures is None else dict(m.signatures),
        },
    ),
    RoundEnd: (
        "round_end",
        lambda m: {
            "status": m.status,
            "reason": m.reason[:MAX_TEXT],
            "survivors": m.survivors,
            "accuracy": m.accuracy,
        },
    ),
    Finished: ("finished", lambda m: {"rounds_completed": m.rounds_completed}),
}


def message_type(message: object) -> str:
    """The wire tag of a message (e.g. ``"masked_input"``)."""
    try:
        return _ENCODERS[type(message)][0]
    except KeyError:
        raise TypeError(f"no wire encoding for {type(message).__name__}") from None


def encode(message: object, *, round: int = 0, session: bytes = b"", modulus: int | None = None) -> bytes:
    """One frame holding ``message``, tagged with the FedAvg round and the session id.

    With ``modulus`` (the round's p), a masked input is bit-packed at ``bit_length(p)`` bits per
    element, the wire format clients use; without it, it travels as raw 8-byte words.
    """
    try:
        tag, encoder = _ENCODERS[type(message)]
    except KeyError:
        raise TypeError(f"no wire encoding for {type(message).__name__}") from None
    if isinstance(message, MaskedInput) and modulus is not None:
        body = {"sender": message.sender, "vector": _field_vector(message.vector, modulus)}
    else:
        body = encoder(message)
    envelope = {"v": WIRE_VERSION, "type": tag, "round": round, "session": session, "body": body}
    packed: bytes = msgpack.packb(envelope, use_bin_type=True)
    return packed


# --- strict field readers ----------------------------------------------------------------------


class _Reader:
    """Reads typed fields out of one decoded body, naming the message in every error."""

    def __init__(self, body: object, what: str, fields: set[str], limits: FrameLimits) -> None:
        if not isinstance(body, dict):
            raise DecodeError(f"{what}: body must be a map")
        keys = set(body)
        if keys != fields:
            missing, extra = sorted(fields - keys), sorted(map(str, keys - fields))
            raise DecodeError(f"{what}: wrong fields (missing {missing}, unexpected {extra})")
        self.body, self.what, self.limits = body, what, limits

    def fail(self, key: str, problem: str) -> DecodeError:
        return DecodeError(f"{self.what}.{key}: {problem}")

    def integer(self, key: str, low: int = 0, high: int = (1 << 64) - 1) -> int:
        value = self.body[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(key, f"must be an integer in [{low}, {high}], got {value!r:.40}")
        return value

    def number(self, key: str) -> float:
        value = self.body[key]
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, float) or not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r:.40}")
        return value

    def flag(self, key: str) -> bool:
        value = self.body[key]
        if not isinstance(value, bool):
            raise self.fail(key, "must be a boolean")
        return value

    def text(self, key: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.body[key]
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise self.fail(key, f"must be a string of at most {MAX_TEXT} characters")
        if choices is not None and value not in choices:
            raise self.fail(key, f"must be one of {choices}, got {value!r:.40}")
        return value

    def blob(self, key: str, size: int) -> bytes:
        value = self.body[key]
        if not isinstance(value, bytes) or len(value) != size:
            raise self.fail(key, f"must be {size} bytes")
        return value

    def maybe_blob(self, key: str, size: int) -> bytes | None:
        return None if self.body[key] is None else self.blob(key, size)

    def blob_map(self, key: str, size: int) -> dict[int, bytes]:
        value = self.body[key]
        if not isinstance(value, dict) or len(value) > self.limits.max_entries:
            raise self.fail(key, f"must be a map of at most {self.limits.max_entries} entries")
        out: dict[int, bytes] = {}
        for k, v in value.items():
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_CLIENTS:
                raise self.fail(key, f"keys must be client ids, got {k!r:.40}")
            if not isinstance(v, bytes) or len(v) != size:
                raise self.fail(key, f"value for client {k} must be {size} bytes")
            out[k] = v
        return out

    def maybe_blob_map(self, key: str, size: int) -> dict[int, bytes] | None:
        return None if self.body[key] is None else self.blob_map(key, size)

    def ids(self, key: str) -> frozenset[int]:
        value = self.body[key]
        if not isinstance(value, list) or len(value) > self.limits.max_entries:
            raise self.fail(key, f"must be a list of at most {self.limits.max_entries} client ids")
        for v in value:
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_CLIENTS:
                raise self.fail(key, f"members must be client ids, got {v!r:.40}")
        if len(set(value)) != len(value):
            raise self.fail(key, "lists a client twice")
        return frozenset(value)

    def vector(self, key: str, dtype: str) -> npt.NDArray[Any]:
        value = self.body[key]
        if not isinstance(value, dict) or set(value) != {"dtype", "len", "data"}:
            raise self.fail(key, "must be a vector map with dtype, len and data")
        length, data = value["len"], value["data"]
        if value["dtype"] != dtype:
            raise self.fail(key, f"dtype must be {dtype!r}, got {value['dtype']!r:.20}")
        if not isinstance(length, int) or isinstance(length, bool):
            raise self.fail(key, "len must be an integer")
        if not 0 <= length <= self.limits.max_vector_length:
            raise self.fail(key, f"len {length} exceeds the limit of {self.limits.max_vector_length}")
        itemsize = np.dtype(dtype).itemsize
        if not isinstance(data, bytes) or len(data) != length * itemsize:
            raise self.fail(key, f"data must be {length * itemsize} bytes for {length} elements")
        # Read-only view on the frame's bytes; native byte order for the arithmetic.
        return np.frombuffer(data, dtype=np.dtype(dtype)).astype(
            np.dtype(dtype).newbyteorder("="), copy=False
        )

    def field_vector(self, key: str) -> npt.NDArray[Any]:
        """A masked input: raw ``<u8`` words, or bit-packed at the round's element width."""
        value = self.body[key]
        if not isinstance(value, dict) or value.get("dtype") != "packed":
            return self.vector(key, "<u8")
        if set(value) != {"dtype", "bits", "len", "data"}:
            raise self.fail(key, "must be a packed vector map with dtype, bits, len and data")
        bits, length, data = value["bits"], value["len"], value["data"]
        if self.limits.element_bits is None or bits != self.limits.element_bits:
            raise self.fail(key, f"packed width must be {self.limits.element_bits} bits, got {bits!r:.20}")
        if not isinstance(length, int) or isinstance(length, bool):
            raise self.fail(key, "len must be an integer")
        if not 0 <= length <= self.limits.max_vector_length:
            raise self.fail(key, f"len {length} exceeds the limit of {self.limits.max_vector_length}")
        if not isinstance(data, bytes):
            raise self.fail(key, "data must be bytes")
        try:
            # Values below p are checked by the server, which drops the sender otherwise.
            return unpack_bits(data, length, bits)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def sub(self, key: str, fields: set[str]) -> _Reader:
        return _Reader(self.body[key], f"{self.what}.{key}", fields, self.limits)


# --- decoders per message type -----------------------------------------------------------------

_ID_MAX = MAX_CLIENTS


def _config(r: _Reader) -> SecAggConfig:
    c = r.sub(
        "config",
        {
            "num_clients",
            "threshold",
            "vector_length",
            "modulus",
            "graph",
            "degree",
            "mode",
            "collusion_fraction",
            "dropout_fraction",
        },
    )
    degree = None if c.body["degree"] is None else c.integer("degree", 0, _ID_MAX)
    try:
        return SecAggConfig(
            num_clients=c.integer("num_clients", 2, _ID_MAX),
            threshold=c.integer("threshold", 1, _ID_MAX),
            vector_length=c.integer("vector_length", 1, r.limits.max_vector_length),
            modulus=c.integer("modulus", 2, 1 << 63),
            graph="harary" if c.text("graph", ("complete", "harary")) == "harary" else "complete",
            degree=degree,
            mode=c.text("mode", ("semi_honest", "active")),
            collusion_fraction=c.number("collusion_fraction"),
            dropout_fraction=c.number("dropout_fraction"),
        )
    except ValueError as exc:
        raise DecodeError(f"round_start.config: {exc}") from None


def _quantization(r: _Reader) -> QuantizationConfig:
    q = r.sub("quantization", {"clip", "bits", "modulus", "num_clients", "max_weight"})
    try:
        return QuantizationConfig(
            clip=q.number("clip"),
            bits=q.integer("bits", 0, 64),
            modulus=q.integer("modulus", 2, 1 << 63),
            num_clients=q.integer("num_clients", 1, _ID_MAX),
            max_weight=q.integer("max_weight", 1, 1 << 53),
        )
    except ValueError as exc:
        raise DecodeError(f"round_start.quantization: {exc}") from None


def _terms(r: _Reader) -> Terms:
    t = r.sub("terms", {"task", "dimension", "model_digest", "quantization"})
    quantization = None
    if t.body["quantization"] is not None:
        q = t.sub("quantization", {"clip", "bits", "max_weight"})
        bits, max_weight = q.integer("bits", 1, 64), q.integer("max_weight", 1)
        quantization = QuantizationTerms(q.number("clip"), bits, max_weight)
    return Terms(
        task=None if t.body["task"] is None else t.text("task"),
        dimension=None if t.body["dimension"] is None else t.integer("dimension", 1),
        model_digest=t.maybe_blob("model_digest", 32),
        quantization=quantization,
    )


def _settings(r: _Reader) -> dict[str, bool | int | float | str]:
    value = r.body["settings"]
    if not isinstance(value, dict) or len(value) > MAX_SETTINGS:
        raise r.fail("settings", f"must be a map of at most {MAX_SETTINGS} entries")
    out: dict[str, bool | int | float | str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or len(k) > 64:
            raise r.fail("settings", "keys must be short strings")
        if isinstance(v, str) and len(v) > MAX_TEXT:
            raise r.fail("settings", f"value of {k!r} is too long")
        if not isinstance(v, (bool, int, float, str)):
            raise r.fail("settings", f"value of {k!r} must be a bool, number or string")
        out[k] = v
    return out


def _key_list(r: _Reader) -> KeyList:
    keys = r.body["keys"]
    if not isinstance(keys, dict) or len(keys) > r.limits.max_entries:
        raise r.fail("keys", f"must be a map of at most {r.limits.max_entries} entries")
    out: dict[int, PublicKeys] = {}
    for v, entry in keys.items():
        if not isinstance(v, int) or isinstance(v, bool) or not isinstance(entry, list) or len(entry) != 3:
            raise r.fail("keys", "entries must map a client id to [c_pk, s_pk, signature]")
        c_pk, s_pk, sig = entry
        if not isinstance(c_pk, bytes) or not isinstance(s_pk, bytes):
            raise r.fail("keys", f"keys of client {v} must be bytes")
        if sig is not None and not isinstance(sig, bytes):
            raise r.fail("keys", f"signature of client {v} must be bytes or nil")
        out[v] = PublicKeys(c_pk, s_pk, sig)
    return KeyList(r.integer("recipient", 1, _ID_MAX), out)


_FIELDS = {
    "hello": {"client_id", "signature", "terms"},
    "advertise_keys": {"sender", "c_pk", "s_pk", "signature", "b_commitment"},
    "bundle_report": {"sender", "accused"},
    "share_keys": {"sender", "ciphertexts"},
    "masked_input": {"sender", "vector"},
    "consistency_signature": {"sender", "signature"},
    "unmasking_shares": {"sender", "self_mask_shares", "secret_key_shares"},
    "client_abort": {"sender", "reason"},
    "challenge": {"nonce", "num_clients", "active"},
    "welcome": {"client_id", "next_round", "rounds"},
    "round_start": {"config", "nonce", "roster", "quantization", "parameters", "settings"},
    "key_list": {"recipient", "keys"},
    "share_bundles": {"recipient", "ciphertexts"},
    "masking_request": {"recipient", "excluded", "unpaired"},
    "consistency_request": {"recipient", "survivors"},
    "unmasking_request": {"recipient", "survivors", "dropped", "signatures"},
    "round_end": {"status", "reason", "survivors", "accuracy"},
    "finished": {"rounds_completed"},
}

_CLIENT_DECODERS: dict[str, Callable[[_Reader], object]] = {
    "hello": lambda r: Hello(r.integer("client_id", 1, _ID_MAX), r.maybe_blob("signature", 64), _terms(r)),
    "advertise_keys": lambda r: AdvertiseKeys(
        r.integer("sender", 1, _ID_MAX),
        r.blob("c_pk", 32),
        r.blob("s_pk", 32),
        r.maybe_blob("signature", 64),
        r.blob("b_commitment", COMMITMENT_SIZE),
    ),
    "bundle_report": lambda r: BundleReport(r.integer("sender", 1, _ID_MAX), r.ids("accused")),
    "share_keys": lambda r: ShareKeys(
        r.integer("sender", 1, _ID_MAX),
        r.blob_map("ciphertexts", BUNDLE_SIZE),
    ),
    "masked_input": lambda r: MaskedInput(r.integer("sender", 1, _ID_MAX), r.field_vector("vector")),
    "consistency_signature": lambda r: ConsistencySignature(
        r.integer("sender", 1, _ID_MAX),
        r.blob("signature", 64),
    ),
    "unmasking_shares": lambda r: UnmaskingShares(
        r.integer("sender", 1, _ID_MAX),
        r.blob_map("self_mask_shares", SHARE_SIZE),
        r.blob_map("secret_key_shares", SHARE_SIZE),
    ),
    "client_abort": lambda r: ClientAbort(r.integer("sender", 1, _ID_MAX), r.text("reason")),
}

_SERVER_DECODERS: dict[str, Callable[[_Reader], object]] = {
    "challenge": lambda r: Challenge(
        r.blob("nonce", CHALLENGE_SIZE),
        r.integer("num_clients", 2, _ID_MAX),
        r.flag("active"),
    ),
    "welcome": lambda r: Welcome(
        r.integer("client_id", 1, _ID_MAX), r.integer("next_round"), r.integer("rounds")
    ),
    "round_start": lambda r: RoundStart(
        config=_config(r),
        nonce=r.blob("nonce", 32),
        roster=r.maybe_blob_map("roster", 32),
        quantization=_quantization(r),
        parameters=r.vector("parameters", "<f8"),
        settings=_settings(r),
    ),
    "key_list": _key_list,
    "share_bundles": lambda r: ShareBundles(
        r.integer("recipient", 1, _ID_MAX),
        r.blob_map("ciphertexts", BUNDLE_SIZE),
    ),
    "masking_request": lambda r: MaskingRequest(
        r.integer("recipient", 1, _ID_MAX), r.ids("excluded"), r.ids("unpaired")
    ),
    "consistency_request": lambda r: ConsistencyRequest(
        r.integer("recipient", 1, _ID_MAX), r.ids("survivors")
    ),
    "unmasking_request": lambda r: UnmaskingRequest(
        r.integer("recipient", 1, _ID_MAX),
        r.ids("survivors"),
        r.ids("dropped"),
        r.maybe_blob_map("signatures", 64),
    ),
    "round_end": lambda r: RoundEnd(
        "completed" if r.text("status", ("completed", "aborted")) == "completed" else "aborted",
        r.text("reason"),
        r.integer("survivors", 0, _ID_MAX),
        None if r.body["accuracy"] is None else r.number("accuracy"),
    ),
    "finished": lambda r: Finished(r.integer("rounds_completed")),
}


def _refuse_ext(code: int, data: bytes) -> object:
    raise DecodeError(f"msgpack extension type {code} is not allowed")


def _unpack(data: object, limits: FrameLimits) -> object:
    if isinstance(data, str):
        raise DecodeError("text frame; frames must be binary msgpack")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"frame must be bytes, got {type(data).__name__}")
    if len(data) > limits.max_frame_bytes:
        raise DecodeError(f"frame of {len(data)} bytes exceeds the limit of {limits.max_frame_bytes}")
    if not data:
        raise DecodeError("empty frame")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            ext_hook=_refuse_ext,
            max_bin_len=limits.max_frame_bytes,
            max_str_len=MAX_TEXT,
            max_array_len=limits.max_entries + 16,
            max_map_len=max(limits.max_entries, MAX_SETTINGS) + 16,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError...
        raise DecodeError(f"not a valid msgpack frame ({type(exc).__name__}: {exc})") from None


def _decode(data: object, limits: FrameLimits, decoders: Mapping[str, Callable[[_Reader], object]]) -> Frame:
    envelope = _unpack(data, limits)
    if not isinstance(envelope, dict) or set(envelope) != {"v", "type", "round", "session", "body"}:
        raise DecodeError("frame is not an envelope map with v, type, round, session and body")
    if envelope["v"] != WIRE_VERSION:
        raise WireVersionError(envelope["v"], WIRE_VERSION)
    tag = envelope["type"]
    if not isinstance(tag, str) or tag not in decoders:
        raise DecodeError(f"unexpected message type {tag!r:.40}")
    round_ = envelope["round"]
    if not isinstance(round_, int) or isinstance(round_, bool) or not 0 <= round_ < (1 << 32):
        raise DecodeError("envelope round must be an integer in [0, 2**32)")
    session = envelope["session"]
    if not isinstance(session, bytes) or len(session) not in (0, SESSION_ID_SIZE):
        raise DecodeError(f"envelope session must be empty or {SESSION_ID_SIZE} bytes")
    reader = _Reader(envelope["body"], tag, _FIELDS[tag], limits)
    try:
        message = decoders[tag](reader)
    except DecodeError:
        raise
    except (RemoteProtocolError, ValueError) as exc:
        raise DecodeError(f"{tag}: {exc}") from None
    return Frame(message, round_, session)


def decode_from_client(data: object, limits: FrameLimits) -> Frame:
    """Decode a frame a client sent to the server; ``DecodeError`` if anything is wrong."""
    return _decode(data, limits, _CLIENT_DECODERS)


def decode_from_server(data: object, limits: FrameLimits) -> Frame:
    """Decode a frame the server sent to a client; ``DecodeError`` if anything is wrong."""
    return _decode(data, limits, _SERVER_DECODERS)
