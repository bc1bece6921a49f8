"""Reconstructing a client's secret from its holders' shares, robust to wrong shares.

The server knows what each secret must be: b_u opens the commitment sent in round 0, and s_SK's
public key is s_PK. ``reconstruct_checked`` first interpolates the lowest t shares; if the result
fails that check, some share is wrong (a malicious holder in round 4, or a dealer that shared
inconsistently in round 1), and it decodes around wrong shares (Berlekamp-Welch on t + 2e shares,
doubling the error budget e up to what the shares allow), then, past what decoding corrects,
searches small leave-out sets against the check (so a few wrong shares cost no more than as many
silent holders). A secret is returned only when it
passes the check, so a wrong share can make a round abort but never corrupt its sum.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .primitives import shamir


@dataclass(frozen=True)
class Reconstructed:
    """A secret that passed its check, and who is to blame for the shares off its polynomial.

    Shares are examined only as far as needed: when the lowest t are right, nobody is named.
    Otherwise every received share is checked against the decoded polynomial: if the shares off
    it are few enough that the others outvote them (at most (N - t) / 2), their holders are named
    in ``wrong_holders`` (each, or its dealer, lied: they cannot be told apart); if more are off,
    the dealer shared on more than one polynomial and ``dealer_inconsistent`` is set instead, so
    a dealer cannot frame honest holders by giving them a second consistent polynomial.
    """

    secret: bytes
    wrong_holders: frozenset[int]
    dealer_inconsistent: bool = False


def reconstruct_checked(
    shares: Mapping[int, bytes], threshold: int, is_secret: Callable[[bytes], bool]
) -> Reconstructed | None:
    """The secret the shares encode, checked by ``is_secret``; None when no decoding passes.

    Needs at least ``threshold`` shares; corrects up to ``(len(shares) - threshold) // 2`` wrong
    ones (and finds them), which is the most any decoder can.
    """
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(shares)}")
    secret = shamir.reconstruct(shares, threshold)
    if is_secret(secret):
        return Reconstructed(secret, frozenset())  # the other shares were not needed, nor read
    holders = sorted(shares)
    most = (len(holders) - threshold) // 2
    errors = 1
    while errors <= most:
        subset = {x: shares[x] for x in holders[: threshold + 2 * errors]}
        decoded = shamir.decode_polynomial(subset, threshold, errors)
        if decoded is not None:
            secret = shamir.encode_element(decoded[0][0])
            if is_secret(secret):
                off = frozenset(x for x in holders if not shamir.share_agrees(decoded[0], x, shares[x]))
                if len(off) <= most:
                    return Reconstructed(secret, off)
                return Reconstructed(secret, frozenset(), dealer_inconsistent=True)
        if errors == most:
            break
        errors = min(2 * errors, most)
    return _search_subsets(shares, threshold, is_secret)


# Interpolations the subset search may try (each O(t^2) field operations): enough for every
# leave-r-out set when N - t is small, which is where decoding falls short of silence.
SUBSET_BUDGET = 256


def _search_subsets(
    shares: Mapping[int, bytes], threshold: int, is_secret: Callable[[bytes], bool]
) -> Reconstructed | None:
    """Leave out 1, 2, ... shares (at most N - t) until t of the rest open the check.

    Decoding corrects (N - t) / 2 wrong shares; the check lets wrong shares cost no more than
    silent holders, up to N - t of them, as long as the search stays within ``SUBSET_BUDGET``.
    The shares left out are not named: with more wrong shares than decoding corrects, the
    honest ones cannot be told from the others by majority.
    """
    holders = sorted(shares)
    tried = 0
    for dropped in range(1, len(holders) - threshold + 1):
        prefix = holders[: threshold + dropped]  # every t-subset of it, each once
        for left_out in itertools.combinations(prefix, dropped):
            if tried >= SUBSET_BUDGET:
                return None
            tried += 1
            rest = [x for x in prefix if x not in left_out]
            secret = shamir.reconstruct({x: shares[x] for x in rest}, threshold)
            if is_secret(secret):
                return Reconstructed(secret, frozenset())
    return None
