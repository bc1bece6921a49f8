"""Known answers for the mask PRG (tests/data/prg_kat.json), checked two ways:

1. ``secagg.primitives.prg`` must reproduce the checked-in masks (a refactor that changes the wire
   output fails here);
2. an independent implementation of the documented rule (``_reference.prg_reference``: AES-256-ECB
   over explicit counter blocks, little-endian words, low bit_length(p) bits, keep words < p, first
   m kept) must reproduce them too, so the file pins the documented construction, not just
   whatever the code happened to do when the file was written.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.primitives.prg import MaskDomain, MaskGenerator, expand_mask

from ._reference import aes_ctr_keystream, load_kat, prg_nonce, prg_reference, raw_masked_words

KAT = load_kat("prg_kat.json")
CASES = KAT["cases"]
IDS = [case["name"] for case in CASES]


def _digest(vector: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<u8").tobytes()).hexdigest()


def _check_against_case(mask: np.ndarray, case: dict) -> None:
    assert mask.dtype == np.uint64
    assert mask.shape == (case["length"],)
    if "vector" in case:
        assert [int(v) for v in mask] == case["vector"]
    assert [int(v) for v in mask[:16]] == case["head"]
    assert [int(v) for v in mask[-4:]] == case["tail"]
    assert _digest(mask) == case["sha256_u64le"]


def test_kat_covers_the_word_sizes_and_the_rejection_path() -> None:
    moduli = {case["modulus"] for case in CASES}
    assert 2**32 - 5 in moduli  # a prime below 2**32: uint32 words, no masking
    assert 2**61 - 1 in moduli  # near 2**61: uint64 words masked to 61 bits
    assert any(case["modulus"] < 2**17 and case["rejections_in_first_length_words"] > 0 for case in CASES)
    assert {case["domain"] for case in CASES} == {d.value for d in MaskDomain}


def test_domain_nonces_are_the_documented_tags() -> None:
    for domain in MaskDomain:
        assert domain.nonce.hex() == KAT["nonces"][domain.value]
        assert domain.nonce == prg_nonce(domain.value)
        assert len(domain.nonce) == 16 and domain.nonce.endswith(bytes(4))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library_reproduces_kat(case: dict) -> None:
    mask = expand_mask(
        bytes.fromhex(case["seed"]), MaskDomain(case["domain"]), case["length"], case["modulus"]
    )
    _check_against_case(mask, case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_independent_reference_reproduces_kat(case: dict) -> None:
    mask = prg_reference(bytes.fromhex(case["seed"]), case["domain"], case["modulus"], case["length"])
    _check_against_case(mask, case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rejection_count_matches_raw_keystream(case: dict) -> None:
    seed, p, m = bytes.fromhex(case["seed"]), case["modulus"], case["length"]
    raw = raw_masked_words(seed, case["domain"], p, m)
    rejected = int((raw >= np.uint64(p)).sum())
    assert rejected == case["rejections_in_first_length_words"]
    mask = expand_mask(seed, MaskDomain(case["domain"]), m, p)
    if rejected == 0:
        assert np.array_equal(mask, raw)  # nothing rejected: the mask is the masked keystream itself
    else:
        # The rejection path really ran: the mask is not the raw masked keystream, it equals it
        # up to the first rejected word, skips that word, and is completed from the keystream
        # beyond the first m words (the words after m are consumed only because of rejections).
        first = int(np.argmax(raw >= np.uint64(p)))
        assert not np.array_equal(mask, raw)
        assert np.array_equal(mask[:first], raw[:first])
        longer = raw_masked_words(seed, case["domain"], p, m + 64)
        positions = np.flatnonzero(longer < np.uint64(p))
        assert np.array_equal(mask, longer[positions[:m]])
        assert positions[m - 1] >= m  # the m-th kept word lies beyond the first m words


def test_rejection_case_exercises_the_documented_masking_to_bit_length() -> None:
    """For p = 2**16-15 the keystream words are uint32: without masking to 16 bits almost every word
    would be rejected; with it, only words in [p, 2**16) are."""
    case = next(c for c in CASES if c["modulus"] == 2**16 - 15)
    assert case["word_bytes"] == 4 and case["bits"] == 16
    raw = raw_masked_words(bytes.fromhex(case["seed"]), case["domain"], case["modulus"], case["length"])
    assert int(raw.max()) < 2**16
    assert 0 < case["rejections_in_first_length_words"] < 20


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reused_generator_reproduces_kat_after_other_expansions(case: dict) -> None:
    """A generator that already expanded other seeds (including ones through the rejection path)
    must give the same mask: no state leaks between calls."""
    seed, p, m = bytes.fromhex(case["seed"]), case["modulus"], case["length"]
    generator = MaskGenerator(m, p)
    for other in CASES:
        if other["length"] == m and other["modulus"] == p and other is not case:
            generator.expand(bytes.fromhex(other["seed"]), MaskDomain(other["domain"]))
    other_domain = MaskDomain.SELF if case["domain"] == "pairwise" else MaskDomain.PAIRWISE
    generator.expand(seed, other_domain)
    generator.expand(bytes(32), MaskDomain(case["domain"]))
    _check_against_case(generator.expand(seed, MaskDomain(case["domain"])).copy(), case)
    words = generator.expand_words(seed, MaskDomain(case["domain"]))
    assert [int(v) for v in words[:16]] == case["head"]


def test_ecb_counter_keystream_equals_cryptography_ctr() -> None:
    """The reference's reading of AES-CTR (128-bit big-endian counter from the nonce) is the one
    pyca/cryptography implements, including across a partial block and a carry out of the low byte."""
    seed = bytes(range(32))
    for domain in MaskDomain:
        for nbytes in (1, 16, 52, 4100):
            ctr = Cipher(algorithms.AES(seed), modes.CTR(domain.nonce)).encryptor().update(bytes(nbytes))
            assert ctr == aes_ctr_keystream(seed, domain.nonce, nbytes)
    carry = bytes(15) + b"\xff"
    ctr = Cipher(algorithms.AES(seed), modes.CTR(carry)).encryptor().update(bytes(64))
    assert ctr == aes_ctr_keystream(seed, carry, 64)
