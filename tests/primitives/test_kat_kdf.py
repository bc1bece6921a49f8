"""Known answers for key agreement and key derivation (tests/data/kdf_kat.json).

The derived keys are recomputed by the library (both parties) and by an independent path: a
pure-Python RFC 7748 X25519 and an HMAC-only RFC 5869 HKDF (tests/primitives/_reference.py),
themselves checked against the RFC test vectors below.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.primitives import key_agreement
from secagg.primitives.key_agreement import KeyPurpose

from ._reference import X25519_BASE, hkdf_sha256, load_kat, x25519

KAT = load_kat("kdf_kat.json")
CASES = KAT["cases"]
IDS = [f"{c['purpose']}-{c['id_a']}-{c['id_b']}-{c['session_id'][:8]}" for c in CASES]


def _derive(case: dict, side: str) -> bytes:
    own, peer = ("a", "b") if side == "a" else ("b", "a")
    private = key_agreement.generate_private_key(bytes.fromhex(case[f"private_{own}"]))
    return key_agreement.derive_key(
        private,
        bytes.fromhex(case[f"public_{peer}"]),
        purpose=KeyPurpose[case["purpose"]],
        session_id=bytes.fromhex(case["session_id"]),
        own_id=case[f"id_{own}"],
        own_public=bytes.fromhex(case[f"public_{own}"]),
        peer_id=case[f"id_{peer}"],
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_both_parties_derive_the_kat_key(case: dict) -> None:
    assert _derive(case, "a").hex() == case["key"]
    assert _derive(case, "b").hex() == case["key"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_independent_x25519_and_hkdf_reproduce_kat(case: dict) -> None:
    private_a, private_b = bytes.fromhex(case["private_a"]), bytes.fromhex(case["private_b"])
    public_a, public_b = bytes.fromhex(case["public_a"]), bytes.fromhex(case["public_b"])
    assert x25519(private_a, X25519_BASE) == public_a
    assert x25519(private_b, X25519_BASE) == public_b
    shared = x25519(private_a, public_b)
    assert shared == x25519(private_b, public_a)
    assert shared.hex() == case["shared_secret"]
    # info = purpose || "|" || low id || high id || pk of low id || pk of high id
    (low_id, low_pk), (high_id, high_pk) = sorted(((case["id_a"], public_a), (case["id_b"], public_b)))
    info = KeyPurpose[case["purpose"]].value + b"|" + low_id.to_bytes(4, "big") + high_id.to_bytes(4, "big")
    info += low_pk + high_pk
    assert info.hex() == case["hkdf_info"]
    key = hkdf_sha256(shared, salt=bytes.fromhex(case["session_id"]), info=info, length=32)
    assert key.hex() == case["key"]


def test_kat_keys_differ_when_ids_purpose_or_session_change() -> None:
    by_params = {(c["purpose"], c["session_id"], c["id_a"], c["id_b"]): c["key"] for c in CASES}
    one = next(c["session_id"] for c in CASES if c["id_a"] == 3 and c["purpose"] == "SHARE_CHANNEL")
    two = next(c["session_id"] for c in CASES if c["session_id"] != one)
    base = by_params[("PAIRWISE_MASK", one, 3, 7)]
    assert by_params[("PAIRWISE_MASK", one, 7, 3)] != base  # same keys, ids swapped
    assert by_params[("SHARE_CHANNEL", one, 3, 7)] != base  # other purpose
    assert by_params[("PAIRWISE_MASK", two, 3, 7)] != base  # other session
    assert len(set(by_params.values())) == len(CASES)


def test_rfc7748_section_6_1_x25519() -> None:
    v = KAT["rfc7748_6_1"]
    alice, bob = bytes.fromhex(v["alice_private"]), bytes.fromhex(v["bob_private"])
    # pyca/cryptography, through the library's wrappers
    alice_key, bob_key = key_agreement.generate_private_key(alice), key_agreement.generate_private_key(bob)
    assert key_agreement.public_bytes(alice_key).hex() == v["alice_public"]
    assert key_agreement.public_bytes(bob_key).hex() == v["bob_public"]
    assert key_agreement.private_bytes(alice_key) == alice
    shared = alice_key.exchange(key_agreement.load_public_key(bytes.fromhex(v["bob_public"])))
    assert shared.hex() == v["shared_secret"]
    assert bob_key.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(v["alice_public"]))) == shared
    # the pure-Python reference used to check the KDF vectors
    assert x25519(alice, X25519_BASE).hex() == v["alice_public"]
    assert x25519(bob, bytes.fromhex(v["alice_public"])).hex() == v["shared_secret"]
    assert X25519PrivateKey.from_private_bytes(bob).public_key().public_bytes_raw().hex() == v["bob_public"]


def test_rfc5869_case_1_hkdf_sha256() -> None:
    v = KAT["rfc5869_case1"]
    ikm, salt, info = (bytes.fromhex(v[k]) for k in ("ikm", "salt", "info"))
    okm = HKDF(algorithm=hashes.SHA256(), length=v["length"], salt=salt, info=info).derive(ikm)
    assert okm.hex() == v["okm"]
    assert hkdf_sha256(ikm, salt, info, v["length"]).hex() == v["okm"]
