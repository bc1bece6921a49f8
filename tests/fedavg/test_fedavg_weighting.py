"""The weight travels inside the vector; decoding divides the summed update by the summed weight."""

from __future__ import annotations

import numpy as np
import pytest

from fedavg_core import (
    QuantizationConfig,
    capped_weight,
    decode_weighted_sum,
    encode_weighted_update,
    from_field,
    to_field,
)
from secagg.primitives.field import add_into, zeros


def test_weight_is_the_example_count_capped_by_the_agreed_maximum() -> None:
    assert capped_weight(37, 100) == 37
    assert capped_weight(500, 100) == 100
    assert capped_weight(0, 100) == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError):
            capped_weight(bad, 100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_weight"):
        capped_weight(3, 0)


def test_encoding_appends_the_weight_and_scales_the_update_by_it() -> None:
    config = QuantizationConfig.for_clients(5, 1.0, max_weight=200, bits=16)
    update = np.array([[0.5, -0.25], [1.0, 3.0]])  # any shape; flattened
    vector = encode_weighted_update(update, 50, config, np.random.default_rng(0))
    assert vector.shape == (5,)
    assert vector.dtype == np.uint64
    assert int(vector[-1]) == 50
    lifted = from_field(vector[:-1], config.modulus) * config.step * (200 / 50)
    assert np.max(np.abs(lifted - [0.5, -0.25, 1.0, 1.0])) <= config.step * 4  # clipped 3 -> 1
    assert int(encode_weighted_update(update, 999, config, np.random.default_rng(0))[-1]) == 200


def test_decoding_gives_the_example_weighted_mean() -> None:
    """FedAvg's weighted mean (McMahan et al. 2017): sum(n_k x_k) / sum(n_k)."""
    config = QuantizationConfig.for_clients(3, 10.0, max_weight=1000, bits=24)
    updates = [np.array([1.0, 2.0]), np.array([4.0, -2.0]), np.array([-3.0, 0.0])]
    counts = [100, 300, 600]
    total = zeros(3)
    for i, (u, c) in enumerate(zip(updates, counts, strict=True)):
        add_into(total, encode_weighted_update(u, c, config, np.random.default_rng(i)), config.modulus)
    decoded = decode_weighted_sum(total, config, 3)
    assert decoded.total_weight == 1000
    expected = np.array([0.1 * 1 + 0.3 * 4 - 0.6 * 3, 0.1 * 2 - 0.3 * 2])
    assert np.max(np.abs(decoded.mean - expected)) <= decoded.error_bound
    assert decoded.error_bound == config.error_bound(3, 1000)


def test_uniform_weights_when_the_cap_is_one() -> None:
    config = QuantizationConfig.for_clients(2, 1.0, max_weight=1, bits=20)
    total = zeros(2)
    for i, (value, count) in enumerate([(0.8, 10), (-0.2, 1000)]):
        add_into(
            total,
            encode_weighted_update(np.array([value]), count, config, np.random.default_rng(i)),
            config.modulus,
        )
    decoded = decode_weighted_sum(total, config, 2)
    assert decoded.total_weight == 2
    assert abs(decoded.mean[0] - 0.3) <= decoded.error_bound


def test_decoding_refuses_sums_that_no_valid_encodings_produce() -> None:
    config = QuantizationConfig.for_clients(4, 1.0, max_weight=10, bits=8)
    p = config.modulus
    with pytest.raises(ValueError, match="total weight 0"):
        decode_weighted_sum(to_field(np.array([3, 0]), p), config, 2)
    with pytest.raises(ValueError, match="total weight 21"):
        decode_weighted_sum(to_field(np.array([3, 21]), p), config, 2)  # > 2 * max_weight
    with pytest.raises(ValueError, match="exceeds 2 \\* L"):
        decode_weighted_sum(to_field(np.array([-255, 5]), p), config, 2)  # |sum| > 2 * 127
    with pytest.raises(ValueError, match="num_summed"):
        decode_weighted_sum(to_field(np.array([1, 5]), p), config, 5)  # more than n
