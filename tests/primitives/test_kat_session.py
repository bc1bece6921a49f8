"""Known answers for the session id, the AEAD layout and the SecAgg+ labelling
(tests/data/session_kat.json), each also recomputed from its documented layout."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.config import SecAggConfig
from secagg.graph import NeighbourGraph, permutation
from secagg.primitives import aead
from secagg.session import RoundSetup

from ._reference import load_kat, permutation_reference

KAT = load_kat("session_kat.json")
SESSIONS = KAT["sessions"]
IDS = [s["name"] for s in SESSIONS]


def _setup(case: dict) -> RoundSetup:
    config = SecAggConfig(**case["config"])
    roster = None if case["roster"] is None else {int(i): bytes.fromhex(k) for i, k in case["roster"].items()}
    return RoundSetup(config, bytes.fromhex(case["nonce"]), roster)


def test_kat_covers_both_graphs_and_both_modes() -> None:
    assert {(s["config"]["graph"], s["config"]["mode"]) for s in SESSIONS} == {
        ("complete", "semi_honest"),
        ("complete", "active"),
        ("harary", "semi_honest"),
        ("harary", "active"),
    }


@pytest.mark.parametrize("case", SESSIONS, ids=IDS)
def test_canonical_config_and_session_id(case: dict) -> None:
    setup = _setup(case)
    c = case["config"]
    canonical = b"secagg/config/v1" + struct.pack(
        ">IIIQBIBd",
        c["num_clients"],
        c["threshold"],
        c["vector_length"],
        c["modulus"],
        c["graph"] == "harary",
        c["degree"] or 0,
        c["mode"] == "active",
        c["collusion_fraction"],
    )
    assert canonical.hex() == case["canonical_config"]
    assert setup.config.canonical_bytes() == canonical
    h = hashlib.sha256(b"secagg/session/v1" + canonical + bytes.fromhex(case["nonce"]))
    for client_id, key in sorted((int(i), k) for i, k in (case["roster"] or {}).items()):
        h.update(client_id.to_bytes(4, "big") + bytes.fromhex(key))
    assert h.hexdigest() == case["session_id"]
    assert setup.session_id.hex() == case["session_id"]


@pytest.mark.parametrize("case", [s for s in SESSIONS if "permutation" in s], ids=lambda s: s["name"])
def test_harary_labelling(case: dict) -> None:
    setup = _setup(case)
    n, session_id = case["config"]["num_clients"], bytes.fromhex(case["session_id"])
    assert permutation(n, session_id) == case["permutation"]
    assert permutation_reference(n, session_id) == case["permutation"]
    graph = NeighbourGraph(setup.config, session_id)
    for i in range(1, n + 1):
        assert sorted(graph.neighbours(i)) == case["neighbours"][str(i)]
        assert sorted(setup.graph.neighbours(i)) == case["neighbours"][str(i)]
    # the neighbours are the degree/2 nearest on either side of the permuted ring
    ring, half = case["permutation"], case["config"]["degree"] // 2
    for position, client in enumerate(ring):
        expected = {ring[(position + d) % n] for d in range(-half, half + 1) if d}
        assert set(case["neighbours"][str(client)]) == expected


def test_aead_layout() -> None:
    v = KAT["aead"]
    session_id, key = bytes.fromhex(v["session_id"]), bytes.fromhex(v["key"])
    sender, recipient, round_index = v["sender"], v["recipient"], v["round_index"]
    assert v["session_id"] == SESSIONS[0]["session_id"]
    ad = b"secagg/aead/v1" + session_id + sender.to_bytes(4, "big") + recipient.to_bytes(4, "big")
    ad += round_index.to_bytes(1, "big")
    assert ad.hex() == v["associated_data"]
    assert aead.associated_data(session_id, sender, recipient, round_index) == ad
    nonce = sender.to_bytes(6, "big") + recipient.to_bytes(6, "big")
    assert nonce.hex() == v["nonce"]
    plaintext = bytes.fromhex(v["plaintext"])
    # the nonce layout is pinned through pyca's AES-GCM directly, not through a private helper
    assert AESGCM(key).encrypt(nonce, plaintext, ad).hex() == v["ciphertext"]
    kwargs = {"session_id": session_id, "sender": sender, "recipient": recipient, "round_index": round_index}
    ciphertext = aead.encrypt(key, plaintext, **kwargs)
    assert ciphertext.hex() == v["ciphertext"]
    assert len(ciphertext) == len(plaintext) + aead.TAG_SIZE
    assert aead.decrypt(key, ciphertext, **kwargs) == plaintext
