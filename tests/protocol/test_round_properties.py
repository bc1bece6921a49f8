"""Property: for any n, t, graph, mode, inputs and dropout at any round, the secure sum equals
numpy's sum of the inputs of exactly the clients in U3, or the round aborts, and it aborts
exactly when a reference model of the rules says fewer than t remain somewhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg import AbortedError, RoundSetup, SecAggConfig, simulate
from secagg.graph import NeighbourGraph
from secagg.primitives.field import SUPPORTED_PRIMES
from secagg.simulate import seeded_random_bytes
from secagg.state import rounds_of

MODULI = (SUPPORTED_PRIMES[0], 2**32 - 5, 2**61 - 1, SUPPORTED_PRIMES[-1])


@dataclass
class Expected:
    aborted: bool
    survivors: frozenset[int]


def reference_outcome(config: SecAggConfig, graph: NeighbourGraph, drop: dict[str, set[int]]) -> Expected:
    """What the rules of DESIGN.md section 3 say must happen, computed without the protocol."""
    n, t = config.num_clients, config.threshold

    def closed(u: int) -> frozenset[int]:
        return graph.neighbours(u) | {u}

    def refusing(clients: set[int], pool: frozenset[int]) -> set[int]:
        # An honest client refuses when fewer than t of its closed neighbourhood remain.
        return {u for u in clients if len(closed(u) & pool) < t}

    u1 = frozenset(set(range(1, n + 1)) - drop.get("advertise_keys", set()))
    if len(u1) < t:
        return Expected(True, frozenset())
    answering = set(u1) - drop.get("share_keys", set())
    u2 = frozenset(answering - refusing(answering, u1))
    if len(u2) < t:
        return Expected(True, frozenset())
    answering = set(u2) - drop.get("masked_input", set())
    u3 = frozenset(answering - refusing(answering, u2))
    if len(u3) < t:
        return Expected(True, frozenset())
    asked = set(u3)
    if config.is_active:
        answering = asked - drop.get("consistency_check", set())
        asked = answering - refusing(answering, u3)
        if len(asked) < t:
            return Expected(True, u3)
    answering = asked - drop.get("unmasking", set())
    u5 = frozenset(answering - refusing(answering, u3))
    if len(u5) < t:
        return Expected(True, u3)
    for u in u3:  # b_u is reconstructed from its neighbourhood's shares
        if len(closed(u) & u5) < t:
            return Expected(True, u3)
    for v in u2 - u3:  # s_v^SK is needed when a neighbour of v is in U3
        if graph.neighbours(v) & u3 and len(graph.neighbours(v) & u5) < t:
            return Expected(True, u3)
    return Expected(False, u3)


@st.composite
def rounds_and_drops(draw: st.DrawFn) -> tuple[SecAggConfig, dict[int, np.ndarray], dict[str, set[int]], int]:
    n = draw(st.integers(3, 12))
    graph = draw(st.sampled_from(["complete", "harary"]))
    degree = None
    if graph == "harary":
        degree = draw(st.sampled_from([k for k in range(2, n) if k % 2 == 0]))
    mode = draw(st.sampled_from(["semi_honest", "active"]))
    size = n if degree is None else degree + 1
    probe = SecAggConfig(n, size, 1, graph=graph, degree=degree, mode=mode)
    t = draw(st.integers(probe.minimum_safe_threshold(), size))
    m = draw(st.integers(1, 12))
    modulus = draw(st.sampled_from(MODULI))
    config = SecAggConfig(n, t, m, modulus=modulus, graph=graph, degree=degree, mode=mode)
    inputs = {
        i: np.array(draw(st.lists(st.integers(0, modulus - 1), min_size=m, max_size=m)), dtype=np.uint64)
        for i in range(1, n + 1)
    }
    drop = {
        r.value: draw(st.sets(st.integers(1, n), max_size=max(1, n // 3)))
        for r in rounds_of(config.is_active)
    }
    seed = draw(st.integers(0, 2**32))
    return config, inputs, drop, seed


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds_and_drops())
def test_sum_is_exact_or_round_aborts(
    case: tuple[SecAggConfig, dict[int, np.ndarray], dict[str, set[int]], int],
) -> None:
    config, inputs, drop, seed = case
    nonce = seeded_random_bytes(seed, "nonce")(32)
    graph = RoundSetup(config, nonce, _roster(config, seed)).graph
    expected = reference_outcome(config, graph, drop)
    try:
        result = simulate(config, inputs, drop, seed=seed)
    except AbortedError as exc:
        assert expected.aborted, f"aborted but the rules say the round completes: {exc}"
        return
    assert not expected.aborted, "completed although fewer than t remained somewhere"
    assert result.survivors == expected.survivors
    assert len(result.survivors) >= config.threshold
    want = np.zeros(config.vector_length, dtype=object)
    for i in result.survivors:
        want = want + inputs[i].astype(object)
    assert [int(x) for x in result.total] == [int(x) % config.modulus for x in want]


def _roster(config: SecAggConfig, seed: int) -> dict[int, bytes] | None:
    # simulate() derives identities from the seed; recompute them so the session id matches.
    if not config.is_active:
        return None
    from secagg.primitives import signatures

    return {
        i: signatures.identity_public_bytes(
            signatures.generate_identity(seeded_random_bytes(seed, f"identity/{i}")(32))
        )
        for i in range(1, config.num_clients + 1)
    }


def test_readme_example_is_exact() -> None:
    """The issue's snippet: n=100, m=100,000, 4 clients dropped at three different rounds."""
    cfg = SecAggConfig(num_clients=100, threshold=51, vector_length=100_000)
    rng = np.random.default_rng(0)
    inputs = {i: rng.integers(0, cfg.modulus, cfg.vector_length, dtype=np.uint64) for i in range(1, 101)}
    res = simulate(cfg, inputs, drop={"share_keys": {3, 7}, "masked_input": {9}, "unmasking": {12}})
    assert res.survivors == frozenset(range(1, 101)) - {3, 7, 9}
    expected = np.zeros(cfg.vector_length, dtype=np.uint64)
    for i in sorted(res.survivors):
        expected = (expected + inputs[i]) % np.uint64(cfg.modulus)
    assert np.array_equal(res.total, expected)


@pytest.mark.parametrize("mode", ["semi_honest", "active"])
def test_too_few_left_aborts_naming_round_and_counts(mode: str) -> None:
    cfg = SecAggConfig(num_clients=6, threshold=5, vector_length=4, mode=mode)
    inputs = {i: np.arange(4, dtype=np.uint64) for i in range(1, 7)}
    with pytest.raises(AbortedError) as info:
        simulate(cfg, inputs, drop={"masked_input": {1, 2}}, seed=1)
    assert info.value.round == "masked_input"
    assert "4" in info.value.reason and "threshold is 5" in info.value.reason


def test_masked_input_hides_the_input() -> None:
    """What the server receives in round 2 is not the input (masks are present)."""
    cfg = SecAggConfig(num_clients=4, threshold=3, vector_length=64)
    inputs = {i: np.full(64, i, dtype=np.uint64) for i in range(1, 5)}
    seen: list[np.ndarray] = []

    def observer(message: object) -> None:
        vector = getattr(message, "vector", None)
        if vector is not None:
            seen.append(vector)

    res = simulate(cfg, inputs, seed=5, observer=observer)
    assert len(seen) == 4
    for vector in seen:
        assert not any(np.array_equal(vector, x) for x in inputs.values())
    assert np.array_equal(res.total, np.full(64, 10, dtype=np.uint64))
