"""secagg.config.SecAggConfig: the threshold rules of DESIGN.md section 3 and parameter checks.

Semi-honest server: t > gamma * N. Active server: t > (1 + gamma) * N / 2, which is 2N/3 at
gamma = 1/3. N is n for the complete graph and the neighbourhood k + 1 for a Harary graph.
The expected minimum is computed here with exact fractions, not floats.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest

from secagg.config import MAX_CLIENTS, SecAggConfig, SecurityMode
from secagg.primitives.field import DEFAULT_MODULUS, SUPPORTED_PRIMES

GAMMAS = {
    1 / 3: Fraction(1, 3),
    0.2: Fraction(1, 5),
    0.25: Fraction(1, 4),
    0.5: Fraction(1, 2),
    0.0: Fraction(0),
}


def exact_minimum(size: int, gamma: Fraction, active: bool) -> int:
    bound = (1 + gamma) * size / 2 if active else gamma * size
    return max(1, math.floor(bound) + 1)  # the smallest integer strictly above the bound


@pytest.mark.parametrize("mode", ["semi_honest", "active"])
@pytest.mark.parametrize("gamma", list(GAMMAS), ids=[str(g) for g in GAMMAS.values()])
def test_complete_graph_threshold_rule(mode: str, gamma: float) -> None:
    for n in range(2, 61):
        low = exact_minimum(n, GAMMAS[gamma], mode == "active")
        if low > n:
            with pytest.raises(ValueError):
                SecAggConfig(num_clients=n, threshold=n, vector_length=1, mode=mode, collusion_fraction=gamma)
            continue
        config = SecAggConfig(
            num_clients=n, threshold=low, vector_length=1, mode=mode, collusion_fraction=gamma
        )
        assert config.minimum_safe_threshold() == low
        assert SecAggConfig(num_clients=n, threshold=n, vector_length=1, mode=mode, collusion_fraction=gamma)
        if low > 1:
            with pytest.raises(ValueError, match=f"t={low - 1} is unsafe"):
                SecAggConfig(
                    num_clients=n, threshold=low - 1, vector_length=1, mode=mode, collusion_fraction=gamma
                )


def test_active_rule_is_two_thirds_at_the_default_gamma() -> None:
    for n in range(3, 100):
        config = SecAggConfig(num_clients=n, threshold=n, vector_length=1, mode="active")
        assert config.minimum_safe_threshold() == 2 * n // 3 + 1  # t > 2n/3
        semi = SecAggConfig(num_clients=n, threshold=n, vector_length=1)
        assert semi.minimum_safe_threshold() == n // 3 + 1  # t > n/3


def test_float_gamma_is_exact_at_integer_bounds_up_to_max_clients() -> None:
    """gamma = 1/3 is not exact in binary: at n = 3k the bound gamma*n must still count as k
    (t = k is unsafe, k + 1 is the minimum), for n up to MAX_CLIENTS."""
    for n in [*range(3, 3000, 3), *range(MAX_CLIENTS - 3000, MAX_CLIENTS + 1, 3), 3 * 349525]:
        for mode, gamma in (
            ("semi_honest", 1 / 3),
            ("active", 1 / 3),
            ("semi_honest", 0.2),
            ("active", 0.25),
        ):
            config = SecAggConfig(
                num_clients=n, threshold=n, vector_length=1, mode=mode, collusion_fraction=gamma
            )
            expected = exact_minimum(n, Fraction(gamma).limit_denominator(100), mode == "active")
            assert config.minimum_safe_threshold() == expected, (n, mode, gamma)


@pytest.mark.parametrize(
    ("n", "mode", "passes", "fails"),
    [
        (6, "semi_honest", 3, 2),  # gamma*n = 2 exactly: t = 2 is not > 2
        (9, "semi_honest", 4, 3),
        (6, "active", 5, 4),  # 2n/3 = 4 exactly: t = 4 is not > 4
        (9, "active", 7, 6),
        (10, "active", 7, 6),  # 2n/3 = 6.67
        (3, "active", 3, 2),
    ],
)
def test_the_edge_that_just_passes(n: int, mode: str, passes: int, fails: int) -> None:
    assert SecAggConfig(num_clients=n, threshold=passes, vector_length=4, mode=mode).threshold == passes
    with pytest.raises(ValueError, match=f"t={fails} is unsafe"):
        SecAggConfig(num_clients=n, threshold=fails, vector_length=4, mode=mode)


def test_error_message_names_the_numbers() -> None:
    with pytest.raises(ValueError) as info:
        SecAggConfig(num_clients=6, threshold=4, vector_length=1, mode="active")
    message = str(info.value)
    for part in ("t=4", "active", "(1+gamma)*N/2", "gamma=0.3333", "N=6", "t >= 5"):
        assert part in message, (part, message)
    with pytest.raises(ValueError) as info:
        SecAggConfig(
            num_clients=12, threshold=2, vector_length=1, collusion_fraction=0.25, graph="harary", degree=10
        )
    message = str(info.value)
    for part in ("t=2", "semi_honest", "gamma*N", "gamma=0.25", "N=11", "t >= 3"):
        assert part in message, (part, message)


def test_harary_counts_the_neighbourhood_not_n() -> None:
    # n = 100, k = 10: N = 11. Semi-honest t > 11/3, active t > 22/3.
    semi = SecAggConfig(num_clients=100, threshold=4, vector_length=1, graph="harary", degree=10)
    assert semi.neighbourhood_size == 11 and semi.minimum_safe_threshold() == 4
    with pytest.raises(ValueError, match="N=11"):
        SecAggConfig(num_clients=100, threshold=3, vector_length=1, graph="harary", degree=10)
    active = SecAggConfig(
        num_clients=100, threshold=8, vector_length=1, graph="harary", degree=10, mode="active"
    )
    assert active.minimum_safe_threshold() == 8
    with pytest.raises(ValueError, match="t=7 is unsafe"):
        SecAggConfig(num_clients=100, threshold=7, vector_length=1, graph="harary", degree=10, mode="active")
    # t cannot exceed the k + 1 holders of a client's shares, even though n is larger
    with pytest.raises(ValueError, match=r"t=12 exceeds .*11.*degree 10"):
        SecAggConfig(num_clients=100, threshold=12, vector_length=1, graph="harary", degree=10)
    for k in range(2, 40, 2):
        for active_mode in (False, True):
            low = exact_minimum(k + 1, Fraction(1, 3), active_mode)
            mode = "active" if active_mode else "semi_honest"
            config = SecAggConfig(
                num_clients=50, threshold=low, vector_length=1, graph="harary", degree=k, mode=mode
            )
            assert config.minimum_safe_threshold() == low


def test_threshold_above_n_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"t=6 exceeds the 5 clients"):
        SecAggConfig(num_clients=5, threshold=6, vector_length=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"graph": "ring"}, "graph must be"),
        ({"graph": "harary"}, "even degree"),  # no degree
        ({"graph": "harary", "degree": 3}, "even degree"),
        ({"graph": "harary", "degree": 0}, "even degree"),
        ({"graph": "harary", "degree": 10}, "even degree"),  # k >= n
        ({"graph": "harary", "degree": 12}, "even degree"),
        ({"graph": "harary", "degree": 4.0}, "even degree"),
        ({"graph": "complete", "degree": 4}, "complete graph has degree"),
        ({"mode": "malicious"}, "mode must be"),
        ({"mode": "ACTIVE"}, "mode must be"),
        ({"modulus": 2**32}, "not supported"),
        ({"modulus": 2**64 - 59}, "not supported"),
        ({"modulus": 2**31 - 2}, "not supported"),
        ({"modulus": float(DEFAULT_MODULUS)}, "modulus must be an int"),
        ({"modulus": True}, "modulus must be an int"),
        ({"collusion_fraction": 1.0}, "collusion_fraction"),
        ({"collusion_fraction": -0.1}, "collusion_fraction"),
        ({"collusion_fraction": True}, "collusion_fraction"),
        ({"collusion_fraction": "0.3"}, "collusion_fraction"),
        ({"num_clients": 1, "threshold": 1}, "num_clients"),
        ({"num_clients": MAX_CLIENTS + 1}, "num_clients"),
        ({"num_clients": 10.0}, "num_clients"),
        ({"num_clients": True}, "num_clients"),
        ({"vector_length": 0}, "vector_length"),
        ({"vector_length": 2**30 + 1}, "vector_length"),
        ({"threshold": 5.0}, "threshold"),
        ({"threshold": 0}, "t=0 is unsafe"),
        ({"threshold": -3}, "unsafe"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict, message: str) -> None:
    params = {"num_clients": 10, "threshold": 5, "vector_length": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        SecAggConfig(**params)


def test_good_parameters_are_accepted_and_normalised() -> None:
    config = SecAggConfig(num_clients=10, threshold=7, vector_length=8, mode="active")
    assert config.mode is SecurityMode.ACTIVE and config.is_active
    assert SecAggConfig(num_clients=10, threshold=5, vector_length=8, degree=9).neighbourhood_size == 10
    for p in SUPPORTED_PRIMES:
        assert SecAggConfig(num_clients=3, threshold=2, vector_length=1, modulus=p).modulus == p
    harary = SecAggConfig(num_clients=3, threshold=2, vector_length=1, graph="harary", degree=2)
    assert harary.neighbourhood_size == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold = 1  # type: ignore[misc]


def test_canonical_bytes_change_with_every_parameter() -> None:
    base = {"num_clients": 20, "threshold": 5, "vector_length": 100, "graph": "harary", "degree": 6}
    changes = [
        {"num_clients": 21},
        {"threshold": 4},
        {"vector_length": 101},
        {"modulus": 2**61 - 1},
        {"degree": 8},
        {"graph": "complete", "degree": None, "threshold": 8},
        {"mode": "active", "threshold": 6},
        {"collusion_fraction": 0.25},
    ]
    encodings = {SecAggConfig(**base).canonical_bytes()}
    for change in changes:
        encodings.add(SecAggConfig(**{**base, **change}).canonical_bytes())
    assert len(encodings) == len(changes) + 1


def test_complete_graph_degree_none_and_n_minus_1_are_the_same_round() -> None:
    a = SecAggConfig(5, 3, 4, degree=None)
    b = SecAggConfig(5, 3, 4, degree=4)
    assert a.canonical_bytes() == b.canonical_bytes()
