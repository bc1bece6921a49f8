"""The server's own peak memory for n clients, to show the sum is streamed (O(m), not O(n m)).

    python -m benchmarks.server_memory --clients 100 1000 --length 100000 \
        --collusion-fraction 0.05 --dropout-fraction 0.1      # the finder's Harary k and t

Clients are driven in the same process but do not count: the server's memory is its retained
state (deep size of the server object, including messages it keeps) plus what is allocated
during each server call (tracemalloc, started only around server calls), maximised over calls.
One masked input in flight (m * 8 bytes) is the caller's and is not counted.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tracemalloc
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np

from secagg import AbortedError, RoundSetup, SecAggClient, SecAggConfig, SecAggServer
from secagg.state import Round


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


def make_config(n: int, m: int, degree: int | None, gamma: float, delta: float) -> SecAggConfig:
    """Harary graph: ``degree`` with the smallest safe threshold, or (None) the finder's k and t."""
    if degree is None:
        return SecAggConfig(
            n, vector_length=m, graph="harary", collusion_fraction=gamma, dropout_fraction=delta
        )
    return SecAggConfig(n, vector_length=m, graph="harary", degree=degree, collusion_fraction=gamma)


def measure(config: SecAggConfig, dropout: float, seed: int) -> dict[str, Any]:
    """One round; returns the server's peak bytes and checks the sum.

    Driven generically (server.advance -> each client -> server.receive until the round is
    done). A client gets its input just before it builds its masked input (its ``round`` is
    ``MASKED_INPUT``) and drops it right after, so only one input is alive at a time; the
    ``dropout`` share of clients goes silent at that point.
    """
    n, m = config.num_clients, config.vector_length
    setup = RoundSetup(config, np.random.default_rng(seed).bytes(32))
    server = SecAggServer(setup, workers=1)
    meter = ServerMeter(server, {id(setup), id(setup.graph), id(config)})
    rng = np.random.default_rng(seed)
    dropped = set(rng.choice(np.arange(1, n + 1), round(dropout * n), replace=False).tolist())
    clients = {i: SecAggClient(setup, i) for i in range(1, n + 1)}
    expected = np.zeros(m, dtype=np.uint64)
    p = np.uint64(config.modulus)
    for client in clients.values():
        meter.call(functools.partial(server.receive, client.start()))
    while server.round is not Round.DONE:
        requests = meter.call(server.advance)
        for i, request in sorted(requests.items()):
            client = clients[i]
            masking = client.round is Round.MASKED_INPUT
            if masking:
                if i in dropped:
                    continue
                x = np.random.default_rng([seed, i]).integers(0, config.modulus, m, dtype=np.uint64)
                client.set_input(x)
                expected = (expected + x) % p
            try:
                reply = client.receive(request)
            except AbortedError:
                continue
            meter.call(functools.partial(server.receive, reply))
            if masking:
                client._input = None  # the client is done with x; keep only O(m) alive
    if server.result is None or not np.array_equal(server.result, expected):
        raise SystemExit("server-memory benchmark produced a wrong sum")
    return {
        "clients": n,
        "degree": config.degree,
        "threshold": config.threshold,
        "server_peak_bytes": meter.peak,
        "peak_in_round": meter.peak_round,
        "retained_state_bytes_at_peak": meter.peak_retained,
        "survivors": len(server.u3),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--length", type=int, default=100_000)
    ap.add_argument("--degree", type=int, default=None, help="default: the finder's k and t")
    ap.add_argument("--collusion-fraction", type=float, default=0.05)
    ap.add_argument("--dropout-fraction", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per n; the median peak is reported")
    args = ap.parse_args(argv)
    runs = []
    for n in args.clients:
        config = make_config(n, args.length, args.degree, args.collusion_fraction, args.dropout_fraction)
        trials = [measure(config, args.dropout, args.seed + i) for i in range(args.repeat)]
        peaks = sorted(t["server_peak_bytes"] for t in trials)
        median_trial = next(t for t in trials if t["server_peak_bytes"] == peaks[len(peaks) // 2])
        runs.append({**median_trial, "server_peak_bytes_runs": [t["server_peak_bytes"] for t in trials]})
    base = runs[0]["server_peak_bytes"]
    out = {
        "params": {
            "length": args.length,
            "graph": "harary",
            "degree": args.degree,
            "collusion_fraction": args.collusion_fraction,
            "dropout_fraction": args.dropout_fraction,
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
