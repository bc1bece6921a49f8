"""The one aggregation step of FedAvg, behind one interface, in two implementations.

``PlaintextAggregator`` computes the weighted mean of the clients' updates directly: the
reference. ``SecureAggregator`` computes the same mean from a secure sum: every client encodes
``[w_i * x_i | w_i]`` into Z_p (``fedavg_core.weighting``), the vectors go through a SecAgg round
(Bonawitz et al. 2017; run in process by ``secagg.simulate``), and only the sum is decoded. The
FedAvg loop cannot tell them apart except by the result's ``error_bound``.

Both clip every update element to ``[-clip, clip]`` (when ``clip`` is set) and cap each weight at
``max_weight`` (when set), so the plaintext mean is exactly what the secure one approximates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from secagg.config import DEFAULT_DROPOUT_FRACTION, GraphKind, SecAggConfig, SecurityMode
from secagg.primitives.field import FieldVector
from secagg.simulate import simulate

from .distributed_dp import DistributedDP, RoundPrivacy
from .quantize import QuantizationConfig
from .quantize import clip as clip_values
from .rotation import padded_dimension
from .vectorize import FloatVector
from .weighting import capped_weight, decode_weighted_sum, encode_weighted_update


@dataclass(frozen=True)
class ClientUpdate:
    """One client's contribution to a round: its model delta and its example count.

    In the secure aggregator, both stay on the client's side: only the encoded, masked vector
    leaves it.
    """

    update: FloatVector
    num_examples: int

    def __post_init__(self) -> None:
        array = np.asarray(self.update, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"update must be a flat vector, got shape {array.shape}")
        object.__setattr__(self, "update", array)
        capped_weight(self.num_examples, 1)  # validates the count


@dataclass(frozen=True)
class AggregateResult:
    """What the server learns from a round.

    Attributes:
        mean_update: ``sum(w_i * clip(x_i)) / sum(w_i)`` over the participants.
        total_weight: ``sum(w_i)`` over the participants.
        participants: positions (in the list passed to ``aggregate``) of the clients in the sum.
        error_bound: per-element bound on the distance of ``mean_update`` from the exact
            weighted mean of the participants' clipped updates (0 for the plaintext reference).
            With distributed DP: the bound on the rounding error alone, the noise excluded.
        noise_stddev: with distributed DP, the standard deviation of the DP noise in each element
            of ``mean_update`` (0 without).
        privacy: with distributed DP, the round's privacy record for a ``PrivacyLedger``.
    """

    mean_update: FloatVector
    total_weight: int
    participants: tuple[int, ...]
    error_bound: float
    noise_stddev: float = 0.0
    privacy: RoundPrivacy | None = None


@runtime_checkable
class Aggregator(Protocol):
    """Turns the round's client updates into their weighted mean."""

    def aggregate(self, updates: Sequence[ClientUpdate], rng: np.random.Generator) -> AggregateResult:
        """The weighted mean of ``updates``; ``rng`` supplies any randomness the method needs."""
        ...


def _check_updates(updates: Sequence[ClientUpdate]) -> int:
    if not updates:
        raise ValueError("aggregate needs at least one client update")
    lengths = {u.update.size for u in updates}
    if len(lengths) != 1:
        raise ValueError(f"client updates differ in length: {sorted(lengths)}")
    return lengths.pop()


@dataclass(frozen=True)
class PlaintextAggregator:
    """The reference: the weighted mean computed in the clear (McMahan et al. 2017, Alg. 1).

    Attributes:
        clip: clip every element to ``[-clip, clip]`` first (None: no clipping).
        max_weight: cap each client's weight (None: the weight is the example count).
    """

    clip: float | None = None
    max_weight: int | None = None

    def aggregate(self, updates: Sequence[ClientUpdate], rng: np.random.Generator) -> AggregateResult:
        """``sum(w_i * clip(x_i)) / sum(w_i)``; ``rng`` is unused (the mean is exact)."""
        del rng
        _check_updates(updates)
        cap = self.max_weight
        weights = np.array(
            [u.num_examples if cap is None else capped_weight(u.num_examples, cap) for u in updates],
            dtype=np.int64,
        )
        total = int(weights.sum())
        if total < 1:
            raise ValueError("every client in the round has weight 0")
        stacked = np.stack([u.update for u in updates])
        if self.clip is not None:
            stacked = clip_values(stacked, self.clip)
        mean = (weights.astype(np.float64) @ stacked) / total
        return AggregateResult(mean, total, tuple(range(len(updates))), 0.0)


DropSpec = Mapping[str, Collection[int]]


@dataclass(frozen=True)
class SecureAggregator:
    """The weighted mean from a SecAgg sum, run in process with ``secagg.simulate``.

    Each round maps the k sampled clients to protocol ids ``1..k``. Client i encodes
    ``[quantize(w_i / max_weight * x_i) | w_i]`` with its own generator; the server decodes
    ``sum(w_i x_i) / sum(w_i)`` from the sum over the survivors U3 and never sees a weight alone.

    Attributes:
        clip: c, the clipping bound of update elements.
        max_weight: w_max, the agreed cap on weights (pick it near typical example counts:
            a client of weight w is quantized at ``w / w_max`` of the full resolution).
        bits, modulus: fixed quantization bit width / field (None: ``safe_parameters`` picks
            the largest bit width that fits ``DEFAULT_MODULUS`` for the round's client count).
        threshold: t. None: over the complete graph a majority of the k clients, raised to what
            the security mode requires; over a Harary graph the smallest safe t for the degree.
        graph, degree, mode: passed to ``secagg.SecAggConfig``. ``graph="harary"`` with neither
            ``degree`` nor ``threshold`` takes both from ``secagg.find_parameters``; explicit
            values are checked by ``SecAggConfig`` against the threat model (gamma, delta).
        collusion_fraction: gamma, the fraction of the round's k clients that may collude with
            the server. dropout_fraction: delta, the fraction expected to drop out.
        drop: simulated dropouts, ``{round name: protocol ids that go silent there}``, or a
            function of the round's client count and generator returning such a mapping.
        observer: called with every protocol message of the round (for inspection and tests).
        reproducible: derive the simulated protocol's keys, nonces and masks from the ``rng``
            passed to ``aggregate`` (a reproducible experiment); False draws them from the OS
            (``os.urandom``), as a deployment must. Stochastic rounding always uses ``rng``.
        dp: distributed differential privacy (``fedavg_core.distributed_dp``): clients clip to the
            L2 norm ``dp.clip`` (``clip`` is then unused), rotate, round and add discrete noise
            before masking; ``dp.bits`` replaces ``bits``/``modulus``. The mean is then
            ``sum(f_i x_i) / m`` over the m survivors, ``f_i = w_i / max_weight``, and
            ``total_weight`` is m (weights are not released).
    """

    clip: float
    max_weight: int
    bits: int | None = None
    modulus: int | None = None
    threshold: int | None = None
    graph: GraphKind = "complete"
    degree: int | None = None
    mode: SecurityMode | str = SecurityMode.SEMI_HONEST
    collusion_fraction: float = 1 / 3
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION
    drop: DropSpec | Callable[[int, np.random.Generator], DropSpec] | None = None
    observer: Callable[[object], None] | None = field(default=None, compare=False)
    reproducible: bool = True
    dp: DistributedDP | None = None

    def quantization(self, num_clients: int) -> QuantizationConfig:
        """The quantization every client of a round with ``num_clients`` clients uses."""
        if self.dp is not None:
            return self.dp.quantization(num_clients)
        return QuantizationConfig.for_clients(
            num_clients, self.clip, max_weight=self.max_weight, bits=self.bits, modulus=self.modulus
        )

    def vector_length(self, dimension: int) -> int:
        """The SecAgg vector length for updates of ``dimension`` elements: the update and the
        weight element; with distributed DP the update is padded to the rotation's power of two."""
        return (padded_dimension(dimension) if self.dp is not None else dimension) + 1

    def secagg_config(self, num_clients: int, vector_length: int) -> SecAggConfig:
        """The ``SecAggConfig`` of a round (``vector_length`` counts the weight element)."""
        modulus = self.quantization(num_clients).modulus

        def config(threshold: int | None) -> SecAggConfig:
            return SecAggConfig(
                num_clients,
                threshold,
                vector_length,
                modulus,
                self.graph,
                self.degree,
                self.mode,
                self.collusion_fraction,
                self.dropout_fraction,
            )

        if self.threshold is not None or self.graph != "complete":
            return config(self.threshold)  # SecAgg+: the finder's (or the degree's safe) threshold
        safe = config(num_clients).minimum_safe_threshold()  # t = n is accepted whenever any t is
        # A majority of the k clients, or more if the security mode needs it.
        return config(min(num_clients, max(num_clients // 2 + 1, safe)))

    def aggregate(self, updates: Sequence[ClientUpdate], rng: np.random.Generator) -> AggregateResult:
        """Encode on each client, sum securely, decode. ``rng`` drives the stochastic rounding
        (one child generator per client) and, if ``reproducible``, seeds the simulated protocol.

        Raises ``secagg.AbortedError`` when fewer than the threshold survive.
        """
        length = _check_updates(updates)
        k = len(updates)
        if k < 2:
            raise ValueError("secure aggregation needs at least 2 clients in a round")
        if self.dp is not None:
            return self._aggregate_dp(self.dp, updates, length, rng)
        quant = self.quantization(k)
        config = self.secagg_config(k, length + 1)
        client_rngs = rng.spawn(k)
        inputs = {
            i + 1: encode_weighted_update(u.update, u.num_examples, quant, client_rngs[i])
            for i, u in enumerate(updates)
        }
        total, survivors = self._secure_sum(config, inputs, rng)
        decoded = decode_weighted_sum(total, quant, len(survivors))
        return AggregateResult(
            decoded.mean,
            decoded.total_weight,
            tuple(i - 1 for i in survivors),
            decoded.error_bound,
        )

    def _secure_sum(
        self, config: SecAggConfig, inputs: dict[int, FieldVector], rng: np.random.Generator
    ) -> tuple[FieldVector, list[int]]:
        k = config.num_clients
        drop = self.drop(k, rng) if callable(self.drop) else self.drop  # simulate() checks it
        result = simulate(
            config,
            inputs,
            drop=drop,
            seed=int(rng.integers(2**63)) if self.reproducible else None,
            observer=self.observer,
        )
        return result.total, sorted(int(i) for i in result.survivors)

    def _aggregate_dp(
        self,
        dp: DistributedDP,
        updates: Sequence[ClientUpdate],
        length: int,
        rng: np.random.Generator,
    ) -> AggregateResult:
        """The distributed-DP round: noise sized for the threshold t of this round's config."""
        k = len(updates)
        config = self.secagg_config(k, self.vector_length(length))
        plan = dp.plan(k, config.threshold, length)
        client_rngs = rng.spawn(k)
        seed = int(rng.integers(2**63))  # the round's rotation seed, drawn after the updates
        inputs = {
            i + 1: plan.encode(
                u.update,
                capped_weight(u.num_examples, self.max_weight) / self.max_weight,
                seed,
                client_rngs[i],
            )
            for i, u in enumerate(updates)
        }
        total, survivors = self._secure_sum(config, inputs, rng)
        decoded = plan.decode(total, len(survivors), seed)
        return AggregateResult(
            decoded.mean,
            len(survivors),
            tuple(i - 1 for i in survivors),
            decoded.rounding_bound,
            noise_stddev=decoded.noise_stddev,
            privacy=plan.round_privacy(len(survivors)),
        )
