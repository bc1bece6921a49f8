"""Masks as keys to add and keys to subtract, one function for client and server.

Client u in U3 sent (Bonawitz et al. 2017, Fig. 4, round 2)

    y_u = x_u + PRG(b_u) + sum over neighbours v in U2 of sign(u, v) * PRG(s_uv)   (mod p)

with sign(u, v) = +1 if u > v else -1, so the masks of two neighbours that both reach U3 cancel.
The server removes PRG(b_u) for u in U3 and, for each v in U2 minus U3, the leftover terms
sign(u, v) * PRG(s_uv) of v's neighbours u in U3.

``apply_masks`` adds or subtracts a list of masks (``MaskTerm``) into a vector: the client uses it
to mask its input, the server (``secagg.unmasking``) to take the leftover masks out.
``FieldAccumulator`` is the server's streaming sum of masked inputs with lazy reduction: it
reduces only when another term could overflow (never, for p < 2**32 and fewer than 2**32 terms),
so each masked input costs one numpy add.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .primitives.field import FieldVector
from .primitives.prg import MaskDomain, MaskReader

_U64_MAX = (1 << 64) - 1


def _unsigned(vector: npt.NDArray[np.integer]) -> npt.NDArray[np.unsignedinteger]:
    # numpy adds uint64 and int64 through float64, which rounds values above 2**53.
    return vector.astype(np.uint64) if vector.dtype.kind == "i" else vector  # type: ignore[return-value]


def pairwise_sign(own_id: int, other_id: int) -> int:
    """+1 if ``own_id`` adds PRG(s_uv) for ``other_id``, -1 if it subtracts it."""
    if own_id == other_id:
        raise ValueError("a client has no pairwise mask with itself")
    return 1 if own_id > other_id else -1


class FieldAccumulator:
    """A running sum of field vectors (and their negatives) in O(m) memory."""

    def __init__(self, length: int, modulus: int) -> None:
        self.length = length
        self.modulus = modulus
        self._plus = np.zeros(length, dtype=np.uint64)
        self._minus: FieldVector | None = None  # allocated on the first subtraction
        # Each operand is < p, so the accumulator may hold this many terms before overflow.
        self._budget = _U64_MAX // (modulus - 1)
        self._plus_terms = 0
        self._minus_terms = 0

    def add(self, vector: npt.NDArray[np.unsignedinteger]) -> None:
        """acc += vector; every element of ``vector`` must be in [0, p)."""
        vector = _unsigned(vector)
        if self._plus_terms + 1 > self._budget:
            np.remainder(self._plus, self.modulus, out=self._plus)
            self._plus_terms = 1
        np.add(self._plus, vector, out=self._plus, casting="unsafe")
        self._plus_terms += 1

    def subtract(self, vector: npt.NDArray[np.unsignedinteger]) -> None:
        """acc -= vector; every element of ``vector`` must be in [0, p)."""
        vector = _unsigned(vector)
        if self._minus is None:
            self._minus = np.zeros(self.length, dtype=np.uint64)
        if self._minus_terms + 1 > self._budget:
            np.remainder(self._minus, self.modulus, out=self._minus)
            self._minus_terms = 1
        np.add(self._minus, vector, out=self._minus, casting="unsafe")
        self._minus_terms += 1

    def add_signed(self, vector: npt.NDArray[np.unsignedinteger], sign: int) -> None:
        """acc += sign * vector, sign in {+1, -1}."""
        if sign > 0:
            self.add(vector)
        else:
            self.subtract(vector)

    def value(self) -> FieldVector:
        """The sum reduced into [0, p), as a new array."""
        p = np.uint64(self.modulus)
        out: FieldVector = np.remainder(self._plus, p)
        if self._minus is not None:
            minus = np.remainder(self._minus, p)
            under = out < minus
            np.subtract(out, minus, out=out)
            np.add(out, p, out=out, where=under)
        return out


# -- multi-mask application (the hot path of both client and server) ----------------------------


class MaskTerm(NamedTuple):
    """One mask to add (sign +1) or subtract (sign -1): PRG(seed) in the given domain."""

    seed: bytes
    domain: MaskDomain
    sign: int


BLOCK_WORDS = 65_536
"""Elements per block, measured at m = 10^7 (21 masks, CPU time per mask, 2**32-5 / 2**26-5):
8,192: 13.3 / 11.8 ms; 32,768: 9.4-10.4 / 9.1-9.4 ms; 65,536: 9.3-9.5 / 8.5-8.7 ms; 262,144:
10.3 / 9.8 ms. Smaller blocks pay Python's per-call cost, larger ones leave L2."""

ONE_BLOCK_MAX = 131_072
"""Vectors up to this length are done as one block (fewer calls; their data stays in L2/L3)."""

OPEN_STREAMS = 512
"""Masks open (one AES-CTR encryptor each) at once; more terms are done in chunks of this size."""

LANE_MIN_GROUP = 2
"""The lane kernel needs room for two words per 32-bit lane; p above 2**31 uses the split kernel."""

_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def lane_group_size(modulus: int) -> int:
    """How many 32-bit mask words can be summed in one 32-bit lane without a carry out of it."""
    if modulus > 2**32 or sys.byteorder != "little":
        return 1
    return (2**32 - 1) // (modulus - 1)


def reduce_into(x: npt.NDArray[np.uint64], modulus: int, scratch: npt.NDArray[np.uint64]) -> None:
    """x <- x mod p in place, for any uint64 x; ``scratch`` is a buffer of x's shape.

    x - (x // p) * p: numpy divides by a scalar with a multiply and a shift (libdivide), about
    4x faster than ``np.remainder`` (measured: 21 + 2 x 8 us against 185 us for 100,000 words).
    """
    p = np.uint64(modulus)
    np.floor_divide(x, p, out=scratch)
    np.multiply(scratch, p, out=scratch)
    np.subtract(x, scratch, out=x)


def apply_masks(acc: FieldVector, terms: Sequence[MaskTerm], modulus: int) -> None:
    """acc <- (acc + sum of sign * PRG(seed)) mod p, in place; ``acc`` must hold values < p.

    The one masking kernel of client and server ("keys to add and keys to subtract"). The vector
    is walked in blocks of ``BLOCK_WORDS`` with every mask's AES-CTR encryptor kept open across
    blocks (``MaskReader``), so one block of keystream and the block's accumulators stay in L2
    while all masks are added into it; each block is reduced mod p once. Per mask and block:
    one AES-CTR call, one max() (the rejection check), and the kernel's adds:

    - p <= 2**31 (``_add_in_lanes``): two mask words summed per uint64 add (a 32-bit lane holds
      ``lane_group_size(p)`` words without carrying), split into even/odd sums once per group;
    - p = 2**32 - 5 (``_add_split``): the pairs are summed as uint64 (carries cross lanes) and
      their high words separately; the low lanes' exact sum is recovered as S - 2**32 T;
    - p > 2**32 (``_add_wide``): uint64 words added with lazy reduction.
    """
    length = acc.shape[0]
    if length == 0 or not terms:
        return
    block = length if length <= ONE_BLOCK_MAX else BLOCK_WORDS
    if modulus > 2**32:
        kernel, chunk = _add_wide, min(OPEN_STREAMS, max(1, _U64_MAX // modulus - 2))
    elif lane_group_size(modulus) >= LANE_MIN_GROUP:
        kernel, chunk = _add_in_lanes, OPEN_STREAMS
    else:
        kernel, chunk = _add_split, OPEN_STREAMS
    scratch = _checkout(block)
    try:
        reader = MaskReader(block, modulus, scratch.bytes("words", MaskReader.buffer_bytes(block, modulus)))
        for first in range(0, len(terms), chunk):
            part = terms[first : first + chunk]
            streams = [(reader.open(t.seed, t.domain), 1 if t.sign > 0 else -1) for t in part]
            for start in range(0, length, block):
                kernel(acc[start : start + block], streams, reader, modulus, scratch)
    finally:
        _check_in(scratch)


_Streams = Sequence[tuple[object, int]]


class _Scratch:
    """Block-sized work buffers, grown on first use and kept for the next call (``_checkout``)."""

    def __init__(self, block: int) -> None:
        self.block = block
        self._buffers: dict[str, npt.NDArray[np.uint8]] = {}

    def bytes(self, name: str, size: int) -> npt.NDArray[np.uint8]:
        """The byte buffer ``name``, at least ``size`` bytes (contents undefined)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[0] < size:
            buffer = self._buffers[name] = np.empty(size, dtype=np.uint8)
        return buffer

    def get(self, name: str, size: int) -> npt.NDArray[np.uint64]:
        """The uint64 buffer ``name`` (room for a half block), cut to ``size`` elements."""
        words = max(size, (self.block + 1) // 2)
        return self.bytes(name, 8 * words)[: 8 * words].view(np.uint64)[:size]


# Idle work spaces, reused across calls: touching ~2 MB of fresh pages per call cost more than
# the masking of several masks (805 us for five 400 kB buffers against 7 us reused, measured
# under load). list.pop/append are atomic, so concurrent callers each get their own.
_IDLE: list[_Scratch] = []
_IDLE_MAX = 2


def _checkout(block: int) -> _Scratch:
    try:
        scratch = _IDLE.pop()
    except IndexError:
        return _Scratch(block)
    scratch.block = block
    return scratch


def _check_in(scratch: _Scratch) -> None:
    if len(_IDLE) < _IDLE_MAX:
        _IDLE.append(scratch)


def _add_wide(acc: FieldVector, streams: _Streams, reader: MaskReader, modulus: int, s: _Scratch) -> None:
    """p > 2**32: uint64 words; the caller keeps len(streams) * p below 2**64."""
    n = acc.shape[0]
    minus = sum(1 for _, sign in streams if sign < 0)
    if minus:
        np.add(acc, np.uint64(minus * modulus), out=acc)  # nothing goes below zero
    for stream, sign in streams:
        words = reader.read(stream, n)
        (np.add if sign > 0 else np.subtract)(acc, words, out=acc)
    reduce_into(acc, modulus, s.get("wide", n))


def _add_in_lanes(acc: FieldVector, streams: _Streams, reader: MaskReader, modulus: int, s: _Scratch) -> None:
    """p <= 2**31: SIMD within a register.

    Mask words are uint32 below p. Viewed as uint64, one add sums two adjacent elements at once
    (little-endian: even index in the low lane); while a lane holds at most
    ``lane_group_size(p)`` words it cannot carry into its neighbour. After each group of
    same-sign masks the lanes are split into the wide even/odd sums; those start from an offset,
    a multiple of p, so that subtracted groups never take them below zero.
    """
    n = acc.shape[0]
    half = n // 2
    group = lane_group_size(modulus)
    even, odd, lanes, part = (s.get(name, half) for name in ("a", "b", "c", "d"))
    plus = [stream for stream, sign in streams if sign > 0]
    minus = [stream for stream, sign in streams if sign < 0]
    offset = np.uint64(-(-len(minus) // group) * group * modulus)
    np.add(acc[0 : 2 * half : 2], offset, out=even)
    np.add(acc[1 : 2 * half : 2], offset, out=odd)
    tail = int(acc[n - 1]) if n % 2 else 0
    for sign, same in ((1, plus), (-1, minus)):
        combine = np.add if sign > 0 else np.subtract
        for start in range(0, len(same), group):
            for i, stream in enumerate(same[start : start + group]):
                words = reader.read(stream, n)
                pairs = words[: 2 * half].view(np.uint64)
                if i == 0:
                    np.copyto(lanes, pairs)
                else:
                    np.add(lanes, pairs, out=lanes)
                if n % 2:
                    tail += sign * int(words[n - 1])
            np.bitwise_and(lanes, _LOW32, out=part)
            combine(even, part, out=even)
            np.right_shift(lanes, _SHIFT32, out=part)
            combine(odd, part, out=odd)
    _store_pairs(acc, even, odd, tail, modulus, part)


def _add_split(acc: FieldVector, streams: _Streams, reader: MaskReader, modulus: int, s: _Scratch) -> None:
    """2**31 < p < 2**32: words use all 32 bits, so no two fit in a lane.

    Per mask: S += pairs (uint64, wrapping; low-lane carries spill into the high lane) and
    T += pairs >> 32 (the high words alone). Then S - 2**32 T is the exact signed sum of the low
    words (mod 2**64, and it is below 2**63 in size), and T the exact signed sum of the high ones.
    """
    n = acc.shape[0]
    half = n // 2
    total, high, part = (s.get(name, half) for name in ("a", "b", "c"))
    tail = int(acc[n - 1]) if n % 2 else 0
    for i, (stream, sign) in enumerate(streams):
        words = reader.read(stream, n)
        pairs = words[: 2 * half].view(np.uint64)
        combine = np.add if sign > 0 else np.subtract
        if n % 2:
            tail += sign * int(words[n - 1])
        if i == 0:  # start the sums from the first mask (signed): no zero-fill pass
            combine(np.uint64(0), pairs, out=total)
            np.right_shift(pairs, _SHIFT32, out=high)
            combine(np.uint64(0), high, out=high)
        else:
            combine(total, pairs, out=total)
            np.right_shift(pairs, _SHIFT32, out=part)
            combine(high, part, out=high)
    # Both signed sums are within len(streams) * 2**32 of zero: adding k*p (k*p above that bound)
    # to the accumulator's value makes them non-negative, still exact in uint64.
    lift = np.uint64(-(-(len(streams) << 32) // modulus) * modulus)
    np.left_shift(high, _SHIFT32, out=part)
    np.subtract(total, part, out=total)  # the low words' signed sum, two's complement
    np.add(total, lift, out=total)
    np.add(total, acc[0 : 2 * half : 2], out=total)
    np.add(high, lift, out=high)
    np.add(high, acc[1 : 2 * half : 2], out=high)
    _store_pairs(acc, total, high, tail, modulus, part)


def _store_pairs(
    acc: FieldVector,
    even: npt.NDArray[np.uint64],
    odd: npt.NDArray[np.uint64],
    tail: int,
    modulus: int,
    scratch: npt.NDArray[np.uint64],
) -> None:
    """acc[0::2], acc[1::2] <- even, odd mod p; an odd length's last element <- tail mod p."""
    half = even.shape[0]
    reduce_into(even, modulus, scratch)
    acc[0 : 2 * half : 2] = even
    reduce_into(odd, modulus, scratch)
    acc[1 : 2 * half : 2] = odd
    if acc.shape[0] % 2:
        acc[-1] = tail % modulus
