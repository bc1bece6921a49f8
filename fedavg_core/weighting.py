"""A client's weighted update and its weight, packed into one field vector (DESIGN.md section 4).

FedAvg (McMahan et al. 2017, Algorithm 1) averages client models weighted by their example
counts ``n_k``. Here the weight ``w = min(n_k, max_weight)`` scales the client's update *before*
masking, and ``w`` itself is the last element of the same vector, so it is masked like every
other element: the server learns ``sum(w_i * x_i)`` and ``sum(w_i)`` and never one client's
weight or example count. Decoding divides the first by the second.

Layout of an encoded vector of an update of length m (m + 1 field elements)::

    [ quantize(x, fraction=w / max_weight) (m elements, two's complement) | w ]

With ``max_weight = 1`` every client with at least one example has weight 1: the unweighted mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.primitives.field import FieldVector

from .quantize import FloatArray, QuantizationConfig, dequantize, from_field, quantize, to_field


def capped_weight(num_examples: int, max_weight: int) -> int:
    """A client's weight: its example count capped by the agreed ``max_weight``."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)):
        raise ValueError(f"num_examples must be an int, got {num_examples!r}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    if isinstance(max_weight, bool) or not isinstance(max_weight, (int, np.integer)):
        raise ValueError(f"max_weight must be an int, got {max_weight!r}")
    if max_weight < 1:
        raise ValueError(f"max_weight must be >= 1, got {max_weight}")
    return int(min(num_examples, max_weight))


def encode_weighted_update(
    update: npt.ArrayLike,
    num_examples: int,
    config: QuantizationConfig,
    rng: np.random.Generator,
) -> FieldVector:
    """Client side: the field vector ``[quantize(w/max_weight * update) | w]`` of length m + 1.

    ``update`` is flattened; ``rng`` drives the stochastic rounding (one generator per client).
    """
    weight = capped_weight(num_examples, config.max_weight)
    flat = np.asarray(update, dtype=np.float64).reshape(-1)
    quantized = quantize(flat, config, rng, fraction=weight / config.max_weight)
    out = np.empty(flat.size + 1, dtype=np.uint64)
    out[:-1] = to_field(quantized, config.modulus)
    out[-1] = weight
    return out


@dataclass(frozen=True)
class WeightedMean:
    """What the server decodes from a secure sum.

    Attributes:
        mean: ``sum(w_i * clip(x_i)) / sum(w_i)``, up to ``error_bound`` per element.
        total_weight: ``sum(w_i)`` over the summed clients.
        num_summed: how many clients' vectors the sum holds.
        error_bound: the per-element quantization bound (``QuantizationConfig.error_bound``).
    """

    mean: FloatArray
    total_weight: int
    num_summed: int
    error_bound: float


def decode_weighted_sum(total: FieldVector, config: QuantizationConfig, num_summed: int) -> WeightedMean:
    """Server side: centre-lift the field sum of ``num_summed`` encoded vectors and divide.

    Refuses a sum that cannot come from ``num_summed`` honest encodings (a weight sum outside
    ``[1, num_summed * max_weight]`` or an element beyond ``num_summed * L``), which is what a
    wrapped or mis-configured sum looks like.
    """
    if not 1 <= num_summed <= config.num_clients:
        raise ValueError(
            f"num_summed must be in [1, {config.num_clients}] for this configuration, got {num_summed}"
        )
    lifted = from_field(np.asarray(total), config.modulus)
    if lifted.ndim != 1 or lifted.size < 2:
        raise ValueError(f"a weighted sum needs at least 2 elements, got shape {lifted.shape}")
    total_weight = int(lifted[-1])
    if not 1 <= total_weight <= num_summed * config.max_weight:
        raise ValueError(
            f"decoded total weight {total_weight} is outside [1, {num_summed * config.max_weight}] "
            f"for {num_summed} clients with max_weight {config.max_weight}: the sum is not a sum "
            "of valid encodings, or every summed client had weight 0"
        )
    sums = lifted[:-1]
    largest = int(np.abs(sums).max()) if sums.size else 0
    if largest > num_summed * config.levels:
        raise ValueError(
            f"decoded magnitude {largest} exceeds {num_summed} * L = {num_summed * config.levels}: "
            "the sum is not a sum of valid encodings"
        )
    mean = dequantize(sums, config) * (config.max_weight / total_weight)
    return WeightedMean(
        mean=mean,
        total_weight=total_weight,
        num_summed=num_summed,
        error_bound=config.error_bound(num_summed, total_weight),
    )
