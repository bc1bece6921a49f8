"""Round parameters from the threat model, and Flower parameter lists as one flat vector.

``ThreatModel`` turns what a deployment states (gamma: the fraction of the round's clients that
may collude with the server; delta: the fraction expected to drop out; the security mode and the
neighbour graph) into the ``SecAggConfig`` and ``QuantizationConfig`` of a round with n sampled
nodes. The secure-aggregation rules themselves live in ``secagg.config`` (DESIGN.md section 3);
this module only chooses values and lets the config refuse unsafe ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedavg_core.quantize import QuantizationConfig
from secagg import SecAggConfig, SecurityMode
from secagg.config import DEFAULT_DROPOUT_FRACTION, GraphKind, check_fraction

NDArray = npt.NDArray[Any]
FloatVector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ThreatModel:
    """What a round must withstand, and how updates are quantized.

    Attributes:
        clip: c, every element of a client's update (its new model minus the global model) is
            clipped to ``[-c, c]`` before quantization.
        max_weight: w_max, the cap on a client's weight (its example count); the weight travels
            masked inside the vector, never in the clear.
        bits: quantization bit width; the modulus is the smallest supported prime with headroom
            for the round's n clients.
        graph: ``"complete"`` (SecAgg) or ``"harary"`` (SecAgg+).
        collusion_fraction: gamma, the fraction of all clients of a round that may collude
            with the server.
        dropout_fraction: delta, the fraction of a round's clients expected to drop out.
        mode: ``"semi_honest"`` (the only mode this adapter runs; see ``SecureAggregationWorkflow``).
        threshold, degree: explicit t and Harary degree k (None: derived from the above).
    """

    clip: float = 1.0
    max_weight: int = 1000
    bits: int = 16
    graph: GraphKind = "complete"
    collusion_fraction: float = 1 / 3
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION
    mode: SecurityMode | str = SecurityMode.SEMI_HONEST
    threshold: int | None = None
    degree: int | None = None

    def __post_init__(self) -> None:
        check_fraction("dropout_fraction", self.dropout_fraction)
        if SecurityMode(self.mode) is not SecurityMode.SEMI_HONEST:
            raise ValueError(
                "the Flower adapter runs the semi_honest mode only: the active mode needs a roster "
                "of Ed25519 identity keys per node, which Flower's node ids do not provide"
            )

    def quantization(self, num_clients: int) -> QuantizationConfig:
        """The quantization every client of a round with ``num_clients`` clients uses."""
        return QuantizationConfig.for_clients(
            num_clients, self.clip, max_weight=self.max_weight, bits=self.bits
        )

    def secagg_config(self, num_clients: int, vector_length: int, modulus: int) -> SecAggConfig:
        """The ``SecAggConfig`` of a round of ``num_clients`` sampled nodes.

        Raises ``ValueError`` (from the config) naming the numbers when the threat model cannot
        be met with this many clients.
        """
        config = SecAggConfig(
            num_clients=num_clients,
            threshold=self.threshold,
            vector_length=vector_length,
            modulus=modulus,
            graph=self.graph,
            degree=self.degree,
            mode=self.mode,
            collusion_fraction=self.collusion_fraction,
            dropout_fraction=self.dropout_fraction,
        )
        if config.graph == "complete":  # the finder sizes SecAgg+ graphs for delta; check SecAgg here
            expected = math.ceil(self.dropout_fraction * num_clients - 1e-9)
            if num_clients - expected < config.threshold:
                raise ValueError(
                    f"threshold t={config.threshold} leaves no room for dropout_fraction="
                    f"{self.dropout_fraction:.4g}: {expected} of {num_clients} clients may drop, "
                    f"leaving {num_clients - expected} < t"
                )
        return config


def flatten(arrays: Sequence[NDArray]) -> FloatVector:
    """One float64 vector holding every element of ``arrays`` in order."""
    if not arrays:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])


def unflatten(vector: FloatVector, like: Sequence[NDArray]) -> list[NDArray]:
    """Split ``vector`` into arrays with the shapes and dtypes of ``like``."""
    sizes = [int(np.asarray(a).size) for a in like]
    if vector.size != sum(sizes):
        raise ValueError(f"vector of {vector.size} elements does not fit arrays of {sum(sizes)} elements")
    out: list[NDArray] = []
    offset = 0
    for array, size in zip(like, sizes, strict=True):
        template = np.asarray(array)
        out.append(vector[offset : offset + size].reshape(template.shape).astype(template.dtype))
        offset += size
    return out
