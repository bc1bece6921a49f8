"""secagg.primitives.commitment: the round-0 commitment to the self-mask seed b_u."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.primitives import commitment

SESSION = bytes(range(32))
SEED = bytes(range(100, 132))


def test_the_format_is_the_documented_hash() -> None:
    """SHA-256("secagg/commit/b/v1" || session id || 4-byte big-endian id || b_u) (module docstring):
    pinned, so a refactor cannot change what clients of another version accept."""
    want = hashlib.sha256(b"secagg/commit/b/v1" + SESSION + (7).to_bytes(4, "big") + SEED).digest()
    assert commitment.commit(SESSION, 7, SEED) == want
    assert commitment.COMMITMENT_SIZE == len(want) == 32


def test_it_opens_with_what_was_committed() -> None:
    c = commitment.commit(SESSION, 7, SEED)
    assert commitment.opens(c, SESSION, 7, SEED)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("bit", [0, 7, 100, 255])
def test_it_binds_the_seed_the_session_and_the_client(bit: int) -> None:
    """Another seed, the same seed in another session or under another client id, or a changed
    commitment: none opens (a holder cannot pass off another value, nor replay a commitment)."""
    c = commitment.commit(SESSION, 7, SEED)
    assert not commitment.opens(c, SESSION, 7, _flip(SEED, bit))
    assert not commitment.opens(c, _flip(SESSION, bit), 7, SEED)
    assert not commitment.opens(c, SESSION, 8, SEED)
    assert not commitment.opens(c, SESSION, 7 + 2**31, SEED)
    assert not commitment.opens(_flip(c, bit), SESSION, 7, SEED)


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33)], ids=["empty", "31", "33"])
def test_a_commitment_of_the_wrong_size_opens_nothing(bad: bytes) -> None:
    assert not commitment.opens(bad, SESSION, 7, SEED)


@settings(max_examples=100, deadline=None)
@given(
    a=st.tuples(
        st.binary(min_size=32, max_size=32), st.integers(1, 2**32 - 1), st.binary(min_size=32, max_size=32)
    ),
    b=st.tuples(
        st.binary(min_size=32, max_size=32), st.integers(1, 2**32 - 1), st.binary(min_size=32, max_size=32)
    ),
)
def test_distinct_inputs_give_distinct_commitments(
    a: tuple[bytes, int, bytes], b: tuple[bytes, int, bytes]
) -> None:
    """Fixed-size fields, so no two (session, id, seed) encode alike: equal commitments only for
    equal inputs (a SHA-256 collision aside), and each opens only with its own inputs."""
    ca, cb = commitment.commit(*a), commitment.commit(*b)
    assert (ca == cb) is (a == b)
    assert commitment.opens(ca, *b) is (a == b)
