"""The SecAgg / SecAgg+ server as a sans-I/O state machine (Bonawitz et al. 2017, Fig. 4).

The server is fed client messages with ``receive`` and never raises for what a client sends: a
message from an unknown id or a client no longer in the round is ignored and logged in
``rejected``; a malformed, out-of-range, wrong-round or duplicate message drops its sender with a
reason in ``dropped``. The transport (or the in-memory simulator) decides *when* to move on, from
``responded``, ``waiting_for`` and ``can_advance()``; ``advance()`` closes the round and returns
the messages for the next one, or raises ``AbortedError`` when fewer than t clients remain.
Masked inputs are added as they arrive (one accumulator, O(m) memory); each secret of round 4 is
reconstructed as soon as t of its shares arrive and pass its check (``share_collector``), the
rest, decoded around wrong shares, by the final ``advance()``, which releases ``result``, the sum
over U3, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, cast

import numpy as np

from .errors import AbortedError, LocalProtocolError, RemoteProtocolError
from .masking import FieldAccumulator
from .messages import (
    AdvertiseKeys,
    BundleReport,
    ConsistencyRequest,
    ConsistencySignature,
    KeyList,
    MaskedInput,
    MaskingRequest,
    PublicKeys,
    ServerMessage,
    ShareBundles,
    ShareKeys,
    UnmaskingRequest,
    UnmaskingShares,
)
from .primitives import commitment, shamir, signatures
from .primitives.field import FieldVector, is_field_vector
from .primitives.key_agreement import (
    canonical_public_key,
    generate_private_key,
    is_valid_public_key,
    public_bytes,
)
from .reconstruction import reconstruct_checked
from .session import RoundSetup
from .share_collector import SecretCheck, ShareCollector
from .state import SERVER_EXPECTS, Round, next_round
from .unmasking import DroppedClient, JobExecutor, remove_masks


@dataclass(frozen=True)
class Drop:
    """Why and when the server dropped a client."""

    round: Round
    reason: str


@dataclass(frozen=True)
class Rejection:
    """A message the server ignored without dropping anyone (unknown or departed sender)."""

    round: Round
    sender: object
    reason: str


class SecAggServer:
    """The server of one round. See the module docstring for the contract."""

    def __init__(
        self, setup: RoundSetup, *, workers: int | None = None, executor: JobExecutor | None = None
    ) -> None:
        """``workers``: processes for the final mask removal; None picks all cores when the job
        is large and there are at least two, 1 keeps everything in this process. ``executor``:
        where mask removal runs instead (anything with ``map``, e.g. a process pool the caller
        keeps, or ``transport.ray_executor.RayExecutor``); the caller owns and shuts it down."""
        self.setup = setup
        self.workers = workers
        self.executor = executor
        self.config = setup.config
        self.graph = setup.graph
        self.round = Round.ADVERTISE_KEYS
        self.dropped: dict[int, Drop] = {}
        self.rejected: list[Rejection] = []
        # Accused senders of share bundles that failed to open -> their accusers (report round).
        self.accusations: dict[int, frozenset[int]] = {}
        # Holders whose round-4 share the decoder found wrong -> the clients whose secret it was.
        self.wrong_shares: dict[int, set[int]] = {}
        # Clients whose shares were inconsistent: no decoding opened their secret (the round then
        # aborted), or they dealt on more than one polynomial (decoded around all the same).
        self.bad_dealers: dict[int, str] = {}
        self.result: FieldVector | None = None
        self.abort_reason: AbortedError | None = None
        self.closed_rounds: dict[Round, frozenset[int]] = {}  # round -> clients accepted in it
        # U_i of Fig. 4, filled as the rounds close.
        self.u1: frozenset[int] = frozenset()
        self.u2: frozenset[int] = frozenset()
        self.u3: frozenset[int] = frozenset()
        self.u4: frozenset[int] = frozenset()
        self.u5: frozenset[int] = frozenset()
        self._live = frozenset(range(1, self.config.num_clients + 1))  # asked this round
        self._responses: dict[int, object] = {}
        self._keys: dict[int, AdvertiseKeys] = {}
        self._key_owner: dict[bytes, int] = {}
        self._bundles: dict[int, Mapping[int, bytes]] = {}
        self._sum: FieldAccumulator | None = None
        self._in_sum: set[int] = set()  # masked inputs already added (cannot be taken back)
        self._commitments: dict[int, bytes] = {}  # u -> commitment to b_u (round 0)
        self._accused_by: dict[int, frozenset[int]] = {}  # reporter -> whom it accused
        # Round 4: the shares of each b_u and s_v^SK, reconstructed as soon as t arrive; an
        # owner whose first t fail the check keeps all its shares for the decoder.
        t = self.config.threshold
        self._b_shares = ShareCollector(t, self._b_check)
        self._sk_shares = ShareCollector(t, self._sk_check_if_needed)
        self._sk_needed: frozenset[int] = frozenset()  # U2 - U3 with a partner in U3

    # -- readiness (the transport decides when to advance) ------------------------------------

    @property
    def responded(self) -> frozenset[int]:
        """Clients whose message for the current round was accepted."""
        return frozenset(self._responses)

    @property
    def waiting_for(self) -> frozenset[int]:
        """Live clients the server still expects a message from in this round."""
        return frozenset(self._live - set(self._responses) - set(self.dropped))

    def can_advance(self) -> bool:
        """True when at least t clients responded, so ``advance()`` will not abort for lack of them."""
        return self.round in SERVER_EXPECTS and len(self._responses) >= self.config.threshold

    @property
    def survivors(self) -> frozenset[int]:
        """U3: the clients whose inputs are in the sum."""
        return self.u3

    @property
    def misbehaving(self) -> dict[int, str]:
        """Clients that provably broke the protocol this round, with why: each sent a message
        that failed the server's checks (malformed, out of range, wrong round, duplicate, a bad
        signature or report) and was dropped. A caller may keep repeat offenders out of later
        rounds. What cannot be pinned on one client is in ``suspects`` instead."""
        return {
            u: drop.reason
            for u, drop in self.dropped.items()
            if not (drop.round is Round.REPORT_BUNDLES and drop.reason.startswith("excluded"))
        }

    @property
    def suspects(self) -> dict[int, str]:
        """Clients involved in a fault that cannot be attributed to one side, with why.

        Without verifiable secret sharing nothing proves who lied: a share bundle that fails to
        open may be the sender's junk or a false accusation (both ends are listed); a share off
        the decoded polynomial may be the holder's lie or its dealer's; a secret no decoding
        opens may be an inconsistent dealer or too many lying holders. Clients excluded only
        because too many of their neighbours dropped out are not listed. Use for monitoring,
        not for exclusion on one occurrence.
        """
        out: dict[int, str] = {}
        for v, accusers in sorted(self.accusations.items()):
            out[v] = f"its share bundle failed to open for clients {sorted(accusers)[:5]} (or they lie)"
            for u in sorted(accusers):
                out.setdefault(u, f"reported the share bundle of client {v} as failing to open")
        for holder, owners in sorted(self.wrong_shares.items()):
            out.setdefault(
                holder,
                f"revealed shares off the polynomial of clients {sorted(owners)[:5]} (or they dealt so)",
            )
        for owner, reason in sorted(self.bad_dealers.items()):
            out.setdefault(owner, reason)
        return out

    # -- input ----------------------------------------------------------------------------------

    def receive(self, message: object) -> None:
        """Take one client message. Never raises for anything a client may send."""
        sender = getattr(message, "sender", None)
        n = self.config.num_clients
        if not isinstance(sender, int) or isinstance(sender, bool) or not 1 <= sender <= n:
            self.rejected.append(Rejection(self.round, sender, f"unknown client id {sender!r}"))
            return
        if self.round not in SERVER_EXPECTS:
            self.rejected.append(Rejection(self.round, sender, f"round is {self.round.value}"))
            return
        if sender in self.dropped or sender not in self._live:
            self.rejected.append(Rejection(self.round, sender, "client is no longer in the round"))
            return
        expected = SERVER_EXPECTS[self.round]
        if not isinstance(message, expected):
            self._drop(sender, f"wrong round: sent {type(message).__name__}, expected {expected.__name__}")
            return
        if sender in self._responses or (self.round is Round.MASKED_INPUT and sender in self._in_sum):
            self._drop(sender, f"duplicate {expected.__name__}")
            return
        try:
            # A message object that skipped its constructor (built in-process with __new__) is
            # validated again here, so every check below may rely on the fields' types.
            cast(Any, message).__post_init__()
            self._CHECKS[self.round](self, message)
        except RemoteProtocolError as exc:
            self._drop(sender, str(exc))
            return
        except (TypeError, ValueError, AttributeError) as exc:
            self._drop(sender, f"malformed {expected.__name__}: {exc}")
            return
        # Masked inputs are already in the sum and shares already filed: keeping the messages
        # would hold O(n m) (or O(n k)) memory for nothing.
        kept = self.round in (Round.MASKED_INPUT, Round.UNMASKING)
        self._responses[sender] = None if kept else message

    # -- round checks (each raises RemoteProtocolError to drop the sender) ----------------------

    def _check_advertise(self, msg: AdvertiseKeys) -> None:
        for key in (msg.c_pk, msg.s_pk):
            if not is_valid_public_key(key):
                raise RemoteProtocolError("invalid or low-order X25519 public key")
        c_key, s_key = canonical_public_key(msg.c_pk), canonical_public_key(msg.s_pk)
        if c_key == s_key:
            raise RemoteProtocolError("c_PK and s_PK must differ")
        for key in (c_key, s_key):  # as curve points: 32-byte aliases of one key are the same key
            if key in self._key_owner:
                raise RemoteProtocolError(f"public key already advertised by client {self._key_owner[key]}")
        if self.config.is_active:
            assert self.setup.roster is not None
            payload = signatures.advertise_payload(self.setup.session_id, msg.sender, msg.c_pk, msg.s_pk)
            if not signatures.verify(self.setup.roster[msg.sender], msg.signature, payload):
                raise RemoteProtocolError("invalid signature on advertised keys")
        elif msg.signature is not None:
            raise RemoteProtocolError("signature sent in the semi-honest mode")
        self._key_owner[c_key] = msg.sender
        self._key_owner[s_key] = msg.sender
        self._commitments[msg.sender] = msg.b_commitment

    def _check_share_keys(self, msg: ShareKeys) -> None:
        expected = self.graph.neighbours(msg.sender) & self.u1
        got = set(msg.ciphertexts)
        if got != expected:
            raise RemoteProtocolError(
                f"share bundles must go to exactly its {len(expected)} neighbours in U1; "
                f"missing {sorted(expected - got)[:5]}, unexpected {sorted(got - expected)[:5]}"
            )

    def _check_report(self, msg: BundleReport) -> None:
        senders = self.graph.neighbours(msg.sender) & self.u2
        strangers = msg.accused - senders
        if strangers:
            raise RemoteProtocolError(
                f"accused clients that sent it no share bundle: {sorted(strangers)[:5]}"
            )

    def _check_masked_input(self, msg: MaskedInput) -> None:
        m, p = self.config.vector_length, self.config.modulus
        if not is_field_vector(msg.vector, m, p):
            raise RemoteProtocolError(
                f"masked input must be {m} integers in [0, {p}); got shape {msg.vector.shape}, "
                f"dtype {msg.vector.dtype}"
            )
        if self._sum is None:
            self._sum = FieldAccumulator(m, p)
        self._sum.add(msg.vector.astype(np.uint64, copy=False))  # int64 + uint64 would go via float
        self._in_sum.add(msg.sender)

    def _check_consistency(self, msg: ConsistencySignature) -> None:
        assert self.setup.roster is not None
        payload = signatures.consistency_payload(self.setup.session_id, self.u3)
        if not signatures.verify(self.setup.roster[msg.sender], msg.signature, payload):
            raise RemoteProtocolError("invalid consistency signature over U3")

    def _check_unmasking(self, msg: UnmaskingShares) -> None:
        want_b, want_sk = self._unmasking_sets(msg.sender)
        if set(msg.self_mask_shares) != want_b or set(msg.secret_key_shares) != want_sk:
            raise RemoteProtocolError("unmasking shares do not match the requested survivors/dropped sets")
        for share in (*msg.self_mask_shares.values(), *msg.secret_key_shares.values()):
            try:
                shamir.decode_element(share)
            except ValueError as exc:
                raise RemoteProtocolError(f"malformed share: {exc}") from None
        for collector, shares in (
            (self._b_shares, msg.self_mask_shares),
            (self._sk_shares, msg.secret_key_shares),
        ):
            for owner, share in shares.items():
                collector.add(owner, msg.sender, share)

    _CHECKS: ClassVar[dict[Round, Callable[..., None]]] = {
        Round.ADVERTISE_KEYS: _check_advertise,
        Round.SHARE_KEYS: _check_share_keys,
        Round.REPORT_BUNDLES: _check_report,
        Round.MASKED_INPUT: _check_masked_input,
        Round.CONSISTENCY_CHECK: _check_consistency,
        Round.UNMASKING: _check_unmasking,
    }

    # -- advancing ------------------------------------------------------------------------------

    def advance(self) -> dict[int, ServerMessage]:
        """Close the current round; return the next round's message for each live client.

        After round 4 it returns ``{}`` and sets ``result``. Raises ``AbortedError`` when fewer
        than t clients responded (or a secret cannot be reconstructed); the round then stays
        aborted and no sum is ever released.
        """
        if self.round not in SERVER_EXPECTS:
            raise LocalProtocolError(f"advance() called in state {self.round.value}")
        responded = frozenset(self._responses)
        if len(responded) < self.config.threshold:
            self._abort(f"only {len(responded)} clients responded, threshold is {self.config.threshold}")
        closing = self.round
        outgoing = self._CLOSERS[closing](self, responded)
        self.closed_rounds[closing] = responded
        self.round = next_round(closing, self.config.is_active)
        if self.round is not Round.DONE:
            self._live = frozenset(outgoing)
        self._responses = {}
        return outgoing

    def _close_advertise(self, u1: frozenset[int]) -> dict[int, ServerMessage]:
        self.u1 = u1
        self._keys = {u: msg for u, msg in self._responses.items() if isinstance(msg, AdvertiseKeys)}
        self._key_owner = {}  # only round 0 checks for reused keys
        # One PublicKeys per client, shared by every list it is in (not one per pair: n^2 objects
        # on the complete graph).
        public = {v: PublicKeys(msg.c_pk, msg.s_pk, msg.signature) for v, msg in self._keys.items()}
        out: dict[int, ServerMessage] = {}
        for u in sorted(u1):
            out[u] = KeyList(u, {v: public[v] for v in sorted(self.graph.neighbours(u) & u1)})
        return out

    def _close_share_keys(self, u2: frozenset[int]) -> dict[int, ServerMessage]:
        self.u2 = u2
        self._bundles = {
            u: msg.ciphertexts for u, msg in self._responses.items() if isinstance(msg, ShareKeys)
        }
        out: dict[int, ServerMessage] = {}
        for u in sorted(u2):
            incoming = {v: self._bundles[v][u] for v in sorted(self.graph.neighbours(u) & u2)}
            out[u] = ShareBundles(u, incoming)
        self._bundles = {}  # routed; the server keeps no copy
        return out

    def _close_report(self, reported: frozenset[int]) -> dict[int, ServerMessage]:
        """Cut the pair of every accusation; exclude only the clients that cannot go on.

        An accusation "v's bundle to u failed to open" means u holds no share of v's secrets and
        the pair (u, v) must not mask with each other; both stay in the round. A client is
        excluded (as if it had dropped in round 1) only when fewer than t clients hold its shares
        (a dealer of junk), or when fewer than t - 1 neighbours are left for it to mask with (an
        accuser of everyone); each exclusion can cause others, so this runs to a fixed point.
        So one malicious client can cut its own pairs and get itself excluded, but cannot
        exclude an honest client unless more than k + 1 - t of that client's neighbours accuse it
        or send it junk (as many as would have to go silent for the same effect).
        """
        t = self.config.threshold
        accused_by = {u: msg.accused for u, msg in self._responses.items() if isinstance(msg, BundleReport)}
        accusers: dict[int, set[int]] = {}
        for u, accused in accused_by.items():
            for v in accused:
                accusers.setdefault(v, set()).add(u)
        self.accusations = {v: frozenset(us) for v, us in accusers.items()}
        self._accused_by = accused_by
        members, live = set(self.u2), set(reported)
        reasons: dict[int, str] = {}
        changed = True
        while changed:
            changed = False
            for v in sorted(members):
                holders = (self.graph.neighbours(v) & members) - accusers.get(v, set())
                accused_it = sorted(accusers.get(v, ()))
                if len(holders) + 1 < t:  # v holds one of its own shares
                    if accused_it:
                        reasons[v] = (
                            f"excluded: its share bundles failed to open for clients {accused_it[:5]}, "
                            f"so fewer than t={t} hold its shares"
                        )
                    else:
                        reasons[v] = (
                            f"excluded: fewer than t={t} of its neighbours are left to hold its shares"
                        )
                elif v in live and len(self._partners(v, members)) + 1 < t:
                    reasons[v] = f"excluded: fewer than t-1={t - 1} neighbours left to mask with"
                    if accused_it or accused_by.get(v):
                        reasons[v] += " after the pairs cut by accusations"
                else:
                    continue
                members.discard(v)
                live.discard(v)
                changed = True
        excluded = frozenset(reasons)
        for v in sorted(excluded):
            self.dropped.setdefault(v, Drop(Round.REPORT_BUNDLES, reasons[v]))
        self.u2 = frozenset(members)
        if len(live) < t:
            self._abort(f"only {len(live)} clients left after {len(excluded)} exclusions, threshold is {t}")
        out: dict[int, ServerMessage] = {}
        for u in sorted(live):
            neighbours = self.graph.neighbours(u)
            unpaired = (neighbours & self.u2) - self._partners(u, self.u2)
            out[u] = MaskingRequest(u, excluded & neighbours, frozenset(unpaired))
        return out

    def _partners(self, u: int, members: set[int] | frozenset[int]) -> frozenset[int]:
        """u's neighbours among ``members`` that it masks with: no accusation between them."""
        accused = self._accused_by.get(u, frozenset())
        return frozenset(
            v
            for v in self.graph.neighbours(u) & members
            if v not in accused and u not in self._accused_by.get(v, ())
        )

    def _close_masked_input(self, u3: frozenset[int]) -> dict[int, ServerMessage]:
        # Clients dropped after their input was added stay in U3: their masks must still go.
        self.u3 = frozenset(self._in_sum)
        if len(self.u3) < self.config.threshold:
            self._abort(f"only {len(self.u3)} masked inputs, threshold is {self.config.threshold}")
        self._sk_needed = frozenset(v for v in self.u2 - self.u3 if self._partners(v, self.u3))
        out: dict[int, ServerMessage] = {}
        for u in sorted(u3):
            if self.config.is_active:
                out[u] = ConsistencyRequest(u, self.u3)
            else:
                b_set, sk_set = self._unmasking_sets(u)
                out[u] = UnmaskingRequest(u, frozenset(b_set), frozenset(sk_set))
        return out

    def _close_consistency(self, u4: frozenset[int]) -> dict[int, ServerMessage]:
        self.u4 = u4
        sigs = {
            u: msg.signature for u, msg in self._responses.items() if isinstance(msg, ConsistencySignature)
        }
        out: dict[int, ServerMessage] = {}
        for u in sorted(u4):
            _, sk_set = self._unmasking_sets(u)
            out[u] = UnmaskingRequest(u, self.u3, frozenset(sk_set), dict(sorted(sigs.items())))
        return out

    def _close_unmasking(self, u5: frozenset[int]) -> dict[int, ServerMessage]:
        self.u5 = u5
        assert self._sum is not None
        self_mask_seeds = []
        for u in sorted(self.u3):
            seed = self._b_shares.secret(u)
            if seed is None:
                shares = self._b_shares.take_shares(u)
                seed = self._reconstruct(u, shares, f"self-mask seed b of client {u}", self._b_check(u))
            self_mask_seeds.append(seed)
        dropped = []
        for v in sorted(self._sk_needed):
            partners = sorted(self._partners(v, self.u3))
            secret = self._sk_shares.secret(v)
            if secret is None:
                shares = self._sk_shares.take_shares(v)
                what = f"masking key s_SK of dropped client {v}"
                secret = self._reconstruct(v, shares, what, self._sk_check(v))
            dropped.append(
                DroppedClient(v, secret, self._keys[v].s_pk, tuple((u, self._keys[u].s_pk) for u in partners))
            )
        total = self._sum.value()
        self._sum = None
        self.result = remove_masks(
            total,
            self.config.modulus,
            self.setup.session_id,
            self_mask_seeds,
            dropped,
            self.workers,
            self.executor,
        )
        return {}

    _CLOSERS: ClassVar[dict[Round, Callable[..., dict[int, ServerMessage]]]] = {
        Round.ADVERTISE_KEYS: _close_advertise,
        Round.SHARE_KEYS: _close_share_keys,
        Round.REPORT_BUNDLES: _close_report,
        Round.MASKED_INPUT: _close_masked_input,
        Round.CONSISTENCY_CHECK: _close_consistency,
        Round.UNMASKING: _close_unmasking,
    }

    # -- helpers --------------------------------------------------------------------------------

    def _unmasking_sets(self, u: int) -> tuple[set[int], set[int]]:
        """For client u: whose b shares it must reveal (U3 in its U2 neighbourhood) and whose
        s_SK shares (its U2 neighbours not in U3), among the clients it holds shares of (not
        those it accused)."""
        held = ((self.graph.neighbours(u) | {u}) & self.u2) - self._accused_by.get(u, frozenset())
        return set(held & self.u3), set(held - self.u3)

    def _b_check(self, u: int) -> SecretCheck:
        """b_u is the seed that opens u's round-0 commitment."""
        c, session = self._commitments[u], self.setup.session_id
        return lambda seed: commitment.opens(c, session, u, seed)

    def _sk_check(self, v: int) -> SecretCheck:
        """s_v^SK is the key whose public key is v's s_v^PK."""
        s_pk = canonical_public_key(self._keys[v].s_pk)
        return lambda key: public_bytes(generate_private_key(key)) == s_pk

    def _sk_check_if_needed(self, v: int) -> SecretCheck | None:
        """s_v^SK is reconstructed only for a dropped client with a partner in U3."""
        return self._sk_check(v) if v in self._sk_needed else None

    def _reconstruct(
        self, owner: int, shares: dict[int, bytes], what: str, is_secret: Callable[[bytes], bool]
    ) -> bytes:
        """The secret, decoded around wrong shares; the round aborts, naming the owner, when no
        decoding passes the check (a wrong sum is never released)."""
        t = self.config.threshold
        if len(shares) < t:
            self._abort(f"only {len(shares)} shares of the {what}, threshold is {t}")
        found = reconstruct_checked(shares, t, is_secret)
        if found is None:
            self.bad_dealers[owner] = (
                f"the {what} could not be reconstructed from its shares (it dealt inconsistently, "
                f"or more of its {len(shares)} holders lied than decoding could leave out)"
            )
            self._abort(
                f"the {what} cannot be reconstructed: no t={t} of its {len(shares)} shares open the "
                f"value it committed to in round 0 (client {owner} shared inconsistently, or more "
                f"holders sent wrong shares than decoding and a bounded search could leave out)"
            )
        for holder in found.wrong_holders:
            self.wrong_shares.setdefault(holder, set()).add(owner)
        if found.dealer_inconsistent:
            self.bad_dealers.setdefault(owner, f"dealt its shares of the {what} on more than one polynomial")
        return found.secret

    def _drop(self, sender: int, reason: str) -> None:
        self.dropped[sender] = Drop(self.round, reason)
        self._responses.pop(sender, None)

    def _abort(self, reason: str) -> NoReturn:
        failed = self.round
        self.round = Round.ABORTED
        self._sum = None
        self.result = None
        self.abort_reason = AbortedError(failed.value, reason)
        raise self.abort_reason
