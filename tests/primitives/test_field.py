"""secagg.primitives.field: the supported primes, arithmetic against Python integers, validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.primitives import field
from secagg.primitives.field import DEFAULT_MODULUS, SUPPORTED_PRIMES

from ._reference import is_prime


def test_supported_primes_are_the_largest_primes_below_2_to_the_k_for_k_16_to_62() -> None:
    assert len(SUPPORTED_PRIMES) == 62 - 16 + 1
    assert list(SUPPORTED_PRIMES) == sorted(SUPPORTED_PRIMES)
    for k, p in zip(range(16, 63), SUPPORTED_PRIMES, strict=True):
        assert 2 ** (k - 1) < p < 2**k, (k, p)
        assert is_prime(p), f"2**{k} - {2**k - p} is not prime"
        composites = [q for q in range(p + 1, 2**k) if is_prime(q)]
        assert composites == [], f"{composites} are primes above 2**{k} - {2**k - p}"
        # two reduced elements can be added in uint64 without overflow
        assert 2 * (p - 1) < 2**64


def test_miller_rabin_reference_is_sound() -> None:
    """The primality test above would catch a wrong table: it rejects the strong pseudoprimes
    to small bases and agrees with trial division on small numbers."""
    assert not is_prime(3215031751)  # strong pseudoprime to bases 2, 3, 5, 7
    assert not is_prime(3825123056546413051)  # strong pseudoprime to bases 2..23
    assert not is_prime(2**61 + 1) and is_prime(2**61 - 1) and is_prime(2**31 - 1)
    small = [n for n in range(2, 2000) if all(n % d for d in range(2, int(n**0.5) + 1))]
    assert [n for n in range(2000) if is_prime(n)] == small


def test_default_modulus() -> None:
    assert DEFAULT_MODULUS == 2**32 - 5
    assert DEFAULT_MODULUS in SUPPORTED_PRIMES
    assert field.check_modulus(DEFAULT_MODULUS) == DEFAULT_MODULUS


@pytest.mark.parametrize("bad", [7, 2**31, 2**32 - 6, 2**64 - 59, 2**63 - 25, 0, -(2**32 - 5)])
def test_check_modulus_rejects_unsupported(bad: int) -> None:
    with pytest.raises(ValueError, match=str(bad)):
        field.check_modulus(bad)


def test_smallest_prime_above() -> None:
    assert field.smallest_prime_above(0) == SUPPORTED_PRIMES[0] == 2**16 - 15
    for lower, upper in itertools.pairwise(SUPPORTED_PRIMES):
        assert field.smallest_prime_above(lower - 1) == lower
        assert field.smallest_prime_above(lower) == upper  # strictly greater
        assert field.smallest_prime_above((lower + upper) // 2) == upper
    assert field.smallest_prime_above(SUPPORTED_PRIMES[-1] - 1) == SUPPORTED_PRIMES[-1]
    with pytest.raises(ValueError, match=str(SUPPORTED_PRIMES[-1])):
        field.smallest_prime_above(SUPPORTED_PRIMES[-1])


def test_bit_length() -> None:
    for k, p in zip(range(16, 63), SUPPORTED_PRIMES, strict=True):
        assert field.bit_length(p) == k
        assert (p - 1) < 2 ** field.bit_length(p)


@st.composite
def operands(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    p = draw(st.sampled_from(SUPPORTED_PRIMES))
    element = st.one_of(st.sampled_from([0, 1, p - 1, p - 2, p // 2, p // 2 + 1]), st.integers(0, p - 1))
    n = draw(st.integers(0, 12))
    return p, draw(st.lists(element, min_size=n, max_size=n)), draw(st.lists(element, min_size=n, max_size=n))


def _arr(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


@settings(max_examples=300, deadline=None)
@given(operands())
def test_arithmetic_agrees_with_python_integers(ops: tuple[int, list[int], list[int]]) -> None:
    p, a, b = ops
    x, y = _arr(a), _arr(b)
    assert field.add(x, y, p).tolist() == [(i + j) % p for i, j in zip(a, b, strict=True)]
    assert field.subtract(x, y, p).tolist() == [(i - j) % p for i, j in zip(a, b, strict=True)]
    assert field.negate(x, p).tolist() == [(-i) % p for i in a]
    centered = field.centered(x, p)
    assert centered.dtype == np.int64
    assert centered.tolist() == [i - p if i > p // 2 else i for i in a]
    assert all(-p < 2 * c <= p and (c - i) % p == 0 for c, i in zip(centered.tolist(), a, strict=True))
    acc = x.copy()
    field.add_into(acc, y, p)
    assert acc.tolist() == [(i + j) % p for i, j in zip(a, b, strict=True)]
    field.subtract_into(acc, y, p)
    assert acc.tolist() == a
    # the operands are not modified by the functions that return a new array
    assert x.tolist() == a and y.tolist() == b


def test_zeros() -> None:
    z = field.zeros(5)
    assert z.dtype == np.uint64 and z.tolist() == [0] * 5


P = DEFAULT_MODULUS


@pytest.mark.parametrize(
    ("value", "length", "message"),
    [
        (np.zeros(4, dtype=np.uint64), 5, "length 5"),
        (np.array([0, -1, 2], dtype=np.int64), 3, r"\[0, 4294967291\)"),
        (np.array([0, P, 2], dtype=np.uint64), 3, r"\[0, 4294967291\)"),
        (np.array([0, 2**64 - 1], dtype=np.uint64), 2, r"\[0, 4294967291\)"),
        (np.array([0.0, 1.0, 2.0]), 3, "float64"),
        (np.array([True, False]), 2, "bool"),
        (np.array([1, 2], dtype=object), 2, "object"),
        (np.zeros((2, 3), dtype=np.uint64), 6, r"\(2, 3\)"),
        (np.zeros((2, 3), dtype=np.uint64), 2, r"\(2, 3\)"),
        ([0, 1, 2], 3, "numpy array"),
        (np.uint64(3), 1, "numpy array"),
    ],
    ids=[
        "short",
        "negative",
        "equal-p",
        "u64-max",
        "float",
        "bool",
        "object",
        "2d",
        "2d-rows",
        "list",
        "scalar",
    ],
)
def test_as_field_vector_rejects(value: object, length: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        field.as_field_vector(value, length, P, what="update")
    assert not field.is_field_vector(value, length, P)


def test_as_field_vector_error_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^masked input must"):
        field.as_field_vector(np.zeros(3, dtype=np.uint64), 4, P, what="masked input")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64, np.int32, np.int64])
def test_as_field_vector_accepts_integer_dtypes_and_copies(dtype: type) -> None:
    source = np.array([0, 1, 100], dtype=dtype)
    out = field.as_field_vector(source, 3, P)
    assert out.dtype == np.uint64 and out.tolist() == [0, 1, 100]
    out[0] = 7
    assert source[0] == 0  # a fresh array, not a view of the caller's data


def test_as_field_vector_accepts_the_boundary_and_empty() -> None:
    assert field.as_field_vector(np.array([P - 1], dtype=np.uint64), 1, P).tolist() == [P - 1]
    assert field.as_field_vector(np.zeros(0, dtype=np.uint64), 0, P).shape == (0,)
