"""Mask PRG: a 32-byte seed expanded into a uniform vector over Z_p (DESIGN.md sections 3 and 6).

Construction (fixed: the known-answer vectors in ``tests/data/prg_kat.json`` pin it):

- keystream = AES-256-CTR(key = seed, initial counter block = 12-byte domain tag || 0x00000000),
  i.e. the encryption of zeros; the domain tag separates pairwise masks from self masks;
- the keystream is read as little-endian words of 4 bytes (p < 2**32) or 8 bytes (larger p);
- each word is reduced to the low ``bit_length(p)`` bits and kept only if it is ``< p``
  (rejection sampling: no modulo bias); the mask is the first ``m`` kept words.

For the supported primes (just below a power of two) a rejection happens with probability below
2**-8 per element at worst, and almost never for the default prime, so the fast path takes the
whole buffer as it is and only falls back to filtering when a rejected word occurs.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .field import FieldVector, bit_length

SEED_SIZE = 32
_COUNTER_BYTES = 4
_BLOCK = 16


class MaskDomain(Enum):
    """Which kind of mask a seed expands to; each has its own AES-CTR nonce (domain separation)."""

    PAIRWISE = "pairwise"
    SELF = "self"

    @property
    def nonce(self) -> bytes:
        """The 16-byte initial counter block: a 12-byte tag for the domain, counter 0."""
        tag = hashlib.sha256(b"secagg/prg/v1/" + self.value.encode()).digest()[:12]
        return tag + bytes(_COUNTER_BYTES)


def word_dtype(modulus: int) -> type[np.unsignedinteger]:
    """The keystream word type for a modulus: uint32 below 2**32, else uint64."""
    return np.uint32 if modulus <= 2**32 else np.uint64


class MaskGenerator:
    """Expands seeds into masks of one length and modulus, reusing its buffers.

    Not thread-safe: one generator per thread or process. ``expand`` returns a view into an
    internal buffer that the next call overwrites; copy it or consume it before calling again.
    """

    def __init__(self, length: int, modulus: int) -> None:
        if length < 1:
            raise ValueError(f"mask length must be >= 1, got {length}")
        self.length = length
        self.modulus = modulus
        self._dtype = word_dtype(modulus)
        self._word_bytes = np.dtype(self._dtype).itemsize
        self._bits = bit_length(modulus)
        self._low_mask = self._dtype((1 << self._bits) - 1)
        self._needs_mask = self._bits < 8 * self._word_bytes
        nbytes = length * self._word_bytes
        if nbytes // _BLOCK >= 2 ** (8 * _COUNTER_BYTES) - 1:
            raise ValueError(f"mask length {length} exceeds the AES-CTR counter space")
        self._zeros = bytes(nbytes)
        # update_into wants room for one extra block; the tail is never read.
        self._raw = bytearray(nbytes + _BLOCK - 1)
        self._words: npt.NDArray[np.unsignedinteger] = np.frombuffer(
            self._raw, dtype=self._dtype, count=length
        )
        self._out: FieldVector | None = None  # for expand(); the hot paths use expand_words

    def _fill(self, encryptor: object) -> None:
        encryptor.update_into(self._zeros, self._raw)  # type: ignore[attr-defined]
        if self._needs_mask:
            np.bitwise_and(self._words, self._low_mask, out=self._words)

    def expand_words(self, seed: bytes, domain: MaskDomain) -> npt.NDArray[np.unsignedinteger]:
        """The mask as keystream words (uint32 or uint64), all ``< p``; valid until the next call."""
        if len(seed) != SEED_SIZE:
            raise ValueError(f"PRG seed must be {SEED_SIZE} bytes, got {len(seed)}")
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(domain.nonce)).encryptor()
        self._fill(encryptor)
        words = self._words
        if int(words.max()) < self.modulus:
            return words
        # Slow path: drop rejected words and continue the same keystream until m are kept.
        kept = [words[words < self.modulus].copy()]
        have = kept[0].shape[0]
        while have < self.length:
            self._fill(encryptor)
            more = words[words < self.modulus]
            kept.append(more[: self.length - have].copy())
            have += kept[-1].shape[0]
        return np.concatenate(kept)[: self.length]

    def expand(self, seed: bytes, domain: MaskDomain) -> FieldVector:
        """The mask as a uint64 field vector; a view valid until the next call."""
        if self._out is None:
            self._out = np.empty(self.length, dtype=np.uint64)
        np.copyto(self._out, self.expand_words(seed, domain), casting="unsafe")
        return self._out


def expand_mask(seed: bytes, domain: MaskDomain, length: int, modulus: int) -> FieldVector:
    """One-off expansion into a fresh uint64 vector (convenience; hot paths keep a generator)."""
    mask: FieldVector = MaskGenerator(length, modulus).expand(seed, domain).copy()
    return mask
