"""A real websocket round at scale on loopback: wall time per phase; prints one JSON object.

    python -m benchmarks.websocket_scale --clients 1000 --length 1000 --graph complete
    python -m benchmarks.websocket_scale --clients 5000 --length 1000 --graph harary --gamma 0.05 --delta 0.1

With ``--graph harary`` and no ``--degree``, the degree and threshold come from the parameter
finder for n, gamma (collusion fraction) and delta (dropout fraction); the clients accept a
round assuming gamma (their ``min_collusion_fraction``).

The server and every client run in this process (clients as asyncio tasks, each with its own
websocket connection to 127.0.0.1), which is the hardest case for keepalive: every party's SecAgg
work competes for one interpreter. The run fails (exit 1) when any client is cut off (for
instance with 1011, keepalive ping timeout) or the secure mean differs from the plaintext mean
of the survivors by more than the quantization bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from fedavg_core import ClientUpdate, PlaintextAggregator
from transport.client import FederationClient
from transport.records import ServerEvent
from transport.server import FederationServer, FederationSettings
from transport.tasks import TrainingSettings

from .common import peak_rss_mib


class _Fixed:
    """A client whose training returns a fixed update (so the expected mean is known)."""

    def __init__(self, update: np.ndarray, examples: int) -> None:
        self.update, self.examples = update, examples

    @property
    def dimension(self) -> int:
        return int(self.update.shape[0])

    def train(self, vector: np.ndarray, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        return ClientUpdate(self.update.copy(), self.examples)


class _Zero:
    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    def initial_vector(self) -> np.ndarray:
        return np.zeros(self.dimension)

    def evaluate(self, vector: np.ndarray) -> float | None:
        return None


async def _watch_loop(start: float, lags: list[tuple[float, float]], period: float = 0.5) -> None:
    """Record how late the event loop wakes from ``period``-second sleeps."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(period)
        late = time.perf_counter() - before - period
        lags.append((before - start, late))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    n, dimension = args.clients, args.length - 1
    rng = np.random.default_rng(args.seed)
    trainers = {i: _Fixed(rng.uniform(-1, 1, dimension), int(rng.integers(20, 201))) for i in range(1, n + 1)}
    settings = FederationSettings(
        num_clients=n,
        rounds=1,
        graph=args.graph,
        degree=args.degree,
        collusion_fraction=args.gamma,
        dropout_fraction=args.delta,
        clip=1.0,
        max_weight=256,
        phase_timeout=args.timeout,
        train_timeout=args.timeout,
        wait_timeout=args.timeout,
        hello_timeout=args.timeout,
    )
    marks: dict[str, float] = {}  # phase -> perf_counter when it started

    def on_event(event: ServerEvent) -> None:
        if event.kind in ("phase", "round_start", "round_end"):
            marks.setdefault(event.phase or event.kind, time.perf_counter())

    server = FederationServer(_Zero(dimension), settings, on_event=on_event)
    await server.start("127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.port}"
    clients = [
        FederationClient(i, t, url, give_up_after=args.timeout, min_collusion_fraction=args.gamma)
        for i, t in trainers.items()
    ]
    start = time.perf_counter()
    lags: list[tuple[float, float]] = []  # (seconds since start, how late the loop woke up)
    monitor = asyncio.create_task(_watch_loop(start, lags))
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        reports = await server.run()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), args.timeout)
    finally:
        monitor.cancel()
        for task in tasks:
            task.cancel()
        await server.stop()
    wall = time.perf_counter() - start
    report = reports[0]
    ok = report.status == "completed" and not report.dropped
    max_diff = None
    if report.status == "completed":
        updates = [ClientUpdate(trainers[i].update, trainers[i].examples) for i in report.survivors]
        plain = PlaintextAggregator(settings.clip, settings.max_weight).aggregate(updates, rng).mean_update
        max_diff = float(np.max(np.abs(server.vector - plain)))
        ok = ok and report.error_bound is not None and max_diff <= report.error_bound
    return {
        "benchmark": "websocket_scale",
        "clients": n,
        "vector_length": args.length,
        "graph": server.config.graph,
        "gamma": args.gamma,
        "delta": args.delta,
        "degree": server.config.degree if server.config.graph == "harary" else n - 1,
        "threshold": server.config.threshold,
        "status": report.status,
        "reason": report.reason,
        "survivors": len(report.survivors),
        "dropped": len(report.dropped),
        "drop_codes": sorted({d.close_code for d in report.dropped if d.close_code is not None}),
        "drops_per_phase": dict(Counter(d.phase for d in report.dropped)),
        # The event loop (server and every client) overslept by this much at worst; a websocket
        # is cut off with 1011 when its pong waits more than ping_timeout (20 s).
        "started_at": {name: round(at - start, 1) for name, at in marks.items()},
        "max_loop_lag_seconds": round(max((lag for _, lag in lags), default=0.0), 2),
        "loop_lag_over_10s_at": [round(at, 1) for at, lag in lags if lag > 10][:20],
        "seconds_per_phase": report.seconds,
        "wall_seconds": round(wall, 2),
        "bytes_up": report.bytes_up,
        "bytes_down": report.bytes_down,
        "max_abs_diff": max_diff,
        "error_bound": report.error_bound,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--length", type=int, default=1000, help="field elements per client (m)")
    parser.add_argument("--graph", choices=("complete", "harary"), default="complete")
    parser.add_argument("--degree", type=int, help="harary degree (default: the config's rule)")
    parser.add_argument("--gamma", type=float, default=1 / 3, help="collusion fraction (threat model)")
    parser.add_argument("--delta", type=float, default=0.1, help="dropout fraction (threat model)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
