"""Sound SecAgg+ parameters from the threat model: the degree k and threshold t of a round.

The maths follows Google's fcp ``graph_parameter_finder`` (Bell et al., CCS 2020, section 4),
written here in exact log-space arithmetic. Over the uniformly random labelling of the Harary
graph, with a coalition of ``floor(gamma*n)`` clients (colluding with the server) and
``floor(delta*n)`` dropouts anywhere among the n clients:

- security (2^-41 each, 2^-40 together, union bound over the n clients):
  (1) no client has ``t - 1`` or more corrupt neighbours. The number of corrupt neighbours of a
  client is hypergeometric (k draws from the n - 1 other clients, ``floor(gamma*n)`` of them
  corrupt). fcp asks "fewer than t"; we ask one more, the SecAgg+ analogue of the complete
  graph's ``t >= floor(gamma*n) + 2``: any t holders of a client's shares that answer the server
  (the client itself among them) then include an honest neighbour, so an adversary that *chooses*
  which honest clients drop out (or gets them excluded by false accusations) still cannot leave
  one honest input alone with the coalition's;
  (2) the honest survivors stay connected: the Harary graph falls apart only when k/2
  consecutive clients on the ring fail in two places (fcp's bound on "gap pairs").
  In the active mode (fcp's semi-malicious server) also ``2t > k + 1 + c`` with c the largest
  number of corrupt neighbours allowed by (1): the honest holders of one client's shares cannot
  be split into two groups that each complete t shares of a different secret of that client.
- correctness (2^-20): every client keeps at least t surviving neighbours, so every b_u and every
  dropped client's s_SK can be reconstructed (hypergeometric again).

``find_parameters`` returns the smallest even k (and the smallest t for it) that meets all three,
or the complete graph when no k < n - 1 does; ``assess_harary`` computes the three probabilities
for given k and t, which ``SecAggConfig`` uses to refuse unsafe explicit values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

SECURITY_BITS = 40  # statistical security: both bad events together at most 2^-40
CORRECTNESS_BITS = 20  # a round fails for lack of shares with probability at most 2^-20
_LOG_SECURITY_PER_EVENT = -(SECURITY_BITS + 1) * math.log(2)
_LOG_CORRECTNESS = -CORRECTNESS_BITS * math.log(2)
_SMALL = 1e-12  # guards floor(gamma*n) against 0.3*10 = 2.9999999999999996
MAX_CLIENTS = 1 << 20  # as SecAggConfig; fcp stops at 10^6 for no fundamental reason
_FINDER_WINDOW = 15.0


def corrupt_count(num_clients: int, collusion_fraction: float) -> int:
    """The coalition's size, floor(gamma * n)."""
    return min(num_clients, math.floor((collusion_fraction + _SMALL) * num_clients))


def dropout_count(num_clients: int, dropout_fraction: float) -> int:
    """The dropouts the parameters are sized for, floor(delta * n)."""
    return min(num_clients, math.floor((dropout_fraction + _SMALL) * num_clients))


def check_threat_model(collusion_fraction: float, dropout_fraction: float, active: bool) -> None:
    """Refuse fractions outside [0, 1) and infeasible combinations (fcp's limits)."""
    for name, value in (("collusion_fraction", collusion_fraction), ("dropout_fraction", dropout_fraction)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if active and collusion_fraction + 2 * dropout_fraction > 0.9:
        raise ValueError(
            f"infeasible threat model for the active mode: gamma + 2*delta must be <= 0.9, "
            f"got gamma={collusion_fraction:.4g}, delta={dropout_fraction:.4g}"
        )
    if not active and collusion_fraction + dropout_fraction > 0.9:
        raise ValueError(
            f"infeasible threat model: gamma + delta must be <= 0.9, "
            f"got gamma={collusion_fraction:.4g}, delta={dropout_fraction:.4g}"
        )


# -- the hypergeometric distribution, in log space ----------------------------------------------


class _Hypergeometric:
    """Draws ``draws`` of ``population`` items, ``marked`` of them marked; X = marked drawn.

    ``window``: keep only mean +- window standard deviations of the support. The mass left out is
    below e^-(window^2/2)-ish (Hoeffding), far under the 2^-61 the finder compares against, so the
    finder uses a window of 15 for speed at large k; exact probabilities are computed without one.
    """

    def __init__(self, population: int, marked: int, draws: int, window: float | None = None) -> None:
        if not (0 <= marked <= population and 0 <= draws <= population):
            raise ValueError(f"bad hypergeometric parameters N={population}, K={marked}, n={draws}")
        self.low = max(0, draws - (population - marked))
        self.high = min(marked, draws)
        if window is not None and population > 1:
            mean = draws * marked / population
            spread = window * math.sqrt(draws * (marked / population) * (1 - marked / population)) + 2
            self.low = max(self.low, math.floor(mean - spread))
            self.high = min(self.high, math.ceil(mean + spread))
        x = np.arange(self.low, self.high, dtype=np.float64)
        # log pmf(low) exactly, then the ratio pmf(x+1)/pmf(x), accumulated in log space.
        first = (
            _log_choose(marked, self.low)
            + _log_choose(population - marked, draws - self.low)
            - _log_choose(population, draws)
        )
        ratios = np.log((marked - x) * (draws - x)) - np.log((x + 1) * (population - marked - draws + x + 1))
        self._log_pmf = np.concatenate(([first], first + np.cumsum(ratios)))
        self._exact = window is None

    @cached_property
    def _log_upper(self) -> np.ndarray:
        """log P(X >= x) over the support."""
        return self._cumulative(self._log_pmf[::-1])[::-1]

    @cached_property
    def _log_lower(self) -> np.ndarray:
        """log P(X <= x) over the support."""
        return self._cumulative(self._log_pmf)

    def _cumulative(self, log_pmf: np.ndarray) -> np.ndarray:
        """log of the running sums of exp(log_pmf).

        Exact: ``logaddexp.accumulate``. Finder (windowed): scaled by the largest term and summed
        in linear space, 20x faster; a running sum below e^-700 of the largest term comes out as
        -inf, which only ever compares as "small enough" against bounds near 2^-61."""
        if self._exact:
            return np.logaddexp.accumulate(log_pmf)
        top = float(log_pmf.max())
        with np.errstate(divide="ignore"):
            sums: np.ndarray = top + np.log(np.cumsum(np.exp(log_pmf - top)))
        return sums

    def log_upper_tail(self, value: int) -> float:
        """log P(X >= value)."""
        if value <= self.low:
            return 0.0
        if value > self.high:
            return -math.inf
        return min(0.0, float(self._log_upper[value - self.low]))

    def log_lower_tail(self, value: int) -> float:
        """log P(X <= value)."""
        if value >= self.high:
            return 0.0
        if value < self.low:
            return -math.inf
        return min(0.0, float(self._log_lower[value - self.low]))

    def smallest_upper(self, log_bound: float) -> int:
        """The smallest a with log P(X >= a) <= log_bound."""
        over = np.nonzero(self._log_upper > log_bound)[0]
        return self.low if over.size == 0 else self.low + int(over[-1]) + 1

    def largest_lower(self, log_bound: float) -> int:
        """The largest b with log P(X < b) <= log_bound (so X >= b except with that probability)."""
        return self.low + int(np.count_nonzero(self._log_lower[:-1] <= log_bound))


def _log_choose(n: int, k: int) -> float:
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


# -- the three events ---------------------------------------------------------------------------


def _log_disconnected(n: int, k: int, failed: int) -> float:
    """log of fcp's union bound on the honest survivors' Harary graph falling apart.

    Removing nodes disconnects a Harary graph of degree k only when k/2 consecutive nodes fail in
    two places: n (n - k - 1) / 2 such pairs of gaps, each failing (all k of its nodes among the
    ``failed`` corrupt or dropped clients) with probability failed! (n-k)! / (n! (failed-k)!).
    """
    if k > failed or n - k - 1 <= 0:
        return -math.inf
    pairs = math.log(n) + math.log(n - k - 1) - math.log(2)
    return (
        pairs
        + math.lgamma(failed + 1)
        + math.lgamma(n - k + 1)
        - math.lgamma(n + 1)
        - math.lgamma(failed - k + 1)
    )


@dataclass(frozen=True)
class GraphParameters:
    """A round's neighbour graph and threshold, with the probabilities that justify them.

    ``log2_*`` are log2 of union bounds over the n clients (``-inf`` when impossible):
    ``log2_security``: some client has ``threshold - 1`` or more corrupt neighbours (<= -41);
    ``log2_disconnection``: the honest survivors' graph falls apart (<= -41);
    ``log2_correctness``: some client keeps fewer than ``threshold`` surviving neighbours (<= -20).
    For the complete graph the rules are deterministic and the first two are ``-inf``.
    """

    num_clients: int
    graph: str  # "harary" or "complete"
    degree: int
    threshold: int
    collusion_fraction: float
    dropout_fraction: float
    active: bool
    log2_security: float
    log2_disconnection: float
    log2_correctness: float

    @property
    def secure(self) -> bool:
        """Both security events within 2^-41 (2^-40 together)."""
        bound = -(SECURITY_BITS + 1)
        return self.log2_security <= bound and self.log2_disconnection <= bound

    @property
    def correct(self) -> bool:
        """Rounds fail for lack of shares with probability at most 2^-20."""
        return self.log2_correctness <= -CORRECTNESS_BITS

    def describe(self) -> str:
        """One line with the numbers, for error messages and logs."""
        return (
            f"{self.graph} graph n={self.num_clients}, k={self.degree}, t={self.threshold}, "
            f"gamma={self.collusion_fraction:.4g}, delta={self.dropout_fraction:.4g}: "
            f"P(some client has >= {self.threshold - 1} corrupt neighbours) <= {_fmt(self.log2_security)}, "
            f"P(honest survivors disconnected) <= {_fmt(self.log2_disconnection)}, "
            f"P(some client keeps < {self.threshold} surviving neighbours) <= {_fmt(self.log2_correctness)}"
        )


def _fmt(log2_p: float) -> str:
    if log2_p == -math.inf:
        return "0"
    if log2_p >= -0.01:
        return "1 (2^0)"
    return f"2^{log2_p:.1f}"


def _to_log2(log_p: float) -> float:
    return min(0.0, log_p / math.log(2))


def _minimum_threshold(max_corrupt_neighbours: int, k: int, active: bool) -> int:
    """t - 1 must exceed the corrupt neighbours; active mode: 2t > k + 1 + corrupt."""
    t = max(2, max_corrupt_neighbours + 2)
    if active:
        t = max(t, (k + 1 + max_corrupt_neighbours) // 2 + 1)
    return t


def assess_harary(
    num_clients: int,
    degree: int,
    threshold: int,
    collusion_fraction: float,
    dropout_fraction: float,
    active: bool = False,
) -> GraphParameters:
    """The three probabilities of a Harary graph of degree k with threshold t (module docstring)."""
    n, k, t = num_clients, degree, threshold
    corrupt = corrupt_count(n, collusion_fraction)
    dropped = dropout_count(n, dropout_fraction)
    corrupt_neighbours = _Hypergeometric(n - 1, min(corrupt, n - 1), k)
    surviving_neighbours = _Hypergeometric(n - 1, n - 1 - min(dropped, n - 1), k)
    log_n = math.log(n)
    log_security = log_n + corrupt_neighbours.log_upper_tail(t - 1)
    if active:
        # 2t > k + 1 + c must hold for every c the bad event allows: c <= 2t - k - 2.
        log_security = max(log_security, log_n + corrupt_neighbours.log_upper_tail(2 * t - k - 1))
    log_correct = log_n + surviving_neighbours.log_lower_tail(t - 1)
    return GraphParameters(
        num_clients=n,
        graph="harary",
        degree=k,
        threshold=t,
        collusion_fraction=float(collusion_fraction),
        dropout_fraction=float(dropout_fraction),
        active=active,
        log2_security=_to_log2(log_security),
        log2_disconnection=_to_log2(_log_disconnected(n, k, min(n, corrupt + dropped))),
        log2_correctness=_to_log2(log_correct),
    )


def harary_threshold(num_clients: int, degree: int, collusion_fraction: float, active: bool = False) -> int:
    """The smallest threshold whose security events stay within 2^-41 for a Harary degree k."""
    n = num_clients
    log_bound = _LOG_SECURITY_PER_EVENT - math.log(n)
    corrupt = min(corrupt_count(n, collusion_fraction), n - 1)
    a = _Hypergeometric(n - 1, corrupt, degree).smallest_upper(log_bound)
    return _minimum_threshold(a - 1, degree, active)


def complete_threshold(num_clients: int, collusion_fraction: float, active: bool = False) -> int:
    """The smallest safe threshold over the complete graph.

    Semi-honest: t > gamma*n and t >= floor(gamma*n) + 2 (two honest inputs in any sum);
    active: also t > (1 + gamma) * n / 2 (Bonawitz et al. 2017, section 6).
    """
    n, corrupt = num_clients, corrupt_count(num_clients, collusion_fraction)
    t = corrupt + 2
    if active:
        t = max(t, math.floor((1 + collusion_fraction) * n / 2 + _SMALL) + 1)
    return t


def assess_complete(
    num_clients: int,
    threshold: int,
    collusion_fraction: float,
    dropout_fraction: float,
    active: bool = False,
) -> GraphParameters:
    """The complete graph's deterministic rules, in the same shape as ``assess_harary``."""
    n, t = num_clients, threshold
    safe = t >= complete_threshold(n, collusion_fraction, active)
    survivors = n - dropout_count(n, dropout_fraction)
    return GraphParameters(
        num_clients=n,
        graph="complete",
        degree=n - 1,
        threshold=t,
        collusion_fraction=float(collusion_fraction),
        dropout_fraction=float(dropout_fraction),
        active=active,
        log2_security=-math.inf if safe else 0.0,
        log2_disconnection=-math.inf,
        log2_correctness=-math.inf if survivors >= t else 0.0,
    )


def _harary_for_degree(
    n: int, k: int, corrupt: int, dropped: int, active: bool, window: float | None = _FINDER_WINDOW
) -> int | None:
    """The smallest threshold that makes degree k secure and correct, or None."""
    if _log_disconnected(n, k, min(n, corrupt + dropped)) > _LOG_SECURITY_PER_EVENT:
        return None
    log_bound = _LOG_SECURITY_PER_EVENT - math.log(n)
    a = _Hypergeometric(n - 1, min(corrupt, n - 1), k, window).smallest_upper(log_bound)  # corrupt < a
    t = _minimum_threshold(a - 1, k, active)
    surviving = _Hypergeometric(n - 1, n - 1 - min(dropped, n - 1), k, window)
    best = surviving.largest_lower(_LOG_CORRECTNESS - math.log(n))  # survivors >= best whp
    return t if t <= min(best, k) else None


def find_parameters(
    num_clients: int,
    collusion_fraction: float = 1 / 3,
    dropout_fraction: float = 0.1,
    mode: str = "semi_honest",
) -> GraphParameters:
    """The smallest even Harary degree k, and its threshold t, for n clients under the threat model.

    Args:
        num_clients: n, the round's clients (2 .. 10^6).
        collusion_fraction: gamma, the fraction of all n clients that may collude with the server.
        dropout_fraction: delta, the fraction expected to drop out during the round.
        mode: ``"semi_honest"`` (fcp's curious server) or ``"active"`` (fcp's semi-malicious).

    Returns the complete graph (k = n - 1, its smallest safe t) when no k < n - 1 works.
    Raises ``ValueError`` for infeasible inputs (gamma + delta > 0.9; active: gamma + 2 delta > 0.9)
    or when not even the complete graph can be both safe and correct.
    """
    if mode not in ("semi_honest", "active"):
        raise ValueError(f"mode must be 'semi_honest' or 'active', got {mode!r}")
    active = mode == "active"
    n = num_clients
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= MAX_CLIENTS:
        raise ValueError(f"num_clients must be an int in [2, {MAX_CLIENTS}], got {n!r}")
    check_threat_model(collusion_fraction, dropout_fraction, active)
    corrupt, dropped = corrupt_count(n, collusion_fraction), dropout_count(n, dropout_fraction)
    for k in range(2, n - 1, 2):
        # The window only drops tail mass, so it never refuses a degree the exact test accepts;
        # what it accepts is confirmed over the whole support.
        t = _harary_for_degree(n, k, corrupt, dropped, active)
        if t is not None:
            t = _harary_for_degree(n, k, corrupt, dropped, active, window=None)
        if t is not None:
            return assess_harary(n, k, t, collusion_fraction, dropout_fraction, active)
    t = complete_threshold(n, collusion_fraction, active)
    result = assess_complete(n, t, collusion_fraction, dropout_fraction, active)
    if t > n or not result.correct:
        raise ValueError(
            f"no parameters for n={n}, gamma={collusion_fraction:.4g}, delta={dropout_fraction:.4g}: "
            f"even the complete graph needs t >= {t}, but only {n - dropped} clients are expected "
            f"to survive"
        )
    return result
