"""The randomized Hadamard rotation: exact inverse, orthonormal, seeded, flat."""

from __future__ import annotations

import numpy as np
import pytest

from fedavg_core.rotation import padded_dimension, rotate, rotation_signs, unrotate, walsh_hadamard


def sylvester(size: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < size:
        h = np.block([[h, h], [h, -h]])
    return h


@pytest.mark.parametrize("size", [1, 2, 8, 64])
def test_walsh_hadamard_is_the_sylvester_matrix(size: int) -> None:
    x = np.random.default_rng(size).normal(size=(3, size))
    np.testing.assert_allclose(walsh_hadamard(x), x @ sylvester(size).T, atol=1e-12)


@pytest.mark.parametrize("dimension", [1, 5, 64, 650, 1000])
def test_rotation_round_trips_and_keeps_the_norm(dimension: int) -> None:
    x = np.random.default_rng(dimension).normal(size=dimension)
    y = rotate(x, seed=123)
    assert y.size == padded_dimension(dimension) >= dimension
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(unrotate(y, 123, dimension), x, atol=1e-12)


def test_the_seed_fixes_the_rotation_and_another_seed_does_not_invert_it() -> None:
    x = np.random.default_rng(0).normal(size=100)
    np.testing.assert_array_equal(rotate(x, 7), rotate(x, 7))
    np.testing.assert_array_equal(rotation_signs(7, 128), rotation_signs(7, 128))
    assert not np.allclose(unrotate(rotate(x, 7), 8, 100), x)


def test_a_spiky_vector_becomes_flat() -> None:
    x = np.zeros(1024)
    x[3] = 5.0
    y = rotate(x, 11)
    np.testing.assert_allclose(np.abs(y), 5.0 / 32.0)  # every coordinate is +-||x|| / sqrt(D)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        walsh_hadamard(np.ones(6))
    with pytest.raises(ValueError, match="rotates to length 16"):
        unrotate(np.ones(8), 0, 10)
    with pytest.raises(ValueError, match="positive int"):
        padded_dimension(0)
