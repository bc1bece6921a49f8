"""secagg.graph: complete and Harary neighbour graphs, and the session-derived labelling."""

from __future__ import annotations

import dataclasses
from collections import Counter, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.config import SecAggConfig
from secagg.graph import NeighbourGraph, permutation
from secagg.session import RoundSetup

from ._reference import permutation_reference


def _adjacency(graph: NeighbourGraph, n: int) -> dict[int, frozenset[int]]:
    return {i: graph.neighbours(i) for i in range(1, n + 1)}


def _assert_simple_symmetric(adjacency: dict[int, frozenset[int]]) -> None:
    for u, neighbours in adjacency.items():
        assert u not in neighbours
        assert neighbours <= set(adjacency)
        for v in neighbours:
            assert u in adjacency[v], (u, v)


def _connected(adjacency: dict[int, frozenset[int]]) -> bool:
    start = next(iter(adjacency))
    seen, queue = {start}, deque([start])
    while queue:
        for v in adjacency[queue.popleft()] - seen:
            seen.add(v)
            queue.append(v)
    return len(seen) == len(adjacency)


@pytest.mark.parametrize("n", [2, 3, 10, 33])
def test_complete_graph(n: int) -> None:
    config = SecAggConfig(num_clients=n, threshold=n, vector_length=1)
    graph = NeighbourGraph(config, bytes(32))
    adjacency = _adjacency(graph, n)
    _assert_simple_symmetric(adjacency)
    for u in range(1, n + 1):
        assert adjacency[u] == set(range(1, n + 1)) - {u}
        assert graph.closed_neighbourhood(u) == set(range(1, n + 1))
        assert not graph.are_neighbours(u, u)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 80), data=st.data(), session=st.binary(min_size=32, max_size=32))
def test_harary_graph_is_k_regular_symmetric_and_connected(
    n: int, data: st.DataObject, session: bytes
) -> None:
    k = data.draw(st.sampled_from(range(2, n, 2)))
    # The graph's shape is under test, not the threat model: no collusion, no dropout.
    config = SecAggConfig(
        num_clients=n,
        threshold=k,
        vector_length=1,
        graph="harary",
        degree=k,
        collusion_fraction=0.0,
        dropout_fraction=0.0,
    )
    graph = NeighbourGraph(config, session)
    adjacency = _adjacency(graph, n)
    _assert_simple_symmetric(adjacency)
    assert all(len(neighbours) == k for neighbours in adjacency.values())
    assert _connected(adjacency)
    for u in range(1, n + 1):
        assert graph.closed_neighbourhood(u) == adjacency[u] | {u}
        for v in range(1, n + 1):
            assert graph.are_neighbours(u, v) == (v in adjacency[u])
    # the ring: consecutive clients of the permutation are neighbours
    order = permutation(n, session)
    assert all(order[i - 1] in adjacency[order[i]] for i in range(n))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), session=st.binary(min_size=32, max_size=32))
def test_permutation_is_a_permutation_matching_the_reference(n: int, session: bytes) -> None:
    order = permutation(n, session)
    assert sorted(order) == list(range(1, n + 1))
    assert order == permutation_reference(n, session)


def test_permutation_depends_on_the_session_id() -> None:
    orders = {tuple(permutation(20, bytes([i]) * 32)) for i in range(50)}
    assert len(orders) == 50
    assert permutation(20, bytes(32)) == permutation(20, bytes(32))


def test_permutation_is_roughly_uniform_for_n_3() -> None:
    """3! = 6 orders over 1200 session ids: chi-square with 5 degrees of freedom below 25
    (P about 1.4e-4 for a uniform source)."""
    counts = Counter(tuple(permutation(3, i.to_bytes(32, "big"))) for i in range(1200))
    assert len(counts) == 6
    chi2 = sum((c - 200) ** 2 / 200 for c in counts.values())
    assert chi2 < 25, counts


def test_server_and_clients_derive_the_same_graph() -> None:
    config = SecAggConfig(
        num_clients=30, threshold=4, vector_length=5, graph="harary", degree=8, collusion_fraction=0.0
    )
    nonce = bytes(range(32))
    server_view = RoundSetup(config, nonce)
    client_view = RoundSetup(
        SecAggConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}), nonce
    )
    assert server_view.session_id == client_view.session_id
    assert _adjacency(server_view.graph, 30) == _adjacency(client_view.graph, 30)
    other_round = RoundSetup(config, bytes(range(1, 33)))
    assert _adjacency(other_round.graph, 30) != _adjacency(server_view.graph, 30)


@pytest.mark.parametrize("client_id", [0, -1, 11])
def test_unknown_client_id_is_rejected(client_id: int) -> None:
    for graph_kind, degree, t, gamma in (("complete", None, 5, 1 / 3), ("harary", 4, 3, 0.0)):
        config = SecAggConfig(
            num_clients=10,
            threshold=t,
            vector_length=1,
            graph=graph_kind,
            degree=degree,
            collusion_fraction=gamma,
        )
        with pytest.raises(ValueError, match=r"not in 1\.\.10"):
            NeighbourGraph(config, bytes(32)).neighbours(client_id)
