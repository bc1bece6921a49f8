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
from .primitives.prg import MaskDomain, MaskGenerator

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


def _batches(terms: Sequence[MaskTerm], modulus: int) -> list[Sequence[MaskTerm]]:
    # acc (< p) + offset (minus terms * p) + one (< p) word per plus term must fit in uint64.
    size = max(1, _U64_MAX // modulus - 2)
    return [terms[i : i + size] for i in range(0, len(terms), size)]


LANE_MIN_GROUP = 8
"""Below this group size, splitting the lanes costs more than the narrower adds save (measured)."""


def lane_group_size(modulus: int) -> int:
    """How many 32-bit mask words can be summed in one 32-bit lane without a carry out of it."""
    if modulus > 2**32 or sys.byteorder != "little":
        return 1
    return (2**32 - 1) // (modulus - 1)


def apply_masks(acc: FieldVector, terms: Sequence[MaskTerm], modulus: int) -> None:
    """acc <- (acc + sum of sign * PRG(seed)) mod p, in place; ``acc`` must hold values < p.

    For p < 2**29 (three or more bits of headroom in the 32-bit word) the masks are summed two
    elements per uint64 (``_apply_masks_in_lanes``): at m = 100,000 and p near 2**26 that took
    90 us per mask against 113 us for the widening add (in-process A/B, medians of 11 runs).

    One AES-CTR pass and one numpy add (or subtract) per mask into the uint64 accumulator,
    with a single reduction per batch (one batch for p < 2**32): subtracted terms are made safe
    by first adding (number of subtracted terms) * p, so nothing ever goes below zero.
    (Blocking the loop so that the accumulator stays in cache was measured: no faster at
    m = 100,000, as numpy's widening add, not memory, is the cost next to AES.)
    """
    if lane_group_size(modulus) >= LANE_MIN_GROUP and acc.shape[0] >= 2:
        _apply_masks_in_lanes(acc, terms, modulus)
        return
    generator = MaskGenerator(acc.shape[0], modulus)
    for batch in _batches(terms, modulus):
        minus = sum(1 for term in batch if term.sign < 0)
        if minus:
            np.add(acc, np.uint64(minus * modulus), out=acc)
        for term in batch:
            words = generator.expand_words(term.seed, term.domain)
            if term.sign > 0:
                np.add(acc, words, out=acc, casting="unsafe")
            else:
                np.subtract(acc, words, out=acc, casting="unsafe")
        np.remainder(acc, np.uint64(modulus), out=acc)


def _apply_masks_in_lanes(acc: FieldVector, terms: Sequence[MaskTerm], modulus: int) -> None:
    """``apply_masks`` for p < 2**31: SIMD within a register.

    Mask words are uint32 below p. Viewed as uint64, one add sums two adjacent elements at once
    (little-endian: even index in the low lane); as long as a lane holds at most
    ``lane_group_size(p)`` words it cannot carry into its neighbour. After each group of masks
    the two lanes are split into wide even/odd accumulators; subtracted groups are offset by a
    multiple of p so nothing goes below zero.
    """
    group = lane_group_size(modulus)
    length = acc.shape[0]
    half = length // 2
    even_length = 2 * half
    generator = MaskGenerator(length, modulus)
    lanes = np.empty(half, dtype=np.uint64)
    scratch = np.empty(half, dtype=np.uint64)
    acc_even = acc[0:even_length:2].copy()
    acc_odd = acc[1:even_length:2].copy()
    tail = int(acc[-1]) if length % 2 else 0
    plus = [t for t in terms if t.sign > 0]
    minus = [t for t in terms if t.sign < 0]
    minus_groups = -(-len(minus) // group)
    if minus_groups:
        offset = np.uint64(minus_groups * group * modulus)
        np.add(acc_even, offset, out=acc_even)
        np.add(acc_odd, offset, out=acc_odd)
    low_lane = np.uint64(0xFFFFFFFF)
    for sign, signed_terms in ((1, plus), (-1, minus)):
        combine = np.add if sign > 0 else np.subtract
        for start in range(0, len(signed_terms), group):
            for i, term in enumerate(signed_terms[start : start + group]):
                words = generator.expand_words(term.seed, term.domain)
                pairs = words[:even_length].view(np.uint64)
                if i == 0:
                    np.copyto(lanes, pairs)
                else:
                    np.add(lanes, pairs, out=lanes)
                if length % 2:
                    tail += sign * int(words[length - 1])
            np.bitwise_and(lanes, low_lane, out=scratch)
            combine(acc_even, scratch, out=acc_even)
            np.right_shift(lanes, np.uint64(32), out=scratch)
            combine(acc_odd, scratch, out=acc_odd)
    p = np.uint64(modulus)
    acc[0:even_length:2] = np.remainder(acc_even, p)
    acc[1:even_length:2] = np.remainder(acc_odd, p)
    if length % 2:
        acc[-1] = tail % modulus
