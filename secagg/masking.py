"""Masks as keys to add and keys to subtract, one function for client and server.

Client u in U3 sent (Bonawitz et al. 2017, Fig. 4, round 2)

    y_u = x_u + PRG(b_u) + sum over neighbours v in U2 of sign(u, v) * PRG(s_uv)   (mod p)

with sign(u, v) = +1 if u > v else -1, so the masks of two neighbours that both reach U3 cancel.
The server removes PRG(b_u) for u in U3 and, for each v in U2 minus U3, the leftover terms
sign(u, v) * PRG(s_uv) of v's neighbours u in U3.

``FieldAccumulator`` sums many vectors with lazy reduction: it adds and subtracts raw PRG words
into two uint64 accumulators and reduces only when another term could overflow (never, for
p < 2**32 and fewer than 2**32 terms), so each mask costs one numpy add.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from .primitives.field import FieldVector
from .primitives.prg import MaskDomain, MaskGenerator

_U64_MAX = (1 << 64) - 1


def pairwise_sign(own_id: int, other_id: int) -> int:
    """+1 if ``own_id`` adds PRG(s_uv) for ``other_id``, -1 if it subtracts it."""
    if own_id == other_id:
        raise ValueError("a client has no pairwise mask with itself")
    return 1 if own_id > other_id else -1


def split_by_sign(own_id: int, others: Iterable[int]) -> tuple[list[int], list[int]]:
    """The neighbours whose pairwise masks ``own_id`` adds, and those whose masks it subtracts."""
    plus: list[int] = []
    minus: list[int] = []
    for other in sorted(others):
        (plus if pairwise_sign(own_id, other) > 0 else minus).append(other)
    return plus, minus


class FieldAccumulator:
    """A running sum of field vectors (and their negatives) in O(m) memory."""

    def __init__(self, length: int, modulus: int) -> None:
        self.length = length
        self.modulus = modulus
        self._plus = np.zeros(length, dtype=np.uint64)
        self._minus = np.zeros(length, dtype=np.uint64)
        # Each operand is < p, so the accumulator may hold this many terms before overflow.
        self._budget = _U64_MAX // (modulus - 1)
        self._plus_terms = 0
        self._minus_terms = 0

    def add(self, vector: npt.NDArray[np.unsignedinteger]) -> None:
        """acc += vector; every element of ``vector`` must be < p."""
        if self._plus_terms + 1 > self._budget:
            np.remainder(self._plus, self.modulus, out=self._plus)
            self._plus_terms = 1
        np.add(self._plus, vector, out=self._plus, casting="unsafe")
        self._plus_terms += 1

    def subtract(self, vector: npt.NDArray[np.unsignedinteger]) -> None:
        """acc -= vector; every element of ``vector`` must be < p."""
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
        plus = np.remainder(self._plus, p)
        minus = np.remainder(self._minus, p)
        under = plus < minus
        out: FieldVector = np.subtract(plus, minus)
        np.add(out, p, out=out, where=under)
        return out


def add_self_mask(acc: FieldAccumulator, generator: MaskGenerator, seed: bytes, sign: int = 1) -> None:
    """acc += sign * PRG_self(b)."""
    acc.add_signed(generator.expand_words(seed, MaskDomain.SELF), sign)


def add_pairwise_mask(acc: FieldAccumulator, generator: MaskGenerator, seed: bytes, sign: int) -> None:
    """acc += sign * PRG_pairwise(s_uv)."""
    acc.add_signed(generator.expand_words(seed, MaskDomain.PAIRWISE), sign)
