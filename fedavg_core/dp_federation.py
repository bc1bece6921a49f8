"""Distributed DP in a networked federation: the round start's DP terms, the client's encoding,
the server's decoding and privacy account.

``fedavg_core.distributed_dp`` is the mechanism (rotation, L2 clipping, rounding, discrete noise;
``DistributedDP.plan``); this module is what a federation adds around it, so the coordinator and
the websocket client stay thin:

- ``DPTerms``: the budget, the weight cap and the round's rotation seed, as flat ``dp_*`` entries
  of a round start's ``settings`` map (``to_settings`` / ``split_settings``). A client derives the
  round's ``DPPlan`` itself from these terms and the round's SecAgg config (n, t): it adds the
  noise the stated budget needs, never a noise level the server merely asserts.
- ``DPRound``: the server's side of one round: the plan for the cohort's threshold t (the t
  fewest survivors the round may release already give the target noise), the seed, decoding.
- ``PrivacyAccount``: the run's ``PrivacyLedger``; each round that produced a secure sum is
  charged by the clients actually summed, and a resumed server rebuilds it from the round
  reports' ``privacy_curves``.
- ``reference_mean`` and ``error_bound``: the noise-free value a DP round estimates and a bound on
  the distance, for audits and tests.

The rotation seed is sent with the round start, before the clients train. That is sound: the
rotation only has to be independent of the updates (Kairouz et al. 2021, section 4.2), and an
honest client's update does not depend on it; privacy does not rest on the seed being secret.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from secagg.primitives.field import FieldVector

from .aggregators import ClientUpdate
from .distributed_dp import DecodedMean, DistributedDP, DPPlan, RoundPrivacy
from .quantize import MAX_BITS, MIN_BITS, FloatArray
from .weighting import capped_weight

if TYPE_CHECKING:
    from .privacy_accounting import PrivacyLedger
    from .records import RoundReport

Setting = bool | int | float | str

PREFIX = "dp_"
"""Every DP entry of a round start's settings starts with this."""

_FLOATS = ("epsilon", "delta", "clip", "wrap_probability", "rounding_beta")
_INTS = ("rounds", "bits", "colluders", "max_weight", "seed")
KEYS: tuple[str, ...] = tuple(PREFIX + name for name in (*_FLOATS, *_INTS, "mechanism"))
"""The settings keys of ``DPTerms`` (all of them travel in every DP round start)."""

MAX_SEED = 2**63
"""Rotation seeds are in ``[0, MAX_SEED)`` (a msgpack int on every platform)."""


@dataclass(frozen=True)
class DPTerms:
    """What a DP round start tells the clients.

    Attributes:
        dp: the run's budget and encoding parameters.
        max_weight: a client scales its clipped update by ``min(examples, max_weight) / max_weight``.
        seed: the round's rotation seed, shared by every client and the server.
    """

    dp: DistributedDP
    max_weight: int
    seed: int

    def __post_init__(self) -> None:
        if isinstance(self.max_weight, bool) or not isinstance(self.max_weight, int) or self.max_weight < 1:
            raise ValueError(f"max_weight must be a positive int, got {self.max_weight!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"the rotation seed must be an int in [0, 2**63), got {self.seed!r}")
        bits = self.dp.bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"bits must be an int in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
        colluders = self.dp.colluders
        if isinstance(colluders, bool) or not isinstance(colluders, int):
            raise ValueError(f"colluders must be an int, got {colluders!r}")

    def to_settings(self) -> dict[str, Setting]:
        """The ``dp_*`` entries of a round start's settings."""
        dp = self.dp
        values: dict[str, Setting] = {name: float(getattr(dp, name)) for name in _FLOATS}
        values.update(rounds=dp.rounds, bits=dp.bits, colluders=dp.colluders, mechanism=dp.mechanism)
        values.update(max_weight=self.max_weight, seed=self.seed)
        return {PREFIX + name: value for name, value in values.items()}

    def plan(self, num_clients: int, threshold: int, dimension: int) -> DPPlan:
        """The round's plan: n clients, SecAgg threshold t, update length d (cached)."""
        return self.dp.plan(num_clients, threshold, dimension)

    def encode(self, plan: DPPlan, update: ClientUpdate, rng: np.random.Generator) -> FieldVector:
        """Client side: ``update`` clipped, weighted, rotated, rounded and noised, in Z_p."""
        fraction = capped_weight(update.num_examples, self.max_weight) / self.max_weight
        return plan.encode(update.update, fraction, self.seed, rng)


def split_settings(settings: Mapping[str, Setting]) -> tuple[DPTerms | None, dict[str, Setting]]:
    """The DP terms of a round start's settings (None: the round is not private) and the other
    settings. ``ValueError`` naming the entry when the DP entries are incomplete or malformed."""
    rest = {k: v for k, v in settings.items() if not k.startswith(PREFIX)}
    given = {k[len(PREFIX) :]: v for k, v in settings.items() if k.startswith(PREFIX)}
    if not given:
        return None, rest
    missing = sorted(set(KEYS) - {PREFIX + k for k in given})
    unknown = sorted(PREFIX + k for k in given if PREFIX + k not in KEYS)
    if missing or unknown:
        what = ", ".join([*(f"missing {k}" for k in missing), *(f"unknown {k}" for k in unknown)])
        raise ValueError(f"malformed DP settings: {what}")
    for name in _FLOATS:
        value = given[name]
        if isinstance(value, (bool, str)):
            raise ValueError(f"malformed DP settings: {PREFIX}{name} must be a number, got {value!r}")
    for name in _INTS:
        value = given[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"malformed DP settings: {PREFIX}{name} must be an int, got {value!r}")
    if not isinstance(given["mechanism"], str):
        mechanism = given["mechanism"]
        raise ValueError(f"malformed DP settings: {PREFIX}mechanism must be a string, got {mechanism!r}")
    try:
        dp = DistributedDP(
            epsilon=float(given["epsilon"]),
            delta=float(given["delta"]),
            rounds=int(given["rounds"]),
            clip=float(given["clip"]),
            mechanism=given["mechanism"],  # type: ignore[arg-type]  # checked by DistributedDP
            bits=int(given["bits"]),
            wrap_probability=float(given["wrap_probability"]),
            rounding_beta=float(given["rounding_beta"]),
            colluders=int(given["colluders"]),
        )
        terms = DPTerms(dp, int(given["max_weight"]), int(given["seed"]))
    except ValueError as exc:
        raise ValueError(f"malformed DP settings: {exc}") from None
    return terms, rest


@dataclass(frozen=True)
class DPRound:
    """The server's side of one DP round: the terms it sends and the plan it decodes with."""

    terms: DPTerms
    plan: DPPlan

    @classmethod
    def start(
        cls,
        dp: DistributedDP,
        max_weight: int,
        num_clients: int,
        threshold: int,
        dimension: int,
        random_bytes: Callable[[int], bytes],
    ) -> DPRound:
        """Plan the round for its cohort of n and threshold t; draw a fresh rotation seed."""
        seed = int.from_bytes(random_bytes(8), "big") % MAX_SEED
        terms = DPTerms(dp, max_weight, seed)
        return cls(terms, terms.plan(num_clients, threshold, dimension))

    def settings(self) -> dict[str, Setting]:
        """The ``dp_*`` entries of the round start."""
        return self.terms.to_settings()

    def decode(self, total: FieldVector, num_summed: int) -> DecodedMean:
        """The noisy mean ``sum(f_i clip(x_i)) / m`` from the secure sum of m encodings."""
        return self.plan.decode(total, num_summed, self.terms.seed)


def _curve_values(curve: object) -> list[float]:
    return [float(getattr(curve, "rho")), float(getattr(curve, "xi"))]  # noqa: B009


class PrivacyAccount:
    """The privacy a federation has spent, composed by ``dp-accounting`` (``PrivacyLedger``).

    Args:
        delta: the run's delta, at which epsilon is reported.
        reports: finished rounds (a resumed federation); their ``privacy_curves`` are recorded.
    """

    def __init__(self, delta: float, reports: Iterable[RoundReport] = ()) -> None:
        from .privacy_accounting import PrivacyLedger  # the optional ``dp`` extra

        self.delta = delta
        self.ledger: PrivacyLedger = PrivacyLedger()
        for report in reports:
            if report.privacy_curves:
                self.ledger.record(_events(report.privacy_curves))

    @property
    def epsilon(self) -> float:
        """epsilon spent so far (0 before any released round)."""
        return self.ledger.epsilon(self.delta)

    def charge(self, privacy: RoundPrivacy) -> tuple[float, list[list[float]]]:
        """Record one released round; the epsilon spent so far and the round's curves."""
        self.ledger.record(privacy.curves)
        return self.epsilon, [_curve_values(c) for c in privacy.curves]


def _events(curves: Sequence[Sequence[float]]) -> list[object]:
    import dp_accounting  # type: ignore[import-untyped]

    events: list[object] = []
    for curve in curves:
        if len(curve) != 2:
            raise ValueError(f"a recorded zCDP curve is [rho, xi], got {list(curve)!r}")
        events.append(dp_accounting.ZCDpEvent(rho=float(curve[0]), xi=float(curve[1])))
    return events


def reference_mean(updates: Sequence[ClientUpdate], clip: float, max_weight: int) -> FloatArray:
    """What a DP round estimates, without noise or rounding: ``sum(f_i clip(x_i)) / m`` with
    ``clip`` an L2 norm bound and ``f_i = min(w_i, max_weight) / max_weight``."""
    if not updates:
        raise ValueError("reference_mean needs at least one update")
    total = np.zeros_like(np.asarray(updates[0].update, dtype=np.float64))
    for u in updates:
        x = np.asarray(u.update, dtype=np.float64)
        norm = float(np.linalg.norm(x))
        factor = min(1.0, clip / norm) if norm > 0 else 1.0
        total += x * factor * (capped_weight(u.num_examples, max_weight) / max_weight)
    out: FloatArray = total / len(updates)
    return out


def error_bound(noise_stddev: float, rounding_bound: float, dimension: int, failure: float = 1e-6) -> float:
    """A bound on ``max_j |decoded mean_j - reference_mean_j|`` that holds except with probability
    ``failure``: the rounding bound plus ``z`` noise standard deviations, ``z = sqrt(2 ln(2 d /
    failure))`` (a union bound over d sub-Gaussian elements: the summed discrete Gaussians are
    sub-Gaussian with their variance, Canonne, Kamath, Steinke 2020, and the inverse rotation keeps
    that; Skellam noise, at the large variances used here, is within a negligible Bennett factor)."""
    if not 0 < failure < 1:
        raise ValueError(f"failure must be in (0, 1), got {failure!r}")
    if dimension < 1:
        raise ValueError(f"dimension must be positive, got {dimension}")
    z = math.sqrt(2.0 * math.log(2.0 * dimension / failure))
    return rounding_bound + z * noise_stddev
