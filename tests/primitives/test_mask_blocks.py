"""Blocked masking: reading masks block by block gives exactly the one-shot masks (KAT-pinned).

``apply_masks`` walks long vectors in blocks with every mask's AES-CTR stream open across
blocks, and opens at most ``OPEN_STREAMS`` masks at a time. Here the block and chunk sizes are
made tiny so that every test vector spans many blocks (odd and even, a rejected word mid-block,
top-ups reading past a block's end) and compared with the independent PRG reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import masking
from secagg.masking import FieldAccumulator, MaskTerm, apply_masks, reduce_into
from secagg.primitives.prg import MaskDomain, MaskGenerator, MaskReader

from ._reference import load_kat, prg_reference, raw_masked_words

KAT = load_kat("prg_kat.json")
REJECTING = [c for c in KAT["cases"] if c["rejections_in_first_length_words"] > 0]
MODULI = [2**16 - 15, 2**17 - 1, 2**26 - 5, 2**29 - 3, 2**31 - 1, 2**32 - 5, 2**33 - 9, 2**61 - 1, 2**62 - 57]


def test_kat_has_rejections_for_the_blocked_reader() -> None:
    assert {c["modulus"] for c in REJECTING} >= {2**16 - 15}


@pytest.mark.parametrize("case", REJECTING, ids=[c["name"] for c in REJECTING])
@pytest.mark.parametrize("block", [7, 64, 1000])  # block 1 and 2: the hypothesis test below
def test_reader_in_blocks_reproduces_the_kat_mask_through_rejections(case: dict, block: int) -> None:
    seed, p, m = bytes.fromhex(case["seed"]), case["modulus"], case["length"]
    reader = MaskReader(block, p)
    stream = reader.open(seed, MaskDomain(case["domain"]))
    parts = []
    for start in range(0, m, block):
        parts.append(reader.read(stream, min(block, m - start)).astype(np.uint64))
    mask = np.concatenate(parts)
    assert mask.tolist() == prg_reference(seed, case["domain"], p, m).tolist()
    assert case["head"] == mask[:16].tolist() and case["tail"] == mask[-4:].tolist()
    raw = raw_masked_words(seed, case["domain"], p, m)
    assert int((raw >= p).sum()) == case["rejections_in_first_length_words"] > 0  # really rejected


def test_reader_refuses_reads_outside_its_block() -> None:
    reader = MaskReader(8, 2**32 - 5)
    stream = reader.open(bytes(32), MaskDomain.SELF)
    for count in (0, 9):
        with pytest.raises(ValueError, match=r"1\.\.8 words"):
            reader.read(stream, count)
    with pytest.raises(ValueError, match="32 bytes"):
        reader.open(bytes(31), MaskDomain.SELF)


@pytest.mark.parametrize("modulus", MODULI)
def test_reduce_into_equals_python_modulo_over_the_whole_uint64_range(modulus: int) -> None:
    rng = np.random.default_rng(modulus % 1000)
    x = np.concatenate(
        [
            rng.integers(0, 2**64 - 1, 500, dtype=np.uint64, endpoint=True),
            np.array([0, 1, modulus - 1, modulus, modulus + 1, 2**64 - 1, 2**64 - modulus], dtype=np.uint64),
        ]
    )
    expected = [int(v) % modulus for v in x]
    reduce_into(x, modulus, np.empty_like(x))
    assert x.tolist() == expected


@st.composite
def blocked_script(draw: st.DrawFn) -> tuple[int, int, int, list[int], list[MaskTerm]]:
    p = draw(st.sampled_from(MODULI))
    block = draw(st.integers(1, 9))
    chunk = draw(st.integers(1, 5))
    m = draw(st.integers(1, 60))
    element = st.one_of(st.just(p - 1), st.just(0), st.integers(0, p - 1))
    start = draw(st.lists(element, min_size=m, max_size=m))
    seeds = [bytes.fromhex(c["seed"]) for c in REJECTING] + [bytes([i]) * 32 for i in range(4)]
    term = st.builds(
        MaskTerm,
        seed=st.sampled_from(seeds),
        domain=st.sampled_from(list(MaskDomain)),
        sign=st.sampled_from([1, -1]),
    )
    return p, block, chunk, start, draw(st.lists(term, max_size=20))


@settings(max_examples=150, deadline=None)
@given(blocked_script())
def test_blocked_apply_masks_equals_python_integer_reference(
    script: tuple[int, int, int, list[int], list[MaskTerm]],
) -> None:
    p, block, chunk, start, terms = script
    m = len(start)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masking, "ONE_BLOCK_MAX", 0)
        patch.setattr(masking, "BLOCK_WORDS", block)
        patch.setattr(masking, "OPEN_STREAMS", chunk)
        acc = np.array(start, dtype=np.uint64)
        apply_masks(acc, terms, p)
    expected = list(start)
    for t in terms:
        mask = prg_reference(t.seed, t.domain.value, p, m)
        expected = [e + t.sign * int(w) for e, w in zip(expected, mask, strict=True)]
    assert acc.dtype == np.uint64
    assert acc.tolist() == [e % p for e in expected]


@pytest.mark.parametrize("modulus", [2**16 - 15, 2**26 - 5, 2**32 - 5, 2**61 - 1])
def test_blocked_and_one_block_masks_agree_at_a_few_blocks(modulus: int) -> None:
    """A vector several real blocks long (odd length, 40 masks of mixed sign) gives the same
    result as adding whole masks one by one."""
    m = max(masking.ONE_BLOCK_MAX, 3 * masking.BLOCK_WORDS) + 11
    assert m > masking.ONE_BLOCK_MAX and m % 2 == 1  # really blocked, with an odd last block
    rng = np.random.default_rng(5)
    start = rng.integers(0, modulus, m, dtype=np.uint64)
    terms = [MaskTerm(rng.bytes(32), MaskDomain.PAIRWISE, (-1) ** i) for i in range(40)]
    acc = start.copy()
    apply_masks(acc, terms, modulus)
    generator = MaskGenerator(m, modulus)
    expected = FieldAccumulator(m, modulus)  # whole masks, one numpy add each: another kernel
    expected.add(start)
    for t in terms:
        expected.add_signed(generator.expand_words(t.seed, t.domain), t.sign)
    assert np.array_equal(acc, expected.value())


def test_reader_reads_into_a_given_buffer_or_refuses_a_short_one() -> None:
    p, m = 2**32 - 5, 37
    size = MaskReader.buffer_bytes(m, p)
    assert size == 4 * m + 15
    buffer = np.zeros(size + 5, dtype=np.uint8)
    reader = MaskReader(m, p, buffer)
    words = reader.read(reader.open(bytes(32), MaskDomain.SELF), m)
    assert np.shares_memory(words, buffer)
    assert words.tolist() == prg_reference(bytes(32), "self", p, m).tolist()
    for bad in (np.zeros(size - 1, dtype=np.uint8), np.zeros(size, dtype=np.uint16)):
        with pytest.raises(ValueError, match=f"at least {size} bytes"):
            MaskReader(m, p, bad)


def test_work_spaces_are_reused_across_calls_without_leaking_state() -> None:
    """A call after others (other moduli, lengths, kernels) reuses their buffers; its result is
    still the reference: nothing is read before it is written."""
    rng = np.random.default_rng(9)
    for p, m in [(2**61 - 1, 50), (2**26 - 5, 9), (2**32 - 5, 70), (2**16 - 15, 3), (2**32 - 5, 11)]:
        start = rng.integers(0, p, m, dtype=np.uint64)
        terms = [MaskTerm(bytes([i]) * 32, MaskDomain.SELF, (-1) ** i) for i in range(3)]
        acc = start.copy()
        apply_masks(acc, terms, p)
        expected = start.astype(object)
        for t in terms:
            expected += t.sign * prg_reference(t.seed, "self", p, m).astype(object)
        assert acc.tolist() == (expected % p).tolist()
    assert 1 <= len(masking._IDLE) <= masking._IDLE_MAX
