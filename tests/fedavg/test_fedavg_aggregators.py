"""The two aggregators agree within the quantization bound; the secure one leaks no weight."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from fedavg_core import (
    ClientUpdate,
    PlaintextAggregator,
    SecureAggregator,
    encode_weighted_update,
)
from secagg import AbortedError, find_parameters

CLIP = 0.5
MAX_WEIGHT = 5000
# Distinctive example counts (none is a client id, a length or a threshold); the last one is
# capped to MAX_WEIGHT, so its weight and its count differ.
COUNTS = [1031, 1193, 1297, 1409, 1523, 1637, 1741, 1867, 1979, 7001]


def _updates(m: int = 300, seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [ClientUpdate(rng.normal(0.0, 0.3, m), c) for c in COUNTS]  # some beyond the clip


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


def test_plaintext_is_the_clipped_capped_weighted_mean() -> None:
    updates = [ClientUpdate(np.array([1.0, -4.0]), 1), ClientUpdate(np.array([3.0, 0.0]), 9)]
    plain = PlaintextAggregator().aggregate(updates, np.random.default_rng(0))
    assert np.allclose(plain.mean_update, [2.8, -0.4]) and plain.total_weight == 10
    capped = PlaintextAggregator(clip=2.0, max_weight=3).aggregate(updates, np.random.default_rng(0))
    assert np.allclose(capped.mean_update, [(1 + 3 * 2) / 4, -2 / 4])
    assert capped.total_weight == 4 and capped.error_bound == 0.0


def test_secure_equals_plaintext_within_the_bound() -> None:
    updates = _updates()
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT)
    result = secure.aggregate(updates, np.random.default_rng(1))
    plain = PlaintextAggregator(clip=CLIP, max_weight=MAX_WEIGHT).aggregate(updates, np.random.default_rng(1))
    assert result.total_weight == plain.total_weight == sum(COUNTS[:-1]) + MAX_WEIGHT
    assert result.participants == tuple(range(10))
    assert result.error_bound == secure.quantization(10).error_bound(10, plain.total_weight)
    assert _max_diff(result.mean_update, plain.mean_update) <= result.error_bound
    # The bound is small next to the update itself: the comparison is not vacuous.
    assert result.error_bound < 1e-6 * np.max(np.abs(plain.mean_update))


def test_secure_with_a_fixed_small_field_still_matches() -> None:
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, bits=12)
    assert secure.quantization(10).modulus == 2**17 - 1  # the smallest prime above 2 * 10 * 5000
    updates = _updates(m=50, seed=3)
    result = secure.aggregate(updates, np.random.default_rng(2))
    plain = PlaintextAggregator(clip=CLIP, max_weight=MAX_WEIGHT).aggregate(updates, np.random.default_rng(2))
    assert _max_diff(result.mean_update, plain.mean_update) <= result.error_bound
    assert result.error_bound > 1e-4  # a coarse quantization, and the bound says so


def test_dropouts_before_masked_input_leave_the_survivors_weighted_mean() -> None:
    updates = _updates(m=100, seed=4)
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, drop={"masked_input": [2, 7]})
    result = secure.aggregate(updates, np.random.default_rng(5))
    survivors = [i for i in range(10) if i not in (1, 6)]  # protocol ids are positions + 1
    assert result.participants == tuple(survivors)
    plain = PlaintextAggregator(clip=CLIP, max_weight=MAX_WEIGHT).aggregate(
        [updates[i] for i in survivors], np.random.default_rng(5)
    )
    assert result.total_weight == plain.total_weight
    assert _max_diff(result.mean_update, plain.mean_update) <= result.error_bound


def test_a_dropout_after_masked_input_keeps_its_input_in_the_sum() -> None:
    updates = _updates(m=100, seed=6)
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, drop={"unmasking": [3]})
    result = secure.aggregate(updates, np.random.default_rng(7))
    assert result.participants == tuple(range(10))  # U3: everyone sent a masked input
    plain = PlaintextAggregator(clip=CLIP, max_weight=MAX_WEIGHT).aggregate(updates, np.random.default_rng(7))
    assert _max_diff(result.mean_update, plain.mean_update) <= result.error_bound


def test_too_many_dropouts_abort_without_a_result() -> None:
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, drop={"share_keys": range(1, 6)})
    assert secure.secagg_config(10, 101).threshold == 6
    with pytest.raises(AbortedError):
        secure.aggregate(_updates(m=100), np.random.default_rng(0))


def test_secure_refuses_bad_rounds() -> None:
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT)
    with pytest.raises(ValueError, match="at least 2"):
        secure.aggregate(_updates()[:1], np.random.default_rng(0))
    with pytest.raises(ValueError, match="differ in length"):
        secure.aggregate(
            [ClientUpdate(np.zeros(3), 1), ClientUpdate(np.zeros(4), 1)], np.random.default_rng(0)
        )
    with pytest.raises(ValueError, match="unknown clients"):
        SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, drop={"masked_input": [0]}).aggregate(
            _updates(m=10), np.random.default_rng(0)
        )


# --- what the server sees -----------------------------------------------------------------


def _integers_and_bytes(obj: object, seen: set[int] | None = None) -> Iterator[object]:
    """Every int, integer array and bytes value reachable from a message object."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, np.integer, bytes, bytearray, np.ndarray)):
        yield obj
    elif isinstance(obj, str):
        yield obj.encode()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            yield from _integers_and_bytes(getattr(obj, field.name), seen)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _integers_and_bytes(key, seen)
            yield from _integers_and_bytes(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            yield from _integers_and_bytes(item, seen)
    elif hasattr(obj, "__dict__"):
        yield from _integers_and_bytes(vars(obj), seen)


def _leaks(message: object, secrets: list[int]) -> list[str]:
    """Where ``message`` shows one of ``secrets``: as an int, an array element, or inside bytes
    as a 4- or 8-byte little/big-endian integer or decimal text."""
    encodings = {
        s: [s.to_bytes(k, order) for k in (4, 8) for order in ("little", "big")] + [str(s).encode()]
        for s in secrets
    }
    found = []
    for value in _integers_and_bytes(message):
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "iuf" and np.isin(value, secrets).any():
                found.append(f"array element in {type(message).__name__}")
        elif isinstance(value, (bytes, bytearray)):
            found += [f"bytes {s}" for s, codes in encodings.items() if any(c in value for c in codes)]
        elif int(value) in secrets:  # type: ignore[call-overload]
            found.append(f"int {value}")
    return found


def test_no_message_of_a_secure_round_carries_a_weight_or_an_example_count() -> None:
    messages: list[object] = []
    updates = _updates(m=200, seed=8)
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, observer=messages.append)
    result = secure.aggregate(updates, np.random.default_rng(9))
    secrets = sorted(set(COUNTS) | {min(c, MAX_WEIGHT) for c in COUNTS})

    masked = [m for m in messages if hasattr(m, "vector")]
    assert len(masked) == 10  # every client's masked input was seen
    assert len(messages) > 40  # and every other round's messages in both directions
    leaks = {type(m).__name__: _leaks(m, secrets) for m in messages}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert result.total_weight == sum(min(c, MAX_WEIGHT) for c in COUNTS)  # only the sum

    # The scan does find weights where they are in the clear: the unmasked encodings.
    config = secure.quantization(10)
    encodings = [
        encode_weighted_update(u.update, u.num_examples, config, np.random.default_rng(0)) for u in updates
    ]
    assert all(_leaks(e, secrets) for e in encodings)
    assert _leaks({"sender": 3, "count": 1193}, secrets) == ["int 1193"]
    assert _leaks(b"xx" + (1409).to_bytes(8, "big"), secrets) == ["bytes 1409"]


def _masked_vectors(aggregator: SecureAggregator, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    seen: list[object] = []
    run = dataclasses.replace(aggregator, observer=seen.append)
    result = run.aggregate(_updates(m=20), np.random.default_rng(seed))
    return [m.vector.copy() for m in seen if hasattr(m, "vector")], result.mean_update


def test_masks_come_from_the_os_unless_the_run_is_reproducible() -> None:
    fresh = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, reproducible=False)
    (first, mean1), (second, mean2) = _masked_vectors(fresh, 1), _masked_vectors(fresh, 1)
    assert not any(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert np.array_equal(mean1, mean2)  # the masks cancel; the rounding used the same rng
    seeded = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT)
    (first, _), (second, _) = _masked_vectors(seeded, 1), _masked_vectors(seeded, 1)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_dropouts_can_be_drawn_per_round() -> None:
    def drop_one(num_clients: int, rng: np.random.Generator) -> dict[str, list[int]]:
        return {"masked_input": [int(rng.integers(1, num_clients + 1))]}

    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, drop=drop_one)
    result = secure.aggregate(_updates(m=20), np.random.default_rng(3))
    assert len(result.participants) == 9
    missing = (set(range(10)) - set(result.participants)).pop()
    assert result.total_weight == sum(min(c, MAX_WEIGHT) for c in COUNTS) - min(COUNTS[missing], MAX_WEIGHT)


def test_harary_without_degree_or_threshold_takes_both_from_the_finder() -> None:
    """SecAgg+ defaults come from the threat model (gamma, delta), not from k and t: the round's
    config is ``find_parameters`` for its client count, and it survives a dropout."""
    secure = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, graph="harary")
    for n, gamma, delta in ((40, 1 / 3, 0.1), (10, 1 / 3, 0.1)):
        found = find_parameters(n, gamma, delta, "semi_honest")
        config = secure.secagg_config(n, 101)
        assert (config.graph, config.degree, config.threshold) == ("harary", found.degree, found.threshold)
        assert (config.collusion_fraction, config.dropout_fraction) == (gamma, delta)
    tuned = SecureAggregator(
        clip=CLIP, max_weight=MAX_WEIGHT, graph="harary", collusion_fraction=0.1, dropout_fraction=0.2
    )
    found = find_parameters(100, 0.1, 0.2, "semi_honest")
    assert (tuned.secagg_config(100, 11).degree, tuned.secagg_config(100, 11).threshold) == (
        found.degree,
        found.threshold,
    )
    assert found.degree < secure.secagg_config(100, 11).degree  # less collusion, a sparser graph
    result = SecureAggregator(
        clip=CLIP, max_weight=MAX_WEIGHT, graph="harary", drop={"masked_input": [2]}
    ).aggregate(_updates(m=20), np.random.default_rng(1))
    assert 1 not in result.participants and len(result.participants) == 9


def test_explicit_harary_degree_is_checked_against_the_threat_model() -> None:
    """The issue's k=40, t=14 at 1000 clients is refused with the probability in the message; at
    40 clients no threshold makes degree 4 safe against a third colluding (the safe t exceeds the
    5 holders); assuming no collusion, degree 6 is accepted at its smallest safe t."""
    unsafe = SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, graph="harary", degree=40, threshold=14)
    with pytest.raises(ValueError, match=r"P\(some client has >= 13 corrupt neighbours\) <= 1 \(2\^0\)"):
        unsafe.secagg_config(1000, 11)
    with pytest.raises(ValueError, match=r"degree k=4 is too small .* t=6, exceeds the neighbourhood of 5"):
        SecureAggregator(clip=CLIP, max_weight=MAX_WEIGHT, graph="harary", degree=4).secagg_config(40, 101)
    no_collusion = SecureAggregator(
        clip=CLIP, max_weight=MAX_WEIGHT, graph="harary", degree=6, collusion_fraction=0.0
    )
    config = no_collusion.secagg_config(40, 101)
    assert (config.degree, config.threshold) == (6, 2) and config.assessment.secure
