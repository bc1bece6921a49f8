"""Drivers for the adversarial protocol tests (``test_dishonest_server``, ``test_bad_clients``).

``Federation`` builds one seeded round (setup, server, clients) and runs it round by round, so a
test can read, drop, replace or add any message in either direction before it is delivered:

    fed = Federation(config(5, 3))
    requests = fed.run_to(Round.UNMASKING)        # honest rounds up to the unmasking requests
    evil = dataclasses.replace(requests[1], ...)  # what a dishonest server sends instead
    assert_refuses(fed.clients[1], evil, Round.UNMASKING, honest=requests[1])

    fed = Federation(config(5, 3))
    fed.run_to(Round.MASKED_INPUT)
    fed.step(tamper=lambda replies: swap(replies, 2, bad_message))  # a misbehaving client 2
    fed.finish()
    fed.assert_exact()                             # sum over exactly U3, nothing partial

Everything is deterministic (``secagg.simulate.seeded_random_bytes``), so a failure reproduces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    AbortedError,
    LocalProtocolError,
    Round,
    RoundSetup,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
)
from secagg.messages import (
    BUNDLE_SIZE,
    ClientMessage,
    PublicKeys,
    ServerMessage,
    ShareBundles,
    ShareKeys,
    UnmaskingShares,
)
from secagg.primitives import aead, shamir, signatures
from secagg.primitives.field import DEFAULT_MODULUS, FieldVector
from secagg.session import NONCE_SIZE
from secagg.simulate import seeded_random_bytes
from secagg.state import PROTOCOL_ROUNDS, rounds_of

RandomBytes = Callable[[int], bytes]
Tamper = Callable[[dict[int, ClientMessage]], Iterable[object]]


def config(
    n: int,
    t: int,
    *,
    m: int = 8,
    graph: str = "complete",
    degree: int | None = None,
    mode: str = "semi_honest",
    modulus: int = DEFAULT_MODULUS,
    collusion_fraction: float | None = None,
) -> SecAggConfig:
    """A round config with the tests' small defaults.

    The toy Harary graphs here (n < 20) cannot be secure against a coalition of a third of all
    clients (``secagg.parameters``), so they assume no colluding client unless told otherwise:
    these tests exercise the protocol's mechanics, ``tests/primitives/test_parameters.py`` the
    parameter rules.
    """
    if collusion_fraction is None:
        collusion_fraction = 0.0 if graph == "harary" else 1 / 3
    return SecAggConfig(
        n,
        t,
        m,
        modulus=modulus,
        graph=graph,  # type: ignore[arg-type]
        degree=degree,
        mode=mode,
        collusion_fraction=collusion_fraction,
    )


class Federation:
    """One server and n honest clients of one seeded round, driven one round at a time.

    Attributes:
        requests: the server's messages for the clients' current round (after ``advance``).
        sent: round -> the replies the clients produced in that round (before any tampering).
        aborted: clients that refused a server message, with the error.
        silent: clients that stop answering (a test adds ids to make them drop out).
    """

    def __init__(
        self,
        cfg: SecAggConfig,
        *,
        seed: int | bytes = 0,
        nonce_label: str = "nonce",
        client_random: Mapping[int, RandomBytes] | None = None,
    ) -> None:
        self.config = cfg
        n, m, p = cfg.num_clients, cfg.vector_length, cfg.modulus
        self.identities: dict[int, Ed25519PrivateKey] = {}
        roster = None
        if cfg.is_active:
            self.identities = {
                i: signatures.generate_identity(seeded_random_bytes(seed, f"identity/{i}")(32))
                for i in range(1, n + 1)
            }
            roster = {i: signatures.identity_public_bytes(k) for i, k in self.identities.items()}
        self.setup = RoundSetup(cfg, seeded_random_bytes(seed, nonce_label)(NONCE_SIZE), roster)
        self.server = SecAggServer(self.setup)
        gen = np.random.default_rng(list(str(seed).encode()))
        self.inputs: dict[int, FieldVector] = {
            i: gen.integers(0, p, m, dtype=np.uint64, endpoint=False) for i in range(1, n + 1)
        }
        randoms = dict(client_random or {})
        self.clients = {
            i: SecAggClient(
                self.setup,
                i,
                self.inputs[i],
                random_bytes=randoms.get(i, seeded_random_bytes(seed, f"client/{i}")),
                identity_key=self.identities.get(i),
            )
            for i in range(1, n + 1)
        }
        self.requests: dict[int, ServerMessage] = {}
        self.sent: dict[Round, dict[int, ClientMessage]] = {}
        self.aborted: dict[int, AbortedError] = {}
        self.silent: set[int] = set()

    # -- driving --------------------------------------------------------------------------------

    def client_replies(self) -> dict[int, ClientMessage]:
        """Every live client handles its message for the server's current round (``start()`` in
        round 0) and returns its reply, not yet delivered. A client that refuses is recorded."""
        current = self.server.round
        ids = sorted(self.clients) if current is Round.ADVERTISE_KEYS else sorted(self.requests)
        replies: dict[int, ClientMessage] = {}
        for i in ids:
            if i in self.silent or i in self.aborted:
                continue
            client = self.clients[i]
            try:
                reply = (
                    client.start() if current is Round.ADVERTISE_KEYS else client.receive(self.requests[i])
                )
            except AbortedError as exc:
                self.aborted[i] = exc
                continue
            replies[i] = reply
        self.sent[current] = replies
        return replies

    def deliver(self, messages: Iterable[object]) -> None:
        """Feed messages to the server; ``receive`` must never raise, whatever it is given."""
        for message in messages:
            self.server.receive(message)

    def advance(self) -> dict[int, ServerMessage]:
        self.requests = self.server.advance()
        return self.requests

    def step(self, tamper: Tamper | None = None) -> dict[int, ServerMessage]:
        """One round: the clients reply, ``tamper(replies)`` (default: all of them, in id order)
        says what actually reaches the server, and the server advances."""
        replies = self.client_replies()
        self.deliver(list(replies.values()) if tamper is None else tamper(replies))
        return self.advance()

    def run_to(self, target: Round) -> dict[int, ServerMessage]:
        """Honest rounds until the clients are about to handle the server's message of ``target``."""
        order = rounds_of(self.config.is_active)
        assert target in order, f"{target} is not a round of this mode"
        while self.server.round is not target:
            self.step()
        return self.requests

    def finish(self, tamper: Mapping[Round, Tamper] | None = None) -> FieldVector:
        """Run the remaining rounds (tampering where asked) and return the released sum."""
        while self.server.round is not Round.DONE:
            self.step((tamper or {}).get(self.server.round))
        assert self.server.result is not None
        return self.server.result

    # -- expectations ---------------------------------------------------------------------------

    def expected_sum(self, ids: Iterable[int] | None = None) -> FieldVector:
        """numpy's sum mod p of the inputs of ``ids`` (default: the server's U3), exactly."""
        ids = self.server.survivors if ids is None else ids
        total = np.zeros(self.config.vector_length, dtype=object)
        for i in ids:
            total = total + self.inputs[i].astype(object)
        return np.array([int(x) % self.config.modulus for x in total], dtype=np.uint64)

    def assert_exact(self) -> None:
        """The released sum is the sum over exactly U3, and U3 has at least t clients."""
        assert self.server.round is Round.DONE and self.server.result is not None
        assert len(self.server.survivors) >= self.config.threshold
        assert np.array_equal(self.server.result, self.expected_sum())

    def public_keys(self, i: int) -> PublicKeys:
        """The keys client i advertised in round 0, as the server forwards them."""
        adv = self.sent[Round.ADVERTISE_KEYS][i]
        return PublicKeys(adv.c_pk, adv.s_pk, adv.signature)  # type: ignore[union-attr]

    def revealed(self) -> dict[int, set[int]]:
        """Client -> the owners whose shares (of b or of s_SK) it sent in the unmasking round."""
        out: dict[int, set[int]] = {}
        for u, reply in self.sent.get(Round.UNMASKING, {}).items():
            assert isinstance(reply, UnmaskingShares)
            out[u] = set(reply.self_mask_shares) | set(reply.secret_key_shares)
        return out


# -- the reference model: what the rules say must happen, computed without the protocol --------


class Graph(Protocol):
    def neighbours(self, client_id: int) -> frozenset[int]: ...


@dataclass(frozen=True)
class Outcome:
    """What ``reference_round`` says happens. ``survivors`` is U3 (also when a later round aborts)."""

    aborted: bool
    survivors: frozenset[int]
    abort_round: str | None = None
    excluded: frozenset[int] = frozenset()  # removed in the report round
    refused: frozenset[int] = frozenset()  # honest clients whose own checks make them abort
    u2: frozenset[int] = frozenset()  # after the exclusions
    u5: frozenset[int] = frozenset()
    accusers: Mapping[int, frozenset[int]] = field(default_factory=dict)  # counted accusations
    cut: frozenset[frozenset[int]] = frozenset()  # pairs {u, v} that never mask with each other
    graph: Graph | None = None

    def partners(self, u: int) -> frozenset[int]:
        """u's neighbours in U2 (after exclusions) it masks with: no accusation either way."""
        assert self.graph is not None
        return frozenset(v for v in self.graph.neighbours(u) & self.u2 if frozenset((u, v)) not in self.cut)

    def b_holders(self, u: int) -> frozenset[int]:
        """The U5 clients that reveal a share of b_u: u's closed neighbourhood but its accusers."""
        assert self.graph is not None
        return ((self.graph.neighbours(u) | {u}) & self.u5) - self.accusers.get(u, frozenset())

    def sk_holders(self, v: int) -> frozenset[int]:
        """The U5 clients that reveal a share of s_v^SK (v in U2 minus U3): its non-accusing neighbours."""
        assert self.graph is not None
        return (self.graph.neighbours(v) & self.u5) - self.accusers.get(v, frozenset())


def reference_round(
    config: SecAggConfig,
    graph: Graph,
    drop: Mapping[str, Iterable[int]] | None = None,
    accusations: Mapping[int, Iterable[int]] | None = None,
) -> Outcome:
    """The rules of DESIGN.md section 3 and issue 8, written down without calling the protocol.

    ``drop[round]``: clients silent from that round on (a round the mode skips: from the next).
    ``accusations[u]``: the U2 neighbours u reports in the report round (counted if u reports).

    - Rounds 0, 1, report: a client refuses when fewer than t of its closed neighbourhood sent
      keys (U1) or bundles (U2).
    - Report round: an accusation cuts the pair; a client is excluded when it and its
      non-accusing neighbours still in the round number fewer than t, or, if it reported, when
      it and the neighbours still in the round it masks with (pair not cut) number fewer than t;
      applied until nothing changes (both counts only shrink, so the order does not matter).
    - Masking and later: a client refuses when fewer than t of the clients it masks with
      (itself included) are in U3. b_u is rebuilt from the U5 clients in its closed
      neighbourhood that did not accuse it; s_v^SK of a U2 client missing from U3 that a U3
      client masked with, from its non-accusing neighbours in U5. Fewer than t: abort.
    """
    n, t = config.num_clients, config.threshold
    names = [r.value for r in PROTOCOL_ROUNDS]
    drops = {name: set(ids) for name, ids in (drop or {}).items()}
    refused: set[int] = set()

    def silent_from(name: str) -> set[int]:
        out: set[int] = set()
        for earlier in names[: names.index(name) + 1]:
            out |= drops.get(earlier, set())
        return out

    def closed(u: int) -> frozenset[int]:
        return graph.neighbours(u) | {u}

    def keep(clients: set[int], ok: Callable[[int], bool]) -> frozenset[int]:
        refused.update(u for u in clients if not ok(u))
        return frozenset(u for u in clients if ok(u))

    def abort(at: str, u3: frozenset[int] = frozenset()) -> Outcome:
        return Outcome(True, u3, at, refused=frozenset(refused), graph=graph)

    u1 = frozenset(range(1, n + 1)) - silent_from("advertise_keys")
    if len(u1) < t:
        return abort("advertise_keys")
    u2 = keep(set(u1) - silent_from("share_keys"), lambda u: len(closed(u) & u1) >= t)
    if len(u2) < t:
        return abort("share_keys")
    reported = keep(set(u2) - silent_from("report_bundles"), lambda u: len(closed(u) & u2) >= t)
    if len(reported) < t:
        return abort("report_bundles")
    accusers: dict[int, set[int]] = {}
    cut = set()
    for u, accused in (accusations or {}).items():
        if u not in reported:
            continue
        for v in accused:
            if v not in graph.neighbours(u) & u2:
                raise ValueError(f"client {u} cannot accuse {v}: not a U2 neighbour")
            accusers.setdefault(v, set()).add(u)
            cut.add(frozenset((u, v)))
    members, live = set(u2), set(reported)

    def masks_with(u: int, pool: set[int]) -> set[int]:
        return {v for v in graph.neighbours(u) & pool if frozenset((u, v)) not in cut}

    while True:
        out = {
            v
            for v in members
            if 1 + len((graph.neighbours(v) & members) - accusers.get(v, set())) < t
            or (v in live and 1 + len(masks_with(v, members)) < t)
        }
        if not out:
            break
        members -= out
        live -= out
    excluded = u2 - members
    if len(live) < t:
        return dataclasses.replace(abort("report_bundles"), excluded=excluded)
    model = Outcome(
        False,
        frozenset(),
        excluded=excluded,
        u2=frozenset(members),
        accusers={v: frozenset(us) for v, us in accusers.items()},
        cut=frozenset(cut),
        graph=graph,
    )

    def enough_in(pool: frozenset[int]) -> Callable[[int], bool]:
        return lambda u: len((model.partners(u) | {u}) & pool) >= t

    u3 = keep(live - silent_from("masked_input"), lambda u: 1 + len(model.partners(u)) >= t)
    if len(u3) < t:
        return abort("masked_input")
    asked = set(u3)
    if config.is_active:
        asked = set(keep(asked - silent_from("consistency_check"), enough_in(u3)))
        if len(asked) < t:
            return abort("consistency_check", u3)
    u5 = keep(asked - silent_from("unmasking"), enough_in(u3))
    if len(u5) < t:
        return abort("unmasking", u3)
    model = dataclasses.replace(model, survivors=u3, refused=frozenset(refused), u5=u5)
    short = [u for u in u3 if len(model.b_holders(u)) < t]
    short += [v for v in model.u2 - u3 if model.partners(v) & u3 and len(model.sk_holders(v)) < t]
    if short:
        return dataclasses.replace(model, aborted=True, abort_round="unmasking")
    return model


# -- message surgery ---------------------------------------------------------------------------


def swap(replies: Mapping[int, ClientMessage], sender: int, *messages: object) -> list[object]:
    """The replies in id order, with ``sender``'s reply replaced by ``messages`` (none: silent)."""
    out: list[object] = []
    for i, reply in sorted(replies.items()):
        out.extend(messages if i == sender else (reply,))
    return out


def accuse_falsely(fed: Federation, accuser: int, accused: Iterable[int]) -> None:
    """Before the report round: ``accuser`` (a malicious client) discards the bundles of
    ``accused`` as if they failed to open, so its own code reports them and keeps no share of
    them (consistent from then on, unlike a report edited on the wire)."""
    request = fed.requests[accuser]
    assert isinstance(request, ShareBundles), f"not the report round: {type(request).__name__}"
    junk = seeded_random_bytes(accuser, "discarded bundle")
    ciphertexts = dict(request.ciphertexts)
    for v in accused:
        ciphertexts[v] = junk(BUNDLE_SIZE)
    fed.requests = {**fed.requests, accuser: ShareBundles(accuser, ciphertexts)}


def _bundle_channel(fed: Federation, sender: int, recipient: int) -> tuple[bytes, dict[str, Any]]:
    # A malicious dealer knows its own channel keys: the test reads them from its client object.
    key = fed.clients[sender]._channel_keys[recipient]
    where = {
        "session_id": fed.setup.session_id,
        "sender": sender,
        "recipient": recipient,
        "round_index": Round.SHARE_KEYS.number,
    }
    return key, where


def open_bundle(fed: Federation, sender: int, recipient: int, ciphertext: bytes) -> tuple[bytes, bytes]:
    """(share of s_SK, share of b) in ``sender``'s bundle to ``recipient``, as the dealer sees it."""
    key, where = _bundle_channel(fed, sender, recipient)
    plaintext = aead.decrypt(key, ciphertext, **where)
    return plaintext[8:40], plaintext[40:72]


def seal_bundle(fed: Federation, sender: int, recipient: int, sk_share: bytes, b_share: bytes) -> bytes:
    """A bundle that opens, sealed by ``sender`` with shares of its choice (a malicious dealer)."""
    key, where = _bundle_channel(fed, sender, recipient)
    plaintext = sender.to_bytes(4, "big") + recipient.to_bytes(4, "big") + sk_share + b_share
    return aead.encrypt(key, plaintext, **where)


def shifted(share: bytes, by: int = 1) -> bytes:
    """Another share in range: ``share + by`` mod the Shamir prime (a wrong but valid share)."""
    return shamir.encode_element((shamir.decode_element(share) + by) % shamir.PRIME)


def _error(holder: int) -> int:
    # Pseudo-random, so the wrong shares lie on no low-degree polynomial through the secret (a
    # shift by the holder's id would: f(x) + x, the framing case tested on its own).
    return 1 + int.from_bytes(seeded_random_bytes(holder, "wrong share")(32), "big") % (shamir.PRIME - 1)


def deal_wrong_shares(
    fed: Federation, reply: ShareKeys, *, wrong_b: Iterable[int] = (), wrong_sk: Iterable[int] = ()
) -> ShareKeys:
    """``reply`` re-sealed with a wrong (in-range, off by a pseudo-random amount) share of b for
    the holders ``wrong_b`` and of s_SK for ``wrong_sk``: every bundle still opens, so no
    recipient can tell."""
    wrong_b, wrong_sk = set(wrong_b), set(wrong_sk)
    ciphertexts = dict(reply.ciphertexts)
    for v in sorted(wrong_b | wrong_sk):
        sk_share, b_share = open_bundle(fed, reply.sender, v, ciphertexts[v])
        ciphertexts[v] = seal_bundle(
            fed,
            reply.sender,
            v,
            shifted(sk_share, _error(v)) if v in wrong_sk else sk_share,
            shifted(b_share, _error(v)) if v in wrong_b else b_share,
        )
    return ShareKeys(reply.sender, ciphertexts)


def forge(cls: type, **fields: Any) -> Any:
    """An instance of a message class that skips its own validation, as a buggy or hostile peer
    library might hand it over: the server must check what it depends on anyway."""
    obj: Any = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    return obj


def assert_refuses(
    client: SecAggClient,
    message: object,
    at: Round,
    *,
    honest: object,
    reason: str | None = None,
) -> AbortedError:
    """``client`` aborts on ``message``: ``AbortedError`` naming round ``at`` (and ``reason``),
    state ``ABORTED``, and afterwards it answers nothing, not even the ``honest`` message."""
    with pytest.raises(AbortedError) as info:
        client.receive(message)  # type: ignore[arg-type]
    error = info.value
    assert error.round == at.value
    assert client.round is Round.ABORTED
    if reason is not None:
        assert reason in error.reason, error.reason
    with pytest.raises(LocalProtocolError):
        client.receive(honest)  # type: ignore[arg-type]
    assert client.round is Round.ABORTED
    return error


# -- X25519 small-order points -----------------------------------------------------------------

_P25519 = 2**255 - 19
_A24 = 121665


def x25519_ladder(scalar: int, u_bytes: bytes) -> int:
    """RFC 7748 Montgomery ladder with an unclamped scalar (a reference for the tests only)."""
    u = int.from_bytes(u_bytes, "little") & ((1 << 255) - 1)
    p = _P25519
    x1, x2, z2, x3, z3, swap_bit = u, 1, 0, u, 1, 0
    for t in reversed(range(scalar.bit_length())):
        k_t = (scalar >> t) & 1
        swap_bit ^= k_t
        if swap_bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap_bit = k_t
        a, b = (x2 + z2) % p, (x2 - z2) % p
        aa, bb = a * a % p, b * b % p
        e = (aa - bb) % p
        c, d = (x3 + z3) % p, (x3 - z3) % p
        da, cb = d * a % p, c * b % p
        x3, z3 = (da + cb) ** 2 % p, x1 * (da - cb) ** 2 % p
        x2, z2 = aa * bb % p, e * (aa + _A24 * e) % p
    if swap_bit:
        x2, z2 = x3, z3
    return x2 * pow(z2, p - 2, p) % p


def _le(value: int) -> bytes:
    return value.to_bytes(32, "little")


_CANONICAL_SMALL_ORDER = {
    "zero (order 4)": bytes(32),
    "one (order 1)": _le(1),
    "order 8 (a)": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "order 8 (b)": bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    "p-1 (order 2)": _le(_P25519 - 1),
    "p (= zero)": _le(_P25519),
    "p+1 (= one)": _le(_P25519 + 1),
}
SMALL_ORDER_POINTS: dict[str, bytes] = {
    **_CANONICAL_SMALL_ORDER,
    # RFC 7748 ignores the top bit, so each point has a second encoding with it set.
    **{
        f"{name}, top bit set": bytes([*key[:31], key[31] | 0x80])
        for name, key in _CANONICAL_SMALL_ORDER.items()
    },
}
"""Every 32-byte encoding of a point of order 1, 2, 4 or 8 on Curve25519 (libsodium's list)."""
