"""Distributed differential privacy on top of SecAgg: the client encoding and the server decoding.

DESIGN.md section 4; the pipeline of TFF's ``DistributedDpSumFactory`` (Kairouz, Liu, Steinke 2021,
"DDGauss", Algorithm 1; Agarwal, Kairouz, Liu 2021, "DSkellam"). Each client of a round:

1. clips its update x to L2 norm c and scales it by its weight fraction ``f = w / max_weight``
   (so ``||f x|| <= c``: one client moves the sum by at most c);
2. pads it to D = 2**ceil(log2 d) and rotates it with the round's randomized Hadamard transform
   (``fedavg_core.rotation``; the seed is fresh per round and shared by every client);
3. scales it by s and rounds it stochastically to integers, repeating the rounding until the L2
   norm is at most ``Delta_2`` (conditional randomized rounding, Kairouz et al. 2021, section 4.1);
4. adds discrete noise to every coordinate: a discrete Gaussian or a Skellam share, sized so that
   the noise of the ``t - colluders`` honest clients of the *fewest* survivors the round can
   release (t, the SecAgg threshold) already gives the target central noise;
5. writes the integers into Z_p in two's complement and appends the weight element, which is 1:
   the layout of ``fedavg_core.weighting`` (``[update | weight]``), so the server checks that the
   summed weight equals the number of survivors, a count it knows anyway.

The server lifts the secure sum back to signed integers (``fedavg_core.quantize.from_field``),
divides by s, rotates back, and divides by the number of survivors m: the mean is
``sum(f_i clip(x_i)) / m + noise``. (With ``max_weight = 1`` it is the plain mean; with larger
caps it is the fixed-denominator estimator of McMahan et al. 2018, since dividing by the summed
weights would release them without noise.)

Noise and privacy when more than t survive: every client adds ``1 / (t - colluders)`` of the
target variance, so m survivors release ``m / (t - colluders)`` times the target variance. The
guarantee is then stronger than planned (the accounting of each round uses the actual m), and the
model is noisier by a factor ``sqrt(m / t)`` in standard deviation: the price of staying private
when only t survive.

Modulus and wrapping: the field is the one the existing guard picks for ``bits`` per client
(``QuantizationConfig``: the smallest supported prime p with ``n * L < p / 2``,
``L = 2**(bits - 1) - 1``), and s is the largest scale for which the noisy sum of all n clients
stays below p / 2 in magnitude per coordinate (so its centred lift is exact) except with
probability ``wrap_probability``: the rotated signal is sub-Gaussian (Hoeffding over the random
signs, the clients' updates summing to norm at most ``n c s``), the rounding errors add less than
n, and the summed noise obeys the sub-Gaussian (discrete Gaussian) or Bennett (Skellam) tail; the
probability is split evenly between signal and noise. A sum over m <= n survivors is within the
same bound. Over a whole vector the wrap probability is at most ``D * wrap_probability``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from secagg.primitives.field import FieldVector

from .discrete_noise import discrete_gaussian, skellam, skellam_tail, subgaussian_tail
from .quantize import FloatArray, IntArray, QuantizationConfig, from_field, stochastic_round
from .rotation import padded_dimension, rotate, unrotate

if TYPE_CHECKING:  # dp_accounting is the optional ``dp`` extra
    from collections.abc import Sequence

Mechanism = Literal["ddgauss", "skellam"]

DEFAULT_ROUNDING_BETA = math.exp(-0.5)
"""beta of conditional randomized rounding (TFF's default): the L2 bound holds w.p. >= 1 - beta
per try."""

MAX_ROUNDING_TRIES = 1000


def rounded_l2_bound(norm: float, dimension: int, beta: float) -> float:
    """Delta_2: an L2 bound on a vector of norm ``norm`` after stochastic rounding, as conditional
    rounding enforces it (Kairouz et al. 2021, Theorem 1): ``min(norm + sqrt(D), sqrt(norm^2 +
    D/4 + sqrt(2 log(1/beta)) (norm + sqrt(D)/2)))``; the first term holds always (beta = 0)."""
    always = norm + math.sqrt(dimension)
    if beta == 0:
        return always
    likely = norm**2 + dimension / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dimension) / 2)
    return min(always, math.sqrt(likely))


@dataclass(frozen=True)
class RoundPrivacy:
    """The privacy side of one released round.

    Attributes:
        curves: the round's zCDP curves (``dp_accounting.ZCDpEvent``s,
            ``fedavg_core.privacy_accounting``), for a ``PrivacyLedger``.
        delta: the run's target delta.
        noise_clients: honest clients whose noise is in the sum (survivors minus colluders).
    """

    curves: tuple[object, ...]
    delta: float
    noise_clients: int


@dataclass(frozen=True)
class DecodedMean:
    """What the server decodes from a DP secure sum.

    Attributes:
        mean: ``sum(f_i clip(x_i)) / num_summed`` plus the DP noise.
        num_summed: m, the survivors in the sum.
        noise_stddev: standard deviation of the DP noise in each element of ``mean``.
        rounding_bound: bound on each element's rounding error, excluding the noise.
    """

    mean: FloatArray
    num_summed: int
    noise_stddev: float
    rounding_bound: float


@dataclass(frozen=True)
class DistributedDP:
    """A distributed-DP budget for a run, and the encoding that spends it.

    Attributes:
        epsilon, delta: the target (epsilon, delta) of the whole run, at client level.
        rounds: the number of rounds the budget covers (each at the worst case t survivors).
        clip: c, the L2 norm bound of a client's update.
        mechanism: ``"ddgauss"`` (distributed discrete Gaussian) or ``"skellam"``.
        bits: per-client bit width of ``QuantizationConfig``: the modulus is the smallest supported
            prime with ``n * (2**(bits - 1) - 1) < p / 2``, as for plain secure FedAvg.
        wrap_probability: bound on the probability that one coordinate of a sum wraps modulo p.
        rounding_beta: beta of conditional randomized rounding.
        colluders: survivors whose noise shares the adversary may know (clients colluding with the
            server); the noise is sized for ``t - colluders`` honest shares. 0 protects against the
            server alone; ``floor(gamma * n)`` against the server with gamma * n clients.
    """

    epsilon: float
    delta: float
    rounds: int
    clip: float
    mechanism: Mechanism = "ddgauss"
    bits: int = 16
    wrap_probability: float = 1e-9
    rounding_beta: float = DEFAULT_ROUNDING_BETA
    colluders: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be positive and finite, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be a positive int, got {self.rounds!r}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip (the L2 norm bound) must be positive and finite, got {self.clip!r}")
        if self.mechanism not in ("ddgauss", "skellam"):
            raise ValueError(f"mechanism must be 'ddgauss' or 'skellam', got {self.mechanism!r}")
        if not 0 < self.wrap_probability < 0.5:
            raise ValueError(f"wrap_probability must be in (0, 0.5), got {self.wrap_probability!r}")
        if not 0 <= self.rounding_beta < 1:
            raise ValueError(f"rounding_beta must be in [0, 1), got {self.rounding_beta!r}")
        if self.colluders < 0:
            raise ValueError(f"colluders must be >= 0, got {self.colluders!r}")

    def quantization(self, num_clients: int) -> QuantizationConfig:
        """The field of a round with ``num_clients`` clients (the existing guard picks p)."""
        return QuantizationConfig.for_clients(num_clients, self.clip, bits=self.bits)

    def plan(self, num_clients: int, threshold: int, dimension: int) -> DPPlan:
        """The shared parameters of a round: n clients, SecAgg threshold t, update length d."""
        return _plan(self, num_clients, threshold, dimension)


@dataclass(frozen=True)
class DPPlan:
    """Everything the clients and the server of a round agree on (derived by ``DistributedDP.plan``).

    Attributes:
        dp: the budget.
        num_clients, threshold, dimension: n, t and d.
        padded: D, the rotated length.
        scale: s, integer units per unit of the update.
        l2_sensitivity, l1_sensitivity: Delta_2 and Delta_1 of one client's rounded vector.
        local_variance: the variance of each client's noise per coordinate (for the discrete
            Gaussian, its parameter sigma^2).
        quantization: the field (``modulus``) and the guard's ``n * L < p / 2``.
        wrap_bound: per coordinate, |noisy sum of n clients| <= wrap_bound except with probability
            ``dp.wrap_probability``; below p / 2.
        planned_epsilon: epsilon over ``dp.rounds`` rounds that each release t survivors.
    """

    dp: DistributedDP
    num_clients: int
    threshold: int
    dimension: int
    padded: int
    scale: float
    l2_sensitivity: float
    l1_sensitivity: float
    local_variance: float
    quantization: QuantizationConfig
    wrap_bound: float
    planned_epsilon: float

    @property
    def noise_clients(self) -> int:
        """Honest noise shares in a sum of t survivors: ``t - colluders``."""
        return self.threshold - self.dp.colluders

    @property
    def field_bits(self) -> int:
        """Bits per coordinate on the wire: ceil(log2 p)."""
        return (self.quantization.modulus - 1).bit_length()

    def curves(self, survivors: int) -> tuple[object, ...]:
        """The zCDP curves of a round whose sum holds ``survivors`` clients' noise shares."""
        return _curves(
            self.dp,
            self.l2_sensitivity,
            self.l1_sensitivity,
            self.local_variance,
            survivors - self.dp.colluders,
            self.padded,
        )

    def noise_stddev(self, survivors: int) -> float:
        """Standard deviation of the noise in each element of the decoded mean of ``survivors``."""
        return math.sqrt(survivors * self.local_variance) / (self.scale * survivors)

    def encode(
        self,
        update: npt.ArrayLike,
        fraction: float,
        seed: int,
        rng: np.random.Generator,
    ) -> FieldVector:
        """Client side: the field vector ``[noisy rounded rotated update | 1]`` of length D + 1.

        ``fraction`` in [0, 1] is the client's weight over ``max_weight``; ``seed`` the round's
        rotation seed; ``rng`` the client's own randomness (rounding and noise).
        """
        flat = np.asarray(update, dtype=np.float64).reshape(-1)
        if flat.size != self.dimension:
            raise ValueError(f"update has {flat.size} elements, the plan is for {self.dimension}")
        if not np.all(np.isfinite(flat)):
            raise ValueError("cannot encode non-finite values (NaN or infinity) in the update")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        norm = float(np.linalg.norm(flat))
        factor = fraction * (min(1.0, self.dp.clip / norm) if norm > 0 else 1.0)
        scaled = rotate(flat * factor, seed) * self.scale
        integers = self._round(scaled, rng) + self._noise(rng)
        out = np.empty(self.padded + 1, dtype=np.uint64)
        out[:-1] = np.mod(integers, self.quantization.modulus).astype(np.uint64)
        out[-1] = 1
        return out

    def _round(self, scaled: FloatArray, rng: np.random.Generator) -> IntArray:
        # Conditional randomized rounding: retry until the L2 bound of the accounting holds.
        limit = self.l2_sensitivity**2
        for _ in range(MAX_ROUNDING_TRIES):
            rounded = stochastic_round(scaled, rng)
            if float(np.dot(rounded, rounded)) <= limit:
                return rounded
        raise RuntimeError(
            f"randomized rounding exceeded the L2 bound {self.l2_sensitivity} "
            f"{MAX_ROUNDING_TRIES} times; rounding_beta is too small"
        )

    def _noise(self, rng: np.random.Generator) -> IntArray:
        if self.dp.mechanism == "ddgauss":
            return discrete_gaussian(math.sqrt(self.local_variance), self.padded, rng)
        return skellam(self.local_variance, self.padded, rng)

    def decode(self, total: FieldVector, num_summed: int, seed: int) -> DecodedMean:
        """Server side: lift the sum of ``num_summed`` encodings, rotate back, divide by m."""
        if not 1 <= num_summed <= self.num_clients:
            raise ValueError(f"num_summed must be in [1, {self.num_clients}], got {num_summed}")
        lifted = from_field(np.asarray(total), self.quantization.modulus)
        if lifted.shape != (self.padded + 1,):
            raise ValueError(f"a DP sum has {self.padded + 1} elements, got shape {lifted.shape}")
        if int(lifted[-1]) != num_summed:
            raise ValueError(
                f"decoded weight element {int(lifted[-1])} differs from the {num_summed} "
                "summed clients: the sum is not a sum of valid DP encodings"
            )
        mean = unrotate(lifted[:-1].astype(np.float64) / self.scale, seed, self.dimension)
        return DecodedMean(
            mean=mean / num_summed,
            num_summed=num_summed,
            noise_stddev=self.noise_stddev(num_summed),
            rounding_bound=math.sqrt(self.padded) / self.scale,
        )

    def round_privacy(self, survivors: int) -> RoundPrivacy:
        """The privacy record of a released round with ``survivors`` clients in the sum."""
        return RoundPrivacy(self.curves(survivors), self.dp.delta, survivors - self.dp.colluders)


def _curves(
    dp: DistributedDP, l2: float, l1: float, local_variance: float, noise_clients: int, padded: int
) -> tuple[object, ...]:
    from . import privacy_accounting as pa  # the optional ``dp`` extra

    if noise_clients < 1:
        raise ValueError(f"no honest noise share in the sum ({noise_clients} clients)")
    if dp.mechanism == "ddgauss":
        return tuple(pa.ddgauss_round(l2, l1, math.sqrt(local_variance), noise_clients, padded))
    return tuple(pa.skellam_round(l2, l1, noise_clients * local_variance))


def _run_epsilon(dp: DistributedDP, curves: Sequence[object]) -> float:
    from . import privacy_accounting as pa

    return pa.run_epsilon(curves, dp.rounds, dp.delta)


def _wrap_bound(dp: DistributedDP, n: int, padded: int, scale: float, local_variance: float) -> float:
    half = dp.wrap_probability / 2
    signal = subgaussian_tail((n * dp.clip * scale) ** 2 / padded, half)
    if dp.mechanism == "ddgauss":
        noise = subgaussian_tail(n * local_variance, half)
    else:
        noise = skellam_tail(n * local_variance, half)
    return signal + n + noise


@functools.lru_cache(maxsize=64)
def _plan(dp: DistributedDP, n: int, t: int, d: int) -> DPPlan:
    from . import privacy_accounting as pa

    if not 1 <= t <= n:
        raise ValueError(f"threshold must be in [1, {n}], got {t}")
    honest = t - dp.colluders
    if honest < 1:
        raise ValueError(
            f"colluders={dp.colluders} leaves no honest noise share among the t={t} "
            "fewest survivors; raise the threshold or lower colluders"
        )
    quant = dp.quantization(n)
    padded = padded_dimension(d)
    room = (quant.modulus - 1) // 2  # the centred lift is exact below p / 2
    z = pa.gaussian_noise_multiplier(dp.epsilon, dp.delta, dp.rounds)

    def sensitivities(scale: float) -> tuple[float, float]:
        l2 = rounded_l2_bound(dp.clip * scale, padded, dp.rounding_beta)
        return l2, l2 * min(math.sqrt(padded), l2)

    def variance(scale: float) -> float:
        # The smallest local variance whose t - colluders shares spend at most epsilon.
        l2, l1 = sensitivities(scale)

        def spent(v: float) -> float:
            return _run_epsilon(dp, _curves(dp, l2, l1, v, honest, padded))

        low = (z * l2) ** 2 / honest  # the continuous Gaussian: a lower bound
        high = 2 * low
        while spent(high) > dp.epsilon:
            low, high = high, 2 * high
        for _ in range(50):
            mid = math.sqrt(low * high)
            low, high = (low, mid) if spent(mid) <= dp.epsilon else (mid, high)
            if high / low < 1 + 1e-9:
                break
        return high

    def fits(scale: float) -> bool:
        return _wrap_bound(dp, n, padded, scale, variance(scale)) <= room

    low, high = 1e-6 / dp.clip, room / dp.clip
    if not fits(low):
        raise ValueError(
            f"bits={dp.bits} (modulus p={quant.modulus}) leave no room for the noisy sum of n={n} "
            "clients below p/2; use more bits"
        )
    while high / low > 1 + 1e-6:
        mid = math.sqrt(low * high)
        low, high = (mid, high) if fits(mid) else (low, mid)
    scale = low
    l2, l1 = sensitivities(scale)
    local = variance(scale)
    return DPPlan(
        dp=dp,
        num_clients=n,
        threshold=t,
        dimension=d,
        padded=padded,
        scale=scale,
        l2_sensitivity=l2,
        l1_sensitivity=l1,
        local_variance=local,
        quantization=quant,
        wrap_bound=_wrap_bound(dp, n, padded, scale, local),
        planned_epsilon=_run_epsilon(dp, _curves(dp, l2, l1, local, honest, padded)),
    )
