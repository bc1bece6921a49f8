"""Property: for any n, t, graph, mode, inputs and dropout at any round, the secure sum equals
numpy's sum of the inputs of exactly the clients in U3, or the round aborts, and it aborts
exactly when a reference model of the rules (``helpers.reference_round``, written from the
rules, not from the code) says fewer than t remain somewhere.

With malicious clients (up to floor(gamma*n) of them, in configs whose gamma admits them, or any
coalition of at most k + 1 - t): garbage share bundles, wrong shares dealt in round 1 or revealed
in the unmasking round, and false accusations. An accusation cuts one pair; exclusions are what
the model says, never of an honest client. Every round ends with the exact sum over U3 or a clean
``AbortedError`` naming the culprit; never a wrong sum, no share of an excluded client is ever
revealed, nor a share of an accused client by its accuser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from helpers import (
    Federation,
    Outcome,
    accuse_falsely,
    config,
    deal_wrong_shares,
    reference_round,
    shifted,
)
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from secagg import AbortedError, Round, RoundSetup, SecAggConfig, simulate
from secagg.graph import NeighbourGraph
from secagg.messages import BUNDLE_SIZE, ClientMessage, ShareKeys, UnmaskingShares
from secagg.parameters import corrupt_count
from secagg.primitives.field import SUPPORTED_PRIMES
from secagg.simulate import seeded_random_bytes
from secagg.state import PROTOCOL_ROUNDS

MODULI = (SUPPORTED_PRIMES[0], 2**32 - 5, 2**61 - 1, SUPPORTED_PRIMES[-1])


def _valid_thresholds(n: int, graph: str, degree: int | None, mode: str, **kw: float) -> list[int]:
    size = n if degree is None else degree + 1
    out = []
    for t in range(2, size + 1):
        try:
            SecAggConfig(n, t, 1, graph=graph, degree=degree, mode=mode, **kw)  # type: ignore[arg-type]
        except ValueError:
            continue
        out.append(t)
    return out


@st.composite
def rounds_and_drops(draw: st.DrawFn) -> tuple[SecAggConfig, dict[int, np.ndarray], dict[str, set[int]], int]:
    n = draw(st.integers(3, 12))
    graph = draw(st.sampled_from(["complete", "harary"]))
    degree = None
    if graph == "harary":
        degree = draw(st.sampled_from([k for k in range(2, n) if k % 2 == 0]))
    mode = draw(st.sampled_from(["semi_honest", "active"]))
    # Toy Harary graphs are sound only without a coalition (see helpers.config).
    gamma = 0.0 if graph == "harary" else draw(st.sampled_from([0.0, 0.1, 1 / 3]))
    delta = draw(st.sampled_from([0.0, 0.1]))
    thresholds = _valid_thresholds(n, graph, degree, mode, collusion_fraction=gamma, dropout_fraction=delta)
    assume(thresholds)
    t = draw(st.sampled_from(thresholds))
    m = draw(st.integers(1, 12))
    modulus = draw(st.sampled_from(MODULI))
    config = SecAggConfig(
        n,
        t,
        m,
        modulus=modulus,
        graph=graph,  # type: ignore[arg-type]
        degree=degree,
        mode=mode,
        collusion_fraction=gamma,
        dropout_fraction=delta,
    )
    inputs = {
        i: np.array(draw(st.lists(st.integers(0, modulus - 1), min_size=m, max_size=m)), dtype=np.uint64)
        for i in range(1, n + 1)
    }
    # Every round, also the consistency check in the semi-honest mode (silent from then on).
    drop = {r.value: draw(st.sets(st.integers(1, n), max_size=max(1, n // 3))) for r in PROTOCOL_ROUNDS}
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
    expected = reference_round(config, graph, drop)
    try:
        result = simulate(config, inputs, drop, seed=seed)
    except AbortedError as exc:
        assert expected.aborted, f"aborted but the rules say the round completes: {exc}"
        assert exc.round == expected.abort_round, f"aborted in {exc.round}, the rules say {expected}"
        return
    assert not expected.aborted, f"completed although fewer than t remained somewhere: {expected}"
    assert result.survivors == expected.survivors
    # Without accusations a client is excluded only when too few neighbours are left in U2.
    exclusions = {u for u, d in result.dropped.items() if d.round is Round.REPORT_BUNDLES}
    assert exclusions == expected.excluded and set(result.dropped) == expected.excluded
    assert set(result.aborted_clients) == expected.refused, result.aborted_clients
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


# -- malicious clients ---------------------------------------------------------------------------


def _malicious_configs() -> list[SecAggConfig]:
    """Configs whose gamma admits at least one corrupt client, and in which floor(gamma*n)
    liars can never leave an honest client's secret undecodable: the holders of a secret (its
    closed neighbourhood) number at least t + 2 floor(gamma*n). (With fewer spare shares a
    wrong share can only abort the round: ``test_bad_clients``.)"""
    out = []
    for mode in ("semi_honest", "active"):
        for gamma in (0.1, 0.2, 0.25):
            for n in range(5, 13):
                corrupt = corrupt_count(n, gamma)
                if corrupt == 0:
                    continue
                for t in _valid_thresholds(n, "complete", None, mode, collusion_fraction=gamma):
                    if n - t >= 2 * corrupt:
                        out.append(config(n, t, m=3, mode=mode, collusion_fraction=gamma))
                harary = SecAggConfig(
                    n, None, 3, graph="harary", mode=mode, collusion_fraction=gamma, dropout_fraction=0.0
                )
                if harary.graph == "harary" and harary.neighbourhood_size - harary.threshold >= 2 * corrupt:
                    out.append(harary)
    return out


MALICIOUS_CONFIGS = _malicious_configs()


@dataclass
class Misbehaviour:
    """What one corrupt client does; all sets name its neighbours."""

    junk_to: frozenset[int] = frozenset()  # round 1: random bytes instead of these bundles
    wrong_b_to: frozenset[int] = frozenset()  # round 1: a wrong share of b_u, in a valid bundle
    wrong_sk_to: frozenset[int] = frozenset()  # round 1: a wrong share of s_u^SK, likewise
    accuse: frozenset[int] = frozenset()  # report round: false accusations (discards those bundles)
    silent_after_report: bool = False  # drops before masking: its s_SK is then reconstructed
    lying_holder: bool = False  # unmasking: every share it reveals is off (in range)


@dataclass
class MaliciousCase:
    config: SecAggConfig
    seed: int
    plan: dict[int, Misbehaviour] = field(default_factory=dict)


def _subset(draw: st.DrawFn, pool: frozenset[int], chance: float) -> frozenset[int]:
    if not pool or not draw(st.booleans()) or chance == 0:
        return frozenset()
    return frozenset(draw(st.sets(st.sampled_from(sorted(pool)), min_size=1)))


@st.composite
def malicious_cases(draw: st.DrawFn, *, accusers: bool) -> MaliciousCase:
    """Up to floor(gamma*n) corrupt clients, each with a random misbehaviour: garbage bundles and
    wrong shares (``accusers=False``), or false accusations only (``accusers=True``)."""
    cfg = draw(st.sampled_from(MALICIOUS_CONFIGS))
    seed = draw(st.integers(0, 2**16))
    graph = Federation(cfg, seed=seed).setup.graph
    n = cfg.num_clients
    count = draw(st.integers(1, corrupt_count(n, cfg.collusion_fraction)))
    corrupt = draw(st.sets(st.integers(1, n), min_size=count, max_size=count))
    plan = {}
    for u in sorted(corrupt):
        neighbours = graph.neighbours(u)
        if accusers:
            plan[u] = Misbehaviour(
                accuse=frozenset(draw(st.sets(st.sampled_from(sorted(neighbours)), min_size=1)))
            )
            continue
        plan[u] = Misbehaviour(
            junk_to=_subset(draw, neighbours, 1),
            wrong_b_to=_subset(draw, neighbours, 1),
            wrong_sk_to=_subset(draw, neighbours, 1),
            silent_after_report=draw(st.booleans()),
            lying_holder=draw(st.booleans()),
        )
    return MaliciousCase(cfg, seed, plan)


def _run_malicious(case: MaliciousCase) -> tuple[Federation, AbortedError | None]:
    fed = Federation(case.config, seed=case.seed)
    plan = case.plan
    junk = seeded_random_bytes(case.seed, "junk")

    def share_keys(replies: dict[int, ClientMessage]) -> list[object]:
        out: list[object] = []
        for u, reply in sorted(replies.items()):
            bad = plan.get(u)
            if bad is not None:
                assert isinstance(reply, ShareKeys)
                reply = deal_wrong_shares(fed, reply, wrong_b=bad.wrong_b_to, wrong_sk=bad.wrong_sk_to)
                ciphertexts = {
                    v: junk(BUNDLE_SIZE) if v in bad.junk_to else c for v, c in reply.ciphertexts.items()
                }
                reply = ShareKeys(u, ciphertexts)
            out.append(reply)
        return out

    def unmasking(replies: dict[int, ClientMessage]) -> list[object]:
        out: list[object] = []
        for u, reply in sorted(replies.items()):
            bad = plan.get(u)
            if bad is not None and bad.lying_holder:
                assert isinstance(reply, UnmaskingShares)
                reply = UnmaskingShares(
                    u,
                    {v: shifted(s, 7 * v + 1) for v, s in reply.self_mask_shares.items()},
                    {v: shifted(s, 11 * v + 3) for v, s in reply.secret_key_shares.items()},
                )
            out.append(reply)
        return out

    tampers: dict[Round, Any] = {
        Round.SHARE_KEYS: share_keys,
        Round.UNMASKING: unmasking,
    }
    try:
        while fed.server.round is not Round.DONE:
            if fed.server.round is Round.REPORT_BUNDLES:
                for u, bad in plan.items():
                    accuse_falsely(fed, u, bad.accuse)
            if fed.server.round is Round.MASKED_INPUT:
                fed.silent |= {u for u, bad in plan.items() if bad.silent_after_report}
            fed.step(tampers.get(fed.server.round))
    except AbortedError as exc:
        return fed, exc
    return fed, None


def _reports(case: MaliciousCase) -> dict[int, frozenset[int]]:
    """Reporter -> whom it reports: every recipient of junk reports its dealer (corrupt clients
    too: they run the honest code there), and false accusers add theirs."""
    out: dict[int, set[int]] = {}
    for u, bad in case.plan.items():
        for v in bad.junk_to:
            out.setdefault(v, set()).add(u)
        out.setdefault(u, set()).update(bad.accuse)
    return {u: frozenset(vs) for u, vs in out.items() if vs}


def _model(case: MaliciousCase, graph: NeighbourGraph) -> Outcome:
    silent = {u for u, bad in case.plan.items() if bad.silent_after_report}
    return reference_round(case.config, graph, {"masked_input": silent}, _reports(case))


def _named_clients(reason: str) -> set[int]:
    return {int(x) for x in re.findall(r"client (\d+)\b", reason)}


def _check_against_the_model(fed: Federation, case: MaliciousCase, expected: Outcome) -> None:
    """Accusations, exclusions and refusals are what the model says; an honest client is never
    excluded nor refuses (a coalition this small cannot do it); and nothing is revealed of an
    excluded client, nor of an accused client by its accuser."""
    server, plan = fed.server, case.plan
    accusers: dict[int, set[int]] = {}
    for u, accused in _reports(case).items():
        for v in accused:
            accusers.setdefault(v, set()).add(u)
    assert server.accusations == expected.accusers == {v: frozenset(us) for v, us in accusers.items()}
    assert {u: d.round for u, d in server.dropped.items()} == dict.fromkeys(
        expected.excluded, Round.REPORT_BUNDLES
    ), server.dropped
    assert all(d.reason.startswith("excluded:") for d in server.dropped.values())
    assert set(fed.aborted) == expected.refused, fed.aborted
    assert expected.excluded | expected.refused <= set(plan), "an honest client was excluded or refused"
    for u in expected.excluded:
        assert u not in server.u2 and u not in server.survivors
    for u, owners in fed.revealed().items():
        assert not owners & expected.excluded, f"client {u} revealed shares of excluded {owners}"
        mine = _reports(case).get(u, frozenset())
        assert not owners & mine, f"client {u} revealed shares of clients it accused: {owners & mine}"


def _coalition_premise(case: MaliciousCase) -> None:
    """At most k + 1 - t corrupt clients (k: neighbours per client): none can exclude an honest one."""
    cfg = case.config
    assert len(case.plan) <= cfg.neighbourhood_size - cfg.threshold


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malicious_cases(accusers=False))
def test_garbage_bundles_and_wrong_shares_never_give_a_wrong_sum(case: MaliciousCase) -> None:
    """Junk bundles cut the pairs of their dealer with its recipients, and exclude it when fewer
    than t would hold its shares; wrong shares (dealt in round 1 or revealed in the unmasking
    round) are decoded around, or, when a corrupt dealer's own secret cannot be decoded, the
    round aborts naming it. Never a wrong sum, never an honest client named."""
    cfg, plan = case.config, case.plan
    _coalition_premise(case)
    fed, error = _run_malicious(case)
    expected = _model(case, fed.setup.graph)
    _check_against_the_model(fed, case, expected)
    assert expected.excluded <= {u for u, bad in plan.items() if bad.junk_to}
    assert not expected.aborted or expected.abort_round == Round.UNMASKING.value, expected
    liars = {u for u, bad in plan.items() if bad.lying_holder} & expected.u5

    def too_many_errors(holders: frozenset[int], dealt: frozenset[int]) -> bool:
        return len((liars | dealt) & holders) > (len(holders) - cfg.threshold) // 2

    undecodable = {
        u
        for u in expected.survivors
        if too_many_errors(expected.b_holders(u), plan.get(u, Misbehaviour()).wrong_b_to)
    }
    undecodable |= {
        v
        for v in expected.u2 - expected.survivors
        if expected.partners(v) & expected.survivors
        and too_many_errors(expected.sk_holders(v), plan[v].wrong_sk_to)
    }
    assert undecodable <= set(plan), "the config should let every honest secret be decoded"
    event(f"excluded {len(expected.excluded)}, cut {len(expected.cut)}, undecodable {len(undecodable)}")
    if error is not None:
        event("aborted naming a corrupt dealer")
        assert error.round == Round.UNMASKING.value, error
        named = _named_clients(error.reason)
        assert named and named <= undecodable, f"abort names {named}, undecodable: {undecodable}: {error}"
        assert fed.server.result is None
        return
    assert not expected.aborted, expected
    fed.assert_exact()
    assert fed.server.survivors == expected.survivors
    event("exact, decoded around wrong shares" if fed.server.wrong_shares else "exact")
    for holder, owners in fed.server.wrong_shares.items():
        # Named only if it lied, or a corrupt dealer gave it a wrong share of that owner's secret.
        dealt_to = {o for o in owners if o in plan and holder in plan[o].wrong_b_to | plan[o].wrong_sk_to}
        assert holder in liars or dealt_to == owners, (holder, owners)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malicious_cases(accusers=True))
def test_false_accusers_cut_only_their_own_pairs_and_learn_nothing(case: MaliciousCase) -> None:
    """Each accusation cuts one pair (the server cannot tell a lie from a real failure); an
    accuser that leaves itself fewer than t - 1 partners is excluded; no honest client is
    excluded, and the round completes as the reference model says with the exact sum over U3,
    with no share of an excluded client revealed, nor of an accused client by its accuser."""
    _coalition_premise(case)
    fed, error = _run_malicious(case)
    expected = _model(case, fed.setup.graph)
    event(f"excluded {len(expected.excluded)} of {len(case.plan)} accusers, cut {len(expected.cut)}")
    assert error is None and not expected.aborted, (error, expected)
    _check_against_the_model(fed, case, expected)
    fed.assert_exact()
    assert fed.server.survivors == expected.survivors
    honest = frozenset(range(1, case.config.num_clients + 1)) - set(case.plan)
    assert honest <= fed.server.survivors


def _coalition_configs() -> list[SecAggConfig]:
    """Small configs (mechanics only, no collusion bound) where k + 1 - t >= 1: room for a coalition."""
    out = []
    for mode in ("semi_honest", "active"):
        for n in range(4, 10):
            for t in _valid_thresholds(n, "complete", None, mode, collusion_fraction=0.0):
                if n - t >= 1:
                    out.append(config(n, t, m=3, mode=mode, collusion_fraction=0.0))
        for n, k in ((7, 4), (9, 4), (11, 6), (12, 4)):
            for t in _valid_thresholds(n, "harary", k, mode, collusion_fraction=0.0):
                if k + 1 - t >= 1:
                    out.append(config(n, t, m=3, graph="harary", degree=k, mode=mode))
    return out


COALITION_CONFIGS = _coalition_configs()


@st.composite
def coalition_cases(draw: st.DrawFn) -> MaliciousCase:
    """A coalition of at most k + 1 - t clients that sends junk bundles to and falsely accuses
    whichever neighbours it likes, often all ganging up on one honest victim."""
    cfg = draw(st.sampled_from(COALITION_CONFIGS))
    seed = draw(st.integers(0, 2**16))
    graph = Federation(cfg, seed=seed).setup.graph
    n, room = cfg.num_clients, cfg.neighbourhood_size - cfg.threshold
    corrupt = draw(st.sets(st.integers(1, n), min_size=1, max_size=room))
    victim = draw(st.sampled_from(sorted(set(range(1, n + 1)) - corrupt)))
    gang_up = draw(st.booleans())
    plan = {}
    for u in sorted(corrupt):
        neighbours = sorted(graph.neighbours(u))
        accuse = set(draw(st.sets(st.sampled_from(neighbours))))
        if gang_up and victim in neighbours:
            accuse.add(victim)
        junk_to = frozenset(draw(st.sets(st.sampled_from(neighbours)))) - accuse
        plan[u] = Misbehaviour(junk_to=junk_to, accuse=frozenset(accuse))
    return MaliciousCase(cfg, seed, plan)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coalition_cases())
def test_a_coalition_of_at_most_k_plus_1_minus_t_cannot_exclude_an_honest_client(case: MaliciousCase) -> None:
    """Whatever pairs at most k + 1 - t corrupt clients cut (junk bundles or false accusations,
    to anyone, also all against one victim), every honest client keeps t holders and t - 1
    partners: none is excluded or refuses, the round completes with every honest input in the
    exact sum, and the model says which corrupt clients got themselves excluded."""
    _coalition_premise(case)
    fed, error = _run_malicious(case)
    expected = _model(case, fed.setup.graph)
    _check_against_the_model(fed, case, expected)
    accused = {v for b in case.plan.values() for v in b.accuse} - set(case.plan)
    event(f"excluded {len(expected.excluded)} of {len(case.plan)}, honest accused {len(accused)}")
    assert error is None and not expected.aborted, (error, expected)
    fed.assert_exact()
    assert fed.server.survivors == expected.survivors
    honest = frozenset(range(1, case.config.num_clients + 1)) - set(case.plan)
    assert honest <= fed.server.survivors
