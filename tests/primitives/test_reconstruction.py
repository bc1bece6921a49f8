"""secagg.reconstruction: a secret from its holders' shares, checked, decoded around wrong ones.

The check stands for the server's: b_u must open its round-0 commitment, s_SK must match s_PK.
The property that matters: a secret is returned only when it passes the check, so wrong shares
(from a holder or from the dealer) can make the round abort but never make it use a wrong secret.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.primitives import commitment, shamir
from secagg.reconstruction import SUBSET_BUDGET, Reconstructed, reconstruct_checked
from secagg.simulate import seeded_random_bytes

from ._reference import SHAMIR_PRIME, poly_eval_mod

SESSION = bytes(range(32))


def _rb(label: str) -> shamir.RandomBytes:
    return seeded_random_bytes(b"test-reconstruction", label)


def _dealt(t: int, holders: list[int], label: str) -> tuple[bytes, dict[int, bytes]]:
    secret = shamir.random_secret(_rb(f"secret/{label}"))
    return secret, shamir.share(secret, t, holders, _rb(f"share/{label}"))


def _moved(shares: dict[int, bytes], by: dict[int, int]) -> dict[int, bytes]:
    out = dict(shares)
    for x, shift in by.items():
        out[x] = shamir.encode_element((shamir.decode_element(out[x]) + shift) % shamir.PRIME)
    return out


class Check:
    """``is_secret`` as the server uses it (a commitment opening), counting its calls."""

    def __init__(self, secret: bytes, owner: int = 7) -> None:
        self.owner = owner
        self.commitment = commitment.commit(SESSION, owner, secret)
        self.calls = 0

    def __call__(self, candidate: bytes) -> bool:
        self.calls += 1
        return commitment.opens(self.commitment, SESSION, self.owner, candidate)


def test_right_lowest_t_shares_are_enough_and_nobody_is_named() -> None:
    """Only the lowest t shares are read when they open the commitment: a wrong share above them
    is neither needed nor looked at (so not named)."""
    secret, shares = _dealt(3, [1, 2, 3, 4, 5, 6], "lowest")
    check = Check(secret)
    found = reconstruct_checked(_moved(shares, {6: 1}), 3, check)
    assert found == Reconstructed(secret, frozenset())
    assert check.calls == 1


@pytest.mark.parametrize(
    ("n", "t", "wrong"),
    [(5, 3, [1]), (7, 3, [1, 5]), (7, 3, [2, 3]), (10, 4, [1, 2, 3]), (11, 3, [1, 2, 3, 4]), (6, 3, [3])],
)
def test_wrong_shares_within_the_budget_are_decoded_around_and_named(
    n: int, t: int, wrong: list[int]
) -> None:
    """(N - t) // 2 wrong shares at most, some among the lowest t: the secret and its liars."""
    assert len(wrong) <= (n - t) // 2
    secret, shares = _dealt(t, list(range(1, n + 1)), f"budget/{n}/{t}/{wrong}")
    found = reconstruct_checked(_moved(shares, {x: 1000 + x for x in wrong}), t, Check(secret))
    assert found is not None and found.secret == secret
    assert found.wrong_holders == frozenset(wrong)


@pytest.mark.parametrize(
    ("n", "t", "wrong"),
    [(4, 3, [1]), (4, 3, [4]), (5, 3, [1, 2]), (6, 3, [1, 2, 3]), (7, 4, [2, 5, 7]), (8, 3, [1, 3, 5, 7, 8])],
)
def test_wrong_shares_beyond_the_budget_are_left_out_while_t_are_right(
    n: int, t: int, wrong: list[int]
) -> None:
    """More wrong shares than decoding corrects ((N - t) // 2) but at least t right: the
    commitment-checked leave-out search finds t right shares and returns the true secret, naming
    nobody (by majority the liars cannot be told from the honest). Wrong shares cost no more
    than as many silent holders. Berlekamp-Welch alone cannot do it."""
    assert (n - t) // 2 < len(wrong) <= n - t
    secret, shares = _dealt(t, list(range(1, n + 1)), f"beyond/{n}/{t}/{wrong}")
    moved = _moved(shares, {x: 1000 + 7 * x for x in wrong})
    decoded = shamir.decode_with_errors(moved, t, (n - t) // 2)
    assert decoded is None or decoded[0] != secret
    found = reconstruct_checked(moved, t, Check(secret))
    assert found == Reconstructed(secret, frozenset())


@pytest.mark.parametrize(
    ("n", "t", "wrong"), [(4, 3, [1, 2]), (5, 3, [1, 2, 3]), (5, 3, [3, 4, 5]), (7, 4, [1, 3, 5, 7])]
)
def test_fewer_than_t_right_shares_give_none(n: int, t: int, wrong: list[int]) -> None:
    """Fewer than t right shares: every t-subset holds a wrong share (the shifts are chosen not
    to cancel at 0), none opens the check, and the answer is None, never a wrong secret."""
    assert n - len(wrong) < t
    secret, shares = _dealt(t, list(range(1, n + 1)), f"too-many/{n}/{t}/{wrong}")
    check = Check(secret)
    assert reconstruct_checked(_moved(shares, {x: 1000 + 7 * x for x in wrong}), t, check) is None
    # The lowest t, a few decodings (the error budget doubles), then the bounded search.
    assert check.calls <= 1 + 8 + SUBSET_BUDGET


def test_decoding_alone_still_fails_beyond_its_budget() -> None:
    """``shamir.decode_with_errors`` is unchanged: two wrong shares of 5 with t=3 exceed its
    budget of 1; it returns None or a polynomial that is not the secret (``test_shamir``), which
    is why the server checks every result and searches past it."""
    secret, shares = _dealt(3, [1, 2, 3, 4, 5], "too-many")
    decoded = shamir.decode_with_errors(_moved(shares, {1: 1, 2: 2}), 3, 1)
    assert decoded is None or decoded[0] != secret
    # ... while the checked reconstruction leaves shares 1 and 2 out and gets the secret.
    assert reconstruct_checked(_moved(shares, {1: 1, 2: 2}), 3, Check(secret)) == Reconstructed(
        secret, frozenset()
    )


def test_wrong_shares_on_another_polynomial_are_refused_by_the_check() -> None:
    """e + 1 liars put their shares on a polynomial g that agrees with t - 1 honest holders: the
    decoder alone would return g's secret (``test_shamir``); the commitment check refuses it, and
    the leave-out search finds t of the 4 right shares (1, 2, 6, 7): f's secret, nobody named.
    When 6 and 7 lie on g too, every share lies on g (1 and 2 are on both): no t-subset opens the
    check, and the answer is None rather than g's secret."""
    t, holders = 3, list(range(1, 8))  # budget (7 - 3) // 2 = 2
    f = [11, 22, 33]
    g = [13, (22 - 3) % SHAMIR_PRIME, 34]  # f + (x - 1)(x - 2)
    values = {x: poly_eval_mod(g if x in (3, 4, 5) else f, x, SHAMIR_PRIME) for x in holders}
    shares = {x: shamir.encode_element(y) for x, y in values.items()}
    assert shamir.decode_with_errors(shares, t, 2) is not None  # fooled
    # Even the lowest t shares (1, 2 right, 3 moved) lie on g: only the check tells them apart.
    assert shamir.reconstruct(shares, t) == shamir.encode_element(13)
    right = shamir.encode_element(11)
    assert reconstruct_checked(shares, t, Check(right)) == Reconstructed(right, frozenset())
    all_on_g = {x: shamir.encode_element(poly_eval_mod(g, x, SHAMIR_PRIME)) for x in holders}
    assert all_on_g[1] == shares[1] and all_on_g[2] == shares[2]
    assert reconstruct_checked(all_on_g, t, Check(right)) is None


def test_a_dealer_that_shared_inconsistently_gives_none() -> None:
    """Shares of one polynomial, committed to another secret (a dealer lying in round 0)."""
    _, shares = _dealt(3, [1, 2, 3, 4, 5, 6, 7], "dealer")
    other = shamir.random_secret(_rb("dealer/other"))
    assert reconstruct_checked(shares, 3, Check(other)) is None


def test_fewer_than_t_shares_are_refused() -> None:
    secret, shares = _dealt(3, [1, 2, 3], "few")
    with pytest.raises(ValueError, match="need 3 shares"):
        reconstruct_checked({1: shares[1], 2: shares[2]}, 3, Check(secret))


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_never_a_wrong_secret(data: st.DataObject) -> None:
    """Any shares at all (wrong ones placed and valued by hypothesis, up to all of them): the
    answer is None or the committed secret, and the secret whenever the wrong shares are within
    the budget (N - t) // 2, or leave at least t right shares and N - t <= 3 (where the leave-out
    search tries every t-subset within ``SUBSET_BUDGET``)."""
    t = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(t, t + 7))
    holders = data.draw(st.lists(st.integers(1, 500), min_size=n, max_size=n, unique=True))
    secret, shares = _dealt(t, holders, f"prop/{t}/{holders}")
    wrong = data.draw(st.sets(st.sampled_from(holders), max_size=n))
    shifts = {x: data.draw(st.integers(1, shamir.PRIME - 1)) for x in sorted(wrong)}
    found = reconstruct_checked(_moved(shares, shifts), t, Check(secret))
    if len(wrong) <= (n - t) // 2 or (len(wrong) <= n - t <= 3):
        assert found is not None
    if found is not None:
        assert found.secret == secret
        assert found.wrong_holders <= wrong
