"""Field vectors to bytes and back at ceil(log2 p) bits per element (the wire format of vectors).

Elements are written little-endian, bit by bit: element i occupies bits [i*b, (i+1)*b) of the
output, least significant bit first, with b = ``bit_length(p)``; the last byte is zero-padded.
With the smallest prime that has headroom for a round, a masked vector costs b/8 bytes per
element instead of 8.
"""

from __future__ import annotations

import numpy as np

from .field import FieldVector, bit_length

_CHUNK = 1 << 16  # elements per step, bounds the temporary bit matrix to 4 MiB


def packed_size(length: int, modulus: int) -> int:
    """Bytes that ``pack`` produces for ``length`` elements."""
    return (length * bit_length(modulus) + 7) // 8


def pack(vector: FieldVector, modulus: int) -> bytes:
    """The elements of ``vector`` (each < p) at ``bit_length(p)`` bits each."""
    return pack_bits(vector, bit_length(modulus))


def unpack(data: bytes, length: int, modulus: int) -> FieldVector:
    """Inverse of ``pack``; ``ValueError`` if the size is wrong, padding is set or an element >= p."""
    out = unpack_bits(data, length, bit_length(modulus))
    if length and int(out.max()) >= modulus:
        raise ValueError(f"packed vector holds an element >= the modulus {modulus}")
    return out


def pack_bits(vector: FieldVector, bits: int) -> bytes:
    """The elements of ``vector`` at ``bits`` bits each (their higher bits must be zero)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bit width must be in [1, 64], got {bits}")
    values = np.ascontiguousarray(vector, dtype="<u8")
    if values.ndim != 1:
        raise ValueError("pack() takes a 1-D vector")
    pieces = []
    # Chunks of a multiple of 8 elements end on a byte boundary, so they concatenate exactly.
    for start in range(0, values.shape[0], _CHUNK):
        chunk = values[start : start + _CHUNK]
        matrix = np.unpackbits(chunk.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        pieces.append(np.packbits(matrix[:, :bits].reshape(-1), bitorder="little").tobytes())
    return b"".join(pieces)


def unpack_bits(data: bytes, length: int, bits: int) -> FieldVector:
    """Inverse of ``pack_bits``; ``ValueError`` if the size is wrong or padding bits are set."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bit width must be in [1, 64], got {bits}")
    size = (length * bits + 7) // 8
    if len(data) != size:
        raise ValueError(f"packed vector must be {size} bytes, got {len(data)}")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if stream[length * bits :].any():
        raise ValueError("packed vector has non-zero padding bits")
    out = np.empty(length, dtype=np.uint64)
    for start in range(0, length, _CHUNK):
        stop = min(length, start + _CHUNK)
        matrix = np.zeros((stop - start, 64), dtype=np.uint8)
        matrix[:, :bits] = stream[start * bits : stop * bits].reshape(-1, bits)
        out[start:stop] = np.packbits(matrix, axis=1, bitorder="little").view("<u8").reshape(-1)
    return out
