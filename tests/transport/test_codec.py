"""The wire codec: every message survives a round trip; every malformed frame is one DecodeError."""

from __future__ import annotations

import contextlib
import os

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedavg_core import QuantizationConfig
from secagg import SecAggConfig
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
from transport.codec import WIRE_VERSION, FrameLimits, decode_from_client, decode_from_server, encode
from transport.errors import DecodeError
from transport.wire import Challenge, ClientAbort, Finished, Hello, RoundEnd, RoundStart, Welcome

CONFIG = SecAggConfig(num_clients=5, threshold=3, vector_length=6)
SERVER_LIMITS = FrameLimits.for_server(CONFIG)
CLIENT_LIMITS = FrameLimits.for_client(dimension=5)
SESSION = bytes(range(32))


def key(i: int) -> bytes:
    return bytes([i]) * 32


CLIENT_MESSAGES = [
    Hello(3, None),
    Hello(3, b"s" * 64),
    AdvertiseKeys(2, key(1), key(2), None, b"h" * 32),
    AdvertiseKeys(2, key(1), key(2), b"g" * 64, b"h" * 32),
    ShareKeys(2, {1: b"c" * BUNDLE_SIZE, 3: b"d" * BUNDLE_SIZE}),
    BundleReport(2, frozenset()),
    BundleReport(2, frozenset({1, 3})),
    MaskedInput(4, np.array([0, 1, 2, 3, 2**32 - 6, 7], dtype=np.uint64)),
    ConsistencySignature(1, b"x" * 64),
    UnmaskingShares(1, {2: b"b" * 32}, {3: b"k" * 32}),
    ClientAbort(5, "U3 and the dropped set overlap"),
]

SERVER_MESSAGES = [
    Challenge(os.urandom(32), 5, True),
    Welcome(3, 2, 10),
    RoundStart(
        CONFIG,
        os.urandom(32),
        None,
        QuantizationConfig(2.0, 20, CONFIG.modulus, 5, 100),
        np.array([0.5, -1.25, 3.0, 0.0, 1e-9]),
        {"epochs": 2, "batch_size": 0, "learning_rate": 0.1},
    ),
    KeyList(2, {1: PublicKeys(key(1), key(2)), 3: PublicKeys(key(3), key(4), b"s" * 64)}),
    ShareBundles(2, {1: b"c" * BUNDLE_SIZE}),
    MaskingRequest(2, frozenset()),
    MaskingRequest(2, frozenset({4})),
    ConsistencyRequest(2, frozenset({1, 2, 3})),
    UnmaskingRequest(2, frozenset({1, 2}), frozenset({3}), {1: b"s" * 64}),
    RoundEnd("completed", "", 4, 0.93),
    RoundEnd("aborted", "only 2 clients responded", 0, None),
    Finished(7),
]


def same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    for name in a.__dataclass_fields__:  # type: ignore[attr-defined]
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if not (x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif hasattr(x, "items") and not isinstance(x, SecAggConfig):
            if dict(x) != dict(y):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=lambda m: type(m).__name__)
def test_client_messages_round_trip_with_round_and_session(message: object) -> None:
    frame = decode_from_client(encode(message, round=7, session=SESSION), SERVER_LIMITS)
    assert same(frame.message, message)
    assert (frame.round, frame.session) == (7, SESSION)


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_messages_round_trip(message: object) -> None:
    frame = decode_from_server(encode(message, round=3, session=SESSION), CLIENT_LIMITS)
    assert same(frame.message, message)
    assert frame.round == 3


def test_vectors_travel_as_raw_little_endian_bytes_with_dtype_and_length() -> None:
    vector = np.array([1, 2**40, 3], dtype=np.uint64)
    envelope = msgpack.unpackb(encode(MaskedInput(1, vector)), strict_map_key=False)
    field = envelope["body"]["vector"]
    assert field == {"dtype": "<u8", "len": 3, "data": vector.astype("<u8").tobytes()}
    assert envelope["v"] == WIRE_VERSION and envelope["type"] == "masked_input"


def test_each_side_accepts_only_what_the_other_side_may_send() -> None:
    with pytest.raises(DecodeError, match="unexpected message type 'round_start'"):
        decode_from_client(encode(SERVER_MESSAGES[2]), SERVER_LIMITS)
    with pytest.raises(DecodeError, match="unexpected message type 'masked_input'"):
        decode_from_server(
            encode(next(m for m in CLIENT_MESSAGES if isinstance(m, MaskedInput))), CLIENT_LIMITS
        )


def envelope(body: dict[str, object], kind: str = "masked_input", **fields: object) -> bytes:
    data: dict[str, object] = {"v": WIRE_VERSION, "type": kind, "round": 1, "session": SESSION, "body": body}
    data.update(fields)
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def vector_body(dtype: str = "<u8", length: int = 6, data: bytes | None = None) -> dict[str, object]:
    raw = np.arange(6, dtype="<u8").tobytes() if data is None else data
    return {"sender": 2, "vector": {"dtype": dtype, "len": length, "data": raw}}


MALFORMED = {
    "garbage": (b"\xc1\xff\x00garbage", "not a valid msgpack frame"),
    "empty": (b"", "empty frame"),
    "text frame": ("hello", "text frame"),
    "truncated": (
        encode(next(m for m in CLIENT_MESSAGES if isinstance(m, MaskedInput)))[:-5],
        "not a valid msgpack frame",
    ),
    "trailing bytes": (encode(CLIENT_MESSAGES[0]) + b"\x00", "not a valid msgpack frame"),
    "not a map": (msgpack.packb([1, 2, 3]), "not an envelope"),
    "future version": (
        envelope(vector_body(), v=WIRE_VERSION + 1),
        f"unsupported wire version {WIRE_VERSION + 1}",
    ),
    "negative round": (envelope(vector_body(), round=-1), "envelope round"),
    "short session": (envelope(vector_body(), session=b"abc"), "envelope session"),
    "extra field": (envelope({**vector_body(), "x": 1}), "unexpected \\['x'\\]"),
    "missing field": (envelope({"sender": 2}), "missing \\['vector'\\]"),
    "bool as id": (envelope({**vector_body(), "sender": True}), "sender: must be an integer"),
    "id zero": (envelope({**vector_body(), "sender": 0}), "sender: must be an integer"),
    "wrong dtype": (envelope(vector_body(dtype="<f8")), "dtype must be '<u8'"),
    "big-endian dtype": (envelope(vector_body(dtype=">u8")), "dtype must be '<u8'"),
    "length mismatch": (envelope(vector_body(length=5)), "data must be 40 bytes"),
    "vector too long": (
        envelope(vector_body(length=7, data=bytes(56))),
        "len 7 exceeds the limit of 6",
    ),
    "extension type": (
        msgpack.packb({"v": msgpack.ExtType(5, b"x"), "type": "hello"}),
        "not a valid msgpack frame",
    ),
    "short key": (
        envelope(
            {"sender": 2, "c_pk": b"k", "s_pk": key(2), "signature": None, "b_commitment": key(3)},
            "advertise_keys",
        ),
        "c_pk: must be 32 bytes",
    ),
    "short commitment": (
        envelope(
            {"sender": 2, "c_pk": key(1), "s_pk": key(2), "signature": None, "b_commitment": b"h"},
            "advertise_keys",
        ),
        "b_commitment: must be 32 bytes",
    ),
    "too many bundles": (
        envelope({"sender": 2, "ciphertexts": {i: b"c" * BUNDLE_SIZE for i in range(1, 8)}}, "share_keys"),
        "at most 5 entries",
    ),
    "both shares of one client": (
        envelope(
            {"sender": 2, "self_mask_shares": {3: b"b" * 32}, "secret_key_shares": {3: b"k" * 32}},
            "unmasking_shares",
        ),
        "both shares revealed",
    ),
    "deep nesting": (b"\x91" * 5000 + b"\x00", "not a valid msgpack frame"),
}


@pytest.mark.parametrize("frame, problem", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_frames_raise_one_clear_decode_error(frame: bytes | str, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        decode_from_client(frame, SERVER_LIMITS)


def test_frames_above_the_config_derived_limit_are_refused_before_parsing() -> None:
    limit = SERVER_LIMITS.max_frame_bytes
    assert limit < 10_000  # 6 elements, 5 clients: a few kilobytes at most
    with pytest.raises(DecodeError, match=f"exceeds the limit of {limit}"):
        decode_from_client(b"\x00" * (limit + 1), SERVER_LIMITS)


def test_the_limit_grows_with_the_vector_and_the_neighbourhood() -> None:
    big = FrameLimits.for_server(SecAggConfig(num_clients=5, threshold=3, vector_length=100_000))
    assert big.max_frame_bytes >= 8 * 100_000
    many = FrameLimits.for_server(SecAggConfig(num_clients=1000, threshold=501, vector_length=6))
    assert many.max_frame_bytes >= 999 * BUNDLE_SIZE and many.max_entries == 1000
    frame = encode(ShareKeys(1, {i: b"c" * BUNDLE_SIZE for i in range(2, 1001)}))
    assert len(frame) <= many.max_frame_bytes
    assert decode_from_client(frame, many).message.sender == 1  # type: ignore[attr-defined]


def test_an_unsafe_config_in_a_round_start_is_a_decode_error() -> None:
    start = SERVER_MESSAGES[2]
    data = msgpack.unpackb(encode(start), strict_map_key=False)
    data["body"]["config"]["threshold"] = 2  # below floor(n/3) + 2 = 3 for 5 clients
    with pytest.raises(DecodeError, match="threshold t=2 is unsafe"):
        decode_from_server(msgpack.packb(data, use_bin_type=True), CLIENT_LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_decode_error(data: bytes) -> None:
    for decode, limits in ((decode_from_client, SERVER_LIMITS), (decode_from_server, CLIENT_LIMITS)):
        with contextlib.suppress(DecodeError):
            decode(data, limits)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CLIENT_MESSAGES), st.data())
def test_every_truncation_and_byte_flip_of_a_valid_frame_is_a_decode_error_or_valid(
    message: object, data: st.DataObject
) -> None:
    frame = encode(message, round=1, session=SESSION)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(DecodeError):
        decode_from_client(frame[:cut], SERVER_LIMITS)
    position = data.draw(st.integers(0, len(frame) - 1))
    flipped = bytearray(frame)
    flipped[position] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(DecodeError):  # a flipped byte may still decode to a valid message
        decode_from_client(bytes(flipped), SERVER_LIMITS)


def test_masked_inputs_travel_bit_packed_at_log2_p_bits() -> None:
    modulus = CONFIG.modulus
    vector = np.random.default_rng(1).integers(0, modulus, CONFIG.vector_length, dtype=np.uint64)
    data = encode(MaskedInput(4, vector), round=7, session=SESSION, modulus=modulus)
    field = msgpack.unpackb(data, strict_map_key=False)["body"]["vector"]
    bits = (modulus - 1).bit_length()
    assert field["dtype"] == "packed" and field["bits"] == bits
    assert len(field["data"]) == (CONFIG.vector_length * bits + 7) // 8
    frame = decode_from_client(data, SERVER_LIMITS)
    assert np.array_equal(frame.message.vector, vector)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"bits": 64}, "packed width"),
        ({"bits": "32"}, "packed width"),
        ({"len": 5}, "bytes"),
        ({"len": 7}, "exceeds the limit"),
        ({"len": True}, "len must be an integer"),
        ({"data": "text"}, "data must be bytes"),
        ({"extra": 1}, "packed vector map"),
    ],
)
def test_malformed_packed_vectors_raise_decode_error(change: dict[str, object], error: str) -> None:
    modulus = CONFIG.modulus
    bits = (modulus - 1).bit_length()
    vector = {"dtype": "packed", "bits": bits, "len": 6, "data": bytes((6 * bits + 7) // 8)}
    vector.update(change)
    with pytest.raises(DecodeError, match=error):
        decode_from_client(envelope({"sender": 2, "vector": vector}), SERVER_LIMITS)
