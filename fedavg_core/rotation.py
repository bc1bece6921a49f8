"""The randomized Hadamard rotation of distributed DP (Kairouz, Liu, Steinke 2021, section 4.2).

A client's update x (length d) is zero-padded to ``D = 2**ceil(log2 d)`` and rotated to
``y = H diag(e) x / sqrt(D)``, with H the D x D Walsh-Hadamard matrix (entries +-1) and e a vector
of random signs drawn from a per-round seed that every client of the round and the server share.
The map is orthonormal (``||y|| = ||x||``) and its own structure gives the inverse
``x = diag(e) H y / sqrt(D)``, so the server undoes it on the decoded sum.

Why: every rotated coordinate is a Rademacher sum ``sum_i e_i H_ji x_i / sqrt(D)`` whose
sub-Gaussian variance proxy is ``||x||^2 / D`` (Hoeffding), so the rotated vector is "flat" and
its coordinates need few bits before the modular sum wraps. The signs must not depend on x: draw
the seed after the updates are fixed (``fedavg_core.distributed_dp`` draws a fresh one per round).
The transform is O(D log D) with numpy, no per-element Python loop.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def padded_dimension(dimension: int) -> int:
    """D, the smallest power of two that is at least ``dimension`` (>= 1)."""
    if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) or dimension < 1:
        raise ValueError(f"dimension must be a positive int, got {dimension!r}")
    return 1 << (int(dimension) - 1).bit_length()


def walsh_hadamard(values: npt.ArrayLike) -> FloatArray:
    """``H @ values`` for the unnormalized Walsh-Hadamard matrix H (Sylvester order, entries +-1)
    along the last axis, whose length must be a power of two."""
    array = np.array(values, dtype=np.float64)
    size = array.shape[-1] if array.ndim else 0
    if size < 1 or size & (size - 1):
        raise ValueError(f"the last axis must have a power-of-two length, got {size}")
    lead = array.shape[:-1]
    out = array.reshape(-1, size)
    half = 1
    while half < size:
        blocks = out.reshape(out.shape[0], size // (2 * half), 2, half)
        top, bottom = blocks[:, :, 0, :], blocks[:, :, 1, :]
        out = np.stack((top + bottom, top - bottom), axis=2).reshape(-1, size)
        half *= 2
    return out.reshape(*lead, size)


def rotation_signs(seed: int, size: int) -> FloatArray:
    """The diagonal e of random signs for a round (same seed, same signs, on every party)."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"size must be a power of two, got {size}")
    rng = np.random.default_rng(seed)
    signs: FloatArray = rng.integers(0, 2, size).astype(np.float64) * 2.0 - 1.0
    return signs


def rotate(vector: npt.ArrayLike, seed: int) -> FloatArray:
    """Pad a flat vector of length d to D and rotate it: ``H diag(e) x / sqrt(D)``."""
    flat = np.asarray(vector, dtype=np.float64)
    if flat.ndim != 1:
        raise ValueError(f"rotate needs a flat vector, got shape {flat.shape}")
    size = padded_dimension(flat.size)
    padded = np.zeros(size, dtype=np.float64)
    padded[: flat.size] = flat
    padded *= rotation_signs(seed, size)
    out: FloatArray = walsh_hadamard(padded) / np.sqrt(size)
    return out


def unrotate(rotated: npt.ArrayLike, seed: int, dimension: int) -> FloatArray:
    """The inverse of ``rotate``: ``diag(e) H y / sqrt(D)``, truncated to the first ``dimension``."""
    array = np.asarray(rotated, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"unrotate needs a flat vector, got shape {array.shape}")
    size = array.size
    if padded_dimension(dimension) != size:
        raise ValueError(
            f"a vector of dimension {dimension} rotates to length {padded_dimension(dimension)}, got {size}"
        )
    back = walsh_hadamard(array) / np.sqrt(size)
    back *= rotation_signs(seed, size)
    out: FloatArray = back[:dimension].copy()
    return out
