"""secagg.share_collector: round-4 secrets reconstructed as soon as t shares arrive, so the
server holds O(n) secrets rather than O(n k) shares; first-t failures keep every share for the
decoder, which then names the wrong holders exactly as before."""

from __future__ import annotations

import os

import pytest
from helpers import Federation, config, shifted

from secagg import Round
from secagg.messages import UnmaskingShares
from secagg.primitives import shamir
from secagg.reconstruction import reconstruct_checked
from secagg.share_collector import ShareCollector

SECRET = shamir.encode_element(123_456_789)
T, N = 3, 6


def dealt() -> dict[int, bytes]:
    return shamir.share(SECRET, T, range(1, N + 1), os.urandom)


class Checks:
    """check_for that counts its calls; the check passes for SECRET only."""

    def __init__(self, needed: bool = True) -> None:
        self.calls: list[int] = []
        self.needed = needed

    def __call__(self, owner: int) -> object:
        self.calls.append(owner)
        return (lambda secret: secret == SECRET) if self.needed else None


def test_the_t_th_share_reconstructs_and_later_shares_are_not_kept() -> None:
    shares, checks = dealt(), Checks()
    collector = ShareCollector(T, checks)  # type: ignore[arg-type]
    for holder in (5, 2):
        collector.add(7, holder, shares[holder])
    assert collector.secret(7) is None and collector.pending_shares() == 2 and checks.calls == []
    collector.add(7, 4, shares[4])
    assert collector.secret(7) == SECRET and collector.pending_shares() == 0 and checks.calls == [7]
    collector.add(7, 1, shifted(shares[1]))  # a wrong late share: not needed, not read
    assert collector.secret(7) == SECRET and collector.take_shares(7) == {} and checks.calls == [7]


def test_a_wrong_share_among_the_first_t_keeps_every_share_for_the_decoder() -> None:
    shares, checks = dealt(), Checks()
    shares[2] = shifted(shares[2])
    collector = ShareCollector(T, checks)  # type: ignore[arg-type]
    for holder in range(1, N + 1):
        collector.add(9, holder, shares[holder])
    assert collector.secret(9) is None and checks.calls == [9]  # one attempt, at the t-th
    kept = collector.take_shares(9)
    assert kept == shares and collector.pending_shares() == 0
    found = reconstruct_checked(kept, T, lambda s: s == SECRET)
    assert found is not None and found.secret == SECRET and found.wrong_holders == {2}


def test_a_secret_the_round_does_not_need_is_never_reconstructed() -> None:
    shares, checks = dealt(), Checks(needed=False)
    collector = ShareCollector(T, checks)  # type: ignore[arg-type]
    for holder in range(1, N + 1):
        collector.add(3, holder, shares[holder])
    assert collector.secret(3) is None and collector.pending_shares() == N and checks.calls == [3]


def test_the_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold must be >= 1, got 0"):
        ShareCollector(0, lambda owner: None)


def test_an_honest_round_holds_no_share_once_every_holder_answered() -> None:
    # Harary n=20, k=6, t=4: each owner has 7 holders; 2 clients drop after sharing keys, so the
    # server needs 18 b's and 2 s_SK's (120-odd shares) but keeps only secrets.
    fed = Federation(config(20, 4, graph="harary", degree=6), seed=3)
    fed.run_to(Round.MASKED_INPUT)
    fed.silent |= {5, 12}
    fed.step()
    assert fed.server.round is Round.UNMASKING
    replies = fed.client_replies()
    fed.deliver(replies.values())
    revealed = sum(
        len(r.self_mask_shares) + len(r.secret_key_shares)
        for r in replies.values()
        if isinstance(r, UnmaskingShares)
    )
    assert revealed > 100
    assert fed.server._b_shares.pending_shares() == 0 and fed.server._sk_shares.pending_shares() == 0
    assert all(fed.server._b_shares.secret(u) is not None for u in fed.server.u3)
    assert fed.server._sk_shares.secret(5) is not None and fed.server._sk_shares.secret(12) is not None
    fed.advance()
    fed.assert_exact()


def test_a_wrong_share_early_still_ends_in_the_exact_sum_with_the_holder_named() -> None:
    fed = Federation(config(20, 4, graph="harary", degree=6), seed=4)
    fed.run_to(Round.UNMASKING)
    replies = fed.client_replies()
    liar = min(replies)
    reply = replies[liar]
    assert isinstance(reply, UnmaskingShares)
    owner = min(reply.self_mask_shares)  # the liar is among the lowest holders of this owner
    forged = dict(reply.self_mask_shares)
    forged[owner] = shifted(forged[owner])
    replies[liar] = UnmaskingShares(liar, forged, reply.secret_key_shares)
    fed.deliver(replies.values())
    assert fed.server._b_shares.secret(owner) is None  # its first t failed: all shares kept
    fed.advance()
    fed.assert_exact()
    assert fed.server.wrong_shares == {liar: {owner}}
