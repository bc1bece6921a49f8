"""Vectors over the prime field Z_p as numpy ``uint64`` arrays.

Every field element is stored in ``[0, p)``. The supported moduli are the largest primes below
``2**k`` for ``k = 16 .. 62``: small enough that the sum of two elements never overflows
``uint64``, and dense enough that the smallest one with headroom for a round wastes less than a
bit per element on the wire.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

FieldVector = npt.NDArray[np.uint64]

# k -> c such that 2**k - c is the largest prime below 2**k (checked by tests/primitives/test_field.py).
_PRIME_OFFSETS: Final[dict[int, int]] = {
    16: 15,
    17: 1,
    18: 5,
    19: 1,
    20: 3,
    21: 9,
    22: 3,
    23: 15,
    24: 3,
    25: 39,
    26: 5,
    27: 39,
    28: 57,
    29: 3,
    30: 35,
    31: 1,
    32: 5,
    33: 9,
    34: 41,
    35: 31,
    36: 5,
    37: 25,
    38: 45,
    39: 7,
    40: 87,
    41: 21,
    42: 11,
    43: 57,
    44: 17,
    45: 55,
    46: 21,
    47: 115,
    48: 59,
    49: 81,
    50: 27,
    51: 129,
    52: 47,
    53: 111,
    54: 33,
    55: 55,
    56: 5,
    57: 13,
    58: 27,
    59: 55,
    60: 93,
    61: 1,
    62: 57,
}

SUPPORTED_PRIMES: Final[tuple[int, ...]] = tuple(2**k - c for k, c in sorted(_PRIME_OFFSETS.items()))
"""The moduli a round may use, ascending."""

DEFAULT_MODULUS: Final[int] = 2**32 - 5
"""The default modulus: the largest prime below 2**32 (masks then cost 4 keystream bytes each)."""


def check_modulus(modulus: int) -> int:
    """Return ``modulus`` if it is a supported prime, else raise ``ValueError``."""
    if modulus not in SUPPORTED_PRIMES:
        raise ValueError(
            f"modulus {modulus} is not supported; use one of secagg.primitives.field.SUPPORTED_PRIMES "
            f"(the largest primes below 2**k for k=16..62), e.g. {DEFAULT_MODULUS}"
        )
    return modulus


def smallest_prime_above(bound: int) -> int:
    """The smallest supported prime strictly greater than ``bound``.

    Used to pick the cheapest modulus with headroom: a sum that is known to stay in
    ``[0, bound]`` (or ``[-bound/2, bound/2]`` after centring) is exact modulo this prime.
    """
    for p in SUPPORTED_PRIMES:
        if p > bound:
            return p
    raise ValueError(
        f"no supported prime exceeds {bound} (the largest is {SUPPORTED_PRIMES[-1]}, about 2**62); "
        "use fewer clients or a smaller bit width"
    )


def bit_length(modulus: int) -> int:
    """Bits needed to write one element of Z_modulus: ceil(log2(modulus))."""
    return (modulus - 1).bit_length()


def zeros(length: int) -> FieldVector:
    """The zero vector of the given length."""
    return np.zeros(length, dtype=np.uint64)


def is_field_vector(vector: object, length: int, modulus: int) -> bool:
    """True when ``vector`` is a 1-D integer numpy array of ``length`` elements in ``[0, modulus)``."""
    if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.shape[0] != length:
        return False
    if vector.dtype.kind not in "ui":
        return False
    if length == 0:
        return True
    if vector.dtype.kind == "i" and int(vector.min()) < 0:
        return False
    return int(vector.max()) < modulus


def as_field_vector(vector: object, length: int, modulus: int, what: str = "vector") -> FieldVector:
    """Validate and convert to a fresh ``uint64`` array, raising ``ValueError`` naming the fault."""
    if not isinstance(vector, np.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.shape[0] != length:
        raise ValueError(f"{what} must be 1-D of length {length}, got shape {vector.shape}")
    if not is_field_vector(vector, length, modulus):
        raise ValueError(f"{what} must hold integers in [0, {modulus}), dtype {vector.dtype}")
    return vector.astype(np.uint64, copy=True)


def add(a: FieldVector, b: FieldVector, modulus: int) -> FieldVector:
    """(a + b) mod p, as a new array."""
    out = a + b
    np.subtract(out, modulus, out=out, where=out >= modulus)
    return out


def add_into(acc: FieldVector, b: FieldVector, modulus: int) -> None:
    """acc <- (acc + b) mod p, in place. Both operands must already be reduced."""
    np.add(acc, b.astype(np.uint64, copy=False), out=acc)
    np.subtract(acc, modulus, out=acc, where=acc >= modulus)


def subtract_into(acc: FieldVector, b: FieldVector, modulus: int) -> None:
    """acc <- (acc - b) mod p, in place. Both operands must already be reduced."""
    b = b.astype(np.uint64, copy=False)  # int64 would make numpy compute in float64
    under = acc < b
    np.subtract(acc, b, out=acc)
    np.add(acc, modulus, out=acc, where=under)


def negate(a: FieldVector, modulus: int) -> FieldVector:
    """(-a) mod p, as a new array."""
    out: FieldVector = np.subtract(np.uint64(modulus), a, dtype=np.uint64)
    out[out == modulus] = 0
    return out


def subtract(a: FieldVector, b: FieldVector, modulus: int) -> FieldVector:
    """(a - b) mod p, as a new array."""
    out = a.astype(np.uint64, copy=True)
    subtract_into(out, b, modulus)
    return out


def centered(a: FieldVector, modulus: int) -> npt.NDArray[np.int64]:
    """Lift to signed integers in (-p/2, p/2]: the two's-complement reading of a field sum."""
    signed = a.astype(np.int64)
    signed[a > modulus // 2] -= modulus
    return signed
