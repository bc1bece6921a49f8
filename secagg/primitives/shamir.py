"""Shamir t-of-n secret sharing of 32-byte secrets over GF(P), P = 2**256 - 189.

Secrets and shares are 32-byte big-endian integers below P; a secret to be shared is drawn below P
(``random_secret``), so no chunking is needed. The share held by client ``x`` is f(x) for a random
polynomial f of degree t-1 with f(0) = secret (Shamir 1979). Any t shares reconstruct; fewer reveal
nothing. Lagrange coefficients at 0 depend only on the set of holders, so they are cached per set:
with the complete graph every secret a server reconstructs shares the same holder set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

PRIME = 2**256 - 189
SECRET_SIZE = 32
SHARE_SIZE = 32

RandomBytes = Callable[[int], bytes]


def _random_element(random_bytes: RandomBytes) -> int:
    while True:  # rejection sampling; a redraw happens with probability 189 / 2**256
        value = int.from_bytes(random_bytes(SECRET_SIZE), "big")
        if value < PRIME:
            return value


def random_secret(random_bytes: RandomBytes) -> bytes:
    """32 uniformly random bytes that, read big-endian, are below P (so they can be shared)."""
    return _random_element(random_bytes).to_bytes(SECRET_SIZE, "big")


def decode_element(data: bytes) -> int:
    """A 32-byte big-endian field element; ``ValueError`` if malformed or not below P."""
    if not isinstance(data, bytes) or len(data) != SHARE_SIZE:
        raise ValueError(f"a share or secret must be {SHARE_SIZE} bytes")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("a share or secret must be below the Shamir prime")
    return value


def encode_element(value: int) -> bytes:
    """The 32-byte big-endian encoding of a field element."""
    return value.to_bytes(SHARE_SIZE, "big")


def share(
    secret: bytes, threshold: int, holders: Iterable[int], random_bytes: RandomBytes
) -> dict[int, bytes]:
    """Split ``secret`` into one share per holder id (ids are the x-coordinates, 1 <= id < P)."""
    xs = sorted(set(holders))
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be in [1, {len(xs)}] (the number of holders)")
    if xs and (xs[0] < 1 or xs[-1] >= PRIME):
        raise ValueError("holder ids must be in [1, P)")
    coefficients = [decode_element(secret)]
    coefficients += [_random_element(random_bytes) for _ in range(threshold - 1)]
    top = coefficients[::-1]
    shares = {}
    for x in xs:
        y = 0
        for c in top:  # Horner's rule
            y = (y * x + c) % PRIME
        shares[x] = encode_element(y)
    return shares


@lru_cache(maxsize=256)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients l_i with f(0) = sum l_i f(x_i) for any f of degree < len(xs). Cached per set."""
    if len(set(xs)) != len(xs):
        raise ValueError("holder ids must be distinct")
    numerators = []
    denominators = []
    for i, xi in enumerate(xs):
        num = 1
        den = 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        numerators.append(num)
        denominators.append(den)
    # One modular inversion for all denominators (Montgomery's batch-inversion trick).
    prefix = [1]
    for d in denominators:
        prefix.append(prefix[-1] * d % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    coefficients = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        coefficients[i] = numerators[i] * inverse * prefix[i] % PRIME
        inverse = inverse * denominators[i] % PRIME
    return tuple(coefficients)


def reconstruct(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (the ``threshold`` lowest holder ids are used).

    Raises ``ValueError`` with fewer shares or a malformed share. With wrong shares the result is
    a wrong secret, not an error: callers check it where they can (e.g. against a public key).
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares to reconstruct, got {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    coefficients = lagrange_at_zero(xs)
    total = 0
    for x, coefficient in zip(xs, coefficients, strict=True):
        total += coefficient * decode_element(shares[x])
    return encode_element(total % PRIME)
