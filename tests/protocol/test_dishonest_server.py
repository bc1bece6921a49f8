"""A dishonest server against an honest client (DESIGN.md section 3, Bonawitz et al. 2017 Fig. 4).

Each test runs a seeded round honestly up to the point of attack, then hands one client ("the
victim", client 1) what a lying server would send instead. The client must refuse: raise
``AbortedError`` naming the round and the broken rule, end in ``Round.ABORTED``, and reveal
nothing more, not even when it is then sent the honest message (``helpers.assert_refuses``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from helpers import SMALL_ORDER_POINTS, Federation, accuse_falsely, assert_refuses, config, x25519_ladder

from secagg import LocalProtocolError, Round, SecAggClient, SecAggConfig
from secagg.messages import (
    BundleReport,
    ConsistencyRequest,
    KeyList,
    MaskedInput,
    MaskingRequest,
    PublicKeys,
    ServerMessage,
    ShareBundles,
    UnmaskingRequest,
    UnmaskingShares,
)
from secagg.primitives import signatures
from secagg.simulate import seeded_random_bytes
from secagg.state import CLIENT_EXPECTS, rounds_of

VICTIM = 1
SEMI_HONEST = config(5, 3)
HARARY = config(9, 3, graph="harary", degree=4)  # 4 neighbours and 4 strangers each
ACTIVE = config(7, 5, mode="active")
ACTIVE_HARARY = config(9, 4, graph="harary", degree=4, mode="active")


def neighbours(fed: Federation, u: int = VICTIM) -> list[int]:
    return sorted(fed.setup.graph.neighbours(u))


def stranger(fed: Federation, u: int = VICTIM) -> int:
    """A client that is not a neighbour of u (Harary graph)."""
    return min(set(range(1, fed.config.num_clients + 1)) - fed.setup.graph.closed_neighbourhood(u))


def fresh_public_key(label: str) -> bytes:
    key = X25519PrivateKey.from_private_bytes(seeded_random_bytes(0, label)(32))
    return key.public_key().public_bytes_raw()


def with_keys(request: KeyList, **changes: PublicKeys | None) -> KeyList:
    """A key list with entries replaced (``v3=PublicKeys(...)``) or removed (``v3=None``)."""
    keys = dict(request.keys)
    for name, value in changes.items():
        v = int(name[1:])
        if value is None:
            keys.pop(v, None)
        else:
            keys[v] = value
    return KeyList(request.recipient, keys)


# -- round 1: the key list -----------------------------------------------------------------------


@pytest.mark.parametrize("who", ["non-neighbour", "itself", "unknown id"])
def test_key_list_naming_a_non_neighbour_is_refused(who: str) -> None:
    fed = Federation(HARARY)
    honest = fed.run_to(Round.SHARE_KEYS)[VICTIM]
    assert isinstance(honest, KeyList)
    extra = {
        "non-neighbour": (stranger(fed), fed.public_keys(stranger(fed))),
        "itself": (VICTIM, fed.public_keys(VICTIM)),
        "unknown id": (10, PublicKeys(fresh_public_key("c"), fresh_public_key("s"))),
    }[who]
    evil = KeyList(VICTIM, {**honest.keys, extra[0]: extra[1]})
    assert_refuses(fed.clients[VICTIM], evil, Round.SHARE_KEYS, honest=honest, reason="not neighbours")


def test_key_list_with_only_non_neighbours_is_refused() -> None:
    """Swapping all neighbours for strangers would let the server pick who masks with whom."""
    fed = Federation(HARARY)
    honest = fed.run_to(Round.SHARE_KEYS)[VICTIM]
    others = sorted(set(range(2, 10)) - set(neighbours(fed)))
    evil = KeyList(VICTIM, {v: fed.public_keys(v) for v in others})
    assert_refuses(fed.clients[VICTIM], evil, Round.SHARE_KEYS, honest=honest, reason="not neighbours")


DUPLICATES: dict[str, Callable[[Federation, dict[int, PublicKeys]], dict[int, PublicKeys]]] = {
    "two neighbours, same c_pk": lambda fed, keys: {3: PublicKeys(keys[2].c_pk, keys[3].s_pk)},
    "two neighbours, one's c_pk is the other's s_pk": lambda fed, keys: {
        3: PublicKeys(keys[2].s_pk, keys[3].s_pk)
    },
    "one neighbour, c_pk == s_pk": lambda fed, keys: {3: PublicKeys(keys[3].c_pk, keys[3].c_pk)},
    "reflection of the client's own c_pk": lambda fed, keys: {
        3: PublicKeys(fed.public_keys(VICTIM).c_pk, keys[3].s_pk)
    },
    "reflection of the client's own s_pk": lambda fed, keys: {
        3: PublicKeys(keys[3].c_pk, fed.public_keys(VICTIM).s_pk)
    },
    "reflection of both own keys": lambda fed, keys: {3: fed.public_keys(VICTIM)},
    # 32-byte aliases of one X25519 key (bit 255 is ignored): the same key, so a duplicate.
    "two neighbours, same c_pk up to bit 255": lambda fed, keys: {
        3: PublicKeys(flip_bit_255(keys[2].c_pk), keys[3].s_pk)
    },
    "one neighbour, s_pk == c_pk up to bit 255": lambda fed, keys: {
        3: PublicKeys(keys[3].c_pk, flip_bit_255(keys[3].c_pk))
    },
    "reflection of the client's own s_pk, bit 255 flipped": lambda fed, keys: {
        3: PublicKeys(keys[3].c_pk, flip_bit_255(fed.public_keys(VICTIM).s_pk))
    },
}


def flip_bit_255(key: bytes) -> bytes:
    return key[:31] + bytes([key[31] ^ 0x80])


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_duplicated_public_keys_are_refused(case: str) -> None:
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.SHARE_KEYS)[VICTIM]
    assert isinstance(honest, KeyList)
    evil = KeyList(VICTIM, {**honest.keys, **DUPLICATES[case](fed, dict(honest.keys))})
    assert_refuses(fed.clients[VICTIM], evil, Round.SHARE_KEYS, honest=honest, reason="duplicated")


def test_the_small_order_list_is_complete_and_cryptography_rejects_every_point() -> None:
    """Which low-order keys does pyca/cryptography refuse? All 14 encodings of the 8 small-order
    points (checked with a reference ladder: [8]P is the identity), in ``exchange``, which is
    where the client and ``load_public_key`` rely on it; ``from_public_bytes`` accepts them."""
    own = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert len(set(SMALL_ORDER_POINTS.values())) == 14
    for name, point in SMALL_ORDER_POINTS.items():
        assert x25519_ladder(8, point) == 0, name
        public = X25519PublicKey.from_public_bytes(point)
        with pytest.raises(ValueError):
            own.exchange(public)
    # A sound key is not small order, so the reference check above can tell the difference.
    assert x25519_ladder(8, fresh_public_key("sound")) != 0


@pytest.mark.parametrize("which", ["c_pk", "s_pk"])
@pytest.mark.parametrize("point", sorted(SMALL_ORDER_POINTS))
def test_low_order_keys_are_refused(point: str, which: str) -> None:
    """A low-order key makes the shared secret all zeros, known to the server: refuse it."""
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.SHARE_KEYS)[VICTIM]
    assert isinstance(honest, KeyList)
    evil = with_keys(honest, v4=dataclasses.replace(honest.keys[4], **{which: SMALL_ORDER_POINTS[point]}))
    assert_refuses(fed.clients[VICTIM], evil, Round.SHARE_KEYS, honest=honest, reason="low-order")


def _forged_keys(fed: Federation, keys: PublicKeys, v: int) -> PublicKeys:
    return PublicKeys(fresh_public_key("mitm c"), fresh_public_key("mitm s"), keys.signature)


def _unsigned(fed: Federation, keys: PublicKeys, v: int) -> PublicKeys:
    return PublicKeys(keys.c_pk, keys.s_pk, None)


def _signed_for_another_client(fed: Federation, keys: PublicKeys, v: int) -> PublicKeys:
    # The keys and signature of client 2 (left out of the list), presented as client v's: the
    # signature names client 2.
    return fed.public_keys(2)


def _signed_in_another_session(fed: Federation, keys: PublicKeys, v: int) -> PublicKeys:
    payload = signatures.advertise_payload(bytes(32), v, keys.c_pk, keys.s_pk)
    return PublicKeys(keys.c_pk, keys.s_pk, signatures.sign(fed.identities[v], payload))


def _server_signed(fed: Federation, keys: PublicKeys, v: int) -> PublicKeys:
    # The server signs substituted keys with a key of its own: not v's identity key.
    impostor = signatures.generate_identity(bytes(32))
    c, s = fresh_public_key("mitm c"), fresh_public_key("mitm s")
    return PublicKeys(
        c, s, signatures.sign(impostor, signatures.advertise_payload(fed.setup.session_id, v, c, s))
    )


@pytest.mark.parametrize(
    "forge",
    [_forged_keys, _unsigned, _signed_for_another_client, _signed_in_another_session, _server_signed],
    ids=lambda f: f.__name__.strip("_"),
)
def test_forged_keys_are_refused_in_the_active_mode(forge: object) -> None:
    """Active mode: a key the server substitutes (to sit in the middle) must fail the check
    against the roster's identity key of the claimed owner."""
    fed = Federation(ACTIVE)
    honest = fed.run_to(Round.SHARE_KEYS)[VICTIM]
    assert isinstance(honest, KeyList)
    evil = with_keys(honest, v2=None, v4=forge(fed, honest.keys[4], 4))  # type: ignore[operator]
    assert_refuses(fed.clients[VICTIM], evil, Round.SHARE_KEYS, honest=honest, reason="signature")


# -- fewer than t of the neighbourhood left, at every round --------------------------------------


def _few_keys(fed: Federation) -> tuple[object, object]:
    honest = fed.run_to(Round.SHARE_KEYS)[VICTIM]
    assert isinstance(honest, KeyList)
    keep = neighbours(fed)[: fed.config.threshold - 2]
    return KeyList(VICTIM, {v: honest.keys[v] for v in keep}), honest


def _few_bundles(fed: Federation) -> tuple[object, object]:
    honest = fed.run_to(Round.REPORT_BUNDLES)[VICTIM]
    assert isinstance(honest, ShareBundles)
    keep = neighbours(fed)[: fed.config.threshold - 2]
    return ShareBundles(VICTIM, {v: honest.ciphertexts[v] for v in keep}), honest


def _few_left_after_exclusions(fed: Federation) -> tuple[object, object]:
    """Every bundle arrived, but the server then excludes all but t-2 of the senders (which it
    may: accused by others), leaving t-1 with the victim: it must not mask with so few."""
    honest = fed.run_to(Round.MASKED_INPUT)[VICTIM]
    assert isinstance(honest, MaskingRequest)
    return MaskingRequest(VICTIM, frozenset(neighbours(fed)[fed.config.threshold - 2 :])), honest


def _few_partners_after_cuts(fed: Federation) -> tuple[object, object]:
    """Every bundle arrived and nobody is excluded, but the server claims all but t-2 of the
    pairs were cut (accused by them): it must not mask with so few."""
    honest = fed.run_to(Round.MASKED_INPUT)[VICTIM]
    assert isinstance(honest, MaskingRequest)
    return MaskingRequest(VICTIM, frozenset(), frozenset(neighbours(fed)[fed.config.threshold - 2 :])), honest


def _few_survivors_to_unmask(fed: Federation) -> tuple[object, object]:
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    keep = frozenset({VICTIM, *neighbours(fed)[: fed.config.threshold - 2]})
    # Everything else is claimed dropped, to collect the s_SK shares that unmask their inputs.
    return UnmaskingRequest(VICTIM, keep, honest.survivors - keep), honest


def _few_survivors_to_sign(fed: Federation) -> tuple[object, object]:
    honest = fed.run_to(Round.CONSISTENCY_CHECK)[VICTIM]
    assert isinstance(honest, ConsistencyRequest)
    # Globally still >= t survivors, but only t-1 of them in the victim's neighbourhood.
    gone = set(neighbours(fed)[fed.config.threshold - 2 :])
    evil = ConsistencyRequest(VICTIM, honest.survivors - gone)
    assert len(evil.survivors) >= fed.config.threshold
    return evil, honest


@pytest.mark.parametrize(
    ("cfg", "make", "at"),
    [
        (HARARY, _few_keys, Round.SHARE_KEYS),
        (HARARY, _few_bundles, Round.REPORT_BUNDLES),
        (HARARY, _few_left_after_exclusions, Round.MASKED_INPUT),
        (SEMI_HONEST, _few_left_after_exclusions, Round.MASKED_INPUT),
        (HARARY, _few_partners_after_cuts, Round.MASKED_INPUT),
        (SEMI_HONEST, _few_partners_after_cuts, Round.MASKED_INPUT),
        (HARARY, _few_survivors_to_unmask, Round.UNMASKING),
        (SEMI_HONEST, _few_survivors_to_unmask, Round.UNMASKING),
        (ACTIVE_HARARY, _few_survivors_to_sign, Round.CONSISTENCY_CHECK),
    ],
    ids=[
        "key-list",
        "share-bundles",
        "exclusions-harary",
        "exclusions-complete",
        "cuts-harary",
        "cuts-complete",
        "unmasking-harary",
        "unmasking-complete",
        "consistency-harary",
    ],
)
def test_fewer_than_t_of_the_neighbourhood_left_is_refused(cfg: object, make: object, at: Round) -> None:
    fed = Federation(cfg)  # type: ignore[arg-type]
    evil, honest = make(fed)  # type: ignore[operator]
    assert_refuses(fed.clients[VICTIM], evil, at, honest=honest, reason="threshold")


# -- the share bundles and the report round --------------------------------------------------


KEPT_A_CUT_PAIR = "the server kept pairs this client cut by accusing"


def assert_accuses(fed: Federation, evil: ShareBundles, sender: int) -> None:
    """The victim takes no share from ``sender``'s bundle: it reports it (``BundleReport``), and
    then refuses to mask unless the server cuts the pair (or excludes ``sender``)."""
    client = fed.clients[VICTIM]
    report = client.receive(evil)
    assert report == BundleReport(VICTIM, frozenset({sender}))
    assert client.round is Round.MASKED_INPUT
    kept = MaskingRequest(VICTIM, frozenset())
    honest = MaskingRequest(VICTIM, frozenset(), frozenset({sender}))
    assert_refuses(client, kept, Round.MASKED_INPUT, honest=honest, reason=KEPT_A_CUT_PAIR)


def test_bundle_from_a_client_outside_u1_is_refused() -> None:
    """The server hid client 2's keys from the victim (so the victim never shared with it) but
    forwards 2's bundle: the victim has no key for 2 and must not take its shares."""
    fed = Federation(SEMI_HONEST)
    honest_keys = fed.run_to(Round.SHARE_KEYS)[VICTIM]
    assert isinstance(honest_keys, KeyList)
    fed.requests = {**fed.requests, VICTIM: with_keys(honest_keys, v2=None)}
    replies = fed.client_replies()
    assert 2 not in replies[VICTIM].ciphertexts  # type: ignore[union-attr]
    bundles = {u: replies[u].ciphertexts[VICTIM] for u in range(2, 6)}  # type: ignore[union-attr]
    evil = ShareBundles(VICTIM, bundles)
    honest = ShareBundles(VICTIM, {u: c for u, c in bundles.items() if u != 2})
    assert_refuses(fed.clients[VICTIM], evil, Round.REPORT_BUNDLES, honest=honest, reason="not in U1")


def test_bundle_replayed_from_another_session_is_reported() -> None:
    """A bundle from an earlier round (another session nonce) in which every client even used the
    same X25519 keys: only the session binding of the key derivation and of the AEAD's
    associated data tells it apart. Its shares belong to other polynomials; taking them would
    break the reconstruction of client 2's secrets, so the victim reports client 2 instead."""
    now = Federation(SEMI_HONEST, nonce_label="nonce now")
    # In the earlier session client 2 drew the same keys and self-mask seed (first 96 random
    # bytes) but different Shamir polynomials.
    same_start = seeded_random_bytes(0, "client/2")
    other_rest = seeded_random_bytes(0, "client/2, an earlier round")
    drawn = 0

    def earlier_random(n: int) -> bytes:
        nonlocal drawn
        drawn += n
        return same_start(n) if drawn <= 96 else other_rest(n)

    then = Federation(SEMI_HONEST, nonce_label="nonce then", client_random={2: earlier_random})
    then.run_to(Round.REPORT_BUNDLES)
    old = then.sent[Round.SHARE_KEYS][2].ciphertexts[VICTIM]  # type: ignore[union-attr]

    honest = now.run_to(Round.REPORT_BUNDLES)[VICTIM]
    assert isinstance(honest, ShareBundles)
    assert now.setup.session_id != then.setup.session_id
    for u in (VICTIM, 2):  # the attack's premise: the very same keys in both sessions
        assert now.public_keys(u) == then.public_keys(u)
    assert old != honest.ciphertexts[2]
    assert_accuses(now, ShareBundles(VICTIM, {**honest.ciphertexts, 2: old}), 2)


@pytest.mark.parametrize("how", ["to another recipient", "reflected to its sender"])
def test_redirected_bundle_is_reported(how: str) -> None:
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.REPORT_BUNDLES)[VICTIM]
    assert isinstance(honest, ShareBundles)
    # 2 -> 3 shown to 1 as 2 -> 1 (another channel key), or 1's own 1 -> 2 reflected back as
    # 2 -> 1 (the same channel key: only the direction bound in nonce and associated data differs).
    sender, recipient = {"to another recipient": (2, 3), "reflected to its sender": (VICTIM, 2)}[how]
    moved = fed.sent[Round.SHARE_KEYS][sender].ciphertexts[recipient]  # type: ignore[union-attr]
    assert_accuses(fed, ShareBundles(VICTIM, {**honest.ciphertexts, 2: moved}), 2)


@pytest.mark.parametrize("position", [0, 8, 40, 71, 72, 87])
def test_tampered_bundle_is_reported(position: int) -> None:
    """A flipped bit anywhere (ids, either share, the tag) fails authentication."""
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.REPORT_BUNDLES)[VICTIM]
    assert isinstance(honest, ShareBundles)
    bundle = bytearray(honest.ciphertexts[3])
    bundle[position] ^= 0x01
    assert_accuses(fed, ShareBundles(VICTIM, {**honest.ciphertexts, 3: bytes(bundle)}), 3)


@pytest.mark.parametrize("cfg", [SEMI_HONEST, ACTIVE], ids=["semi-honest", "active"])
def test_a_tampered_bundle_cuts_that_pair_and_the_victim_reveals_nothing_of_its_sender(
    cfg: SecAggConfig,
) -> None:
    """The server tampers with client 3's bundle to the victim, hoping the victim takes a share of
    its choosing or that the round aborts: the victim reports 3, the honest server part cuts the
    pair (3 and the victim never mask with each other; both stay), and the round completes
    exactly with both in the sum. The victim holds no share of 3 and reveals none; 3's other
    neighbours still reveal theirs (3 survived: its b is rebuilt without the victim)."""
    fed = Federation(cfg)
    requests = fed.run_to(Round.REPORT_BUNDLES)
    honest = requests[VICTIM]
    assert isinstance(honest, ShareBundles)
    bundle = bytearray(honest.ciphertexts[3])
    bundle[50] ^= 0x10
    fed.requests = {**requests, VICTIM: ShareBundles(VICTIM, {**honest.ciphertexts, 3: bytes(bundle)})}
    fed.step()
    assert fed.server.accusations == {3: frozenset({VICTIM})}
    assert fed.server.dropped == {}
    assert fed.requests[VICTIM] == MaskingRequest(VICTIM, frozenset(), frozenset({3}))
    assert fed.requests[3] == MaskingRequest(3, frozenset(), frozenset({VICTIM}))
    assert all(fed.requests[u] == MaskingRequest(u) for u in fed.requests if u not in (VICTIM, 3))
    fed.finish()
    fed.assert_exact()
    assert fed.server.survivors == frozenset(range(1, cfg.num_clients + 1))
    assert not fed.aborted
    revealed = fed.revealed()
    assert 3 not in revealed[VICTIM]
    assert all(3 in owners for u, owners in revealed.items() if u != VICTIM)


NOT_A_SENDER = ["itself", "unknown id", "non-neighbour", "neighbour outside U2"]


@pytest.mark.parametrize("field", ["excluded", "unpaired"])
@pytest.mark.parametrize("who", NOT_A_SENDER)
def test_masking_request_excluding_a_client_that_sent_no_bundle_is_refused(who: str, field: str) -> None:
    """The server may only exclude or unpair senders (an accusation is about a bundle); naming
    anyone else is a lie about the round, which the client refuses."""
    probe = Federation(HARARY)
    gone = neighbours(probe)[0]
    fed = Federation(HARARY)
    fed.run_to(Round.SHARE_KEYS)
    fed.silent.add(gone)  # in U1, not in U2: it sent the victim no bundle
    honest = fed.run_to(Round.MASKED_INPUT)[VICTIM]
    assert isinstance(honest, MaskingRequest) and honest.excluded == frozenset()
    names = {"itself": VICTIM, "unknown id": 10, "non-neighbour": stranger(fed), "neighbour outside U2": gone}
    named = frozenset({names[who]})
    evil = (
        MaskingRequest(VICTIM, named) if field == "excluded" else MaskingRequest(VICTIM, frozenset(), named)
    )
    client = fed.clients[VICTIM]
    assert_refuses(client, evil, Round.MASKED_INPUT, honest=honest, reason="sent this client no bundle")


def test_masking_request_ignoring_one_of_several_accusations_is_refused() -> None:
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.REPORT_BUNDLES)[VICTIM]
    assert isinstance(honest, ShareBundles)
    junk = seeded_random_bytes(0, "junk")
    evil = ShareBundles(VICTIM, {**honest.ciphertexts, 2: junk(88), 4: junk(88)})
    client = fed.clients[VICTIM]
    assert client.receive(evil) == BundleReport(VICTIM, frozenset({2, 4}))
    # Each accusation must be excluded or unpaired, in any mix; 5 may be excluded or unpaired
    # (someone else's accusation), but that does not stand in for 4.
    for accepted in (
        MaskingRequest(VICTIM, frozenset(), frozenset({2, 4})),
        MaskingRequest(VICTIM, frozenset({2}), frozenset({4})),
        MaskingRequest(VICTIM, frozenset({2, 4})),
    ):
        probe = Federation(SEMI_HONEST)
        probe.run_to(Round.REPORT_BUNDLES)
        probe.clients[VICTIM].receive(evil)
        assert isinstance(probe.clients[VICTIM].receive(accepted), MaskedInput)
    for kept_4 in (
        MaskingRequest(VICTIM, frozenset({2, 5})),
        MaskingRequest(VICTIM, frozenset({5}), frozenset({2})),
        MaskingRequest(VICTIM, frozenset(), frozenset({2, 5})),
    ):
        probe = Federation(SEMI_HONEST)
        probe.run_to(Round.REPORT_BUNDLES)
        probe.clients[VICTIM].receive(evil)
        honest = MaskingRequest(VICTIM, frozenset(), frozenset({2, 4}))
        assert_refuses(
            probe.clients[VICTIM], kept_4, Round.MASKED_INPUT, honest=honest, reason=f"{KEPT_A_CUT_PAIR}: [4]"
        )
    assert_refuses(
        client,
        MaskingRequest(VICTIM, frozenset({2, 5})),
        Round.MASKED_INPUT,
        honest=MaskingRequest(VICTIM, frozenset(), frozenset({2, 4})),
        reason=f"{KEPT_A_CUT_PAIR}: [4]",
    )


def test_an_excluded_client_is_not_masked_with_and_its_shares_never_revealed() -> None:
    """Once the server excludes client 3 for the victim, the victim's masked input leaves out
    s_13, and no later request gets a share of 3 out of it, as survivor or as dropped."""
    fed = Federation(SEMI_HONEST)
    fed.run_to(Round.MASKED_INPUT)
    client = fed.clients[VICTIM]
    masked = client.receive(MaskingRequest(VICTIM, frozenset({3})))
    assert isinstance(masked, MaskedInput)
    # The same client, masking with everyone, would have sent another vector.
    other = Federation(SEMI_HONEST)
    other.run_to(Round.MASKED_INPUT)
    full = other.clients[VICTIM].receive(MaskingRequest(VICTIM, frozenset()))
    assert isinstance(full, MaskedInput) and not (full.vector == masked.vector).all()
    honest = UnmaskingRequest(VICTIM, frozenset({1, 2, 4, 5}), frozenset())
    for evil, reason in (
        (UnmaskingRequest(VICTIM, frozenset({1, 2, 4, 5}), frozenset({3})), "not neighbours in U2"),
        (UnmaskingRequest(VICTIM, frozenset({1, 2, 3, 4, 5}), frozenset()), "not in U2"),
    ):
        probe = Federation(SEMI_HONEST)
        probe.run_to(Round.MASKED_INPUT)
        victim = probe.clients[VICTIM]
        victim.receive(MaskingRequest(VICTIM, frozenset({3})))
        assert_refuses(victim, evil, Round.UNMASKING, honest=honest, reason=reason)
    answer = client.receive(honest)
    assert isinstance(answer, UnmaskingShares)
    assert set(answer.self_mask_shares) == {1, 2, 4, 5} and not answer.secret_key_shares


def test_an_accused_client_is_never_revealed_by_its_accuser() -> None:
    """The victim reported client 3 (its bundle was tampered with) and the pair was cut: the
    victim holds no share of 3, and no later request gets one out of it, as survivor or as
    dropped; the honest request leaves 3 out of what it reveals."""
    honest = UnmaskingRequest(VICTIM, frozenset({1, 2, 4, 5}), frozenset())

    def victim_after_the_cut() -> SecAggClient:
        fed = Federation(SEMI_HONEST)
        bundles = fed.run_to(Round.REPORT_BUNDLES)[VICTIM]
        assert isinstance(bundles, ShareBundles)
        tampered = bytearray(bundles.ciphertexts[3])
        tampered[0] ^= 1
        client = fed.clients[VICTIM]
        assert client.receive(
            ShareBundles(VICTIM, {**bundles.ciphertexts, 3: bytes(tampered)})
        ) == BundleReport(VICTIM, frozenset({3}))
        assert isinstance(client.receive(MaskingRequest(VICTIM, frozenset(), frozenset({3}))), MaskedInput)
        return client

    for evil, reason in (
        (UnmaskingRequest(VICTIM, frozenset({1, 2, 3, 4, 5}), frozenset()), "not neighbours in U2"),
        (UnmaskingRequest(VICTIM, frozenset({1, 2, 4, 5}), frozenset({3})), "not neighbours in U2"),
    ):
        assert_refuses(victim_after_the_cut(), evil, Round.UNMASKING, honest=honest, reason=reason)
    answer = victim_after_the_cut().receive(honest)
    assert isinstance(answer, UnmaskingShares)
    assert set(answer.self_mask_shares) == {1, 2, 4, 5} and not answer.secret_key_shares


def _accused_by_2() -> tuple[Federation, ServerMessage]:
    """Client 2 falsely accuses the victim: their pair is cut, the victim still holds 2's shares."""
    fed = Federation(SEMI_HONEST)
    fed.run_to(Round.REPORT_BUNDLES)
    accuse_falsely(fed, 2, {VICTIM})
    fed.step()
    assert fed.requests[VICTIM] == MaskingRequest(VICTIM, frozenset(), frozenset({2}))
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert honest == UnmaskingRequest(VICTIM, frozenset(range(1, 6)), frozenset())
    return fed, honest


def test_survivors_are_counted_among_the_clients_it_masked_with() -> None:
    """Complete n=5, t=3; the pair (victim, 2) was cut by 2's accusation. The server claims 4 and
    5 dropped, to rebuild their s_SK and strip their masks from the victim's input: U3 would
    still hold 3 of its closed neighbourhood (1, 2, 3), but only 2 of the clients it masked
    with (itself and 3), fewer than t, so it refuses. With only 5 claimed dropped, 3 remain."""
    fed, honest = _accused_by_2()
    evil = UnmaskingRequest(VICTIM, frozenset({1, 2, 3}), frozenset({4, 5}))
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="masked with in U3")
    fed, _ = _accused_by_2()
    fair = UnmaskingRequest(VICTIM, frozenset({1, 2, 3, 4}), frozenset({5}))
    answer = fed.clients[VICTIM].receive(fair)
    assert isinstance(answer, UnmaskingShares) and set(answer.self_mask_shares) == {1, 2, 3, 4}


def test_survivors_to_sign_are_counted_among_the_clients_it_masked_with() -> None:
    """Active complete n=7, t=5; client 2 cut its pair with the victim. A U3 of 5 that leaves out
    6 and 7 holds 5 of the victim's closed neighbourhood but only 4 it masked with: refused."""
    fed = Federation(ACTIVE)
    fed.run_to(Round.REPORT_BUNDLES)
    accuse_falsely(fed, 2, {VICTIM})
    honest = fed.run_to(Round.CONSISTENCY_CHECK)[VICTIM]
    assert honest == ConsistencyRequest(VICTIM, frozenset(range(1, 8)))
    evil = ConsistencyRequest(VICTIM, frozenset({1, 2, 3, 4, 5}))
    assert_refuses(
        fed.clients[VICTIM], evil, Round.CONSISTENCY_CHECK, honest=honest, reason="masked with in U3"
    )


# -- round 3 (active mode): the consistency request ----------------------------------------------


def test_consistency_request_without_the_client_is_refused() -> None:
    fed = Federation(ACTIVE)
    honest = fed.run_to(Round.CONSISTENCY_CHECK)[VICTIM]
    assert isinstance(honest, ConsistencyRequest)
    evil = ConsistencyRequest(VICTIM, honest.survivors - {VICTIM})
    assert_refuses(
        fed.clients[VICTIM], evil, Round.CONSISTENCY_CHECK, honest=honest, reason="not in the server's U3"
    )


def test_consistency_request_naming_a_neighbour_outside_u2_is_refused() -> None:
    """Client 7 never shared its keys (not in U2), yet the server lists it as a survivor."""
    fed = Federation(ACTIVE)
    fed.run_to(Round.SHARE_KEYS)
    fed.silent.add(7)
    honest = fed.run_to(Round.CONSISTENCY_CHECK)[VICTIM]
    assert isinstance(honest, ConsistencyRequest) and 7 not in honest.survivors
    evil = ConsistencyRequest(VICTIM, honest.survivors | {7})
    assert_refuses(fed.clients[VICTIM], evil, Round.CONSISTENCY_CHECK, honest=honest, reason="not in U2")


def test_consistency_request_naming_an_unknown_client_is_refused() -> None:
    fed = Federation(ACTIVE)
    honest = fed.run_to(Round.CONSISTENCY_CHECK)[VICTIM]
    assert isinstance(honest, ConsistencyRequest)
    evil = ConsistencyRequest(VICTIM, honest.survivors | {8})
    assert_refuses(fed.clients[VICTIM], evil, Round.CONSISTENCY_CHECK, honest=honest, reason="unknown")


# -- round 4: the unmasking request --------------------------------------------------------------


@pytest.mark.parametrize("cfg", [SEMI_HONEST, HARARY, ACTIVE], ids=["semi-honest", "harary", "active"])
def test_double_reveal_is_refused(cfg: object) -> None:
    """A survivor also listed as dropped: both b_v and s_v^SK would unmask v's input."""
    fed = Federation(cfg)  # type: ignore[arg-type]
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    v = neighbours(fed)[0]
    assert v in honest.survivors
    evil = dataclasses.replace(honest, dropped=honest.dropped | {v})
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="survived and dropped")


def test_double_reveal_of_the_client_itself_is_refused() -> None:
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    evil = dataclasses.replace(honest, dropped=honest.dropped | {VICTIM})
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="survived and dropped")


def _silent_from_share_keys(cfg: object, who: int) -> tuple[Federation, UnmaskingRequest]:
    fed = Federation(cfg)  # type: ignore[arg-type]
    fed.run_to(Round.SHARE_KEYS)
    fed.silent.add(who)
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    return fed, honest


@pytest.mark.parametrize("who", ["non-neighbour", "neighbour outside U2", "unknown id"])
def test_dropped_naming_a_client_outside_the_u2_neighbourhood_is_refused(who: str) -> None:
    """The client reveals s_v^SK shares only for its own neighbours that were in U2."""
    probe = Federation(HARARY)
    gone = neighbours(probe)[0]
    fed, honest = _silent_from_share_keys(HARARY, gone)
    name = {"non-neighbour": stranger(fed), "neighbour outside U2": gone, "unknown id": 10}[who]
    evil = dataclasses.replace(honest, dropped=honest.dropped | {name})
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="not neighbours in U2")


def test_survivors_naming_a_neighbour_outside_u2_is_refused() -> None:
    probe = Federation(HARARY)
    gone = neighbours(probe)[0]
    fed, honest = _silent_from_share_keys(HARARY, gone)
    evil = dataclasses.replace(honest, survivors=honest.survivors | {gone})
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="not in U2")


@pytest.mark.parametrize("who", ["non-neighbour", "unknown id"])
def test_semi_honest_survivors_naming_a_client_outside_the_u2_neighbourhood_are_refused(who: str) -> None:
    """Semi-honest mode: the request lists the client's own U2 neighbourhood (in the active mode
    it is the signed global U3 instead, see test_double_reveal_is_refused[active])."""
    fed = Federation(HARARY)
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    cases = {"non-neighbour": (stranger(fed), "not neighbours in U2"), "unknown id": (10, "unknown")}
    name, reason = cases[who]
    evil = dataclasses.replace(honest, survivors=honest.survivors | {name})
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason=reason)


@pytest.mark.parametrize("moved_to_dropped", [False, True])
def test_unmasking_request_without_the_client_is_refused(moved_to_dropped: bool) -> None:
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    dropped = honest.dropped | {VICTIM} if moved_to_dropped else honest.dropped
    evil = UnmaskingRequest(VICTIM, honest.survivors - {VICTIM}, dropped)
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="not in the server's U3")


def test_neighbour_neither_survived_nor_dropped_is_refused() -> None:
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    evil = dataclasses.replace(honest, survivors=honest.survivors - {5})
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="neither")


def test_signatures_in_the_semi_honest_mode_are_refused() -> None:
    fed = Federation(SEMI_HONEST)
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    evil = dataclasses.replace(honest, signatures={2: bytes(64)})
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="semi-honest")


@pytest.mark.parametrize("cfg", [SEMI_HONEST, ACTIVE], ids=["semi-honest", "active"])
def test_second_unmasking_request_reveals_nothing_more(cfg: object) -> None:
    """After answering, a client answers no further request: not the same one, and not one
    that now calls its neighbours dropped (which would add their s_SK shares to the b shares)."""
    fed = Federation(cfg)  # type: ignore[arg-type]
    honest = fed.run_to(Round.UNMASKING)[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    client = fed.clients[VICTIM]
    first = client.receive(honest)
    assert isinstance(first, UnmaskingShares) and client.round is Round.DONE
    others = set(neighbours(fed))
    flipped = UnmaskingRequest(VICTIM, honest.survivors - others, honest.dropped | others, honest.signatures)
    for again in (honest, flipped):
        with pytest.raises(LocalProtocolError):
            client.receive(again)
        assert client.round is Round.DONE


# -- round 4 (active mode): the consistency signatures -------------------------------------------


def _active_until_unmasking(victim_view: frozenset[int] | None = None) -> tuple[Federation, UnmaskingRequest]:
    """Active round to the unmasking requests. With ``victim_view`` the server showed the victim
    that U3 in round 3 (the others saw the true U3); the victim's signature then never reaches
    the server, and the returned request is the one the others signed."""
    fed = Federation(ACTIVE)
    requests = fed.run_to(Round.CONSISTENCY_CHECK)
    if victim_view is not None:
        fed.requests = {**requests, VICTIM: ConsistencyRequest(VICTIM, victim_view)}
        fed.step(tamper=lambda replies: [r for i, r in sorted(replies.items()) if i != VICTIM])
        honest = fed.requests[2]
        assert isinstance(honest, UnmaskingRequest)
        return fed, UnmaskingRequest(VICTIM, honest.survivors, frozenset(), honest.signatures)
    honest = fed.step()[VICTIM]
    assert isinstance(honest, UnmaskingRequest)
    return fed, honest


def test_unmasking_with_another_u3_than_signed_is_refused() -> None:
    """The victim signed U3 minus client 7; the others signed the full U3. Sent the full U3
    (with valid signatures of the others), the victim sees it is not the set it signed."""
    fed, evil = _active_until_unmasking(victim_view=frozenset(range(1, 7)))
    honest = UnmaskingRequest(VICTIM, frozenset(range(1, 7)), frozenset({7}), evil.signatures)
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="differs")


def test_unmasking_with_the_signed_u3_but_others_signatures_over_another_is_refused() -> None:
    """Same split view, but now the request repeats the victim's set (7 dropped, to collect
    s_7^SK) while the forwarded signatures are over the true U3 in which 7 survived."""
    view = frozenset(range(1, 7))
    fed, request = _active_until_unmasking(victim_view=view)
    assert request.signatures is not None
    # Client 7's own signature is left out: it would name a client outside the claimed U3.
    others = {u: sig for u, sig in request.signatures.items() if u != 7}
    evil = UnmaskingRequest(VICTIM, view, frozenset({7}), others)
    assert_refuses(
        fed.clients[VICTIM], evil, Round.UNMASKING, honest=request, reason="invalid consistency signature"
    )


def test_too_few_consistency_signatures_are_refused() -> None:
    fed, honest = _active_until_unmasking()
    assert honest.signatures is not None
    kept = dict(sorted(honest.signatures.items())[: fed.config.threshold - 1])
    evil = dataclasses.replace(honest, signatures=kept)
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="threshold")


def test_missing_consistency_signatures_are_refused() -> None:
    fed, honest = _active_until_unmasking()
    evil = dataclasses.replace(honest, signatures=None)
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="threshold")


@pytest.mark.parametrize("bad", ["over another set", "random bytes", "from another signer"])
def test_invalid_consistency_signature_is_refused(bad: str) -> None:
    fed, honest = _active_until_unmasking()
    assert honest.signatures is not None
    u3 = honest.survivors
    if bad == "over another set":
        sig = signatures.sign(
            fed.identities[4], signatures.consistency_payload(fed.setup.session_id, u3 - {7})
        )
    elif bad == "random bytes":
        sig = seeded_random_bytes(0, "sig")(64)
    else:
        sig = honest.signatures[5]
    evil = dataclasses.replace(honest, signatures={**honest.signatures, 4: sig})
    assert_refuses(
        fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="invalid consistency signature"
    )


def test_consistency_signature_from_outside_u3_is_refused() -> None:
    """Client 7 dropped before round 2 (not in U3); a valid signature of 7 over U3 (7 colluding
    with the server) must not count towards the t signatures."""
    fed = Federation(ACTIVE)
    fed.run_to(Round.MASKED_INPUT)
    fed.silent.add(7)
    fed.run_to(Round.CONSISTENCY_CHECK)
    honest = fed.step()[VICTIM]
    assert isinstance(honest, UnmaskingRequest) and honest.signatures is not None
    assert 7 not in honest.survivors
    payload = signatures.consistency_payload(fed.setup.session_id, honest.survivors)
    fake = {**dict(sorted(honest.signatures.items())[: fed.config.threshold - 1])}
    fake[7] = signatures.sign(fed.identities[7], payload)
    evil = dataclasses.replace(honest, signatures=fake)
    assert_refuses(fed.clients[VICTIM], evil, Round.UNMASKING, honest=honest, reason="not in U3")


# -- any round: wrong message type, wrong recipient ----------------------------------------------


def _minimal(kind: type) -> object:
    # One message of each server message type (a KeyError: a new type needs an example here).
    return {
        KeyList: KeyList(VICTIM, {}),
        ShareBundles: ShareBundles(VICTIM, {}),
        MaskingRequest: MaskingRequest(VICTIM, frozenset()),
        ConsistencyRequest: ConsistencyRequest(VICTIM, frozenset({VICTIM})),
        UnmaskingRequest: UnmaskingRequest(VICTIM, frozenset({VICTIM}), frozenset()),
        UnmaskingShares: UnmaskingShares(VICTIM, {}, {}),
    }[kind]


_CLIENT_ROUNDS = [
    (cfg, at) for cfg in (SEMI_HONEST, ACTIVE) for at in rounds_of(cfg.is_active) if at in CLIENT_EXPECTS
]
WRONG_TYPES = [
    (cfg, at, kind)
    for cfg, at in _CLIENT_ROUNDS
    for kind in [*dict.fromkeys(CLIENT_EXPECTS.values()), UnmaskingShares]
    if kind is not CLIENT_EXPECTS[at]
]


@pytest.mark.parametrize(
    ("cfg", "at", "kind"),
    WRONG_TYPES,
    ids=[f"{'active' if c.is_active else 'semi'}-{a.value}-{k.__name__}" for c, a, k in WRONG_TYPES],
)
def test_wrong_message_type_for_the_round_is_refused(cfg: object, at: Round, kind: type) -> None:
    """E.g. an UnmaskingRequest instead of the share bundles: skipping the masked input round
    would hand out shares of a client whose input never entered the sum."""
    fed = Federation(cfg)  # type: ignore[arg-type]
    honest = fed.run_to(at)[VICTIM]
    assert_refuses(fed.clients[VICTIM], _minimal(kind), at, honest=honest, reason="expected")


@pytest.mark.parametrize(
    ("cfg", "at"),
    _CLIENT_ROUNDS,
    ids=[f"{'active' if c.is_active else 'semi'}-{a.value}" for c, a in _CLIENT_ROUNDS],
)
def test_message_addressed_to_another_client_is_refused(cfg: object, at: Round) -> None:
    fed = Federation(cfg)  # type: ignore[arg-type]
    honest = fed.run_to(at)[VICTIM]
    evil = dataclasses.replace(honest, recipient=2)
    assert_refuses(fed.clients[VICTIM], evil, at, honest=honest, reason="addressed to client 2")
