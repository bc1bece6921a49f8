"""Eager round-4 reconstruction (``secagg.share_collector``) against a holder that times its lies.

The server now interpolates an owner's first t shares *to arrive*, where it used to take the t
lowest holder ids at the end of the round, so a malicious holder picks where its wrong shares
land by when it sends them. Whatever it picks, the released sum must stay exact and only the
liar may ever be named: the first t are trusted only when the secret opens its check, and
otherwise every share goes to the same decoder as before.
"""

from __future__ import annotations

import random

import pytest
from helpers import Federation, config, shifted

from secagg import Round
from secagg.messages import ClientMessage, UnmaskingShares


def unmasking_round(seed: int) -> Federation:
    """Harary n=20, k=6, t=4, two clients silent after sharing keys (so s_SK shares flow too)."""
    fed = Federation(config(20, 4, graph="harary", degree=6), seed=seed)
    fed.run_to(Round.MASKED_INPUT)
    fed.silent |= {5, 12}
    fed.step()
    assert fed.server.round is Round.UNMASKING
    return fed


def lying(replies: dict[int, ClientMessage]) -> tuple[int, dict[int, ClientMessage]]:
    """The liar (the lowest id holding shares of a silent client) and the replies with its every
    share off by one (well-formed, wrong), b's and s_SK's alike."""
    liar = min(i for i, r in replies.items() if isinstance(r, UnmaskingShares) and r.secret_key_shares)
    reply = replies[liar]
    assert isinstance(reply, UnmaskingShares) and reply.self_mask_shares
    forged = UnmaskingShares(
        liar,
        {u: shifted(s) for u, s in reply.self_mask_shares.items()},
        {v: shifted(s) for v, s in reply.secret_key_shares.items()},
    )
    return liar, {**replies, liar: forged}


ORDERS = ["liar first", "liar last", "ids descending", "shuffled 1", "shuffled 2"]


def ordered(replies: dict[int, ClientMessage], liar: int, order: str) -> list[ClientMessage]:
    ids = sorted(replies)
    others = [i for i in ids if i != liar]
    if order == "liar first":
        ids = [liar, *others]
    elif order == "liar last":
        ids = [*others, liar]
    elif order == "ids descending":
        ids = ids[::-1]
    else:
        random.Random(order).shuffle(ids)
    return [replies[i] for i in ids]


@pytest.mark.parametrize("order", ORDERS)
def test_the_arrival_order_of_wrong_shares_never_changes_the_sum_or_blames_an_honest_client(
    order: str,
) -> None:
    fed = unmasking_round(seed=11)
    liar, replies = lying(fed.client_replies())
    fed.deliver(ordered(replies, liar, order))
    fed.advance()
    fed.assert_exact()
    server = fed.server
    assert set(server.wrong_shares) <= {liar}
    assert server.bad_dealers == {} and server.misbehaving == {}
    assert set(server.suspects) <= {liar}
    if order == "liar first":  # in every first t it belongs to: the decoder names it
        assert server.wrong_shares.get(liar)
    if order == "liar last":  # its shares arrive after every secret is known: never read
        assert server.wrong_shares == {}
