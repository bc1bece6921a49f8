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
from secagg.reconstruction import Reconstructed, reconstruct_checked
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


def test_too_many_wrong_shares_give_none() -> None:
    secret, shares = _dealt(3, [1, 2, 3, 4, 5], "too-many")
    assert reconstruct_checked(_moved(shares, {1: 1, 2: 2}), 3, Check(secret)) is None


def test_wrong_shares_on_another_polynomial_are_refused_by_the_check() -> None:
    """e + 1 liars put their shares on a polynomial g that agrees with t - 1 honest holders: the
    decoder alone would return g's secret (``test_shamir``); the commitment check refuses it."""
    t, holders = 3, list(range(1, 8))  # budget (7 - 3) // 2 = 2
    f = [11, 22, 33]
    g = [13, (22 - 3) % SHAMIR_PRIME, 34]  # f + (x - 1)(x - 2)
    values = {x: poly_eval_mod(g if x in (3, 4, 5) else f, x, SHAMIR_PRIME) for x in holders}
    shares = {x: shamir.encode_element(y) for x, y in values.items()}
    assert shamir.decode_with_errors(shares, t, 2) is not None  # fooled
    assert reconstruct_checked(shares, t, Check(shamir.encode_element(11))) is None
    # Even the lowest t shares (1, 2 right, 3 moved) lie on g: only the check tells them apart.
    assert shamir.reconstruct(shares, t) == shamir.encode_element(13)


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
    the budget (N - t) // 2."""
    t = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(t, t + 7))
    holders = data.draw(st.lists(st.integers(1, 500), min_size=n, max_size=n, unique=True))
    secret, shares = _dealt(t, holders, f"prop/{t}/{holders}")
    wrong = data.draw(st.sets(st.sampled_from(holders), max_size=n))
    shifts = {x: data.draw(st.integers(1, shamir.PRIME - 1)) for x in sorted(wrong)}
    found = reconstruct_checked(_moved(shares, shifts), t, Check(secret))
    if len(wrong) <= (n - t) // 2:
        assert found is not None
    if found is not None:
        assert found.secret == secret
        assert found.wrong_holders <= wrong
