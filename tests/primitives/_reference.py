"""Independent reference implementations the tests compare ``secagg`` against.

Nothing here imports ``secagg``: each function re-derives a building block from its published
definition (RFC 7748 X25519, RFC 5869 HKDF, AES-CTR as AES-ECB over counter blocks, the PRG rule
of ``secagg/primitives/prg.py``'s docstring, Miller-Rabin), so a bug in the library cannot hide
behind the same bug in the test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DATA = Path(__file__).resolve().parents[1] / "data"


def load_kat(name: str) -> Any:
    """A known-answer file from ``tests/data``."""
    return json.loads((DATA / name).read_text())


# ---------------------------------------------------------------------------------------------
# Primality


_SMALL_PRIMES = (
    2,
    3,
    5,
    7,
    11,
    13,
    17,
    19,
    23,
    29,
    31,
    37,
    41,
    43,
    47,
    53,
    59,
    61,
    67,
    71,
    73,
    79,
    83,
    89,
    97,
)


def is_prime(n: int) -> bool:
    """Miller-Rabin. Deterministic for n < 3.3 * 10**24 (bases 2..41 suffice, Sorenson and
    Webster 2015), in particular for every n < 2**64; above that a probable-prime test with the
    25 bases up to 97 (error below 4**-25 for an adversarial n, far less for these n)."""
    if n < 2:
        return False
    for q in _SMALL_PRIMES:
        if n % q == 0:
            return n == q
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _SMALL_PRIMES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# X25519 (RFC 7748, section 5), in pure Python

P25519 = 2**255 - 19
A24 = 121665
A_MONT = 486662


def decode_u(data: bytes) -> int:
    """RFC 7748 decodeUCoordinate: little-endian, the top bit masked (not reduced mod p)."""
    assert len(data) == 32
    return int.from_bytes(data, "little") & ((1 << 255) - 1)


def ladder(scalar: int, u: int, bits: int = 255) -> tuple[int, int]:
    """The x-only Montgomery ladder: projective (X:Z) of [scalar]P for x(P) = u."""
    x1 = u % P25519
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in reversed(range(bits)):
        bit = (scalar >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a = (x2 + z2) % P25519
        aa = a * a % P25519
        b = (x2 - z2) % P25519
        bb = b * b % P25519
        e = (aa - bb) % P25519
        c = (x3 + z3) % P25519
        d = (x3 - z3) % P25519
        da = d * a % P25519
        cb = c * b % P25519
        x3 = (da + cb) ** 2 % P25519
        z3 = x1 * (da - cb) ** 2 % P25519
        x2 = aa * bb % P25519
        z2 = e * (aa + A24 * e) % P25519
    if swap:
        x2, x3, z2, z3 = x3, x2, z3, z2
    return x2, z2


def x25519(private: bytes, public: bytes) -> bytes:
    """X25519(k, u) with RFC 7748 clamping; an all-zero result means a small-order u."""
    k = bytearray(private)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    x, z = ladder(int.from_bytes(k, "little"), decode_u(public))
    return (x * pow(z, P25519 - 2, P25519) % P25519).to_bytes(32, "little")


X25519_BASE = (9).to_bytes(32, "little")


# Polynomials over GF(2**255 - 19), coefficient lists from the constant term up.


def _trim(a: list[int]) -> list[int]:
    while a and a[-1] == 0:
        a.pop()
    return a


def _polymod(a: list[int], f: list[int]) -> list[int]:
    a = _trim([c % P25519 for c in a])
    inv_lead = pow(f[-1], -1, P25519)
    while len(a) >= len(f):
        q = a[-1] * inv_lead % P25519
        shift = len(a) - len(f)
        for i, c in enumerate(f):
            a[shift + i] = (a[shift + i] - q * c) % P25519
        _trim(a)
    return a


def _polymulmod(a: list[int], b: list[int], f: list[int]) -> list[int]:
    out = [0] * (len(a) + len(b))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return _polymod(out, f)


def _polygcd(a: list[int], b: list[int]) -> list[int]:
    a, b = _trim(list(a)), _trim(list(b))
    while b:
        a, b = b, _polymod(a, b)
    return a


def count_roots(f: list[int]) -> int:
    """The number of distinct roots of ``f`` in GF(p): deg gcd(x**p - x, f)."""
    power, base, e = [1], [0, 1], P25519
    while e:
        if e & 1:
            power = _polymulmod(power, base, f)
        base = _polymulmod(base, base, f)
        e >>= 1
    x_p_minus_x = power + [0] * max(0, 2 - len(power))
    x_p_minus_x[1] -= 1
    return len(_polygcd(f, x_p_minus_x)) - 1


def poly_eval(f: list[int], x: int) -> int:
    return sum(c * pow(x, i, P25519) for i, c in enumerate(f)) % P25519


# ---------------------------------------------------------------------------------------------
# HKDF-SHA256 (RFC 5869) from HMAC


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


# ---------------------------------------------------------------------------------------------
# The mask PRG, from its documented rule, on AES-256-ECB over explicit counter blocks


def prg_nonce(domain_value: str) -> bytes:
    """The documented initial counter block: SHA-256("secagg/prg/v1/" || domain)[:12] || 0**4."""
    return hashlib.sha256(b"secagg/prg/v1/" + domain_value.encode()).digest()[:12] + bytes(4)


def aes_ctr_keystream(key: bytes, initial_block: bytes, nbytes: int) -> bytes:
    """AES-CTR keystream as AES-ECB of the 128-bit big-endian counters initial, initial+1, ..."""
    start = int.from_bytes(initial_block, "big")
    nblocks = -(-nbytes // 16)
    counters = b"".join(((start + i) % 2**128).to_bytes(16, "big") for i in range(nblocks))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return (ecb.update(counters) + ecb.finalize())[:nbytes]


def prg_word_bytes(modulus: int) -> int:
    return 4 if modulus <= 2**32 else 8


def raw_masked_words(seed: bytes, domain_value: str, modulus: int, count: int) -> np.ndarray:
    """The first ``count`` keystream words, little-endian, reduced to the low bit_length(p) bits."""
    width = prg_word_bytes(modulus)
    stream = aes_ctr_keystream(seed, prg_nonce(domain_value), count * width)
    words = np.frombuffer(stream, dtype="<u4" if width == 4 else "<u8").astype(np.uint64)
    bits = (modulus - 1).bit_length()
    return words & np.uint64((1 << bits) - 1)


def prg_reference(seed: bytes, domain_value: str, modulus: int, length: int) -> np.ndarray:
    """The mask: the first ``length`` masked words that are below p (rejection sampling)."""
    count = length + 64
    while True:
        words = raw_masked_words(seed, domain_value, modulus, count)
        kept = words[words < np.uint64(modulus)]
        if kept.shape[0] >= length:
            return kept[:length]
        count *= 2


# ---------------------------------------------------------------------------------------------
# Shamir over GF(2**256 - 189), and the session-derived permutation

SHAMIR_PRIME = 2**256 - 189


def poly_eval_mod(coefficients: list[int], x: int, prime: int) -> int:
    """sum c_i x**i mod prime, term by term (not Horner, unlike the library)."""
    return sum(c * pow(x, i, prime) for i, c in enumerate(coefficients)) % prime


def lagrange_interpolate_at_zero(points: dict[int, int], prime: int) -> int:
    """f(0) by textbook Lagrange with one modular inverse per term."""
    total = 0
    for xi, yi in points.items():
        num, den = 1, 1
        for xj in points:
            if xj != xi:
                num = num * (-xj) % prime
                den = den * (xi - xj) % prime
        total += yi * num * pow(den, -1, prime)
    return total % prime


def permutation_reference(num_clients: int, session_id: bytes) -> list[int]:
    """Fisher-Yates over 1..n with draws from AES-256-CTR(SHA-256(tag || session id), IV 0):
    8-byte big-endian words, rejection below the largest multiple of the bound."""
    key = hashlib.sha256(b"secagg/graph/v1/permutation" + session_id).digest()
    stream = aes_ctr_keystream(key, bytes(16), 8 * 64 * num_clients)
    position = 0

    def below(bound: int) -> int:
        nonlocal position
        limit = 2**64 - 2**64 % bound
        while True:
            value = int.from_bytes(stream[position : position + 8], "big")
            position += 8
            if value < limit:
                return value % bound

    order = list(range(1, num_clients + 1))
    for i in range(num_clients - 1, 0, -1):
        j = below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order
