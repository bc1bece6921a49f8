"""Known answers for Shamir sharing (tests/data/shamir_kat.json).

The shares come from ``secagg.simulate.seeded_random_bytes``; the test also replays that stream
to recover the polynomial and evaluates it independently (power sum, not Horner) and
reconstructs with a textbook Lagrange formula, not the library's batch inversion.
"""

from __future__ import annotations

import pytest

from secagg.primitives import shamir
from secagg.simulate import seeded_random_bytes

from ._reference import SHAMIR_PRIME, lagrange_interpolate_at_zero, load_kat, poly_eval_mod

KAT = load_kat("shamir_kat.json")
CASES = KAT["cases"]
IDS = [c["name"] for c in CASES]


def _random_bytes(case: dict) -> shamir.RandomBytes:
    return seeded_random_bytes(case["random_seed"].encode(), case["random_label"])


def test_prime_is_pinned() -> None:
    assert int(KAT["prime"]) == shamir.PRIME == SHAMIR_PRIME


def test_random_secret_is_pinned() -> None:
    secret = shamir.random_secret(seeded_random_bytes(b"secagg-kat", "shamir/secret"))
    assert secret.hex() == KAT["random_secret_of_label_shamir/secret"]
    assert int.from_bytes(secret, "big") < SHAMIR_PRIME


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_seeded_stream_yields_the_kat_coefficients(case: dict) -> None:
    rb = _random_bytes(case)
    coefficients = []
    while len(coefficients) < case["threshold"] - 1:
        value = int.from_bytes(rb(32), "big")
        if value < SHAMIR_PRIME:
            coefficients.append(value)
    assert [c.to_bytes(32, "big").hex() for c in coefficients] == case["coefficients"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library_reproduces_kat_shares(case: dict) -> None:
    shares = shamir.share(
        bytes.fromhex(case["secret"]), case["threshold"], case["holders"], _random_bytes(case)
    )
    assert [[x, shares[x].hex()] for x in sorted(shares)] == case["shares"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kat_shares_are_the_polynomial_evaluated_independently(case: dict) -> None:
    polynomial = [int(case["secret"], 16)] + [int(c, 16) for c in case["coefficients"]]
    for x, share_hex in case["shares"]:
        assert poly_eval_mod(polynomial, x, SHAMIR_PRIME) == int(share_hex, 16)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kat_shares_reconstruct_from_every_listed_subset(case: dict) -> None:
    shares = {x: bytes.fromhex(h) for x, h in case["shares"]}
    secret = bytes.fromhex(case["secret"])
    for subset in case["reconstruct_from"]:
        assert len(subset) >= case["threshold"]
        chosen = {x: shares[x] for x in subset}
        assert shamir.reconstruct(chosen, case["threshold"]) == secret
        first_t = dict(sorted((x, int.from_bytes(s, "big")) for x, s in chosen.items())[: case["threshold"]])
        assert lagrange_interpolate_at_zero(first_t, SHAMIR_PRIME) == int.from_bytes(secret, "big")
