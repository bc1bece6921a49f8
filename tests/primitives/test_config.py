"""secagg.config.SecAggConfig: the threshold rules of DESIGN.md section 3 and parameter checks.

gamma is the fraction of **all n clients** that may collude with the server.
Complete graph (SecAgg): t >= floor(gamma * n) + 2, so that any released sum holds at least two
honest inputs; active server also t > (1 + gamma) * n / 2, which is 2n/3 at gamma = 1/3.
The expected minimum is computed here with exact fractions, not floats.
Harary graph (SecAgg+): k and t must meet the probabilistic bounds of ``secagg.parameters``
(checked exactly in ``test_parameters.py``); here: the config refuses what they refuse, with the
probabilities in the message, and takes both from ``find_parameters`` when given neither.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest

from secagg import find_parameters
from secagg.config import MAX_CLIENTS, SecAggConfig, SecurityMode, threat_model_shortfall
from secagg.parameters import assess_harary
from secagg.primitives.field import DEFAULT_MODULUS, SUPPORTED_PRIMES

GAMMAS = {
    1 / 3: Fraction(1, 3),
    0.2: Fraction(1, 5),
    0.25: Fraction(1, 4),
    0.5: Fraction(1, 2),
    0.0: Fraction(0),
}


def exact_minimum(n: int, gamma: Fraction, active: bool) -> int:
    """floor(gamma n) + 2 (two honest inputs in any sum); active: also the smallest integer
    strictly above (1 + gamma) n / 2."""
    low = math.floor(gamma * n) + 2
    if active:
        low = max(low, math.floor((1 + gamma) * n / 2) + 1)
    return low


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
        assert (
            SecAggConfig(
                num_clients=n, threshold=None, vector_length=1, mode=mode, collusion_fraction=gamma
            ).threshold
            == low
        )
        assert SecAggConfig(num_clients=n, threshold=n, vector_length=1, mode=mode, collusion_fraction=gamma)
        with pytest.raises(ValueError, match=f"t={low - 1} is unsafe|at least 2"):
            SecAggConfig(
                num_clients=n, threshold=low - 1, vector_length=1, mode=mode, collusion_fraction=gamma
            )


def test_a_released_sum_holds_two_honest_inputs_over_the_complete_graph() -> None:
    """t = floor(gamma n) + 1 (> gamma n, the old rule) lets honest dropouts leave one honest
    input alone with the coalition's: refused; one more is accepted."""
    for n in (10, 30, 31, 100):
        corrupt = n // 3
        with pytest.raises(ValueError, match=f"t={corrupt + 1} is unsafe"):
            SecAggConfig(num_clients=n, threshold=corrupt + 1, vector_length=1)
        assert SecAggConfig(num_clients=n, threshold=corrupt + 2, vector_length=1).threshold == corrupt + 2


def test_active_rule_is_two_thirds_at_the_default_gamma() -> None:
    for n in range(3, 100):
        config = SecAggConfig(num_clients=n, threshold=n, vector_length=1, mode="active")
        assert config.minimum_safe_threshold() == max(2 * n // 3 + 1, n // 3 + 2)  # t > 2n/3
        semi = SecAggConfig(num_clients=n, threshold=n, vector_length=1)
        assert semi.minimum_safe_threshold() == n // 3 + 2


def test_float_gamma_is_exact_at_integer_bounds_up_to_max_clients() -> None:
    """gamma = 1/3 is not exact in binary: at n = 3k, floor(gamma*n) must still be k and
    (1+gamma)*n/2 = 2k must still count as 2k (t = 2k is unsafe, 2k + 1 the minimum), for n up
    to MAX_CLIENTS."""
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
        (6, "semi_honest", 4, 3),  # floor(gamma*n) = 2: t = 3 > gamma*n, but one honest input alone
        (9, "semi_honest", 5, 4),
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
    for part in ("t=4", "active", "(1+gamma)*n/2", "floor(gamma*n)+2", "gamma=0.3333", "n=6", "t >= 5"):
        assert part in message, (part, message)
    with pytest.raises(ValueError) as info:
        SecAggConfig(num_clients=30, threshold=11, vector_length=1)
    message = str(info.value)
    for part in ("t=11", "semi_honest", "floor(gamma*n)+2", "n=30", "t >= 12"):
        assert part in message, (part, message)


def test_the_reported_sparse_config_is_refused_with_its_probability() -> None:
    """The issue's k=40, t=14 at n=1000: about half of all clients have >= 13 corrupt neighbours
    out of 40 when a third of the clients collude (exact hypergeometric here), so the union bound
    is 1; the message says so and names the finder's choice."""
    exact = sum(math.comb(333, x) * math.comb(666, 40 - x) for x in range(13, 41)) / math.comb(999, 40)
    assert 0.4 < exact < 0.7
    with pytest.raises(ValueError) as info:
        SecAggConfig(1000, 14, 10, graph="harary", degree=40)
    message = str(info.value)
    found = find_parameters(1000, 1 / 3, 0.1)
    for part in (
        "t=14",
        "k=40",
        "is unsafe",
        "P(some client has >= 13 corrupt neighbours) <= 1 (2^0)",
        "2^-41",
        "2^-20",
        f"k={found.degree}, t={found.threshold}",
    ):
        assert part in message, (part, message)


def test_harary_explicit_values_meet_the_bounds() -> None:
    """n=100, k=44 (the finder's degree at gamma=1/3, delta=0.1): its t is the smallest secure
    one; one less is unsafe, and a t most neighbourhoods cannot reach is too fragile."""
    found = find_parameters(100, 1 / 3, 0.1)
    assert (found.graph, found.degree) == ("harary", 44)
    k, t = found.degree, found.threshold
    config = SecAggConfig(100, t, 1, graph="harary", degree=k)
    assert config.minimum_safe_threshold() == t and config.assessment == found
    assert config.assessment.secure and config.assessment.correct
    assert SecAggConfig(100, None, 1, graph="harary", degree=k).threshold == t
    with pytest.raises(
        ValueError, match=rf"t={t - 1} with degree k={k} is unsafe.*>= {t - 2} corrupt neighbours\) <= 2\^"
    ):
        SecAggConfig(100, t - 1, 1, graph="harary", degree=k)
    with pytest.raises(
        ValueError, match=r"too fragile \(rounds would fail\).*keeps < 44 surviving neighbours\) <= "
    ):
        SecAggConfig(100, 44, 1, graph="harary", degree=k)
    # t cannot exceed the k + 1 holders of a client's shares, even though n is larger
    with pytest.raises(ValueError, match=r"t=46 exceeds .*45.*degree 44"):
        SecAggConfig(100, 46, 1, graph="harary", degree=k)
    # the active mode asks more of the same degree: 2t > k + 1 + (corrupt neighbours)
    assert not assess_harary(100, k, t, 1 / 3, 0.1, active=True).secure
    with pytest.raises(ValueError, match="unsafe in active mode"):
        SecAggConfig(100, t, 1, graph="harary", degree=k, mode="active")


@pytest.mark.parametrize("mode", ["semi_honest", "active"])
@pytest.mark.parametrize(
    ("n", "gamma", "delta"),
    [
        (5, 1 / 3, 0.1),
        (10, 1 / 3, 0.1),
        (30, 1 / 3, 0.1),
        (100, 0.2, 0.05),
        (1000, 1 / 3, 0.1),
        (1000, 0.05, 0.33),
    ],
)
def test_harary_without_degree_or_threshold_is_the_finder(
    mode: str, n: int, gamma: float, delta: float
) -> None:
    found = find_parameters(n, gamma, delta, mode)
    config = SecAggConfig(
        n, vector_length=3, graph="harary", mode=mode, collusion_fraction=gamma, dropout_fraction=delta
    )
    assert config.graph == found.graph and config.threshold == found.threshold
    assert config.degree == (found.degree if found.graph == "harary" else None)
    assert config.neighbourhood_size == found.degree + 1
    assert config.assessment == found
    assert config.collusion_fraction == gamma and config.dropout_fraction == delta


def test_the_finder_falls_back_to_the_complete_graph_for_small_n() -> None:
    config = SecAggConfig(5, vector_length=1, graph="harary")
    assert (config.graph, config.degree, config.threshold) == ("complete", None, 3)  # floor(5/3) + 2
    assert config.assessment.graph == "complete" and config.assessment.log2_security == -math.inf


def test_replace_revalidates() -> None:
    config = SecAggConfig(100, vector_length=3, graph="harary")
    longer = dataclasses.replace(config, vector_length=7)
    assert longer.vector_length == 7 and longer.assessment == config.assessment
    assert (longer.degree, longer.threshold) == (config.degree, config.threshold)
    assert dataclasses.replace(config, vector_length=3) == config
    with pytest.raises(ValueError, match="is unsafe"):
        dataclasses.replace(config, threshold=config.threshold - 1)
    with pytest.raises(ValueError, match="is unsafe"):
        dataclasses.replace(config, collusion_fraction=0.45)  # same k and t, more collusion
    complete = SecAggConfig(30, 12, 1)
    assert dataclasses.replace(complete, threshold=20).threshold == 20
    with pytest.raises(ValueError, match="t=11 is unsafe"):
        dataclasses.replace(complete, threshold=11)


def test_threshold_above_n_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"t=6 exceeds the 5 clients"):
        SecAggConfig(num_clients=5, threshold=6, vector_length=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"graph": "ring"}, "graph must be"),
        ({"graph": "harary"}, "needs its degree"),  # a threshold without a degree
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
        ({"dropout_fraction": 1.0}, "dropout_fraction"),
        ({"dropout_fraction": -0.1}, "dropout_fraction"),
        ({"dropout_fraction": True}, "dropout_fraction"),
        ({"dropout_fraction": "0.1"}, "dropout_fraction"),
        ({"num_clients": 1, "threshold": 1}, "num_clients"),
        ({"num_clients": MAX_CLIENTS + 1}, "num_clients"),
        ({"num_clients": 10.0}, "num_clients"),
        ({"num_clients": True}, "num_clients"),
        ({"vector_length": 0}, "vector_length"),
        ({"vector_length": 2**30 + 1}, "vector_length"),
        ({"vector_length": None}, "vector_length is required"),
        ({"threshold": 5.0}, "threshold must be an int"),
        ({"threshold": 1}, "at least 2, got t=1"),
        ({"threshold": 0}, "at least 2, got t=0"),
        ({"threshold": -3}, "at least 2"),
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
        assert SecAggConfig(num_clients=3, threshold=3, vector_length=1, modulus=p).modulus == p
    harary = SecAggConfig(
        num_clients=3, threshold=2, vector_length=1, graph="harary", degree=2, collusion_fraction=0.0
    )
    assert harary.neighbourhood_size == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold = 1  # type: ignore[misc]


def test_canonical_bytes_change_with_every_parameter() -> None:
    # gamma = 0.2 of 20 is 4 clients: t = 6 > 4 + 1 holds for any labelling, no dropouts assumed.
    base = {
        "num_clients": 20,
        "threshold": 6,
        "vector_length": 100,
        "graph": "harary",
        "degree": 8,
        "collusion_fraction": 0.2,
        "dropout_fraction": 0.0,
    }
    changes = [
        {"num_clients": 21},
        {"threshold": 7},
        {"vector_length": 101},
        {"modulus": 2**61 - 1},
        {"degree": 10},
        {"graph": "complete", "degree": None, "threshold": 8},
        {"mode": "active", "threshold": 7},
        {"collusion_fraction": 0.15},
    ]
    encodings = {SecAggConfig(**base).canonical_bytes()}
    for change in changes:
        encodings.add(SecAggConfig(**{**base, **change}).canonical_bytes())
    assert len(encodings) == len(changes) + 1


def test_complete_graph_degree_none_and_n_minus_1_are_the_same_round() -> None:
    a = SecAggConfig(5, 3, 4, degree=None)
    b = SecAggConfig(5, 3, 4, degree=4)
    assert a.canonical_bytes() == b.canonical_bytes()


def test_a_harary_degree_too_small_for_any_threshold_says_so_and_suggests_one() -> None:
    with pytest.raises(
        ValueError, match=r"degree k=10 is too small .* t=12, exceeds the neighbourhood of 11"
    ) as info:
        SecAggConfig(1000, vector_length=3, graph="harary", degree=10)
    assert "find_parameters(1000" in str(info.value) and "k=106, t=75" in str(info.value)


# -- a client's own threat model (threat_model_shortfall) -------------------------------------


def sized_for(dropout_fraction: float) -> SecAggConfig:
    """The finder's SecAgg+ round of 200 clients, gamma = 0.05, for the given delta."""
    return SecAggConfig(
        200, vector_length=5, graph="harary", collusion_fraction=0.05, dropout_fraction=dropout_fraction
    )


def test_a_client_refuses_a_secagg_plus_graph_sized_for_fewer_dropouts_than_it_assumes() -> None:
    # A server that claims nobody drops gets a far smaller k (12 instead of 24 here); with 10%
    # dropping, the honest survivors' graph may fall apart and the server learns partial sums.
    claimed = sized_for(dropout_fraction=0.0)
    honest = sized_for(dropout_fraction=0.1)
    assert claimed.degree is not None and honest.degree is not None and claimed.degree < honest.degree
    reason = threat_model_shortfall(claimed, 0.05, 0.1)
    assert reason is not None
    assert "sized for a dropout fraction of 0;" in reason and "at least 0.1" in reason
    assert "P(honest survivors disconnected) <= 2^-" in reason and f"k={claimed.degree}" in reason
    assert threat_model_shortfall(claimed, 0.05, 0.0) is None  # the client's own delta is 0
    assert threat_model_shortfall(honest, 0.05, 0.1) is None
    # A graph sized for more dropouts than the client assumes is fine.
    assert threat_model_shortfall(honest, 0.05, 0.05) is None


def test_a_graph_secure_at_the_clients_delta_is_accepted_though_fragile_there() -> None:
    # k and t explicit: secure when 10% drop (the security events stay within 2^-41), but too
    # fragile at 10% for the server's liking; only the server's rounds suffer, so the client joins.
    claimed = sized_for(dropout_fraction=0.0)
    assert claimed.degree is not None and claimed.threshold is not None
    k = claimed.degree + 10
    fragile = assess_harary(200, k, claimed.threshold, 0.05, 0.1)
    assert fragile.secure and not fragile.correct
    config = SecAggConfig(
        200, claimed.threshold, 5, graph="harary", degree=k, collusion_fraction=0.05, dropout_fraction=0.0
    )
    assert threat_model_shortfall(config, 0.05, 0.1) is None


def test_the_complete_graph_does_not_depend_on_the_clients_delta_but_on_its_gamma() -> None:
    config = SecAggConfig(10, vector_length=5, collusion_fraction=0.1, dropout_fraction=0.0)
    assert threat_model_shortfall(config, 0.1, 0.5) is None
    reason = threat_model_shortfall(config, 1 / 3, 0.0)
    assert reason == "the config assumes a collusion fraction of 0.1, this client requires at least 0.3333"
