"""Round-4 shares of one kind of secret, reconstructed per owner as soon as t have arrived.

The server needs one secret per owner at the end of the unmasking round: b_u of every client in
U3, s_v^SK of every dropped client with a surviving partner. Holding every share until then costs
O(n k) small objects. A ``ShareCollector`` instead interpolates an owner's first t shares the
moment the t-th arrives and, when the result passes the owner's check (b_u opens its round-0
commitment, s_v^SK gives s_v^PK), keeps only the secret and ignores that owner's later shares:
the lowest-t interpolation of ``reconstruction.reconstruct_checked`` does the same at the end of
the round (shares beyond a passing t are "not needed, nor read"). The one difference is which t:
the first to arrive rather than the lowest ids, so a wrong share that arrives after a passing t
is not named (it was never used). When the first t fail the check, the owner's shares are kept,
later ones too, and the server decodes around the wrong ones at the end of the round as before,
naming the same holders.
"""

from __future__ import annotations

from collections.abc import Callable

from .primitives import shamir

SecretCheck = Callable[[bytes], bool]


class ShareCollector:
    """Shares per owner until t of them reconstruct a secret that passes its check.

    ``check_for(owner)`` gives the owner's check, or None for a secret the round may not need
    (its shares are then only kept); it is called once per owner, when its t-th share arrives.
    """

    def __init__(self, threshold: int, check_for: Callable[[int], SecretCheck | None]) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        self.threshold = threshold
        self._check_for = check_for
        self._shares: dict[int, dict[int, bytes]] = {}  # owner -> holder -> share (pending)
        self._secrets: dict[int, bytes] = {}  # owner -> checked secret

    def add(self, owner: int, holder: int, share: bytes) -> None:
        """File ``holder``'s share (a well-formed field element) of ``owner``'s secret."""
        if owner in self._secrets:
            return  # the secret is known and checked: later shares are not needed
        shares = self._shares.setdefault(owner, {})
        shares[holder] = share
        if len(shares) != self.threshold:
            return
        check = self._check_for(owner)
        if check is None:
            return
        secret = shamir.reconstruct(shares, self.threshold)
        if check(secret):
            self._secrets[owner] = secret
            del self._shares[owner]

    def secret(self, owner: int) -> bytes | None:
        """The owner's checked secret, if its first t shares gave it."""
        return self._secrets.get(owner)

    def take_shares(self, owner: int) -> dict[int, bytes]:
        """Every share of ``owner`` received (none once the secret is known), forgotten here."""
        return self._shares.pop(owner, {})

    def pending_shares(self) -> int:
        """Shares held for owners whose secret is not known yet."""
        return sum(len(shares) for shares in self._shares.values())
