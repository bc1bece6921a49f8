#!/usr/bin/env python3
"""Regenerate the known-answer files in tests/data from the current secagg code.

    python tests/data/make_kat.py           # rewrite prg_kat.json, kdf_kat.json, shamir_kat.json,
                                            # session_kat.json
    python tests/data/make_kat.py --check   # exit 1 if the code no longer reproduces them

The files pin wire formats: the mask PRG, the derived keys, the Shamir shares, the session id,
the AEAD layout and the SecAgg+ labelling. Rewriting them is a protocol change (clients on the
old and the new code stop interoperating): bump the version tags in the code ("secagg/.../v1")
and say so in the commit, do not just regenerate to make a test pass. The tests in
tests/primitives/test_kat_*.py read these files and recompute every value, most of them also
with an independent reference implementation (tests/primitives/_reference.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.config import SecAggConfig
from secagg.graph import NeighbourGraph, permutation
from secagg.primitives import aead, key_agreement, shamir
from secagg.primitives.field import bit_length
from secagg.primitives.prg import MaskDomain, expand_mask
from secagg.session import RoundSetup
from secagg.simulate import seeded_random_bytes

HERE = Path(__file__).resolve().parent


def tagged(label: str) -> bytes:
    """32 fixed bytes named by a label (so every input of a vector is reproducible by name)."""
    return hashlib.sha256(b"secagg-kat/" + label.encode()).digest()


def vector_digest(vector: np.ndarray) -> str:
    """SHA-256 of the vector as little-endian uint64: pins every element of a long mask."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<u8").tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# PRG


def raw_masked_words(seed: bytes, domain: MaskDomain, modulus: int, count: int) -> np.ndarray:
    """The first ``count`` keystream words reduced to bit_length(p) bits, before rejection."""
    width = 4 if modulus <= 2**32 else 8
    stream = Cipher(algorithms.AES(seed), modes.CTR(domain.nonce)).encryptor().update(bytes(count * width))
    words = np.frombuffer(stream, dtype="<u4" if width == 4 else "<u8").astype(np.uint64)
    return words & np.uint64((1 << bit_length(modulus)) - 1)


def prg_case(name: str, seed: bytes, domain: MaskDomain, modulus: int, length: int) -> dict[str, Any]:
    mask = expand_mask(seed, domain, length, modulus)
    raw = raw_masked_words(seed, domain, modulus, length)
    case: dict[str, Any] = {
        "name": name,
        "seed": seed.hex(),
        "domain": domain.value,
        "modulus": modulus,
        "length": length,
        "word_bytes": 4 if modulus <= 2**32 else 8,
        "bits": bit_length(modulus),
        "rejections_in_first_length_words": int((raw >= modulus).sum()),
        "head": [int(v) for v in mask[:16]],
        "tail": [int(v) for v in mask[-4:]],
        "sha256_u64le": vector_digest(mask),
    }
    if length <= 32:
        case["vector"] = [int(v) for v in mask]
    return case


def seed_with_rejections(label: str, modulus: int, length: int, at_least: int) -> bytes:
    """The first seed tagged(label/i) whose first ``length`` words hold >= ``at_least`` rejections."""
    for i in range(1000):
        seed = tagged(f"{label}/{i}")
        if int((raw_masked_words(seed, MaskDomain.PAIRWISE, modulus, length) >= modulus).sum()) >= at_least:
            return seed
    raise RuntimeError("no seed found")


def make_prg() -> dict[str, Any]:
    counting = bytes(range(32))
    cases = [
        prg_case("u32 words, default prime, pairwise", counting, MaskDomain.PAIRWISE, 2**32 - 5, 16),
        prg_case("u32 words, default prime, self", counting, MaskDomain.SELF, 2**32 - 5, 16),
        prg_case("u32 words, default prime, one element", tagged("prg/one"), MaskDomain.SELF, 2**32 - 5, 1),
        prg_case("u32 words, default prime, long", tagged("prg/long"), MaskDomain.PAIRWISE, 2**32 - 5, 1000),
        prg_case("u64 words, 2**61-1, self", tagged("prg/m61"), MaskDomain.SELF, 2**61 - 1, 12),
        prg_case("u64 words, 2**61-1, odd length", tagged("prg/m61"), MaskDomain.PAIRWISE, 2**61 - 1, 777),
        prg_case("u64 words, 2**62-57", tagged("prg/p62"), MaskDomain.PAIRWISE, 2**62 - 57, 9),
        prg_case("u64 words, 33 bits, 2**33-9", tagged("prg/p33"), MaskDomain.SELF, 2**33 - 9, 10),
        prg_case(
            "u32 words, 16 bits, 2**16-15, rejections, length not a block multiple",
            seed_with_rejections("prg/reject16", 2**16 - 15, 5003, 3),
            MaskDomain.PAIRWISE,
            2**16 - 15,
            5003,
        ),
        prg_case(
            "u32 words, 17 bits, 2**17-1, rejection",
            seed_with_rejections("prg/reject17", 2**17 - 1, 300001, 1),
            MaskDomain.PAIRWISE,
            2**17 - 1,
            300001,
        ),
    ]
    return {
        "about": (
            "Mask PRG known answers (secagg/primitives/prg.py). keystream = AES-256-CTR(key=seed, "
            "initial counter block = nonce[domain]) over zeros; words little-endian, 4 bytes if "
            "p <= 2**32 else 8; each word masked to its low `bits` bits and kept iff < p; mask = "
            "first `length` kept words. `vector` (short cases) is the whole mask; `head` its first 16, "
            "`tail` its last 4, `sha256_u64le` the SHA-256 of the whole mask as little-endian uint64. "
            "`rejections_in_first_length_words` counts masked words >= p among the first `length`."
        ),
        "nonces": {d.value: d.nonce.hex() for d in MaskDomain},
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------
# KDF


def kdf_case(purpose: key_agreement.KeyPurpose, session: str, id_a: int, id_b: int) -> dict[str, Any]:
    private_a, private_b = tagged("kdf/private/alice"), tagged("kdf/private/bob")
    key_a = key_agreement.generate_private_key(private_a)
    key_b = key_agreement.generate_private_key(private_b)
    public_a, public_b = key_agreement.public_bytes(key_a), key_agreement.public_bytes(key_b)
    session_id = tagged(f"kdf/session/{session}")
    derived = key_agreement.derive_key(
        key_a,
        public_b,
        purpose=purpose,
        session_id=session_id,
        own_id=id_a,
        own_public=public_a,
        peer_id=id_b,
    )
    low, high = sorted(((id_a, public_a), (id_b, public_b)))
    info = purpose.value + b"|" + low[0].to_bytes(4, "big") + high[0].to_bytes(4, "big") + low[1] + high[1]
    return {
        "purpose": purpose.name,
        "session_id": session_id.hex(),
        "id_a": id_a,
        "private_a": private_a.hex(),
        "public_a": public_a.hex(),
        "id_b": id_b,
        "private_b": private_b.hex(),
        "public_b": public_b.hex(),
        "shared_secret": key_a.exchange(key_b.public_key()).hex(),
        "hkdf_info": info.hex(),
        "key": derived.hex(),
    }


def make_kdf() -> dict[str, Any]:
    purposes = key_agreement.KeyPurpose
    return {
        "about": (
            "Derived keys (secagg/primitives/key_agreement.py): HKDF-SHA256(ikm = X25519(a, B), "
            "salt = session_id, info = purpose || '|' || u || v || pk_u || pk_v, 32 bytes) with u < v "
            "the 4-byte big-endian ids. `key` is what both parties derive. Private keys are raw "
            "X25519 scalars (clamped by X25519 itself)."
        ),
        "cases": [
            kdf_case(purposes.PAIRWISE_MASK, "one", 3, 7),
            kdf_case(purposes.SHARE_CHANNEL, "one", 3, 7),
            kdf_case(purposes.PAIRWISE_MASK, "one", 7, 3),
            kdf_case(purposes.PAIRWISE_MASK, "two", 3, 7),
            kdf_case(purposes.SHARE_CHANNEL, "two", 1, 1048576),
        ],
        "rfc7748_6_1": {
            "source": "RFC 7748 section 6.1",
            "alice_private": "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            "alice_public": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
            "bob_private": "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
            "bob_public": "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            "shared_secret": "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        },
        "rfc5869_case1": {
            "source": "RFC 5869 appendix A.1 (HKDF-SHA256, test case 1)",
            "ikm": "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            "salt": "000102030405060708090a0b0c",
            "info": "f0f1f2f3f4f5f6f7f8f9",
            "length": 42,
            "prk": "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
            "okm": "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        },
    }


# ---------------------------------------------------------------------------------------------
# Shamir


def shamir_case(
    name: str, secret: bytes, threshold: int, holders: list[int], label: str, subsets: list[list[int]]
) -> dict[str, Any]:
    rb = seeded_random_bytes(b"secagg-kat", label)
    shares = shamir.share(secret, threshold, holders, rb)
    # The coefficients a_1..a_{t-1} that share() drew: the same stream, replayed.
    replay = seeded_random_bytes(b"secagg-kat", label)
    coefficients = []
    while len(coefficients) < threshold - 1:
        value = int.from_bytes(replay(32), "big")
        if value < shamir.PRIME:
            coefficients.append(value)
    for subset in subsets:
        assert shamir.reconstruct({x: shares[x] for x in subset}, threshold) == secret
    return {
        "name": name,
        "secret": secret.hex(),
        "threshold": threshold,
        "holders": holders,
        "random_seed": "secagg-kat",
        "random_label": label,
        "coefficients": [shamir.encode_element(c).hex() for c in coefficients],
        "shares": [[x, shares[x].hex()] for x in sorted(shares)],
        "reconstruct_from": subsets,
    }


def make_shamir() -> dict[str, Any]:
    random_secret = shamir.random_secret(seeded_random_bytes(b"secagg-kat", "shamir/secret"))
    return {
        "about": (
            "Shamir shares (secagg/primitives/shamir.py) over GF(2**256 - 189), 32-byte big-endian. "
            "Randomness: secagg.simulate.seeded_random_bytes(random_seed bytes, random_label); "
            "share() draws a_1..a_{t-1} from it in order (32 bytes each, big-endian, redrawn if "
            ">= P); the share of holder x is secret + a_1 x + ... + a_{t-1} x**(t-1) mod P. "
            "`random_secret_of_label_shamir/secret` is shamir.random_secret of that stream."
        ),
        "prime": str(shamir.PRIME),
        "random_secret_of_label_shamir/secret": random_secret.hex(),
        "cases": [
            shamir_case(
                "3 of 5",
                bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
                3,
                [1, 2, 3, 4, 5],
                "shamir/3of5",
                [[1, 2, 3], [3, 4, 5], [1, 3, 5], [2, 4, 5], [1, 2, 3, 4, 5]],
            ),
            shamir_case(
                "largest secret, sparse holder ids",
                shamir.encode_element(shamir.PRIME - 1),
                4,
                [3, 7, 11, 42, 1000, 1048576],
                "shamir/sparse",
                [[3, 7, 11, 42], [11, 42, 1000, 1048576], [3, 1000, 7, 1048576]],
            ),
            shamir_case("zero secret, 1 of 3", bytes(32), 1, [1, 2, 3], "shamir/1of3", [[1], [2], [3]]),
            shamir_case(
                "random secret, 6 of 6",
                random_secret,
                6,
                [1, 2, 3, 4, 5, 6],
                "shamir/6of6",
                [[1, 2, 3, 4, 5, 6]],
            ),
        ],
    }


# ---------------------------------------------------------------------------------------------
# Session id, AEAD layout, SecAgg+ labelling


def _config_json(config: SecAggConfig) -> dict[str, Any]:
    return {
        "num_clients": config.num_clients,
        "threshold": config.threshold,
        "vector_length": config.vector_length,
        "modulus": config.modulus,
        "graph": config.graph,
        "degree": config.degree,
        "mode": config.security_mode.value,
        "collusion_fraction": config.collusion_fraction,
    }


def session_case(name: str, config: SecAggConfig) -> dict[str, Any]:
    nonce = tagged(f"session/nonce/{name}")
    roster = None
    if config.is_active:
        roster = {
            i: Ed25519PrivateKey.from_private_bytes(tagged(f"session/identity/{i}"))
            .public_key()
            .public_bytes_raw()
            for i in range(1, config.num_clients + 1)
        }
    setup = RoundSetup(config, nonce, roster)
    case: dict[str, Any] = {
        "name": name,
        "config": _config_json(config),
        "nonce": nonce.hex(),
        "roster": None if roster is None else {str(i): k.hex() for i, k in sorted(roster.items())},
        "canonical_config": config.canonical_bytes().hex(),
        "session_id": setup.session_id.hex(),
    }
    if config.graph == "harary":
        graph = NeighbourGraph(config, setup.session_id)
        case["permutation"] = permutation(config.num_clients, setup.session_id)
        case["neighbours"] = {str(i): sorted(graph.neighbours(i)) for i in range(1, config.num_clients + 1)}
    return case


def make_session() -> dict[str, Any]:
    sessions = [
        session_case("complete semi-honest", SecAggConfig(num_clients=5, threshold=3, vector_length=10)),
        session_case(
            "harary semi-honest",
            SecAggConfig(
                num_clients=10,
                threshold=3,
                vector_length=1000,
                modulus=2**61 - 1,
                graph="harary",
                degree=4,
                collusion_fraction=0.0,  # a toy graph: no k < 10 is safe against a third of the clients
            ),
        ),
        session_case(
            "complete active", SecAggConfig(num_clients=4, threshold=3, vector_length=7, mode="active")
        ),
        session_case(
            "harary active, gamma 0.2",
            SecAggConfig(
                num_clients=12,
                threshold=5,
                vector_length=3,
                modulus=2**16 - 15,
                graph="harary",
                degree=6,
                mode="active",
                collusion_fraction=0.2,
            ),
        ),
    ]
    session_id = bytes.fromhex(sessions[0]["session_id"])
    key = tagged("aead/key")
    plaintext = b"bundle: (sender, recipient, share of s_SK, share of b)"
    sender, recipient, round_index = 2, 5, 1
    ciphertext = aead.encrypt(
        key, plaintext, session_id=session_id, sender=sender, recipient=recipient, round_index=round_index
    )
    return {
        "about": (
            "session_id = SHA-256('secagg/session/v1' || canonical_config || nonce || for each id "
            "ascending: id (4 bytes BE) || Ed25519 key); canonical_config = 'secagg/config/v1' || "
            "struct '>IIIQBIBd' (n, t, m, p, harary?, degree or 0, active?, gamma). AEAD: AES-256-GCM, "
            "nonce = sender (6 bytes BE) || recipient (6 bytes BE), associated data = "
            "'secagg/aead/v1' || session_id || sender (4 BE) || recipient (4 BE) || round (1 byte), "
            "ciphertext = GCM ciphertext || 16-byte tag. Harary: permutation of 1..n from the session "
            "id, each client joined to the degree/2 nearest on either side of the permuted ring."
        ),
        "sessions": sessions,
        "aead": {
            "session_id": session_id.hex(),
            "key": key.hex(),
            "sender": sender,
            "recipient": recipient,
            "round_index": round_index,
            "associated_data": aead.associated_data(session_id, sender, recipient, round_index).hex(),
            "nonce": (sender.to_bytes(6, "big") + recipient.to_bytes(6, "big")).hex(),
            "plaintext": plaintext.hex(),
            "ciphertext": ciphertext.hex(),
        },
    }


FILES = {
    "prg_kat.json": make_prg,
    "kdf_kat.json": make_kdf,
    "shamir_kat.json": make_shamir,
    "session_kat.json": make_session,
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing")
    args = parser.parse_args()
    stale = []
    for name, make in FILES.items():
        text = json.dumps(make(), indent=1) + "\n"
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"the code no longer reproduces: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
