"""secagg.primitives.packing: field vectors at ceil(log2 p) bits per element, exactly invertible."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.primitives.field import SUPPORTED_PRIMES, bit_length
from secagg.primitives.packing import pack, pack_bits, packed_size, unpack, unpack_bits


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SUPPORTED_PRIMES), st.integers(0, 300), st.integers(0, 2**32))
def test_pack_round_trips_and_uses_log2_p_bits(modulus: int, length: int, seed: int) -> None:
    vector = np.random.default_rng(seed).integers(0, modulus, length, dtype=np.uint64)
    data = pack(vector, modulus)
    assert len(data) == packed_size(length, modulus) == (length * bit_length(modulus) + 7) // 8
    assert np.array_equal(unpack(data, length, modulus), vector)


def test_layout_is_little_endian_bit_stream() -> None:
    # 3 elements of 17 bits: element i occupies bits [17 i, 17 i + 17), least significant first.
    p = 2**17 - 1
    vector = np.array([1, 2**16, 3], dtype=np.uint64)
    stream = sum(int(v) << (17 * i) for i, v in enumerate(vector))
    assert pack(vector, p) == stream.to_bytes(7, "little")


def test_chunked_packing_matches_across_chunk_boundaries() -> None:
    p = 2**26 - 5
    vector = np.random.default_rng(0).integers(0, p, 70_001, dtype=np.uint64)
    assert np.array_equal(unpack(pack(vector, p), vector.shape[0], p), vector)


def test_unpack_refuses_wrong_size_padding_and_out_of_range() -> None:
    p = 2**17 - 1
    data = pack(np.array([5, 6, 7], dtype=np.uint64), p)
    with pytest.raises(ValueError, match="bytes"):
        unpack(data + b"\x00", 3, p)
    with pytest.raises(ValueError, match="padding"):
        unpack(data[:-1] + bytes([data[-1] | 0x80]), 3, p)
    with pytest.raises(ValueError, match="modulus"):
        unpack(pack_bits(np.array([p], dtype=np.uint64), 17), 1, p)
    assert unpack_bits(pack_bits(np.array([p], dtype=np.uint64), 17), 1, 17).tolist() == [p]
    with pytest.raises(ValueError, match="bit width"):
        pack_bits(np.zeros(1, dtype=np.uint64), 0)
