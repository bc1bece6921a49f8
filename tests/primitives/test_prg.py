"""secagg.primitives.prg: uniform masks over Z_p from a 32-byte seed (DESIGN.md sections 3, 5, 6).

Statistical tests run at fixed seeds, so they are deterministic: each either always passes or
always fails. Their tolerances are stated where they are used, and each is shown to reject the
biased construction it guards against.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.primitives.field import SUPPORTED_PRIMES, bit_length
from secagg.primitives.prg import SEED_SIZE, MaskDomain, MaskGenerator, expand_mask, word_dtype

from ._reference import prg_reference, raw_masked_words

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))


def _top_bits_chi_square(values: np.ndarray, modulus: int, top: int = 4) -> float:
    """Pearson's chi-square of the top ``top`` bits against the exact law of a uniform Z_p element
    (the last bin is slightly short because p < 2**bits)."""
    shift = bit_length(modulus) - top
    counts = np.bincount((values >> np.uint64(shift)).astype(np.int64), minlength=2**top)
    width = 1 << shift
    sizes = np.array([min(width, max(0, modulus - i * width)) for i in range(2**top)], dtype=float)
    expected = values.shape[0] * sizes / modulus
    return float(((counts - expected) ** 2 / expected).sum())


# Chi-square with 15 degrees of freedom: P(X > 40) is about 4.5e-4 for a uniform source.
CHI2_15_LIMIT = 40.0


@pytest.mark.parametrize("modulus", [2**16 - 15, 2**31 - 1, 2**32 - 5, 2**33 - 9, 2**61 - 1, 2**62 - 57])
@pytest.mark.parametrize("domain", list(MaskDomain))
def test_top_bits_are_uniform(modulus: int, domain: MaskDomain) -> None:
    mask = expand_mask(SEED, domain, 1 << 16, modulus)
    assert _top_bits_chi_square(mask, modulus) < CHI2_15_LIMIT


def test_chi_square_detects_a_skewed_top_bit() -> None:
    """The uniformity check is not vacuous: clearing the top bit of a quarter of the elements (a
    far smaller bias than dropping the rejection step in a poorly-chosen field) is flagged."""
    p = 2**32 - 5
    mask = expand_mask(SEED, MaskDomain.PAIRWISE, 1 << 16, p).copy()
    mask[::4] &= np.uint64(2**31 - 1)
    assert _top_bits_chi_square(mask, p) > 10 * CHI2_15_LIMIT


def test_no_modulo_bias_for_a_small_prime() -> None:
    """For p = 2**16 - 15 the 16-bit words in [p, 2**16) are rejected. Reducing them mod p instead
    would double the probability of 0..14 (expected count 2 * 15 * N / p instead of 15 * N / p)."""
    p, n = 2**16 - 15, 1 << 20
    mask = expand_mask(SEED, MaskDomain.SELF, n, p)
    expected = 15 * n / p  # 240.0
    sigma = expected**0.5  # about 15.5
    low = int((mask < 15).sum())
    assert abs(low - expected) < 6 * sigma, low
    # The values 15..29 (not affected by either construction) are as frequent.
    assert abs(int(((mask >= 15) & (mask < 30)).sum()) - expected) < 6 * sigma
    # The biased construction on the same keystream is far outside that tolerance.
    biased = raw_masked_words(SEED, "self", p, n) % np.uint64(p)
    assert int((biased < 15).sum()) - expected > 8 * sigma
    # and the rejections that make the difference do occur in this sample
    assert int((raw_masked_words(SEED, "self", p, n) >= p).sum()) > 100


def test_domain_separation() -> None:
    for seed in (SEED, OTHER_SEED, bytes(32), b"\xff" * 32):
        for p in (2**16 - 15, 2**32 - 5, 2**61 - 1):
            pairwise = expand_mask(seed, MaskDomain.PAIRWISE, 256, p)
            self_mask = expand_mask(seed, MaskDomain.SELF, 256, p)
            # independent uniform vectors agree in about 256/p positions: essentially none
            assert int((pairwise == self_mask).sum()) <= 2
    assert MaskDomain.PAIRWISE.nonce != MaskDomain.SELF.nonce


def test_seed_changes_the_mask() -> None:
    base = expand_mask(SEED, MaskDomain.PAIRWISE, 64, 2**32 - 5)
    for i in range(SEED_SIZE):
        flipped = bytearray(SEED)
        flipped[i] ^= 0x80  # includes the last bytes: the full 32-byte key is used
        other = expand_mask(bytes(flipped), MaskDomain.PAIRWISE, 64, 2**32 - 5)
        assert int((other == base).sum()) == 0


def test_deterministic_across_generators_and_calls() -> None:
    for p in (2**16 - 15, 2**32 - 5, 2**61 - 1):
        a = MaskGenerator(1000, p).expand(SEED, MaskDomain.SELF).copy()
        g = MaskGenerator(1000, p)
        g.expand(OTHER_SEED, MaskDomain.SELF)
        b = g.expand(SEED, MaskDomain.SELF).copy()
        assert np.array_equal(a, b)
        assert np.array_equal(a, expand_mask(SEED, MaskDomain.SELF, 1000, p))


def test_a_shorter_mask_is_a_prefix_of_a_longer_one() -> None:
    """The mask is "the first m kept words" of one stream, so lengths are consistent."""
    for p in (2**16 - 15, 2**32 - 5, 2**61 - 1):
        long = expand_mask(SEED, MaskDomain.PAIRWISE, 20000, p)
        for m in (1, 3, 4, 5, 17, 4099):
            assert np.array_equal(expand_mask(SEED, MaskDomain.PAIRWISE, m, p), long[:m])


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_seed_must_be_32_bytes(size: int) -> None:
    """AES accepts 16- and 24-byte keys too; the PRG must not (DESIGN.md: the full 32-byte seed)."""
    generator = MaskGenerator(8, 2**32 - 5)
    with pytest.raises(ValueError, match="32 bytes"):
        generator.expand(bytes(size), MaskDomain.PAIRWISE)
    with pytest.raises(ValueError, match="32 bytes"):
        generator.expand_words(bytes(size), MaskDomain.SELF)


@pytest.mark.parametrize("length", [0, -1])
def test_length_must_be_positive(length: int) -> None:
    with pytest.raises(ValueError, match="length"):
        MaskGenerator(length, 2**32 - 5)


def test_length_beyond_the_ctr_counter_space_is_refused() -> None:
    with pytest.raises(ValueError, match="counter"):
        MaskGenerator(2**34, 2**61 - 1)


def test_expand_returns_a_reused_buffer() -> None:
    """Documented contract: ``expand`` returns a view into the generator's buffer, valid until the
    next call, which overwrites it. Callers that keep a mask must copy it. (Pins the no-allocation
    hot path of DESIGN.md section 5; if expand ever returns fresh arrays, relax this test and the
    docstring together.)"""
    p = 2**32 - 5
    generator = MaskGenerator(100, p)
    first = generator.expand(SEED, MaskDomain.PAIRWISE)
    kept = first.copy()
    assert np.array_equal(first, prg_reference(SEED, "pairwise", p, 100))  # valid until the next call
    second = generator.expand(OTHER_SEED, MaskDomain.PAIRWISE)
    assert np.shares_memory(first, second)
    assert np.array_equal(first, second) and not np.array_equal(first, kept)  # overwritten
    # expand_mask is the convenience that returns an array the caller owns
    own = expand_mask(SEED, MaskDomain.PAIRWISE, 100, p)
    generator.expand(SEED, MaskDomain.SELF)
    assert np.array_equal(own, kept)


def test_word_dtype() -> None:
    for p in SUPPORTED_PRIMES:
        assert word_dtype(p) is (np.uint32 if p < 2**32 else np.uint64)
        words = MaskGenerator(4, p).expand_words(SEED, MaskDomain.SELF)
        assert words.dtype == np.dtype(word_dtype(p))
        assert int(words.max()) < p


@settings(max_examples=150, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    modulus=st.sampled_from(SUPPORTED_PRIMES),
    length=st.integers(1, 300),
    domain=st.sampled_from(list(MaskDomain)),
)
def test_every_modulus_matches_the_reference_and_stays_below_p(
    seed: bytes, modulus: int, length: int, domain: MaskDomain
) -> None:
    mask = MaskGenerator(length, modulus).expand(seed, domain)
    assert mask.dtype == np.uint64 and mask.shape == (length,)
    assert int(mask.max()) < modulus
    assert np.array_equal(mask, prg_reference(seed, domain.value, modulus, length))


def test_all_outputs_below_p_on_the_rejection_path() -> None:
    """Many expansions at the smallest prime, where about 1 word in 4400 is rejected."""
    p = 2**16 - 15
    generator = MaskGenerator(4097, p)
    rejected_somewhere = False
    for i in range(40):
        seed = i.to_bytes(32, "big")
        mask = generator.expand(seed, MaskDomain.PAIRWISE)
        assert int(mask.max()) < p
        assert np.array_equal(mask, prg_reference(seed, "pairwise", p, 4097))
        rejected_somewhere |= bool((raw_masked_words(seed, "pairwise", p, 4097) >= p).any())
    assert rejected_somewhere
