"""Quantization: the error bound, unbiased rounding, and the headroom guard (DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedavg_core import (
    QuantizationConfig,
    check_headroom,
    decode_weighted_sum,
    encode_weighted_update,
    from_field,
    max_clients,
    quantize,
    safe_parameters,
    stochastic_round,
    to_field,
)
from fedavg_core.quantize import MAX_BITS, MIN_BITS, levels
from secagg.primitives.field import SUPPORTED_PRIMES, add_into, zeros

P16 = 2**16 - 15  # the smallest supported prime


def field_sum(vectors: list[np.ndarray], modulus: int) -> np.ndarray:
    total = zeros(vectors[0].size)
    for vector in vectors:
        add_into(total, vector, modulus)
    return total


@settings(max_examples=150, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    n=st.integers(1, 12),
    bits=st.integers(MIN_BITS, MAX_BITS),
    max_weight=st.integers(1, 1000),
    clip=st.floats(1e-3, 1e3),
    spread=st.floats(0.01, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_decoded_sum_of_encodings_is_within_the_bound(
    shape: tuple[int, ...],
    n: int,
    bits: int,
    max_weight: int,
    clip: float,
    spread: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    config = QuantizationConfig.for_clients(n, clip, max_weight=max_weight, bits=bits)
    updates = rng.uniform(-spread * clip, spread * clip, size=(n, *shape))  # some get clipped
    counts = rng.integers(0, 2 * max_weight + 1, size=n)
    counts[0] = max(int(counts[0]), 1)  # at least one client carries weight
    encoded = [
        encode_weighted_update(u, int(c), config, np.random.default_rng([seed, i]))
        for i, (u, c) in enumerate(zip(updates, counts, strict=True))
    ]
    decoded = decode_weighted_sum(field_sum(encoded, config.modulus), config, n)

    weights = np.minimum(counts, max_weight)
    clipped = np.clip(updates, -clip, clip).reshape(n, -1)
    exact = weights.astype(np.float64) @ clipped / weights.sum()
    assert decoded.total_weight == int(weights.sum())
    assert decoded.error_bound == config.error_bound(n, int(weights.sum()))
    assert np.max(np.abs(decoded.mean - exact)) <= decoded.error_bound


def test_bound_is_one_step_per_client_at_full_weight() -> None:
    config = QuantizationConfig.for_clients(10, 0.5, max_weight=100, bits=12)
    step = 0.5 / (2**11 - 1)
    assert config.step == step
    assert config.error_bound() == pytest.approx(step, rel=1e-4)  # n clients of weight w_max
    assert config.error_bound(10, 500) == pytest.approx(2 * step, rel=1e-4)  # half the weight


def test_quantized_values_stay_within_the_levels_and_keep_their_shape() -> None:
    config = QuantizationConfig.for_clients(3, 1.0, bits=6)
    values = np.linspace(-5, 5, 24).reshape(2, 3, 4)
    q = quantize(values, config, np.random.default_rng(0))
    assert q.shape == values.shape
    assert q.dtype == np.int64
    assert int(np.abs(q).max()) == levels(6) == 31  # clipped values land exactly on +-L


def test_non_finite_updates_are_refused() -> None:
    config = QuantizationConfig.for_clients(3, 1.0, bits=8)
    with pytest.raises(ValueError, match="non-finite"):
        quantize(np.array([0.0, np.nan]), config, np.random.default_rng(0))


def test_stochastic_rounding_is_unbiased() -> None:
    """Each draw has variance frac*(1-frac) <= 1/4, so the mean of N draws has standard
    deviation <= 1/(2 sqrt N). Tolerance: 5 of those (false alarm < 1e-6 per element)."""
    draws = 40_000
    values = np.array([-3.9, -2.5, -1.01, -0.3, 0.0, 0.001, 0.25, 0.5, 0.77, 1.999, 7.0, 12.6])
    rng = np.random.default_rng(2024)
    rounded = stochastic_round(np.broadcast_to(values, (draws, values.size)), rng)
    tolerance = 5 * 0.5 / np.sqrt(draws)
    assert np.all(np.abs(rounded.mean(axis=0) - values) <= tolerance)
    # Only the integers just below and just above are ever produced; integers stay put.
    assert np.all((rounded == np.floor(values)) | (rounded == np.ceil(values)))
    assert np.all(rounded[:, values == 7.0] == 7)
    # Round-to-nearest would be biased by up to 0.5 here: the test can tell the difference.
    assert np.max(np.abs(np.round(values) - values)) > 10 * tolerance


def test_quantize_is_unbiased_at_a_weight_fraction() -> None:
    draws = 20_000
    config = QuantizationConfig.for_clients(4, 1.0, bits=4, max_weight=3)  # coarse: L = 7
    values = np.array([-0.93, -0.2, 0.05, 0.61])
    rng = np.random.default_rng(7)
    q = quantize(np.broadcast_to(values, (draws, values.size)), config, rng, fraction=2 / 3)
    expected = values * (2 / 3) * config.levels
    assert np.all(np.abs(q.mean(axis=0) - expected) <= 5 * 0.5 / np.sqrt(draws))


@given(st.lists(st.integers(-(P16 - 1) // 2, (P16 - 1) // 2), min_size=1, max_size=50))
def test_twos_complement_round_trips(values: list[int]) -> None:
    q = np.array(values, dtype=np.int64)
    field = to_field(q, P16)
    assert field.dtype == np.uint64
    assert int(field.max()) < P16
    assert np.array_equal(from_field(field, P16), q)


def test_to_field_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="magnitude"):
        to_field(np.array([(P16 + 1) // 2]), P16)


# --- the headroom guard -------------------------------------------------------------------


def test_guard_accepts_the_edge_that_just_fits_and_refuses_one_more_client() -> None:
    # p = 65521, bits 8 -> L = 127; (p - 1) / 2 = 32760 = 257 * 127 + 121.
    assert max_clients(8, P16) == 257
    check_headroom(257, 8, P16)
    with pytest.raises(ValueError) as error:
        check_headroom(258, 8, P16)
    message = str(error.value)
    assert "n=258" in message and "bit width 8" in message and f"p={P16}" in message
    assert "at most 257 clients" in message


def test_at_the_edge_the_extreme_sums_decode_exactly() -> None:
    config = QuantizationConfig(clip=2.0, bits=8, modulus=P16, num_clients=257)
    for sign in (1.0, -1.0):
        vectors = [
            encode_weighted_update(np.full(3, sign * 5.0), 1, config, np.random.default_rng(i))
            for i in range(257)
        ]
        decoded = decode_weighted_sum(field_sum(vectors, P16), config, 257)
        assert np.array_equal(decoded.mean, np.full(3, sign * 2.0))  # the clip value, exactly


def test_the_refused_configuration_really_wraps() -> None:
    """What the guard prevents: 258 clients at +L sum past p/2 and lift to a negative number."""
    one = to_field(np.array([levels(8)]), P16)
    total = zeros(1)
    for _ in range(258):
        add_into(total, one, P16)
    assert int(from_field(total, P16)[0]) < 0 < 258 * levels(8)


def test_the_weight_element_needs_headroom_too() -> None:
    check_headroom(2, 8, P16, max_weight=16380)  # 2 * 16380 = 32760 = (p - 1) / 2
    with pytest.raises(ValueError, match=r"n=2 .*max_weight 16381.*p=65521"):
        check_headroom(2, 8, P16, max_weight=16381)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 10_000),
    bits=st.integers(MIN_BITS, MAX_BITS),
    modulus=st.sampled_from(SUPPORTED_PRIMES[:24]),
    max_weight=st.integers(1, 10**6),
)
def test_guard_refuses_exactly_the_configurations_whose_extreme_sum_wraps(
    n: int, bits: int, modulus: int, max_weight: int
) -> None:
    largest = max(levels(bits), max_weight)
    extreme = n * largest  # n clients at the largest magnitude
    lifted = int(from_field(np.array([extreme % modulus], dtype=np.uint64), modulus)[0])
    wraps = lifted != extreme
    try:
        check_headroom(n, bits, modulus, max_weight)
    except ValueError as error:
        assert wraps
        assert f"n={n}" in str(error) and f"bit width {bits}" in str(error)
        assert f"p={modulus}" in str(error)
    else:
        assert not wraps


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 5000), bits=st.integers(MIN_BITS, MAX_BITS), max_weight=st.integers(1, 999))
def test_safe_parameters_picks_the_smallest_prime_for_a_bit_width(n: int, bits: int, max_weight: int) -> None:
    got_bits, modulus = safe_parameters(n, bits=bits, max_weight=max_weight)
    assert got_bits == bits
    check_headroom(n, bits, modulus, max_weight)
    smaller = [p for p in SUPPORTED_PRIMES if p < modulus]
    if smaller:
        with pytest.raises(ValueError):
            check_headroom(n, bits, smaller[-1], max_weight)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 5000), modulus=st.sampled_from(SUPPORTED_PRIMES[8:30]))
def test_safe_parameters_picks_the_largest_bit_width_for_a_modulus(n: int, modulus: int) -> None:
    bits, got_modulus = safe_parameters(n, modulus=modulus)
    assert got_modulus == modulus
    check_headroom(n, bits, modulus)
    if bits < MAX_BITS:
        with pytest.raises(ValueError):
            check_headroom(n, bits + 1, modulus)


def test_safe_parameters_defaults_to_the_default_modulus() -> None:
    assert safe_parameters(10) == (28, 2**32 - 5)  # 10 * (2**27 - 1) < 2**31 - 2 < 10 * (2**28 - 1)


def test_safe_parameters_refuses_what_cannot_fit() -> None:
    with pytest.raises(ValueError, match=r"n=40000 .*max_weight 1"):
        safe_parameters(40_000, modulus=P16)
    with pytest.raises(ValueError, match="no supported prime"):
        safe_parameters(2**40, bits=32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.0}, "clip"),
        ({"clip": float("inf")}, "clip"),
        ({"bits": 1}, "bit width"),
        ({"bits": 33}, "bit width"),
        ({"modulus": 2**16}, "modulus"),
        ({"num_clients": 0}, "num_clients"),
        ({"max_weight": 0}, "max_weight"),
    ],
)
def test_bad_configurations_are_refused(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"clip": 1.0, "bits": 8, "modulus": P16, "num_clients": 4}
    with pytest.raises(ValueError, match=match):
        QuantizationConfig(**{**base, **kwargs})  # type: ignore[arg-type]
