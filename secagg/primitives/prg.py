"""Mask PRG: a 32-byte seed expanded into a uniform vector over Z_p (DESIGN.md sections 3 and 6).

Construction (fixed: the known-answer vectors in ``tests/data/prg_kat.json`` pin it):

- keystream = AES-256-CTR(key = seed, initial counter block = 12-byte domain tag || 0x00000000),
  i.e. the encryption of zeros; the domain tag separates pairwise masks from self masks;
- the keystream is read as little-endian words of 4 bytes (p < 2**32) or 8 bytes (larger p);
- each word is reduced to the low ``bit_length(p)`` bits and kept only if it is ``< p``
  (rejection sampling: no modulo bias); the mask is the first ``m`` kept words.

For the supported primes (just below a power of two) a rejection happens with probability below
2**-8 per element at worst, and almost never for the default prime, so the fast path takes the
whole buffer as it is (one max() decides) and only filters when a rejected word occurs.
``MaskReader`` reads a mask in blocks, continuing the same counter, so the words are those of
one expansion whatever the block size.
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
        return _NONCES[self.value]


def _domain_nonce(value: str) -> bytes:
    tag = hashlib.sha256(b"secagg/prg/v1/" + value.encode()).digest()[:12]
    return tag + bytes(_COUNTER_BYTES)


_NONCES = {domain.value: _domain_nonce(domain.value) for domain in MaskDomain}  # hashed once, not per mask


_zeros = bytes(0)


def _zero_bytes(nbytes: int) -> memoryview:
    """``nbytes`` zero bytes, the AES-CTR plaintext, from one shared immutable buffer.

    Kept across calls (it never changes, so sharing is safe): a fresh ``bytes(n)`` per call
    would write every page again.
    """
    global _zeros
    zeros = _zeros
    if len(zeros) < nbytes:
        zeros = _zeros = bytes(max(nbytes, 2 * len(zeros)))
    return memoryview(zeros)[:nbytes]


def word_dtype(modulus: int) -> type[np.unsignedinteger]:
    """The keystream word type for a modulus: uint32 below 2**32, else uint64."""
    return np.uint32 if modulus <= 2**32 else np.uint64


class MaskReader:
    """Reads masks block by block: one AES-CTR encryptor per mask, its counter continuing.

    ``open`` starts a mask's keystream; each ``read(stream, count)`` returns the mask's next
    ``count`` words (all ``< p``), so a caller can walk a long vector in cache-sized blocks with
    several masks open at once. Reading a mask in blocks gives exactly the words of one expansion:
    rejected words are dropped and the block is topped up from the same keystream.

    Not thread-safe; ``read`` returns a view into an internal buffer that the next read overwrites.
    """

    def __init__(self, block_words: int, modulus: int, buffer: npt.NDArray[np.uint8] | None = None) -> None:
        """``buffer``: optional uint8 work space of at least ``buffer_bytes(block_words, p)``
        bytes to read into (a caller reusing it across calls saves touching fresh pages)."""
        if block_words < 1:
            raise ValueError(f"block length must be >= 1, got {block_words}")
        self.block_words = block_words
        self.modulus = modulus
        self._dtype = word_dtype(modulus)
        self._word_bytes = np.dtype(self._dtype).itemsize
        bits = bit_length(modulus)
        self._low_mask = self._dtype((1 << bits) - 1) if bits < 8 * self._word_bytes else None
        self._limit = self._dtype(modulus)
        self._zeros = _zero_bytes(block_words * self._word_bytes)
        # update_into wants room for one extra AES block; a numpy buffer is 8-byte aligned, so
        # callers may view pairs of uint32 words as uint64.
        size = self.buffer_bytes(block_words, modulus)
        if buffer is None:
            buffer = np.empty(size, dtype=np.uint8)
        elif buffer.dtype != np.uint8 or buffer.ndim != 1 or buffer.shape[0] < size:
            raise ValueError(f"the read buffer must be a 1-D uint8 array of at least {size} bytes")
        self._raw = buffer[:size]
        self._words: npt.NDArray[np.unsignedinteger] = self._raw[: block_words * self._word_bytes].view(
            self._dtype
        )

    @staticmethod
    def buffer_bytes(block_words: int, modulus: int) -> int:
        """Bytes of work space a reader of ``block_words`` words needs."""
        return block_words * np.dtype(word_dtype(modulus)).itemsize + _BLOCK - 1

    @staticmethod
    def open(seed: bytes, domain: MaskDomain) -> object:
        """A fresh keystream for PRG(seed) in ``domain`` (an AES-256-CTR encryptor)."""
        if len(seed) != SEED_SIZE:
            raise ValueError(f"PRG seed must be {SEED_SIZE} bytes, got {len(seed)}")
        return Cipher(algorithms.AES(seed), modes.CTR(domain.nonce)).encryptor()

    def read(self, stream: object, count: int) -> npt.NDArray[np.unsignedinteger]:
        """The next ``count`` mask words of ``stream`` (``count <= block_words``), all ``< p``."""
        if not 0 < count <= self.block_words:
            raise ValueError(f"can read 1..{self.block_words} words at a time, asked for {count}")
        nbytes = count * self._word_bytes
        stream.update_into(self._zeros[:nbytes], self._raw)  # type: ignore[attr-defined]
        words = self._words[:count]
        if self._low_mask is not None:
            np.bitwise_and(words, self._low_mask, out=words)
        if words.max() < self._limit:  # the rejection check: one reduction, no copy
            return words
        return self._top_up(stream, words)

    def _top_up(
        self, stream: object, words: npt.NDArray[np.unsignedinteger]
    ) -> npt.NDArray[np.unsignedinteger]:
        # Slow path (rare): keep the words < p and read exactly as many more as were dropped.
        count = words.shape[0]
        kept = words[words < self._limit]
        have = kept.shape[0]
        words[:have] = kept
        while have < count:
            more = np.frombuffer(stream.update(bytes((count - have) * self._word_bytes)), dtype=self._dtype)  # type: ignore[attr-defined]
            if self._low_mask is not None:
                more = more & self._low_mask
            more = more[more < self._limit]
            words[have : have + more.shape[0]] = more
            have += more.shape[0]
        return words


class MaskGenerator:
    """Expands seeds into whole masks of one length and modulus, reusing its buffers.

    Not thread-safe: one generator per thread or process. ``expand`` returns a view into an
    internal buffer that the next call overwrites; copy it or consume it before calling again.
    (The hot path, ``secagg.masking.apply_masks``, reads masks in blocks with ``MaskReader``.)
    """

    def __init__(self, length: int, modulus: int) -> None:
        if length < 1:
            raise ValueError(f"mask length must be >= 1, got {length}")
        word_bytes = np.dtype(word_dtype(modulus)).itemsize
        if length * word_bytes // _BLOCK >= 2 ** (8 * _COUNTER_BYTES) - 1:
            raise ValueError(f"mask length {length} exceeds the AES-CTR counter space")
        self.length = length
        self.modulus = modulus
        self._reader = MaskReader(length, modulus)
        self._out: FieldVector | None = None  # for expand()

    def expand_words(self, seed: bytes, domain: MaskDomain) -> npt.NDArray[np.unsignedinteger]:
        """The mask as keystream words (uint32 or uint64), all ``< p``; valid until the next call."""
        return self._reader.read(self._reader.open(seed, domain), self.length)

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
