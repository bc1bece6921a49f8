"""What secure aggregation costs a real websocket round: the same federation with SecAgg and with
the INSECURE plaintext debugging path, on loopback, in one run; prints one JSON object.

    python -m benchmarks.websocket_round --clients 20 --lengths 1000000,10000000 --rounds 3 --repeats 2

For each vector length m (model of m - 1 parameters plus the weight element) and each mode, the
server and the n clients run in this process (clients as asyncio tasks with their own websocket
to 127.0.0.1; their SecAgg work in worker threads) for ``--rounds`` FedAvg rounds, ``--repeats``
times per mode (alternating which mode goes first). Reported per mode: the median wall time of a
round (round start to round end, as the server sees it: sending the global model, the clients'
training and encoding, the protocol, the model update), its phases, and the bytes on the wire;
then secure / plaintext. Clients return fixed updates, so training costs nothing, and every
round's mean is checked against the exact weighted mean (exit 1 if off).

With every client in one process on a small machine, the n clients' masking (each expands
(k + 1) AES-CTR masks of m elements) runs one after another on the same cores; on a real
deployment each client masks on its own device. ``secagg_in_memory`` times the same SecAgg round
without sockets (``secagg.simulate``), per party, to say how much of the secure round's extra time
is the n clients' work that a deployment would spread over n devices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import numpy as np

from fedavg_core import ClientUpdate, encode_weighted_update
from secagg import SecAggConfig
from secagg.simulate import simulate
from transport.client import FederationClient
from transport.records import ServerEvent
from transport.server import FederationServer, FederationSettings
from transport.tasks import TrainingSettings

from .common import median, peak_rss_mib

MAX_WEIGHT = 256


class _Rolled:
    """A client whose update is a shared random vector rotated by a per-client offset (distinct
    updates without n copies of an m-vector in memory)."""

    def __init__(self, base: np.ndarray, shift: int, examples: int) -> None:
        self.base, self.shift, self.examples = base, shift, examples

    @property
    def dimension(self) -> int:
        return int(self.base.shape[0])

    def update(self) -> np.ndarray:
        return np.roll(self.base, self.shift)

    def train(self, vector: np.ndarray, settings: TrainingSettings, round_number: int) -> ClientUpdate:
        return ClientUpdate(self.update(), self.examples)


class _Zero:
    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    def initial_vector(self) -> np.ndarray:
        return np.zeros(self.dimension)

    def evaluate(self, vector: np.ndarray) -> float | None:
        return None


def _expected_mean(trainers: dict[int, _Rolled], ids: list[int]) -> np.ndarray:
    total = np.zeros(next(iter(trainers.values())).dimension)
    weight = 0
    for i in ids:
        w = min(trainers[i].examples, MAX_WEIGHT)
        total += w * np.clip(trainers[i].update(), -1.0, 1.0)
        weight += w
    out: np.ndarray = total / weight
    return out


async def _federation(mode: str, args: argparse.Namespace, length: int) -> dict[str, Any]:
    n, dimension = args.clients, length - 1
    rng = np.random.default_rng(args.seed)
    base = rng.uniform(-1, 1, dimension)
    trainers = {i: _Rolled(base, 7 * i, int(rng.integers(20, 201))) for i in range(1, n + 1)}
    plaintext = mode == "plaintext"
    settings = FederationSettings(
        num_clients=n,
        rounds=args.rounds,
        graph=args.graph,
        collusion_fraction=args.gamma,
        dropout_fraction=args.delta,
        clip=1.0,
        max_weight=MAX_WEIGHT,
        insecure_plaintext=plaintext,
        phase_timeout=args.timeout,
        train_timeout=args.timeout,
        wait_timeout=args.timeout,
        hello_timeout=args.timeout,
    )
    starts: dict[int, float] = {}
    walls: dict[int, float] = {}

    def on_event(event: ServerEvent) -> None:
        if event.kind == "round_start":
            starts[event.round] = time.perf_counter()
        elif event.kind == "round_end" and event.round in starts:
            walls[event.round] = time.perf_counter() - starts[event.round]

    server = FederationServer(_Zero(dimension), settings, on_event=on_event)
    await server.start("127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.port}"
    clients = [
        FederationClient(i, t, url, give_up_after=args.timeout, allow_insecure_plaintext=plaintext)
        for i, t in trainers.items()
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        reports = await server.run()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), args.timeout)
    finally:
        for task in tasks:
            task.cancel()
        await server.stop()
    ok = all(r.status == "completed" and not r.dropped for r in reports) and len(walls) == len(reports)
    max_diff = None
    if reports and all(r.status == "completed" for r in reports):
        # Every round adds the same mean (fixed updates, server learning rate 1).
        expected = len(reports) * _expected_mean(trainers, reports[0].survivors)
        max_diff = float(np.max(np.abs(server.vector - expected)))
        bound = sum(r.error_bound or 0.0 for r in reports)
        ok = ok and max_diff <= bound
    config = server.config
    return {
        "aggregation": reports[0].aggregation if reports else mode,
        "graph": config.graph,
        "degree": config.degree if config.graph == "harary" else n - 1,
        "threshold": config.threshold,
        "walls": [walls[r.round] for r in reports if r.round in walls],
        "seconds": [r.seconds for r in reports],
        "bytes_up": [r.bytes_up for r in reports],
        "bytes_down": [r.bytes_down for r in reports],
        "statuses": [r.status for r in reports],
        "dropped": sum(len(r.dropped) for r in reports),
        "max_abs_diff": max_diff,
        "ok": ok,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one mode, pooled: medians over all their rounds."""
    walls = [w for run in runs for w in run["walls"]]
    seconds = [s for run in runs for s in run["seconds"]]
    phases = sorted({p for s in seconds for p in s})
    first = runs[0]
    return {
        **{k: first[k] for k in ("aggregation", "graph", "degree", "threshold")},
        "round_wall_seconds": [round(w, 3) for w in walls],
        "median_round_wall_seconds": round(median(walls), 3),
        # Seconds from the previous phase's close to this one's (training is in the first).
        "median_phase_seconds": {p: round(median(s[p] for s in seconds if p in s), 3) for p in phases},
        "median_bytes_up": int(median(b for run in runs for b in run["bytes_up"])),
        "median_bytes_down": int(median(b for run in runs for b in run["bytes_down"])),
        "statuses": [s for run in runs for s in run["statuses"]],
        "dropped": sum(run["dropped"] for run in runs),
        "max_abs_diff": max((run["max_abs_diff"] or 0.0) for run in runs),
        "ok": all(run["ok"] for run in runs),
    }


def _secagg_work(args: argparse.Namespace, length: int) -> dict[str, Any]:
    """The SecAgg compute of the same round in memory (``secagg.simulate``, no sockets), timed
    per party: what one client and the server spend (key agreement, sharing, and mostly the
    AES-CTR masks)."""
    settings = FederationSettings(
        num_clients=args.clients,
        rounds=1,
        graph=args.graph,
        collusion_fraction=args.gamma,
        dropout_fraction=args.delta,
        clip=1.0,
        max_weight=MAX_WEIGHT,
    )
    config: SecAggConfig = settings.secagg_config(length - 1)
    quant = settings.quantization(args.clients)
    rng = np.random.default_rng(args.seed)
    vector = encode_weighted_update(rng.uniform(-1, 1, length - 1), 100, quant, rng)
    inputs = dict.fromkeys(range(1, args.clients + 1), vector)
    result = simulate(config, inputs, timer=time.perf_counter, workers=None)
    per_client = [
        sum(rounds.get(i, 0.0) for rounds in result.client_seconds.values())
        for i in range(1, args.clients + 1)
    ]
    masks = config.neighbourhood_size  # k pairwise masks and the self mask
    return {
        "one_client_secagg_seconds": round(median(per_client), 3),
        "all_clients_secagg_seconds": round(sum(per_client), 3),
        "server_secagg_seconds": round(sum(result.server_seconds.values()), 3),
        "server_seconds_per_round": {k: round(v, 3) for k, v in result.server_seconds.items()},
        "masks_per_client": masks,
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for length in args.lengths:
        row: dict[str, Any] = {"vector_length": length}
        runs: dict[str, list[dict[str, Any]]] = {"secure": [], "plaintext": []}
        for repeat in range(args.repeats):
            # Alternate which mode goes first, so a change in the machine's load hits both.
            order = ("secure", "plaintext") if repeat % 2 == 0 else ("plaintext", "secure")
            for mode in order:
                runs[mode].append(await _federation(mode, args, length))
        for mode, mode_runs in runs.items():
            row[mode] = _summary(mode_runs)
        row["secure_over_plaintext"] = round(
            row["secure"]["median_round_wall_seconds"] / row["plaintext"]["median_round_wall_seconds"], 3
        )
        if args.floor:
            row["secagg_in_memory"] = await asyncio.to_thread(_secagg_work, args, length)
        results.append(row)
    return {
        "benchmark": "websocket_round",
        "clients": args.clients,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "gamma": args.gamma,
        "delta": args.delta,
        "results": results,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "ok": all(r[m]["ok"] for r in results for m in ("secure", "plaintext")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--lengths",
        type=lambda s: [int(float(x)) for x in s.split(",")],
        default=[1_000_000, 10_000_000],
        help="comma-separated vector lengths m (field elements per client)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="FedAvg rounds per mode (median over them)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="federations per mode, alternating which goes first"
    )
    parser.add_argument("--graph", choices=("complete", "harary"), default="complete")
    parser.add_argument("--gamma", type=float, default=1 / 3, help="collusion fraction")
    parser.add_argument("--delta", type=float, default=0.1, help="dropout fraction")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per phase")
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the in-memory reference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
