"""The server's own peak memory for n clients, to show the sum is streamed (O(m), not O(n m)).

    python -m benchmarks.server_memory --clients 100 1000 --length 100000 --degree 20

Clients are driven in the same process but do not count: the server's memory is its retained
state (deep size of the server object, including messages it keeps) plus what is allocated
during each server call (tracemalloc, started only around server calls), maximised over calls.
One masked input in flight (m * 8 bytes) is the caller's and is not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np

from secagg import AbortedError, RoundSetup, SecAggClient, SecAggConfig, SecAggServer
from secagg.state import PROTOCOL_ROUNDS, Round


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and everything it references (numpy arrays by their buffers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return sys.getsizeof(obj) + (obj.nbytes if obj.base is None else 0)
    size = sys.getsizeof(obj)
    if isinstance(obj, (dict, MappingProxyType)):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(v, seen) for v in obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        size += deep_size(vars(obj), seen)
    elif hasattr(obj, "__slots__"):
        size += sum(deep_size(getattr(obj, s), seen) for s in obj.__slots__ if hasattr(obj, s))
    return size


class ServerMeter:
    """Wraps server calls: tracks max(retained state before the call + allocations during it)."""

    def __init__(self, server: SecAggServer, shared: set[int]) -> None:
        self.server = server
        self.shared = shared  # ids of objects the clients own too (the setup): not the server's
        self.peak = 0
        self.peak_round = ""
        self.peak_retained = 0

    def call(self, fn: Callable[[], Any]) -> Any:
        before = deep_size(self.server, set(self.shared))
        tracemalloc.start()
        try:
            return fn()
        finally:
            _, during = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            if before + during > self.peak:
                self.peak = before + during
                self.peak_round = self.server.round.value
                self.peak_retained = before


def measure(n: int, m: int, degree: int, dropout: float, seed: int) -> dict[str, Any]:
    """One round with n clients; returns the server's peak bytes and checks the sum."""
    t = SecAggConfig(n, degree + 1, m, graph="harary", degree=degree).minimum_safe_threshold()
    config = SecAggConfig(n, t, m, graph="harary", degree=degree)
    setup = RoundSetup(config, np.random.default_rng(seed).bytes(32))
    server = SecAggServer(setup, workers=1)
    meter = ServerMeter(server, {id(setup), id(setup.graph), id(config)})
    rng = np.random.default_rng(seed)
    dropped = set(rng.choice(np.arange(1, n + 1), round(dropout * n), replace=False).tolist())
    clients: dict[int, SecAggClient] = {}
    expected = np.zeros(m, dtype=np.uint64)
    p = np.uint64(config.modulus)
    requests: dict[int, Any] = {}
    for current in PROTOCOL_ROUNDS:
        if current is Round.CONSISTENCY_CHECK:
            continue
        for i in sorted(range(1, n + 1) if current is Round.ADVERTISE_KEYS else requests):
            if current is Round.MASKED_INPUT and i in dropped:
                continue
            if current is Round.ADVERTISE_KEYS:
                clients[i] = SecAggClient(setup, i)
                reply = clients[i].start()
            else:
                if current is Round.MASKED_INPUT:
                    x = np.random.default_rng([seed, i]).integers(0, config.modulus, m, dtype=np.uint64)
                    clients[i].set_input(x)
                    expected = (expected + x) % p
                try:
                    reply = clients[i].receive(requests[i])
                except AbortedError:
                    continue
            meter.call(lambda r=reply: server.receive(r))
            if current is Round.MASKED_INPUT:
                clients[i]._input = None  # the client is done with x; keep only O(m) alive
        requests = meter.call(server.advance)
    if not np.array_equal(server.result, expected):
        raise SystemExit("server-memory benchmark produced a wrong sum")
    return {
        "clients": n,
        "threshold": t,
        "server_peak_bytes": meter.peak,
        "peak_in_round": meter.peak_round,
        "retained_state_bytes_at_peak": meter.peak_retained,
        "survivors": len(server.u3),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--length", type=int, default=100_000)
    ap.add_argument("--degree", type=int, default=20)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per n; the median peak is reported")
    args = ap.parse_args(argv)
    runs = []
    for n in args.clients:
        trials = [
            measure(n, args.length, args.degree, args.dropout, args.seed + i) for i in range(args.repeat)
        ]
        peaks = sorted(t["server_peak_bytes"] for t in trials)
        median_trial = next(t for t in trials if t["server_peak_bytes"] == peaks[len(peaks) // 2])
        runs.append({**median_trial, "server_peak_bytes_runs": [t["server_peak_bytes"] for t in trials]})
    base = runs[0]["server_peak_bytes"]
    out = {
        "params": {
            "length": args.length,
            "graph": "harary",
            "degree": args.degree,
            "dropout": args.dropout,
            "repeat": args.repeat,
        },
        "runs": runs,
        "vector_bytes_m_times_8": args.length * 8,
        "growth_vs_first": [r["server_peak_bytes"] / base - 1 for r in runs],
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
