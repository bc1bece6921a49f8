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


# -- decoding around wrong shares (Berlekamp-Welch) ---------------------------------------------


def _solve(rows: list[list[int]], unknowns: int) -> list[int] | None:
    """One solution of the linear system mod P (free variables 0); None if inconsistent.

    Each row holds ``unknowns`` coefficients and then the right-hand side."""
    pivots: list[int] = []
    r = 0
    for col in range(unknowns):
        pivot = next((i for i in range(r, len(rows)) if rows[i][col]), None)
        if pivot is None:
            continue
        rows[r], rows[pivot] = rows[pivot], rows[r]
        inverse = pow(rows[r][col], -1, PRIME)
        rows[r] = [v * inverse % PRIME for v in rows[r]]
        for i in range(len(rows)):
            if i != r and rows[i][col]:
                factor = rows[i][col]
                rows[i] = [(a - factor * b) % PRIME for a, b in zip(rows[i], rows[r], strict=True)]
        pivots.append(col)
        r += 1
    if any(row[unknowns] for row in rows[r:]):
        return None
    solution = [0] * unknowns
    for i, col in enumerate(pivots):
        solution[col] = rows[i][unknowns]
    return solution


def _divide(numerator: list[int], monic: list[int]) -> tuple[list[int], bool]:
    """numerator / monic (coefficients lowest first); the quotient and whether it divides exactly."""
    remainder = numerator[:]
    degree = len(monic) - 1
    quotient = [0] * max(1, len(numerator) - degree)
    for i in range(len(numerator) - 1, degree - 1, -1):
        coefficient = remainder[i]
        if coefficient:
            quotient[i - degree] = coefficient
            for j in range(degree + 1):
                remainder[i - degree + j] = (remainder[i - degree + j] - coefficient * monic[j]) % PRIME
    return quotient, not any(remainder[:degree])


def _evaluate(coefficients: list[int], x: int) -> int:
    y = 0
    for c in reversed(coefficients):
        y = (y * x + c) % PRIME
    return y


def decode_with_errors(
    shares: Mapping[int, bytes], threshold: int, max_errors: int
) -> tuple[bytes, frozenset[int]] | None:
    """The secret of a degree < t polynomial from shares of which at most ``max_errors`` are wrong.

    Berlekamp-Welch: find Q of degree < t + e and a monic E of degree e with Q(x) = y E(x) at
    every share; then f = Q / E. Needs ``len(shares) >= threshold + 2 * max_errors``. Returns the
    secret and the holders whose share disagrees with f, or None when no such f exists.
    """
    decoded = decode_polynomial(shares, threshold, max_errors)
    if decoded is None:
        return None
    f, wrong = decoded
    return encode_element(f[0] % PRIME), wrong


def share_agrees(coefficients: list[int], holder: int, share: bytes) -> bool:
    """True when ``share`` is the polynomial's value at ``holder``."""
    return _evaluate(coefficients, holder) == decode_element(share)


def decode_polynomial(
    shares: Mapping[int, bytes], threshold: int, max_errors: int
) -> tuple[list[int], frozenset[int]] | None:
    """``decode_with_errors``, returning the polynomial's coefficients (lowest first) instead of
    its secret, so a caller can check shares the decoder did not use."""
    e = max_errors
    if e < 0 or len(shares) < threshold + 2 * e:
        raise ValueError(f"{len(shares)} shares cannot correct {e} errors at threshold {threshold}")
    points = [(x, decode_element(shares[x])) for x in sorted(shares)]
    unknowns = threshold + 2 * e
    rows = []
    for x, y in points:
        powers = [pow(x, j, PRIME) for j in range(threshold + e + 1)]
        row = powers[: threshold + e] + [(-y * powers[j]) % PRIME for j in range(e)]
        rows.append([*row, y * powers[e] % PRIME])
    solution = _solve(rows, unknowns)
    if solution is None:
        return None
    q, locator = solution[: threshold + e], [*solution[threshold + e :], 1]
    f, exact = _divide(q, locator)
    if not exact or (len(f) > threshold and any(f[threshold:])):
        return None
    wrong = frozenset(x for x, y in points if _evaluate(f, x) != y)
    if len(wrong) > e:
        return None
    return f[:threshold], wrong
