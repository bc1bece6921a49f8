"""The DP client encoding and server decoding: no wrap at the stated bound, exact lift, unbiased
mean, clipping, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("dp_accounting")

from fedavg_core.distributed_dp import DistributedDP, rounded_l2_bound
from fedavg_core.quantize import check_headroom, from_field
from fedavg_core.rotation import rotate

N, T, D_MODEL = 12, 7, 100


@pytest.fixture(scope="module", params=["ddgauss", "skellam"])
def plan(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    dp = DistributedDP(epsilon=2.0, delta=1e-5, rounds=3, clip=1.0, mechanism=request.param, bits=6)
    return dp.plan(N, T, D_MODEL)


def test_the_field_comes_from_the_existing_headroom_guard(plan) -> None:  # type: ignore[no-untyped-def]
    q = plan.quantization
    check_headroom(N, q.bits, q.modulus)  # does not raise
    assert N * q.levels < q.modulus / 2  # the guard's condition
    assert 0.99 * q.modulus / 2 < plan.wrap_bound < q.modulus / 2  # the scale fills the field
    assert plan.field_bits == (q.modulus - 1).bit_length()


def test_worst_case_sums_stay_within_the_wrap_bound(plan) -> None:  # type: ignore[no-untyped-def]
    # All n clients send the same update at full norm (the signal adds up coherently) on a spiky
    # direction; over 30 rounds x 128 coordinates no coordinate of the integer sum may pass the
    # bound (expected exceedances <= 30 * 128 * 1e-6 = 0.004), and the field sum lifts exactly.
    rng = np.random.default_rng(5)
    update = np.zeros(D_MODEL)
    update[0] = 3.0  # clipped to norm 1
    p = plan.quantization.modulus
    largest = 0.0
    for round_seed in range(30):
        vectors = [plan.encode(update, 1.0, round_seed, r) for r in rng.spawn(N)]
        signed = np.array([np.where(v > p // 2, v.astype(np.int64) - p, v.astype(np.int64)) for v in vectors])
        exact = signed.sum(axis=0)
        largest = max(largest, float(np.abs(exact[:-1]).max()))
        field = np.zeros(plan.padded + 1, dtype=np.uint64)
        for v in vectors:
            field = (field + v) % np.uint64(p)
        np.testing.assert_array_equal(from_field(field, p), exact)
    assert largest <= plan.wrap_bound
    assert largest > plan.wrap_bound / 20  # the bound is not vacuous


def test_decoded_mean_is_the_clipped_mean_plus_the_stated_noise(plan) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(6)
    updates = [rng.normal(size=D_MODEL) * s for s in np.linspace(0.01, 0.5, N)]  # some need clipping
    clipped = [u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates]
    survivors = list(range(T))  # the fewest survivors the round may release
    errors = []
    for seed in range(20):
        vectors = [
            plan.encode(updates[i], 1.0, seed, r) for i, r in zip(survivors, rng.spawn(T), strict=True)
        ]
        field = np.zeros(plan.padded + 1, dtype=np.uint64)
        for v in vectors:
            field = (field + v) % np.uint64(plan.quantization.modulus)
        decoded = plan.decode(field, T, seed)
        errors.append(decoded.mean - np.mean([clipped[i] for i in survivors], axis=0))
    err = np.concatenate(errors)
    stddev = plan.noise_stddev(T)
    assert decoded.noise_stddev == stddev
    # Unbiased, and the spread is the stated noise plus the rounding (variance <= 1/4 per client
    # and integer coordinate, rotated back orthonormally).
    rounding = math.sqrt(T / 4) / (plan.scale * T)
    assert abs(err.mean()) < 5 * math.hypot(stddev, rounding) / math.sqrt(err.size)
    assert 0.95 * stddev <= err.std() <= 1.05 * math.hypot(stddev, rounding)


def test_conditional_rounding_keeps_the_accounted_l2_bound(plan) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    x = rotate(np.ones(D_MODEL) / math.sqrt(D_MODEL), 3) * plan.scale
    for _ in range(200):
        assert np.linalg.norm(plan._round(x, rng)) <= plan.l2_sensitivity
    assert rounded_l2_bound(10.0, 64, 0.0) == 18.0  # beta = 0: the deterministic bound


def test_decoding_refuses_sums_that_are_not_sums_of_encodings(plan) -> None:  # type: ignore[no-untyped-def]
    v = plan.encode(np.ones(D_MODEL), 1.0, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="weight element 1 differs from the 2"):
        plan.decode(v, 2, 0)
    with pytest.raises(ValueError, match="elements"):
        plan.decode(v[:-2], 1, 0)
    with pytest.raises(ValueError, match="non-finite"):
        plan.encode(np.full(D_MODEL, np.nan), 1.0, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="plan is for 100"):
        plan.encode(np.ones(5), 1.0, 0, np.random.default_rng(0))
