"""secagg.primitives.key_agreement: untrusted X25519 keys and HKDF bound to session, purpose, ids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import example, given, settings
from hypothesis import strategies as st

from secagg import AbortedError, Round, RoundSetup, SecAggClient, SecAggConfig, SecAggServer
from secagg.errors import RemoteProtocolError
from secagg.messages import KeyList, PublicKeys
from secagg.primitives import key_agreement
from secagg.primitives.key_agreement import KeyPurpose
from secagg.simulate import seeded_random_bytes

from ._reference import A_MONT, P25519, count_roots, decode_u, ladder, poly_eval, x25519

# x-coordinates of points of order 8 on Curve25519 (as in libsodium's blocklist; derived below)
U8_A = int.from_bytes(
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"
)
U8_B = int.from_bytes(
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"
)
SMALL_ORDER_U = {0, 1, P25519 - 1, U8_A, U8_B}

# x(2P) = (x^2 - 1)^2 / (4x(x^2 + A x + 1)); x(2P) = 1 and x(2P) = -1 as quartics in x
DOUBLES_TO_ONE = [1, -4, -(2 + 4 * A_MONT), -4, 1]
DOUBLES_TO_MINUS_ONE = [1, 4, 4 * A_MONT - 2, 4, 1]


def _encodings(u: int) -> list[bytes]:
    """Every 32-byte string that decodes to u mod p: u and u + p (when < 2**255), top bit 0 or 1."""
    out = []
    for value in (u, u + P25519):
        if value < 2**255:
            out += [value.to_bytes(32, "little"), (value | 1 << 255).to_bytes(32, "little")]
    return out


BLOCKLIST = sorted(e for u in SMALL_ORDER_U for e in _encodings(u))


def test_small_order_x_coordinates_are_exactly_these_five() -> None:
    """[8]P = O exactly for P of order 1, 2, 4 or 8 (cofactor 8 on the curve, 4 on the twist):
    - order 2: y = 0, i.e. x(x^2 + A x + 1) = 0; A^2 - 4 is a non-square, so only x = 0;
    - order 4: x(2P) = 0, i.e. (x^2 - 1)^2 = 0: x = 1 or x = -1;
    - order 8: x(2P) = +-1: the roots in GF(p) of two quartics, which are exactly U8_A and U8_B."""
    assert pow(A_MONT * A_MONT - 4, (P25519 - 1) // 2, P25519) == P25519 - 1
    assert count_roots(DOUBLES_TO_ONE) + count_roots(DOUBLES_TO_MINUS_ONE) == 2
    for u in (U8_A, U8_B):
        assert poly_eval(DOUBLES_TO_ONE, u) == 0 or poly_eval(DOUBLES_TO_MINUS_ONE, u) == 0
    for u in SMALL_ORDER_U:
        assert ladder(8, u)[1] == 0, u  # [8]P is the point at infinity (Z = 0)
    for u in (U8_A, U8_B):
        assert ladder(4, u)[1] != 0  # order exactly 8
    assert ladder(8, 9)[1] != 0  # the base point is not of small order
    assert len(BLOCKLIST) == 14  # 5 values, 0 and 1 also as 0 + p and 1 + p, each with top bit 0 or 1


@pytest.mark.parametrize("encoding", BLOCKLIST, ids=lambda b: b.hex()[:8] + ".." + b.hex()[-4:])
def test_small_order_public_keys_are_rejected(encoding: bytes) -> None:
    assert x25519(b"\x42" * 32, encoding) == bytes(32)  # the shared secret anyone can compute
    with pytest.raises(RemoteProtocolError, match="low order"):
        key_agreement.load_public_key(encoding)
    assert not key_agreement.is_valid_public_key(encoding)
    private = key_agreement.generate_private_key(bytes(range(32)))
    with pytest.raises(RemoteProtocolError):
        key_agreement.derive_key(
            private,
            encoding,
            purpose=KeyPurpose.PAIRWISE_MASK,
            session_id=bytes(32),
            own_id=1,
            own_public=key_agreement.public_bytes(private),
            peer_id=2,
        )


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
@example((P25519 + 2).to_bytes(32, "little"))  # non-canonical encoding of a valid point: accepted
@example((2**255 - 1).to_bytes(32, "little"))
@example(b"\xff" * 32)
@example((9).to_bytes(32, "little"))
def test_validity_is_exactly_not_small_order(data: bytes) -> None:
    expected = decode_u(data) % P25519 not in SMALL_ORDER_U
    assert key_agreement.is_valid_public_key(data) is expected


@pytest.mark.parametrize(
    "data", [b"", bytes(31), bytes(range(1, 34)), bytes(64), bytearray(range(32)), "a" * 32, None, 9]
)
def test_malformed_public_keys_are_rejected(data: object) -> None:
    with pytest.raises(RemoteProtocolError, match="32 bytes"):
        key_agreement.load_public_key(data)
    assert not key_agreement.is_valid_public_key(data)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_private_key_needs_32_random_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="32"):
        key_agreement.generate_private_key(bytes(size))


def _party(seed: int) -> tuple[X25519PrivateKey, bytes]:
    private = key_agreement.generate_private_key(seed.to_bytes(32, "big"))
    return private, key_agreement.public_bytes(private)


def _derive(
    own: tuple[X25519PrivateKey, bytes],
    peer_public: bytes,
    own_id: int,
    peer_id: int,
    session: bytes = bytes(32),
    purpose: KeyPurpose = KeyPurpose.PAIRWISE_MASK,
) -> bytes:
    return key_agreement.derive_key(
        own[0],
        peer_public,
        purpose=purpose,
        session_id=session,
        own_id=own_id,
        own_public=own[1],
        peer_id=peer_id,
    )


@settings(max_examples=50, deadline=None)
@given(
    ids=st.lists(st.integers(1, 2**20), min_size=3, max_size=3, unique=True),
    session=st.binary(min_size=32, max_size=32),
    purpose=st.sampled_from(list(KeyPurpose)),
)
def test_derived_key_is_symmetric_and_bound_to_everything(
    ids: list[int], session: bytes, purpose: KeyPurpose
) -> None:
    u, v, w = ids
    alice, bob, carol = _party(101), _party(202), _party(303)
    key = _derive(alice, bob[1], u, v, session, purpose)
    assert len(key) == key_agreement.DERIVED_KEY_SIZE == 32
    assert _derive(bob, alice[1], v, u, session, purpose) == key  # both parties agree
    assert key != alice[0].exchange(carol[0].public_key())
    assert key != alice[0].exchange(bob[0].public_key())  # not the raw DH output
    other_session = bytes(b ^ 1 for b in session)
    other_purpose = next(p for p in KeyPurpose if p is not purpose)
    variants = {
        "session": _derive(alice, bob[1], u, v, other_session, purpose),
        "purpose": _derive(alice, bob[1], u, v, session, other_purpose),
        "swapped ids": _derive(alice, bob[1], v, u, session, purpose),
        "other peer id": _derive(alice, bob[1], u, w, session, purpose),
        "other own id": _derive(alice, bob[1], w, v, session, purpose),
        "other peer key": _derive(alice, carol[1], u, v, session, purpose),
        # a client lying about its own advertised key does not get the same key as its peer
        "other own public": _derive((alice[0], carol[1]), bob[1], u, v, session, purpose),
    }
    for what, other in variants.items():
        assert other != key, what
    assert len(set(variants.values())) == len(variants)


def test_no_key_with_oneself() -> None:
    alice, bob = _party(1), _party(2)
    with pytest.raises(ValueError, match="itself"):
        _derive(alice, bob[1], 5, 5)


@pytest.mark.parametrize("peer", [bytes(31), bytes(33), bytearray(32)])
def test_derive_key_rejects_malformed_peer_key(peer: object) -> None:
    with pytest.raises(RemoteProtocolError, match="32 bytes"):
        _derive(_party(1), peer, 1, 2)  # type: ignore[arg-type]


def test_private_bytes_roundtrip() -> None:
    raw = bytes(range(32))
    key = key_agreement.generate_private_key(raw)
    assert key_agreement.private_bytes(key) == raw  # what a client Shamir-shares as s_SK
    assert key_agreement.public_bytes(key) == x25519(raw, (9).to_bytes(32, "little"))


# -- canonical public keys: compare curve points, not bytes -------------------------------------


def _aliases(public: bytes) -> list[bytes]:
    """Every 32-byte encoding of the same u (mod p): bit 255 either way, u + p when < 2**255."""
    return _encodings(decode_u(public) % P25519)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_canonical_keys_are_equal_exactly_when_the_points_are(a: bytes, b: bytes) -> None:
    """canonical(a) == canonical(b) iff a and b name the same u mod p (RFC 7748 decoding: bit 255
    masked, u read mod 2^255 - 19); the canonical form is itself one of the encodings, with
    bit 255 clear and u < p, and canonical of it is itself."""
    ca = key_agreement.canonical_public_key(a)
    assert (ca == key_agreement.canonical_public_key(b)) is (decode_u(a) % P25519 == decode_u(b) % P25519)
    assert len(ca) == 32 and int.from_bytes(ca, "little") < P25519
    assert key_agreement.canonical_public_key(ca) == ca


@pytest.mark.parametrize("u", [9, 10, 18], ids=lambda u: f"u={u}")
def test_u_plus_p_and_bit_255_aliases_are_the_same_key(u: int) -> None:
    """For small u, u + p still fits in 255 bits: four encodings of one public key. X25519 gives
    the same shared secret with each, so they must compare equal."""
    encodings = _encodings(u)
    assert len(encodings) == 4
    own = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    secrets = set()
    for encoding in encodings:
        if key_agreement.is_valid_public_key(encoding):
            secrets.add(own.exchange(key_agreement.load_public_key(encoding)))
    assert len(secrets) <= 1
    assert len({key_agreement.canonical_public_key(e) for e in encodings}) == 1


def test_a_real_key_with_bit_255_flipped_is_the_same_key() -> None:
    alice, bob = _party(11), _party(12)
    flipped = bob[1][:31] + bytes([bob[1][31] ^ 0x80])
    assert flipped != bob[1]
    assert alice[0].exchange(key_agreement.load_public_key(flipped)) == alice[0].exchange(
        key_agreement.load_public_key(bob[1])
    )
    assert key_agreement.canonical_public_key(flipped) == key_agreement.canonical_public_key(bob[1])
    assert len(_aliases(bob[1])) == 2  # a random key's u + p does not fit in 255 bits


# -- ... as the protocol uses them --------------------------------------------------------------


def _round(n: int = 4) -> tuple[SecAggServer, dict[int, SecAggClient]]:
    cfg = SecAggConfig(n, 3, 2, collusion_fraction=0.0)
    setup = RoundSetup(cfg, bytes(32))
    clients = {
        i: SecAggClient(setup, i, np.zeros(2, dtype=np.uint64), random_bytes=seeded_random_bytes(1, f"c/{i}"))
        for i in range(1, n + 1)
    }
    return SecAggServer(setup), clients


def _alias(key: bytes) -> bytes:
    return key[:31] + bytes([key[31] ^ 0x80])


@pytest.mark.parametrize("which", ["c_pk", "s_pk"])
def test_the_server_drops_a_client_re_advertising_a_neighbours_key_with_bit_255_flipped(which: str) -> None:
    server, clients = _round()
    adverts = {i: c.start() for i, c in clients.items()}
    if which == "c_pk":
        copy = dataclasses.replace(adverts[2], c_pk=_alias(adverts[1].c_pk))
    else:
        copy = dataclasses.replace(adverts[2], s_pk=_alias(adverts[1].s_pk))
    for i in (1, 3, 4):
        server.receive(adverts[i])
    server.receive(copy)
    assert set(server.dropped) == {2}
    assert "already advertised by client 1" in server.dropped[2].reason


def test_the_server_drops_a_client_re_advertising_the_base_point_as_u_plus_p() -> None:
    """The u + p alias, with the one kind of key where it exists (u < 19): the base point u = 9."""
    server, clients = _round()
    adverts = {i: c.start() for i, c in clients.items()}
    nine, nine_plus_p = (9).to_bytes(32, "little"), (9 + P25519).to_bytes(32, "little")
    server.receive(dataclasses.replace(adverts[1], c_pk=nine))
    server.receive(dataclasses.replace(adverts[2], s_pk=nine_plus_p))
    assert set(server.dropped) == {2}
    assert "already advertised by client 1" in server.dropped[2].reason


@pytest.mark.parametrize(
    "case", ["a neighbour's c_pk as another's", "own s_pk reflected", "c_pk == s_pk of one neighbour"]
)
def test_the_client_aborts_on_a_key_list_with_aliased_keys(case: str) -> None:
    server, clients = _round()
    adverts = {i: c.start() for i, c in clients.items()}
    for advert in adverts.values():
        server.receive(advert)
    requests = server.advance()
    honest = requests[1]
    assert isinstance(honest, KeyList)
    keys = dict(honest.keys)
    own = adverts[1]
    if case == "a neighbour's c_pk as another's":
        keys[3] = PublicKeys(_alias(keys[2].c_pk), keys[3].s_pk)
    elif case == "own s_pk reflected":
        keys[3] = PublicKeys(keys[3].c_pk, _alias(own.s_pk))
    else:
        keys[3] = PublicKeys(keys[3].c_pk, _alias(keys[3].c_pk))
    client = clients[1]
    with pytest.raises(AbortedError, match="duplicated public keys"):
        client.receive(KeyList(1, keys))
    assert client.round is Round.ABORTED
