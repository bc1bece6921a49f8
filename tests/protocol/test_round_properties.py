"""Property: for any n, t, graph, mode, inputs and dropout at any round, the secure sum equals
numpy's sum of the inputs of exactly the clients in U3, or the round aborts, and it aborts
exactly when a reference model of the rules says fewer than t remain somewhere.

With malicious clients (up to floor(gamma*n) of them, in configs whose gamma admits them):
garbage share bundles, wrong shares dealt in round 1 or revealed in the unmasking round, and
false accusations. Every round ends with the exact sum over U3 or a clean ``AbortedError``
naming the culprit; never a wrong sum, and no share of an excluded client is ever revealed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from helpers import Federation, config, deal_wrong_shares, shifted
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from secagg import AbortedError, Round, RoundSetup, SecAggConfig, simulate
from secagg.graph import NeighbourGraph
from secagg.messages import BUNDLE_SIZE, BundleReport, ClientMessage, ShareKeys, UnmaskingShares
from secagg.parameters import corrupt_count
from secagg.primitives.field import SUPPORTED_PRIMES
from secagg.simulate import seeded_random_bytes
from secagg.state import PROTOCOL_ROUNDS

MODULI = (SUPPORTED_PRIMES[0], 2**32 - 5, 2**61 - 1, SUPPORTED_PRIMES[-1])


@dataclass
class Expected:
    aborted: bool
    survivors: frozenset[int]
    abort_round: str | None = None


def reference_outcome(
    config: SecAggConfig,
    graph: NeighbourGraph,
    drop: dict[str, set[int]],
    excluded: frozenset[int] = frozenset(),
) -> Expected:
    """What the rules of DESIGN.md section 3 say must happen, computed without the protocol.

    ``drop[round]``: clients silent from that round on (also a round the mode skips: then from
    the next one). ``excluded``: the senders accused in the report round (by anyone still
    reporting), which the server removes as if they had dropped in round 1.
    """
    n, t = config.num_clients, config.threshold
    gone: set[int] = set()

    def silent_from(round_name: str) -> set[int]:
        # Cumulative, in protocol order: drop[r] stays silent in every later round.
        names = [r.value for r in PROTOCOL_ROUNDS]
        for name in names[: names.index(round_name) + 1]:
            gone.update(drop.get(name, set()))
        return gone

    def closed(u: int) -> frozenset[int]:
        return graph.neighbours(u) | {u}

    def refusing(clients: set[int], pool: frozenset[int]) -> set[int]:
        # An honest client refuses when fewer than t of its closed neighbourhood remain.
        return {u for u in clients if len(closed(u) & pool) < t}

    def abort(at: str, u3: frozenset[int] = frozenset()) -> Expected:
        return Expected(True, u3, at)

    u1 = frozenset(set(range(1, n + 1)) - silent_from("advertise_keys"))
    if len(u1) < t:
        return abort("advertise_keys")
    answering = set(u1) - silent_from("share_keys")
    u2 = frozenset(answering - refusing(answering, u1))
    if len(u2) < t:
        return abort("share_keys")
    # Report round: a client opens the bundles of its U2 neighbours, needs t of them with itself.
    answering = set(u2) - silent_from("report_bundles")
    reported = frozenset(answering - refusing(answering, u2))
    if len(reported) < t:
        return abort("report_bundles")
    accused = excluded & u2
    u2 = u2 - accused
    live = reported - accused
    if len(live) < t:
        return abort("report_bundles")
    # Masked input: masks with its U2 neighbours that were not excluded, if t remain with it.
    answering = set(live) - silent_from("masked_input")
    u3 = frozenset(answering - refusing(answering, u2))
    if len(u3) < t:
        return abort("masked_input")
    asked = set(u3)
    if config.is_active:
        answering = asked - silent_from("consistency_check")
        asked = answering - refusing(answering, u3)
        if len(asked) < t:
            return abort("consistency_check", u3)
    answering = asked - silent_from("consistency_check") - silent_from("unmasking")
    u5 = frozenset(answering - refusing(answering, u3))
    if len(u5) < t:
        return abort("unmasking", u3)
    for u in u3:  # b_u is reconstructed from its neighbourhood's shares
        if len(closed(u) & u5) < t:
            return abort("unmasking", u3)
    for v in u2 - u3:  # s_v^SK is needed when a neighbour of v is in U3
        if graph.neighbours(v) & u3 and len(graph.neighbours(v) & u5) < t:
            return abort("unmasking", u3)
    return Expected(False, u3)


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
    expected = reference_outcome(config, graph, drop)
    try:
        result = simulate(config, inputs, drop, seed=seed)
    except AbortedError as exc:
        assert expected.aborted, f"aborted but the rules say the round completes: {exc}"
        assert exc.round == expected.abort_round, f"aborted in {exc.round}, the rules say {expected}"
        return
    assert not expected.aborted, f"completed although fewer than t remained somewhere: {expected}"
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
    accuse: frozenset[int] = frozenset()  # report round: false accusations
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
            plan[u] = Misbehaviour(accuse=_subset(draw, neighbours, 1))
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

    def report(replies: dict[int, ClientMessage]) -> list[object]:
        out: list[object] = []
        for u, reply in sorted(replies.items()):
            bad = plan.get(u)
            if bad is not None and bad.accuse:
                assert isinstance(reply, BundleReport)
                reply = BundleReport(u, reply.accused | bad.accuse)
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
        Round.REPORT_BUNDLES: report,
        Round.UNMASKING: unmasking,
    }
    try:
        while fed.server.round is not Round.DONE:
            if fed.server.round is Round.MASKED_INPUT:
                fed.silent |= {u for u, bad in plan.items() if bad.silent_after_report}
            fed.step(tampers.get(fed.server.round))
    except AbortedError as exc:
        return fed, exc
    return fed, None


def _accusations(case: MaliciousCase, graph: NeighbourGraph) -> dict[int, frozenset[int]]:
    """Accused sender -> its accusers: every recipient of junk reports it, plus false accusers."""
    out: dict[int, set[int]] = {}
    for u, bad in case.plan.items():
        for v in bad.junk_to:
            out.setdefault(u, set()).add(v)
        for v in bad.accuse:
            out.setdefault(v, set()).add(u)
    return {v: frozenset(us) for v, us in out.items()}


def _named_clients(reason: str) -> set[int]:
    return {int(x) for x in re.findall(r"client (\d+)\b", reason)}


def _check_nothing_of_the_excluded_revealed(fed: Federation, excluded: frozenset[int]) -> None:
    for u, owners in fed.revealed().items():
        assert not owners & excluded, f"client {u} revealed shares of excluded {sorted(owners & excluded)}"
    for u in excluded:
        assert u not in fed.server.u2 and u not in fed.server.survivors


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malicious_cases(accusers=False))
def test_garbage_bundles_and_wrong_shares_never_give_a_wrong_sum(case: MaliciousCase) -> None:
    """Junk bundles get their sender excluded; wrong shares (dealt in round 1 or revealed in the
    unmasking round) are decoded around, or, when a corrupt dealer's own secret cannot be
    decoded, the round aborts naming it. Never a wrong sum, never an honest client named."""
    cfg, plan = case.config, case.plan
    fed, error = _run_malicious(case)
    graph = fed.setup.graph
    accusations = _accusations(case, graph)
    excluded = frozenset(accusations)
    assert excluded == {u for u, bad in plan.items() if bad.junk_to}
    assert fed.server.accusations == accusations
    assert {u: d.round for u, d in fed.server.dropped.items()} == dict.fromkeys(
        excluded, Round.REPORT_BUNDLES
    )
    assert not fed.aborted, f"clients refused the round: {fed.aborted}"
    _check_nothing_of_the_excluded_revealed(fed, excluded)
    silent = {u for u, bad in plan.items() if bad.silent_after_report} - excluded
    u3 = frozenset(range(1, cfg.num_clients + 1)) - excluded - silent
    liars = {u for u, bad in plan.items() if bad.lying_holder} & u3

    def errors(owner: int, holders: frozenset[int], dealt: frozenset[int]) -> tuple[int, int]:
        wrong = (liars | dealt) & holders
        return len(wrong), (len(holders) - cfg.threshold) // 2

    undecodable = set()
    for u in u3:
        count, budget = errors(u, graph.closed_neighbourhood(u) & u3, plan.get(u, Misbehaviour()).wrong_b_to)
        if count > budget:
            undecodable.add(u)
    for v in silent:
        if graph.neighbours(v) & u3:
            count, budget = errors(v, graph.neighbours(v) & u3, plan[v].wrong_sk_to)
            if count > budget:
                undecodable.add(v)
    assert undecodable <= set(plan), "the config should let every honest secret be decoded"
    event(f"excluded {len(excluded)}, undecodable {len(undecodable)}")
    if error is not None:
        event("aborted naming a corrupt dealer")
        assert error.round == Round.UNMASKING.value, error
        named = _named_clients(error.reason)
        assert named and named <= undecodable, f"abort names {named}, undecodable: {undecodable}: {error}"
        assert fed.server.result is None
        return
    fed.assert_exact()
    assert fed.server.survivors == u3
    event("exact, decoded around wrong shares" if fed.server.wrong_shares else "exact")
    for holder, owners in fed.server.wrong_shares.items():
        # Named only if it lied, or a corrupt dealer gave it a wrong share of that owner's secret.
        dealt_to = {o for o in owners if o in plan and holder in plan[o].wrong_b_to | plan[o].wrong_sk_to}
        assert holder in liars or dealt_to == owners, (holder, owners)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malicious_cases(accusers=True))
def test_false_accusers_exclude_only_whom_they_accuse_and_learn_nothing(case: MaliciousCase) -> None:
    """Each accusation excludes the accused (the server cannot tell a lie from a real failure),
    nobody else; the round then goes as the reference model says for those exclusions, and no
    share of an excluded client is revealed to anyone."""
    fed, error = _run_malicious(case)
    graph = fed.setup.graph
    accusations = _accusations(case, graph)
    excluded = frozenset(accusations)
    assert fed.server.accusations == accusations
    assert set(fed.server.dropped) == excluded
    assert all(d.round is Round.REPORT_BUNDLES for d in fed.server.dropped.values())
    _check_nothing_of_the_excluded_revealed(fed, excluded)
    expected = reference_outcome(case.config, graph, {}, excluded)
    event(f"aborted in {expected.abort_round}" if expected.aborted else "completed")
    if error is not None:
        assert expected.aborted and error.round == expected.abort_round, (error, expected)
        assert "threshold" in error.reason and fed.server.result is None
        return
    assert not expected.aborted, expected
    fed.assert_exact()
    assert fed.server.survivors == expected.survivors
