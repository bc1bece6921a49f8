"""secagg.primitives.shamir: t-of-n sharing over GF(2**256 - 189)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.primitives import shamir
from secagg.simulate import seeded_random_bytes

from ._reference import SHAMIR_PRIME, is_prime, lagrange_interpolate_at_zero, poly_eval_mod


def _rb(label: str) -> shamir.RandomBytes:
    return seeded_random_bytes(b"test-shamir", label)


def test_prime() -> None:
    assert shamir.PRIME == 2**256 - 189
    assert is_prime(shamir.PRIME)
    assert not any(is_prime(2**256 - c) for c in range(1, 189))  # the largest prime below 2**256
    assert shamir.SHARE_SIZE == shamir.SECRET_SIZE == 32


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 7), data=st.data())
def test_any_t_of_n_reconstruct(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    holders = data.draw(st.lists(st.integers(1, 2**20), min_size=n, max_size=n, unique=True))
    secret = shamir.random_secret(_rb(f"secret/{n}/{t}/{holders}"))
    shares = shamir.share(secret, t, holders, _rb(f"share/{n}/{t}/{holders}"))
    assert sorted(shares) == sorted(holders)
    assert all(len(s) == 32 and int.from_bytes(s, "big") < shamir.PRIME for s in shares.values())
    for size in range(t, n + 1):
        for subset in itertools.combinations(sorted(holders), size):
            assert shamir.reconstruct({x: shares[x] for x in subset}, t) == secret


def test_fewer_than_t_shares_give_a_wrong_secret() -> None:
    secret = shamir.random_secret(_rb("secret"))
    shares = shamir.share(secret, 4, range(1, 8), _rb("t-1"))
    for subset in itertools.combinations(range(1, 8), 3):
        # interpolating t-1 points gives the wrong constant term
        chosen = {x: shares[x] for x in subset}
        assert shamir.reconstruct(chosen, 3) != secret
        with pytest.raises(ValueError, match="need 4 shares"):
            shamir.reconstruct(chosen, 4)


def test_t_minus_1_shares_of_different_secrets_can_be_identical() -> None:
    """Perfect secrecy, constructively: for any t-1 shares of secret A there is a polynomial for
    secret B with the same t-1 shares (choose its coefficients by interpolation). Feeding share()
    random bytes that encode that polynomial shows it is one of the ones share() draws."""
    t, holders = 3, [1, 2, 3, 4, 5]
    a, b = shamir.encode_element(11), shamir.encode_element(2**255 + 7)
    shares_a = shamir.share(a, t, holders, _rb("secrecy"))
    # f_b(x) = b + c1 x + c2 x^2 through (1, s1), (2, s2): solve the 2x2 system mod P.
    p = shamir.PRIME
    y1 = (int.from_bytes(shares_a[1], "big") - 2**255 - 7) % p
    y2 = (int.from_bytes(shares_a[2], "big") - 2**255 - 7) % p
    c2 = (y2 - 2 * y1) * pow(2, -1, p) % p  # y1 = c1 + c2, y2 = 2 c1 + 4 c2
    c1 = (y1 - c2) % p
    stream = iter([c1.to_bytes(32, "big"), c2.to_bytes(32, "big")])
    shares_b = shamir.share(b, t, holders, lambda n: next(stream))
    assert shares_b[1] == shares_a[1] and shares_b[2] == shares_a[2]
    assert shamir.reconstruct(shares_a, t) == a and shamir.reconstruct(shares_b, t) == b


def test_single_share_distribution_does_not_depend_on_the_secret() -> None:
    """t = 2: the share of holder 1 is secret + a1 with a1 uniform, so it is uniform whatever the
    secret. On 4000 samples per secret, its top 3 bits are spread the same way (chi-square, 7
    degrees of freedom, limit 30: P about 1e-4 for a uniform source) for secret 0 and secret P-1."""
    for secret in (bytes(32), shamir.encode_element(shamir.PRIME - 1)):
        rb = _rb(f"distribution/{secret.hex()}")
        counts = Counter(
            int.from_bytes(shamir.share(secret, 2, [1, 2], rb)[1], "big") >> 253 for _ in range(4000)
        )
        expected = 4000 / 8
        chi2 = sum((counts[i] - expected) ** 2 / expected for i in range(8))
        assert chi2 < 30, (secret.hex(), counts)


def test_threshold_one_shares_are_the_secret() -> None:
    secret = shamir.random_secret(_rb("t1"))
    assert set(shamir.share(secret, 1, [1, 2, 3], _rb("t1-share")).values()) == {secret}


def test_lagrange_coefficients_are_cached_per_holder_set() -> None:
    holders = (5, 9, 13, 77)
    shamir.lagrange_at_zero.cache_clear()
    secrets = [shamir.random_secret(_rb(f"cache/{i}")) for i in range(5)]
    for i, secret in enumerate(secrets):
        shares = shamir.share(secret, 4, holders, _rb(f"cache-share/{i}"))
        assert shamir.reconstruct(shares, 4) == secret
    info = shamir.lagrange_at_zero.cache_info()
    assert info.misses == 1 and info.hits == len(secrets) - 1
    assert shamir.lagrange_at_zero(holders) is shamir.lagrange_at_zero(holders)
    # and the coefficients are right: f(0) = sum l_i f(x_i) for f(x) = 1 + x + ... (any f, deg < 4)
    coefficients = shamir.lagrange_at_zero(holders)
    f = {x: (7 + 3 * x + 5 * x**2 + x**3) % SHAMIR_PRIME for x in holders}
    assert sum(c * f[x] for c, x in zip(coefficients, holders, strict=True)) % SHAMIR_PRIME == 7
    assert lagrange_interpolate_at_zero(f, SHAMIR_PRIME) == 7


def test_reconstruct_uses_the_t_lowest_holders() -> None:
    secret = shamir.random_secret(_rb("lowest"))
    shares = shamir.share(secret, 2, [1, 2, 3], _rb("lowest-share"))
    shares[3] = bytes(32)  # a wrong share that is not among the 2 lowest ids is ignored
    assert shamir.reconstruct(shares, 2) == secret
    shares[1] = bytes(32)  # a wrong share that is used gives a wrong secret, not an error
    assert shamir.reconstruct(shares, 2) != secret


GOOD = shamir.share(shamir.encode_element(5), 2, [1, 2], _rb("malformed"))


@pytest.mark.parametrize(
    "bad",
    [
        shamir.encode_element(shamir.PRIME - 1)[:-1],
        shamir.encode_element(shamir.PRIME - 1) + b"\x00",
        b"",
        shamir.PRIME.to_bytes(32, "big"),
        (2**256 - 1).to_bytes(32, "big"),
        bytearray(32),
        "0" * 32,
    ],
    ids=["31-bytes", "33-bytes", "empty", "equal-P", "max-32-bytes", "bytearray", "str"],
)
def test_malformed_shares_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"32 bytes|below the Shamir prime"):
        shamir.reconstruct({1: GOOD[1], 2: bad}, 2)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        shamir.decode_element(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        shamir.share(bad, 1, [1], _rb("bad-secret"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("threshold", "holders"), [(0, [1, 2, 3]), (4, [1, 2, 3]), (-1, [1]), (1, [])])
def test_share_threshold_bounds(threshold: int, holders: list[int]) -> None:
    with pytest.raises(ValueError, match="threshold"):
        shamir.share(bytes(32), threshold, holders, _rb("bounds"))


@pytest.mark.parametrize("holders", [[0, 1, 2], [-3, 1], [1, shamir.PRIME]])
def test_share_holder_ids_must_be_nonzero_field_elements(holders: list[int]) -> None:
    """x = 0 would hand out the secret itself."""
    with pytest.raises(ValueError, match="holder ids"):
        shamir.share(bytes(32), 2, holders, _rb("ids"))


def test_duplicate_holders_count_once() -> None:
    shares = shamir.share(bytes(32), 2, [1, 2, 2, 1], _rb("dup"))
    assert sorted(shares) == [1, 2]
    with pytest.raises(ValueError, match="threshold"):
        shamir.share(bytes(32), 3, [1, 2, 2], _rb("dup"))


def test_lagrange_rejects_repeated_ids() -> None:
    with pytest.raises(ValueError, match="distinct"):
        shamir.lagrange_at_zero((1, 2, 1))


def test_random_secret_is_redrawn_until_below_p() -> None:
    stream = iter([b"\xff" * 32, shamir.PRIME.to_bytes(32, "big"), (shamir.PRIME - 1).to_bytes(32, "big")])
    assert shamir.random_secret(lambda n: next(stream)) == (shamir.PRIME - 1).to_bytes(32, "big")


@pytest.mark.parametrize("threshold", [0, -1])
def test_reconstruct_rejects_threshold_below_one(threshold: int) -> None:
    """With threshold 0 reconstruct() returns 32 zero bytes, with -1 it silently interpolates
    all but the last share (sorted(shares)[:-1]); both return a wrong secret without an error."""
    shares = shamir.share(shamir.encode_element(5), 2, [1, 2, 3], _rb("t0"))
    with pytest.raises(ValueError, match="threshold"):
        shamir.reconstruct(shares, threshold)


# -- decoding around wrong shares (Berlekamp-Welch) ---------------------------------------------


def _corrupted(shares: dict[int, bytes], holders: list[int], shifts: list[int]) -> dict[int, bytes]:
    """The shares with those holders' values moved by a non-zero amount (still in range)."""
    out = dict(shares)
    for x, shift in zip(holders, shifts, strict=True):
        out[x] = shamir.encode_element((shamir.decode_element(out[x]) + shift) % shamir.PRIME)
    return out


@st.composite
def noisy_shares(
    draw: st.DrawFn, beyond: bool = False, random_shifts: bool = False
) -> tuple[bytes, dict[int, bytes], int, set[int], int]:
    """(secret, shares, t, the holders whose share is wrong, error budget (N - t) // 2).

    ``beyond``: more wrong shares than the budget (at least one more), else at most the budget.
    ``random_shifts``: the wrong shares move by independent uniform amounts (else hypothesis
    picks them, e.g. all the same, which keeps them on one polynomial)."""
    t = draw(st.integers(1, 5))
    n = draw(st.integers(t + (1 if beyond else 0), t + 8))
    holders = draw(st.lists(st.integers(1, 2**20), min_size=n, max_size=n, unique=True))
    budget = (n - t) // 2
    count = draw(st.integers(budget + 1, n) if beyond else st.integers(0, budget))
    wrong = draw(st.lists(st.sampled_from(holders), min_size=count, max_size=count, unique=True))
    label = f"{t}/{holders}"
    if random_shifts:
        rb = _rb(f"bw-shifts/{label}/{wrong}")
        shifts = [1 + shamir.decode_element(shamir.random_secret(rb)) % (shamir.PRIME - 1) for _ in wrong]
    else:
        shifts = draw(st.lists(st.integers(1, shamir.PRIME - 1), min_size=count, max_size=count))
    secret = shamir.random_secret(_rb(f"bw-secret/{label}"))
    shares = shamir.share(secret, t, holders, _rb(f"bw-share/{label}"))
    return secret, _corrupted(shares, wrong, shifts), t, set(wrong), budget


@settings(max_examples=150, deadline=None)
@given(case=noisy_shares(), data=st.data())
def test_decode_with_errors_corrects_up_to_half_the_spare_shares_and_names_them(
    case: tuple[bytes, dict[int, bytes], int, set[int], int], data: st.DataObject
) -> None:
    """N shares of a degree < t polynomial, w <= (N - t) // 2 of them wrong: with any error budget
    e in [w, (N - t) // 2] the decoder returns the secret and exactly the wrong holders."""
    secret, shares, t, wrong, budget = case
    e = data.draw(st.integers(len(wrong), budget))
    decoded = shamir.decode_with_errors(shares, t, e)
    assert decoded == (secret, frozenset(wrong))


@settings(max_examples=100, deadline=None)
@given(case=noisy_shares(beyond=True, random_shifts=True))
def test_decode_with_errors_returns_none_beyond_its_budget(
    case: tuple[bytes, dict[int, bytes], int, set[int], int],
) -> None:
    """More than (N - t) // 2 wrong shares, moved at random: no polynomial of degree < t is that
    close to them (but for a chance of about N^t / P), so the decoder finds none and says so."""
    _, shares, t, _, budget = case
    assert shamir.decode_with_errors(shares, t, budget) is None


@settings(max_examples=150, deadline=None)
@given(case=noisy_shares(beyond=True))
def test_decode_with_errors_beyond_its_budget_never_claims_a_polynomial_that_is_not_there(
    case: tuple[bytes, dict[int, bytes], int, set[int], int],
) -> None:
    """Whatever the wrong shares (hypothesis may line them up on another polynomial): the answer
    is None, or a secret and at most e holders such that every other share lies on one
    polynomial of degree < t with that secret (checked by textbook interpolation)."""
    secret, shares, t, _, budget = case
    decoded = shamir.decode_with_errors(shares, t, budget)
    if decoded is None:
        return
    claimed, named = decoded
    assert len(named) <= budget and claimed != secret  # the true f disagrees with > e shares
    rest = {x: shamir.decode_element(y) for x, y in sorted(shares.items()) if x not in named}
    base = dict(list(rest.items())[: t - 1])
    for x, y in rest.items():
        if x not in base:
            constant = lagrange_interpolate_at_zero({**base, x: y}, SHAMIR_PRIME)
            assert shamir.encode_element(constant) == claimed


def test_decode_with_errors_can_be_fooled_by_wrong_shares_on_another_polynomial() -> None:
    """Why the server checks every decoded secret against a commitment: e + 1 wrong shares that
    lie on another polynomial g (which agrees with t - 1 right ones) make g the closest
    polynomial, and the decoder returns g's secret and names e honest holders."""
    t, e = 3, 2
    holders = list(range(1, t + 2 * e + 1))  # N = t + 2e = 7
    f = [11, 22, 33]
    # g - f vanishes at the two holders 1 and 2 (t - 1 = 2): g = f + (x - 1)(x - 2).
    g = [(11 + 2) % SHAMIR_PRIME, (22 - 3) % SHAMIR_PRIME, 33 + 1]
    right = {x: poly_eval_mod(f, x, SHAMIR_PRIME) for x in holders}
    liars = [3, 4, 5]  # e + 1 = 3 shares moved onto g
    values = {x: poly_eval_mod(g, x, SHAMIR_PRIME) if x in liars else right[x] for x in holders}
    shares = {x: shamir.encode_element(y) for x, y in values.items()}
    decoded = shamir.decode_with_errors(shares, t, e)
    assert decoded == (shamir.encode_element(g[0]), frozenset({6, 7}))
    assert decoded[0] != shamir.encode_element(f[0])


def test_decode_with_errors_without_budget_accepts_only_consistent_shares() -> None:
    secret = shamir.random_secret(_rb("bw-e0"))
    shares = shamir.share(secret, 3, range(1, 6), _rb("bw-e0-share"))
    assert shamir.decode_with_errors(shares, 3, 0) == (secret, frozenset())
    assert shamir.decode_with_errors(_corrupted(shares, [4], [1]), 3, 0) is None
    # e = 0 with exactly t shares: any t points lie on one polynomial; nothing can be checked.
    three = {x: shares[x] for x in (1, 2, 3)}
    assert shamir.decode_with_errors(_corrupted(three, [2], [5]), 3, 0) is not None


@pytest.mark.parametrize(("count", "errors"), [(4, 1), (6, 2), (3, -1), (2, 0)])
def test_decode_with_errors_needs_t_plus_2e_shares(count: int, errors: int) -> None:
    shares = shamir.share(bytes(32), 3, range(1, count + 1), _rb("bw-few")) if count >= 3 else {}
    if count < 3:
        shares = {1: bytes(32), 2: bytes(32)}
    with pytest.raises(ValueError, match="cannot correct"):
        shamir.decode_with_errors(shares, 3, errors)
