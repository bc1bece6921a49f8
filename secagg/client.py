"""The SecAgg / SecAgg+ client as a sans-I/O state machine (Bonawitz et al. 2017, Fig. 4).

A ``SecAggClient`` never touches a socket or a clock. ``start()`` returns its round-0 message;
``receive(server_message)`` checks the message against the round table (``state.CLIENT_EXPECTS``)
and every rule an honest client enforces, and returns its reply for the round. When the server
breaks a rule, the client aborts: it raises ``AbortedError`` naming the round and the reason,
moves to ``Round.ABORTED`` and reveals nothing more.

Rules enforced here (DESIGN.md section 3): keys only from neighbours, valid and pairwise distinct
(as curve points), signed in the active mode; share bundles only from neighbours in U1; a bundle
that fails to open is reported (``BundleReport``), and the server must then cut that pair (or
exclude the sender): the client never masks with it and never reveals a share of it; at least t
of its closed neighbourhood left at every round (at unmasking: of the clients it masked with);
in round 4 the server's survivor and dropped sets are disjoint, made of its U2 neighbours, and
cover them, so it never reveals both shares of a client.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .errors import AbortedError, LocalProtocolError, RemoteProtocolError
from .masking import MaskTerm, apply_masks, pairwise_sign
from .messages import (
    BUNDLE_PLAINTEXT_SIZE,
    AdvertiseKeys,
    BundleReport,
    ClientMessage,
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
from .primitives import aead, commitment, shamir, signatures
from .primitives.field import FieldVector, as_field_vector
from .primitives.key_agreement import (
    KeyPurpose,
    canonical_public_key,
    derive_key,
    generate_private_key,
    public_bytes,
)
from .primitives.prg import MaskDomain
from .session import RoundSetup
from .state import CLIENT_EXPECTS, Round, next_round

RandomBytes = Callable[[int], bytes]


class SecAggClient:
    """One client of one round.

    Args:
        setup: the round's config, nonce and (active mode) roster.
        client_id: this client's id, in 1..n.
        input_vector: x_u, m integers in [0, p); may instead be given later with ``set_input``.
        random_bytes: the source of randomness (default ``os.urandom``); inject for tests.
        identity_key: active mode only: this client's long-term Ed25519 key, matching the roster.
    """

    def __init__(
        self,
        setup: RoundSetup,
        client_id: int,
        input_vector: object = None,
        *,
        random_bytes: RandomBytes = os.urandom,
        identity_key: Ed25519PrivateKey | None = None,
    ) -> None:
        config = setup.config
        if not isinstance(client_id, int) or not 1 <= client_id <= config.num_clients:
            raise LocalProtocolError(f"client id must be in 1..{config.num_clients}, got {client_id!r}")
        if config.is_active:
            if identity_key is None:
                raise LocalProtocolError("the active mode needs the client's Ed25519 identity key")
            assert setup.roster is not None
            if signatures.identity_public_bytes(identity_key) != setup.roster[client_id]:
                raise LocalProtocolError(f"identity key does not match the roster for client {client_id}")
        self.setup = setup
        self.config = config
        self.client_id = client_id
        self.round = Round.ADVERTISE_KEYS
        self._random_bytes = random_bytes
        self._identity_key = identity_key
        self._input: FieldVector | None = None
        if input_vector is not None:
            self.set_input(input_vector)
        self._neighbours = setup.graph.neighbours(client_id)
        # Filled in as the rounds go.
        self._c_key: X25519PrivateKey | None = None
        self._s_key: X25519PrivateKey | None = None
        self._self_mask_seed = b""
        self._keys: dict[int, PublicKeys] = {}  # U1 neighbours -> keys
        self._bundle_senders: frozenset[int] = frozenset()  # neighbours whose bundle arrived
        self._accused: frozenset[int] = frozenset()  # ... and failed to open
        # After the report round, each with this client: U2 neighbours still in the round; those
        # it holds shares of (not the ones it accused); those it masks with (no accusation).
        self._members_view: frozenset[int] = frozenset()
        self._u2_view: frozenset[int] = frozenset()
        self._partners_view: frozenset[int] = frozenset()
        self._sk_shares: dict[int, bytes] = {}  # v -> my share of s_v^SK (v in U2 view)
        self._b_shares: dict[int, bytes] = {}  # v -> my share of b_v
        self._signed_survivors: frozenset[int] | None = None
        self._channel_keys: dict[int, bytes] = {}  # v -> AES-GCM key shared with v
        self._mask_seeds: dict[int, bytes] = {}  # v -> s_uv

    # -- public API ---------------------------------------------------------------------------

    def set_input(self, input_vector: object) -> None:
        """Give x_u (m integers in [0, p)); allowed until the masked input is sent."""
        if self.round not in (
            Round.ADVERTISE_KEYS,
            Round.SHARE_KEYS,
            Round.REPORT_BUNDLES,
            Round.MASKED_INPUT,
        ):
            raise LocalProtocolError(f"the input can no longer change in round {self.round.value}")
        try:
            self._input = as_field_vector(
                input_vector, self.config.vector_length, self.config.modulus, "input vector"
            )
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None

    def start(self) -> AdvertiseKeys:
        """Round 0 (AdvertiseKeys): fresh key pairs c and s, and a fresh self-mask seed b."""
        if self.round is not Round.ADVERTISE_KEYS:
            raise LocalProtocolError(f"start() called in round {self.round.value}")
        self._c_key = generate_private_key(self._random_bytes(32))
        # s_SK is Shamir-shared, so it must be a field element of the Shamir prime.
        self._s_key = generate_private_key(shamir.random_secret(self._random_bytes))
        self._self_mask_seed = shamir.random_secret(self._random_bytes)
        c_pk, s_pk = public_bytes(self._c_key), public_bytes(self._s_key)
        signature = None
        if self._identity_key is not None:
            payload = signatures.advertise_payload(self.setup.session_id, self.client_id, c_pk, s_pk)
            signature = signatures.sign(self._identity_key, payload)
        self.round = Round.SHARE_KEYS
        b_commitment = commitment.commit(self.setup.session_id, self.client_id, self._self_mask_seed)
        return AdvertiseKeys(self.client_id, c_pk, s_pk, signature, b_commitment)

    def receive(self, message: ServerMessage) -> ClientMessage:
        """Handle the server's message for the current round and return this client's reply.

        Raises ``AbortedError`` (and stays aborted) when the server broke the protocol;
        ``LocalProtocolError`` when called in a final state or before the input is set.
        """
        if self.round in (Round.DONE, Round.ABORTED, Round.ADVERTISE_KEYS):
            raise LocalProtocolError(f"receive() called in state {self.round.value}")
        expected = CLIENT_EXPECTS[self.round]
        if not isinstance(message, expected):
            self._abort(f"expected {expected.__name__}, got {type(message).__name__}")
        if message.recipient != self.client_id:
            self._abort(f"message addressed to client {message.recipient}")
        if self.round is Round.MASKED_INPUT and self._input is None:
            raise LocalProtocolError("set_input() must be called before the masked input round")
        handler = self._HANDLERS[self.round]
        try:
            reply = handler(self, message)
        except RemoteProtocolError as exc:
            self._abort(str(exc))
        self.round = next_round(self.round, self.config.is_active)
        return reply

    # -- rounds -------------------------------------------------------------------------------

    def _on_key_list(self, message: KeyList) -> ShareKeys:
        """Round 1 (ShareKeys): check U1 keys, Shamir-share s_SK and b, encrypt a bundle each."""
        keys = dict(message.keys)
        strangers = set(keys) - self._neighbours
        if strangers:
            self._abort(f"key list names clients that are not neighbours: {sorted(strangers)[:5]}")
        assert self._c_key is not None and self._s_key is not None
        own = [public_bytes(self._c_key), public_bytes(self._s_key)]
        every_key = own + [k for pk in keys.values() for k in (pk.c_pk, pk.s_pk)]
        if len({canonical_public_key(k) for k in every_key}) != len(every_key):
            self._abort("key list contains duplicated public keys")
        for v, pk in keys.items():
            if self.config.is_active:
                assert self.setup.roster is not None
                payload = signatures.advertise_payload(self.setup.session_id, v, pk.c_pk, pk.s_pk)
                if not signatures.verify(self.setup.roster[v], pk.signature, payload):
                    self._abort(f"invalid signature on the keys of client {v}")
        self._require_threshold(len(keys) + 1, "neighbours advertised keys")
        self._keys = keys
        # One X25519 exchange per key and neighbour; each also rejects a low-order key.
        for v in sorted(keys):
            self._channel_keys[v] = self._derive(v, KeyPurpose.SHARE_CHANNEL)
            self._mask_seeds[v] = self._derive(v, KeyPurpose.PAIRWISE_MASK)
        holders = set(keys) | {self.client_id}
        t = self.config.threshold
        sk_shares = shamir.share(self._s_key.private_bytes_raw(), t, holders, self._random_bytes)
        b_shares = shamir.share(self._self_mask_seed, t, holders, self._random_bytes)
        self._sk_shares[self.client_id] = sk_shares[self.client_id]
        self._b_shares[self.client_id] = b_shares[self.client_id]
        ciphertexts = {}
        for v in sorted(keys):
            plaintext = self.client_id.to_bytes(4, "big") + v.to_bytes(4, "big") + sk_shares[v] + b_shares[v]
            ciphertexts[v] = aead.encrypt(
                self._channel_keys[v],
                plaintext,
                session_id=self.setup.session_id,
                sender=self.client_id,
                recipient=v,
                round_index=Round.SHARE_KEYS.number,
            )
        return ShareKeys(self.client_id, ciphertexts)

    def _on_share_bundles(self, message: ShareBundles) -> BundleReport:
        """After round 1: open the bundles; report the senders whose bundle fails to open."""
        senders = set(message.ciphertexts)
        strangers = senders - set(self._keys)
        if strangers:
            self._abort(f"share bundles from clients not in U1 among neighbours: {sorted(strangers)[:5]}")
        self._require_threshold(len(senders) + 1, "neighbours shared keys (U2)")
        accused = set()
        for v in sorted(senders):
            shares = self._open_bundle(v, message.ciphertexts[v])
            if shares is None:
                accused.add(v)
                continue
            self._sk_shares[v], self._b_shares[v] = shares
        self._bundle_senders = frozenset(senders)
        self._accused = frozenset(accused)
        return BundleReport(self.client_id, self._accused)

    def _open_bundle(self, v: int, ciphertext: bytes) -> tuple[bytes, bytes] | None:
        """(share of s_v^SK, share of b_v) from v's bundle, or None if it is not a valid one."""
        try:
            plaintext = aead.decrypt(
                self._channel_keys[v],
                ciphertext,
                session_id=self.setup.session_id,
                sender=v,
                recipient=self.client_id,
                round_index=Round.SHARE_KEYS.number,
            )
        except RemoteProtocolError:
            return None
        if len(plaintext) != BUNDLE_PLAINTEXT_SIZE:
            return None
        if (int.from_bytes(plaintext[:4], "big"), int.from_bytes(plaintext[4:8], "big")) != (
            v,
            self.client_id,
        ):
            return None
        sk_share, b_share = plaintext[8:40], plaintext[40:72]
        for share in (sk_share, b_share):
            try:
                shamir.decode_element(share)
            except ValueError:
                return None
        return sk_share, b_share

    def _on_masking_request(self, message: MaskingRequest) -> MaskedInput:
        """Round 2 (MaskedInputCollection): mask x with b and s_uv for every U2 neighbour that is
        neither excluded from the round nor unpaired from this client; forget the shares of the
        excluded."""
        excluded, unpaired = message.excluded, message.unpaired
        unknown = (excluded | unpaired) - self._bundle_senders
        if unknown:
            self._abort(
                f"excluded or unpaired clients that sent this client no bundle: {sorted(unknown)[:5]}"
            )
        ignored = self._accused - excluded - unpaired
        if ignored:
            self._abort(f"the server kept pairs this client cut by accusing: {sorted(ignored)[:5]}")
        members = self._bundle_senders - excluded
        partners = members - unpaired
        self._require_threshold(len(partners) + 1, "neighbours left to mask with after exclusions")
        for v in excluded:
            self._sk_shares.pop(v, None)
            self._b_shares.pop(v, None)
        self._members_view = frozenset(members | {self.client_id})
        self._partners_view = frozenset(partners | {self.client_id})
        self._u2_view = frozenset((members - self._accused) | {self.client_id})
        return MaskedInput(self.client_id, self._masked_input(set(partners)))

    def _masked_input(self, neighbours_in_u2: set[int]) -> FieldVector:
        assert self._input is not None
        terms = [MaskTerm(self._self_mask_seed, MaskDomain.SELF, 1)]
        terms += [
            MaskTerm(self._mask_seeds[v], MaskDomain.PAIRWISE, pairwise_sign(self.client_id, v))
            for v in sorted(neighbours_in_u2)
        ]
        # The input is this client's own copy (``set_input`` copies) and is never needed again:
        # mask it in place instead of copying m elements once more.
        masked: FieldVector = self._input
        self._input = None
        apply_masks(masked, terms, self.config.modulus)
        return masked

    def _on_consistency_request(self, message: ConsistencyRequest) -> ConsistencySignature:
        """Round 3 (ConsistencyCheck, active mode): sign the server's U3."""
        self._check_survivors(message.survivors)
        assert self._identity_key is not None
        self._signed_survivors = message.survivors
        payload = signatures.consistency_payload(self.setup.session_id, message.survivors)
        return ConsistencySignature(self.client_id, signatures.sign(self._identity_key, payload))

    def _on_unmasking_request(self, message: UnmaskingRequest) -> UnmaskingShares:
        """Round 4 (Unmasking): b_v shares for survivors, s_v^SK shares for the dropped; never both."""
        survivors, dropped = message.survivors, message.dropped
        if self.config.is_active:
            if survivors != self._signed_survivors:
                self._abort("U3 differs from the set this client signed in round 3")
            self._check_consistency_signatures(message)
        elif message.signatures:
            self._abort("signatures sent in the semi-honest mode")
        overlap = survivors & dropped
        if overlap:
            self._abort(f"clients listed as both survived and dropped: {sorted(overlap)[:5]}")
        self._check_survivors(survivors)
        if not self.config.is_active and not survivors <= self._u2_view:  # active: the global U3
            self._abort(f"survivors that are not neighbours in U2: {sorted(survivors - self._u2_view)[:5]}")
        local_survivors = survivors & self._u2_view
        bad_dropped = dropped - (self._u2_view - {self.client_id})
        if bad_dropped:
            self._abort(f"dropped clients that are not neighbours in U2: {sorted(bad_dropped)[:5]}")
        unaccounted = self._u2_view - local_survivors - dropped
        if unaccounted:
            self._abort(f"neighbours in U2 neither survived nor dropped: {sorted(unaccounted)[:5]}")
        return UnmaskingShares(
            self.client_id,
            {v: self._b_shares[v] for v in sorted(local_survivors)},
            {v: self._sk_shares[v] for v in sorted(dropped)},
        )

    _HANDLERS: ClassVar[dict[Round, Callable[..., ClientMessage]]] = {
        Round.SHARE_KEYS: _on_key_list,
        Round.REPORT_BUNDLES: _on_share_bundles,
        Round.MASKED_INPUT: _on_masking_request,
        Round.CONSISTENCY_CHECK: _on_consistency_request,
        Round.UNMASKING: _on_unmasking_request,
    }

    # -- checks and helpers -------------------------------------------------------------------

    def _check_survivors(self, survivors: frozenset[int]) -> None:
        """U3 must contain this client, be within 1..n, and keep t of the neighbourhood it
        masked with (so an honest pair mask survives whatever the coalition learns)."""
        if self.client_id not in survivors:
            self._abort("this client is not in the server's U3")
        if max(survivors) > self.config.num_clients:
            self._abort("U3 names an unknown client id")
        closed = self._neighbours | {self.client_id}
        outsiders = (survivors & closed) - self._members_view
        if outsiders:
            self._abort(f"U3 names neighbours that were not in U2: {sorted(outsiders)[:5]}")
        self._require_threshold(len(survivors & self._partners_view), "neighbours it masked with in U3")

    def _check_consistency_signatures(self, message: UnmaskingRequest) -> None:
        sigs = message.signatures or {}
        outsiders = set(sigs) - set(message.survivors)
        if outsiders:
            self._abort(f"consistency signatures from clients not in U3: {sorted(outsiders)[:5]}")
        if len(sigs) < self.config.threshold:
            self._abort(f"only {len(sigs)} consistency signatures, threshold is {self.config.threshold}")
        assert self.setup.roster is not None
        payload = signatures.consistency_payload(self.setup.session_id, message.survivors)
        for v, sig in sigs.items():
            if not signatures.verify(self.setup.roster[v], sig, payload):
                self._abort(f"invalid consistency signature from client {v}")

    def _require_threshold(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            self._abort(f"only {count} {what} (including this client), threshold is {self.config.threshold}")

    def _derive(self, peer: int, purpose: KeyPurpose) -> bytes:
        own = self._c_key if purpose is KeyPurpose.SHARE_CHANNEL else self._s_key
        assert own is not None
        keys = self._keys[peer]
        return derive_key(
            own,
            keys.c_pk if purpose is KeyPurpose.SHARE_CHANNEL else keys.s_pk,
            purpose=purpose,
            session_id=self.setup.session_id,
            own_id=self.client_id,
            own_public=public_bytes(own),
            peer_id=peer,
        )

    def _abort(self, reason: str) -> NoReturn:
        failed_round = self.round
        self.round = Round.ABORTED
        raise AbortedError(failed_round.value, f"client {self.client_id}: {reason}")
