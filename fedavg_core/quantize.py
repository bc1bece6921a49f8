"""Real vectors to integers in Z_p and back: clip, scale, stochastic rounding, two's complement.

DESIGN.md section 4. A value ``x`` is clipped to ``[-c, c]``, multiplied by a weight fraction
``f`` in ``[0, 1]`` and by ``L / c``, where ``L = 2**(bits - 1) - 1`` is the largest quantized
magnitude, and rounded stochastically to an integer ``q`` with ``E[q] = x * f * L / c`` (unbiased)
and ``|q| <= L``. ``q`` is written into Z_p in two's complement (``q mod p``). After the field sum of
``n`` such vectors, the centred lift recovers the integer sum exactly as long as it cannot wrap:
``n * L < p / 2``. ``check_headroom`` refuses any configuration that could wrap, and
``safe_parameters`` picks a bit width and a modulus that cannot.

Error bound: each summed integer is within one unit of its real value (stochastic rounding moves
a value to the integer just below or just above it), so a sum of ``n`` vectors decoded with
``step = c / L`` is within ``n * step`` of the exact sum of the clipped, weighted inputs.
``QuantizationConfig.error_bound`` states it for the weighted mean, with a ``2**-16`` relative
allowance for float64 rounding (sound because ``bits <= MAX_BITS = 32``, so scaled values stay
below ``2**31`` and their float64 rounding error below ``2**-20`` of a unit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from secagg.primitives.field import (
    DEFAULT_MODULUS,
    SUPPORTED_PRIMES,
    FieldVector,
    centered,
    check_modulus,
    smallest_prime_above,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_BITS: Final[int] = 2
"""The smallest bit width: quantized values in ``{-1, 0, 1}``."""

MAX_BITS: Final[int] = 32
"""The largest bit width; keeps float64 rounding of scaled values far below one unit."""

FLOAT_SLACK: Final[float] = 2.0**-16
"""Relative allowance in ``error_bound`` for float64 rounding in encoding and decoding."""


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def levels(bits: int) -> int:
    """L, the largest quantized magnitude at this bit width: ``2**(bits - 1) - 1``."""
    if not _is_int(bits) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bit width must be an int in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return (1 << (int(bits) - 1)) - 1


def max_clients(bits: int, modulus: int, max_weight: int = 1) -> int:
    """The most clients whose vectors can be summed modulo ``modulus`` without wrapping.

    Every element of a client's vector has magnitude at most ``max(L, max_weight)``; a sum of ``n``
    of them lifts back exactly when ``n * max(L, max_weight) <= (p - 1) / 2``.
    """
    check_modulus(modulus)
    largest = max(levels(bits), _check_max_weight(max_weight))
    return ((modulus - 1) // 2) // largest


def check_headroom(num_clients: int, bits: int, modulus: int, max_weight: int = 1) -> None:
    """Refuse a configuration whose field sum could wrap: ``n * largest magnitude >= p / 2``.

    Raises ``ValueError`` naming n, the bit width, p, and what would fit instead.
    """
    if not _is_int(num_clients) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive int, got {num_clients!r}")
    n = int(num_clients)
    check_modulus(modulus)
    level = levels(bits)
    weight = _check_max_weight(max_weight)
    largest = max(level, weight)
    if 2 * n * largest < modulus:  # p is odd, so this is n * largest <= (p - 1) / 2
        return
    what = (
        f"bit width {bits} (largest quantized magnitude {level})"
        if level >= weight
        else f"max_weight {weight} (larger than the largest quantized magnitude {level} at bit width {bits})"
    )
    fit = max_clients(bits, modulus, weight)
    try:
        bigger = f"modulus p={smallest_prime_above(2 * n * largest - 1)}"
    except ValueError:
        bigger = "no supported modulus"
    raise ValueError(
        f"the sum of n={n} clients could wrap modulo p={modulus}: with {what}, "
        f"n * {largest} = {n * largest} >= p/2 = {modulus / 2}. At bit width {bits} and p={modulus} "
        f"at most {fit} clients fit; for n={n} use a smaller bit width or a larger modulus "
        f"({bigger} fits), see safe_parameters()"
    )


def safe_parameters(
    num_clients: int,
    *,
    max_weight: int = 1,
    bits: int | None = None,
    modulus: int | None = None,
) -> tuple[int, int]:
    """Pick a ``(bits, modulus)`` pair whose sum over ``num_clients`` clients cannot wrap.

    - ``bits`` given, ``modulus`` not: the smallest supported prime with headroom (cheapest masks).
    - ``modulus`` given (or neither, then ``DEFAULT_MODULUS``): the largest bit width that fits.
    - both given: checked with ``check_headroom`` and returned.
    """
    if not _is_int(num_clients) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive int, got {num_clients!r}")
    n = int(num_clients)
    weight = _check_max_weight(max_weight)
    if bits is not None and modulus is None:
        largest = max(levels(bits), weight)
        modulus = smallest_prime_above(2 * n * largest - 1)
    elif bits is None:
        p = DEFAULT_MODULUS if modulus is None else check_modulus(modulus)
        half = (p - 1) // 2
        if n * weight > half:
            raise ValueError(
                f"n={n} clients with max_weight {weight} do not fit modulo p={p} at any bit width "
                f"(n * max_weight = {n * weight} >= p/2); use a larger modulus, e.g. "
                f"{_prime_or_none(2 * n * weight - 1)}"
            )
        room = half // n  # the largest magnitude that fits
        chosen = min(MAX_BITS, (room + 1).bit_length())  # largest b with 2**(b-1) - 1 <= room
        if chosen < MIN_BITS:
            raise ValueError(
                f"n={n} clients do not fit modulo p={p} even at bit width {MIN_BITS}; "
                f"use a larger modulus, e.g. {_prime_or_none(2 * n - 1)}"
            )
        bits, modulus = chosen, p
    assert bits is not None and modulus is not None
    check_headroom(n, bits, modulus, weight)
    return int(bits), int(modulus)


def _prime_or_none(bound: int) -> str:
    try:
        return str(smallest_prime_above(bound))
    except ValueError:
        return f"none is supported (largest {SUPPORTED_PRIMES[-1]})"


def _check_max_weight(max_weight: int) -> int:
    if not _is_int(max_weight) or max_weight < 1:
        raise ValueError(f"max_weight must be a positive int, got {max_weight!r}")
    return int(max_weight)


@dataclass(frozen=True)
class QuantizationConfig:
    """How every client of a round turns its update into field elements (shared by all of them).

    Attributes:
        clip: c, every update element is clipped to ``[-c, c]``.
        bits: b, quantized magnitudes are at most ``L = 2**(b - 1) - 1``.
        modulus: p, the field of the secure sum.
        num_clients: n, the most clients whose vectors will be summed.
        max_weight: w_max, the agreed cap on a client's weight (its example count).

    Construction refuses a configuration whose sum could wrap (``check_headroom``).
    """

    clip: float
    bits: int
    modulus: int
    num_clients: int
    max_weight: int = 1

    def __post_init__(self) -> None:
        clip = self.clip
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating)):
            raise ValueError(f"clip must be a positive finite float, got {clip!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive finite float, got {clip!r}")
        object.__setattr__(self, "clip", float(clip))
        check_headroom(self.num_clients, self.bits, self.modulus, self.max_weight)

    @classmethod
    def for_clients(
        cls,
        num_clients: int,
        clip: float,
        *,
        max_weight: int = 1,
        bits: int | None = None,
        modulus: int | None = None,
    ) -> QuantizationConfig:
        """A configuration for ``num_clients`` with ``safe_parameters`` filling in bits/modulus."""
        bits, modulus = safe_parameters(num_clients, max_weight=max_weight, bits=bits, modulus=modulus)
        return cls(clip, bits, modulus, num_clients, max_weight)

    @property
    def levels(self) -> int:
        """L, the largest quantized magnitude."""
        return levels(self.bits)

    @property
    def step(self) -> float:
        """The real value of one integer unit for a client of full weight: ``c / L``."""
        return self.clip / self.levels

    def error_bound(self, num_summed: int | None = None, total_weight: int | None = None) -> float:
        """Per-element bound on |decoded weighted mean - exact weighted mean of clipped updates|.

        ``num_summed * max_weight * step / total_weight``, times ``1 + FLOAT_SLACK``. Defaults:
        all ``num_clients`` summed, each at full weight (then the bound is ``step``).
        """
        n = self.num_clients if num_summed is None else num_summed
        w = n * self.max_weight if total_weight is None else total_weight
        if n < 1 or w < 1:
            raise ValueError(f"need num_summed >= 1 and total_weight >= 1, got {n} and {w}")
        return n * self.max_weight * self.step / w * (1.0 + FLOAT_SLACK)


def clip(values: npt.ArrayLike, bound: float) -> FloatArray:
    """Clip every element to ``[-bound, bound]``; refuses NaN and infinities."""
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("cannot quantize non-finite values (NaN or infinity) in the update")
    return np.clip(array, -bound, bound)


def stochastic_round(values: npt.ArrayLike, rng: np.random.Generator) -> IntArray:
    """Round each element to the integer below or above it, unbiased: ``E[result] = values``.

    ``x`` becomes ``floor(x) + 1`` with probability ``x - floor(x)`` and ``floor(x)`` otherwise,
    so an integer stays put and the error is always below one.
    """
    array = np.asarray(values, dtype=np.float64)
    low = np.floor(array)
    up = rng.random(array.shape) < (array - low)
    return (low + up).astype(np.int64)


def quantize(
    values: npt.ArrayLike,
    config: QuantizationConfig,
    rng: np.random.Generator,
    *,
    fraction: float = 1.0,
) -> IntArray:
    """Clip to ``[-c, c]``, scale by ``fraction * L / c`` and round stochastically.

    ``fraction`` in ``[0, 1]`` is the client's weight over ``max_weight``; the result lies in
    ``[-L, L]`` and has expectation ``clip(values) * fraction * L / c``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    scaled = clip(values, config.clip) * (fraction * config.levels / config.clip)
    # Guard float rounding at the edge: |scaled| may exceed L by an ulp.
    np.clip(scaled, -config.levels, config.levels, out=scaled)
    return stochastic_round(scaled, rng)


def dequantize(integers: npt.ArrayLike, config: QuantizationConfig) -> FloatArray:
    """The real value of (a sum of) quantized integers at full weight: ``integers * c / L``."""
    return np.asarray(integers, dtype=np.float64) * config.step


def to_field(integers: npt.ArrayLike, modulus: int) -> FieldVector:
    """Two's complement into Z_p: ``q mod p`` as ``uint64``, for ``|q| < p / 2``."""
    array = np.asarray(integers)
    if array.dtype.kind not in "iu":
        raise ValueError(f"to_field needs integers, got dtype {array.dtype}")
    signed = array.astype(np.int64)
    if signed.size and int(np.abs(signed).max()) > (modulus - 1) // 2:
        raise ValueError(f"integers must have magnitude at most (p-1)/2 = {(modulus - 1) // 2}")
    out = signed.astype(np.uint64)  # negative values wrap to 2**64 - |q|
    np.add(out, np.uint64(modulus), out=out, where=signed < 0)  # 2**64 - |q| + p == p - |q|
    return out


def from_field(vector: FieldVector, modulus: int) -> IntArray:
    """The centred lift: each element of Z_p as the signed integer in ``(-p/2, p/2)``."""
    array = np.asarray(vector)
    if array.dtype != np.uint64:
        raise ValueError(f"from_field needs a uint64 field vector, got dtype {array.dtype}")
    if array.size and int(array.max()) >= modulus:
        raise ValueError(f"field vector holds an element >= p = {modulus}")
    return centered(array, modulus)
