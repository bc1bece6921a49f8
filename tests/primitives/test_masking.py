"""secagg.masking: lazy-reduction accumulator against Python integers, mask signs, cancellation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from secagg.masking import (
    LANE_MIN_GROUP,
    FieldAccumulator,
    MaskTerm,
    apply_masks,
    lane_group_size,
    pairwise_sign,
)
from secagg.primitives import field, key_agreement
from secagg.primitives.field import SUPPORTED_PRIMES
from secagg.primitives.key_agreement import KeyPurpose
from secagg.primitives.prg import MaskDomain, MaskGenerator, expand_mask
from secagg.simulate import seeded_random_bytes

from ._reference import load_kat, prg_reference, raw_masked_words

# 2**62-57 leaves room for only 4 terms in a uint64 (4 * (p-1) < 2**64 < 5 * (p-1)), so lazy
# reduction kicks in after a few terms; 2**16-15 and 2**32-5 almost never reduce.
LARGE = 2**62 - 57
MODULI = st.one_of(
    st.sampled_from([LARGE, 2**61 - 1, 2**32 - 5, 2**16 - 15]), st.sampled_from(SUPPORTED_PRIMES)
)


@st.composite
def accumulator_script(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, list[int], bool]]]:
    p = draw(MODULI)
    m = draw(st.integers(1, 5))
    element = st.one_of(st.just(p - 1), st.just(p - 2), st.just(0), st.integers(0, p - 1))
    op = st.tuples(
        st.sampled_from([1, -1]),
        st.lists(element, min_size=m, max_size=m),
        st.booleans(),  # also call value() after this operation
    )
    return p, m, draw(st.lists(op, max_size=60))


@settings(max_examples=300, deadline=None)
@given(accumulator_script())
@example((LARGE, 2, [(1, [LARGE - 1, LARGE - 1], False)] * 30 + [(-1, [LARGE - 1, 0], False)] * 29))
@example((LARGE, 1, [(-1, [LARGE - 1], False)] * 9 + [(1, [1], True)]))
def test_accumulator_equals_python_integer_sum(script: tuple[int, int, list]) -> None:
    p, m, ops = script
    acc = FieldAccumulator(m, p)
    reference = [0] * m
    for sign, values, peek in ops:
        # PRG words arrive as uint32 below 2**32 (MaskGenerator.expand_words), else uint64
        dtype = np.uint32 if p < 2**32 else np.uint64
        acc.add_signed(np.array(values, dtype=dtype), sign)
        reference = [r + sign * v for r, v in zip(reference, values, strict=True)]
        if peek:
            assert acc.value().tolist() == [r % p for r in reference]
    out = acc.value()
    assert out.dtype == np.uint64 and out.shape == (m,)
    assert out.tolist() == [r % p for r in reference]
    out[:] = 0  # value() is a new array: the running sum is unaffected
    assert acc.value().tolist() == [r % p for r in reference]


def test_accumulator_many_maximal_terms_at_the_largest_prime() -> None:
    p, m = LARGE, 8
    top = np.full(m, p - 1, dtype=np.uint64)
    acc = FieldAccumulator(m, p)
    for _ in range(1001):
        acc.add(top)
    for _ in range(500):
        acc.subtract(top)
    assert acc.value().tolist() == [501 * (p - 1) % p] * m
    assert 1001 * (p - 1) > 2**64  # the unreduced sum would have wrapped many times


def test_accumulator_starts_at_zero() -> None:
    assert FieldAccumulator(3, 2**32 - 5).value().tolist() == [0, 0, 0]


@given(st.integers(1, 2**20), st.integers(1, 2**20))
def test_pairwise_sign_is_antisymmetric(u: int, v: int) -> None:
    if u == v:
        with pytest.raises(ValueError, match="itself"):
            pairwise_sign(u, v)
        return
    assert pairwise_sign(u, v) in (1, -1)
    assert pairwise_sign(u, v) == -pairwise_sign(v, u)
    assert pairwise_sign(u, v) == (1 if u > v else -1)  # the rule in the module docstring


def add_self_mask(acc: FieldAccumulator, generator: MaskGenerator, seed: bytes, sign: int = 1) -> None:
    """acc += sign * PRG_self(b): the semantics apply_masks must agree with, one mask at a time."""
    acc.add_signed(generator.expand_words(seed, MaskDomain.SELF), sign)


def add_pairwise_mask(acc: FieldAccumulator, generator: MaskGenerator, seed: bytes, sign: int) -> None:
    """acc += sign * PRG_pairwise(s_uv)."""
    acc.add_signed(generator.expand_words(seed, MaskDomain.PAIRWISE), sign)


def _keys(client_id: int) -> tuple[object, bytes]:
    rb = seeded_random_bytes(b"test-masking", f"s-key/{client_id}")
    private = key_agreement.generate_private_key(rb(32))
    return private, key_agreement.public_bytes(private)


def _pairwise_seed(u: int, v: int, session_id: bytes) -> bytes:
    private, own_public = _keys(u)
    _, peer_public = _keys(v)
    return key_agreement.derive_key(
        private,  # type: ignore[arg-type]
        peer_public,
        purpose=KeyPurpose.PAIRWISE_MASK,
        session_id=session_id,
        own_id=u,
        own_public=own_public,
        peer_id=v,
    )


SESSION = bytes(range(32))


@pytest.mark.parametrize("modulus", [2**16 - 15, 2**32 - 5, 2**61 - 1, LARGE])
def test_masks_of_two_neighbours_cancel(modulus: int) -> None:
    m = 3001
    u, v = 4, 9
    seed_uv, seed_vu = _pairwise_seed(u, v, SESSION), _pairwise_seed(v, u, SESSION)
    assert seed_uv == seed_vu
    generator = MaskGenerator(m, modulus)
    total = FieldAccumulator(m, modulus)
    for own, other in ((u, v), (v, u)):
        add_pairwise_mask(total, generator, seed_uv, pairwise_sign(own, other))
    assert total.value().tolist() == [0] * m
    # a single client's mask is not zero: the cancellation is not vacuous
    alone = FieldAccumulator(m, modulus)
    add_pairwise_mask(alone, generator, seed_uv, pairwise_sign(u, v))
    expected = [(-int(w)) % modulus for w in prg_reference(seed_uv, "pairwise", modulus, m)]
    assert alone.value().tolist() == expected  # u < v: u subtracts PRG(s_uv)


@pytest.mark.parametrize("modulus", [2**16 - 15, 2**32 - 5, LARGE])
def test_masked_sum_with_a_dropout_unmasks_to_the_survivors_inputs(modulus: int) -> None:
    """Bonawitz et al. 2017, Fig. 4: clients 1..4 are pairwise neighbours; 3 drops after round 1.
    The server removes the survivors' self masks and, for the dropped client, the survivors'
    leftover pairwise masks with the opposite sign; what remains is the sum of the survivors'
    inputs."""
    m, clients, dropped = 257, [1, 2, 3, 4], 3
    rng = np.random.default_rng(7)
    inputs = {c: rng.integers(0, modulus, size=m, dtype=np.uint64) for c in clients}
    self_seeds = {c: seeded_random_bytes(b"test-masking", f"b/{c}")(32) for c in clients}
    generator = MaskGenerator(m, modulus)
    masked = {}
    for u in clients:
        acc = FieldAccumulator(m, modulus)
        acc.add(inputs[u])
        add_self_mask(acc, generator, self_seeds[u])
        for v in clients:
            if v != u:
                add_pairwise_mask(acc, generator, _pairwise_seed(u, v, SESSION), pairwise_sign(u, v))
        masked[u] = acc.value()
    survivors = [c for c in clients if c != dropped]
    server = FieldAccumulator(m, modulus)
    for u in survivors:
        server.add(masked[u])
        add_self_mask(server, generator, self_seeds[u], sign=-1)
        add_pairwise_mask(server, generator, _pairwise_seed(u, dropped, SESSION), -pairwise_sign(u, dropped))
    expected = sum(inputs[u].astype(object) for u in survivors) % modulus
    assert server.value().tolist() == expected.tolist()
    # each masked input alone looks nothing like the input
    for u in survivors:
        assert int((masked[u] == inputs[u]).sum()) <= 2


def test_self_mask_helper_uses_the_self_domain() -> None:
    p, m, seed = 2**32 - 5, 50, bytes(range(32))
    generator = MaskGenerator(m, p)
    acc = FieldAccumulator(m, p)
    add_self_mask(acc, generator, seed)
    assert np.array_equal(acc.value(), expand_mask(seed, MaskDomain.SELF, m, p))
    add_pairwise_mask(acc, generator, seed, 1)
    add_self_mask(acc, generator, seed, sign=-1)
    assert np.array_equal(acc.value(), expand_mask(seed, MaskDomain.PAIRWISE, m, p))


# -- apply_masks: the batched hot path used by client and server ---------------------------------

# apply_masks has three kernels: lanes (two elements per uint64) while
# lane_group_size(p) >= LANE_MIN_GROUP, i.e. p <= 2**31 - 1 (2 words per 32-bit lane; 2**29 - 3
# has 8, 2**28 - 57 has 16); the split kernel for 2**32 - 5 (no room in a lane); the wide kernel
# for p > 2**32, batched by overflow headroom (2 terms per batch at 2**62 - 57).
APPLY_MODULI = [
    2**16 - 15,
    2**20 - 3,
    2**28 - 57,
    2**29 - 3,
    2**30 - 35,
    2**31 - 1,
    2**32 - 5,
    2**33 - 9,
    2**61 - 1,
    LARGE,
]


def test_apply_masks_moduli_cover_every_kernel() -> None:
    lanes = [p for p in APPLY_MODULI if lane_group_size(p) >= LANE_MIN_GROUP]
    assert lanes == [p for p in APPLY_MODULI if p <= 2**31 - 1]
    assert LANE_MIN_GROUP == 2 and lane_group_size(2**31 - 1) == 2 and lane_group_size(2**32 - 5) == 1
    assert lane_group_size(2**29 - 3) == 8 and lane_group_size(2**28 - 57) == 16
    assert lane_group_size(2**31 - 1) * (2**31 - 2) < 2**32  # a full lane cannot carry
    assert 2**32 - 5 in APPLY_MODULI and any(p > 2**32 for p in APPLY_MODULI)


@functools.lru_cache(maxsize=4096)
def _reference_mask(seed: bytes, domain: str, modulus: int, length: int) -> tuple[int, ...]:
    return tuple(int(v) for v in prg_reference(seed, domain, modulus, length))


@st.composite
def mask_script(draw: st.DrawFn) -> tuple[int, list[int], list[MaskTerm]]:
    p = draw(st.sampled_from(APPLY_MODULI))
    m = draw(st.integers(1, 33))
    element = st.one_of(st.just(p - 1), st.just(0), st.integers(0, p - 1))
    start = draw(st.lists(element, min_size=m, max_size=m))
    term = st.builds(
        MaskTerm,
        seed=st.integers(0, 5).map(lambda i: bytes([i]) * 32),
        domain=st.sampled_from(list(MaskDomain)),
        sign=st.sampled_from([1, -1]),
    )
    # up to 40 terms: crosses lane groups of 8 and 16 and the 2-term batches of 2**62 - 57
    return p, start, draw(st.lists(term, max_size=40))


@settings(max_examples=250, deadline=None)
@given(mask_script())
@example((2**29 - 3, [2**29 - 4] * 33, [MaskTerm(b"\x01" * 32, MaskDomain.SELF, 1)] * 17))
@example((2**29 - 3, [0] * 33, [MaskTerm(b"\x02" * 32, MaskDomain.PAIRWISE, -1)] * 17))
@example((LARGE, [LARGE - 1] * 3, [MaskTerm(b"\x03" * 32, MaskDomain.SELF, -1)] * 5))
def test_apply_masks_equals_python_integer_reference(script: tuple[int, list[int], list[MaskTerm]]) -> None:
    p, start, terms = script
    acc = np.array(start, dtype=np.uint64)
    apply_masks(acc, terms, p)
    expected = list(start)
    for term in terms:
        mask = _reference_mask(term.seed, term.domain.value, p, len(start))
        expected = [e + term.sign * w for e, w in zip(expected, mask, strict=True)]
    assert acc.dtype == np.uint64
    assert acc.tolist() == [e % p for e in expected]


@pytest.mark.parametrize("modulus", [2**16 - 15, 2**17 - 1])
def test_apply_masks_through_the_prg_rejection_path(modulus: int) -> None:
    """Seeds from the PRG known answers whose masks need rejections, cut to an odd length just
    past the first rejected word (so the lane path's tail element is used as well)."""
    case = next(c for c in load_kat("prg_kat.json")["cases"] if c["modulus"] == modulus)
    seed = bytes.fromhex(case["seed"])
    raw = raw_masked_words(seed, "pairwise", modulus, case["length"])
    m = int(np.argmax(raw >= modulus)) + 6 | 1
    assert m % 2 == 1 and int((raw[:m] >= modulus).sum()) >= 1  # a rejection within these m words
    others = [MaskTerm(bytes([i]) * 32, MaskDomain.PAIRWISE, (-1) ** i) for i in range(3)]
    terms = [MaskTerm(seed, MaskDomain.PAIRWISE, 1), *others, MaskTerm(seed, MaskDomain.PAIRWISE, -1)]
    terms += [MaskTerm(seed, MaskDomain.PAIRWISE, 1)] * 2
    acc = np.zeros(m, dtype=np.uint64)
    apply_masks(acc, terms, modulus)
    expected = 2 * prg_reference(seed, "pairwise", modulus, m).astype(object)
    for term in others:
        expected += term.sign * prg_reference(term.seed, "pairwise", modulus, m).astype(object)
    assert acc.tolist() == (expected % modulus).tolist()


@pytest.mark.parametrize("modulus", [2**16 - 15, 2**28 - 57, 2**32 - 5, LARGE])
def test_apply_masks_client_and_server_views_cancel(modulus: int) -> None:
    """A client adds its self mask and signed pairwise masks with apply_masks; the server's sum of
    two neighbours' vectors minus their self masks (also with apply_masks) is their input sum."""
    m, u, v = 101, 2, 5
    seed = _pairwise_seed(u, v, SESSION)
    rng = np.random.default_rng(11)
    x = {c: rng.integers(0, modulus, size=m, dtype=np.uint64) for c in (u, v)}
    b = {c: bytes([c]) * 32 for c in (u, v)}
    y = {}
    for own, other in ((u, v), (v, u)):
        y[own] = x[own].copy()
        apply_masks(
            y[own],
            [
                MaskTerm(b[own], MaskDomain.SELF, 1),
                MaskTerm(seed, MaskDomain.PAIRWISE, pairwise_sign(own, other)),
            ],
            modulus,
        )
    total = field.add(y[u], y[v], modulus)
    apply_masks(total, [MaskTerm(b[u], MaskDomain.SELF, -1), MaskTerm(b[v], MaskDomain.SELF, -1)], modulus)
    assert total.tolist() == field.add(x[u], x[v], modulus).tolist()


def test_accumulator_is_exact_or_refuses_signed_input() -> None:
    p = 2**61 - 1
    vector = np.array([p - 2, 2**53 + 1], dtype=np.int64)
    assert field.is_field_vector(vector, 2, p)  # the server's validity check accepts it
    acc = FieldAccumulator(2, p)
    try:
        acc.add(vector)
    except (TypeError, ValueError):
        return  # refusing signed input is fine too
    assert acc.value().tolist() == [p - 2, 2**53 + 1]
