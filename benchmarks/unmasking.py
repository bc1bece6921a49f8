"""The server's mask removal alone, on the executors one run can compare; prints one JSON object.

    python -m benchmarks.unmasking --clients 20 --length 10000000 --dropout 0.1 \\
        --executors serial pool ray --workers 2 --repeat 5

Builds the server's state at the end of a SecAgg round on the complete graph (every client's
masking key and self-mask seed, the masked inputs of the survivors summed as the clients mask
them, ``--dropout`` of the clients gone after sharing keys), then times
``secagg.unmasking.remove_masks`` on each executor: ``serial`` (one process), ``pool`` (the
default: a fork process pool started per call, as the server does), ``pool-kept`` (one
``ProcessPoolExecutor`` passed in and reused), ``ray`` (``transport.ray_executor.RayExecutor``
on a local Ray with ``--workers`` CPUs). Every result is checked against the sum of the inputs.
Also reports the crypto floor: the masks' keystream at the raw AES-CTR rate, split over the
workers. Times are wall-clock medians (with this process's CPU time alongside: for ``serial``
it is the compute itself, whatever else the machine runs), and the 1-minute load average before
and after the timed runs is recorded.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from secagg.masking import MaskTerm, apply_masks, pairwise_sign
from secagg.primitives.field import DEFAULT_MODULUS
from secagg.primitives.key_agreement import KeyPurpose, derive_key, generate_private_key, public_bytes
from secagg.primitives.prg import MaskDomain, word_dtype
from secagg.unmasking import DroppedClient, JobExecutor, remove_masks

from .common import keystream_bytes_per_second, load_average, median, peak_rss_mib


@dataclass
class RoundState:
    """What the server holds before unmasking, and the answer it must reach."""

    modulus: int
    session_id: bytes
    total: np.ndarray  # sum of the survivors' masked inputs, mod p
    expected: np.ndarray  # sum of their inputs, mod p
    self_mask_seeds: list[bytes]
    dropped: list[DroppedClient]

    @property
    def mask_count(self) -> int:
        return len(self.self_mask_seeds) + sum(len(d.partners) for d in self.dropped)


def build_round(clients: int, length: int, dropout: float, modulus: int, seed: int = 0) -> RoundState:
    """Complete graph; round(dropout * n) clients drop after sharing keys (in U2, not in U3)."""
    rng = np.random.default_rng(seed)
    session_id = rng.bytes(32)
    ids = list(range(1, clients + 1))
    keys = {u: generate_private_key(rng.bytes(32)) for u in ids}
    public = {u: public_bytes(keys[u]) for u in ids}
    self_seeds = {u: rng.bytes(32) for u in ids}
    gone = set(rng.choice(ids, round(dropout * clients), replace=False).tolist())
    survivors = [u for u in ids if u not in gone]

    def seed_of(u: int, v: int) -> bytes:
        return derive_key(
            keys[u],
            public[v],
            purpose=KeyPurpose.PAIRWISE_MASK,
            session_id=session_id,
            own_id=u,
            own_public=public[u],
            peer_id=v,
        )

    # Each survivor sends x_u + PRG(b_u) + sum over v != u of sign(u, v) PRG(s_uv): summing the
    # inputs and all of those terms in one apply_masks call gives the same total.
    expected = np.zeros(length, dtype=np.uint64)
    for _ in survivors:
        np.add(expected, rng.integers(0, modulus, length, dtype=np.uint64), out=expected)
        np.remainder(expected, np.uint64(modulus), out=expected)
    terms = []
    for u in survivors:
        terms.append(MaskTerm(self_seeds[u], MaskDomain.SELF, 1))
        terms += [MaskTerm(seed_of(u, v), MaskDomain.PAIRWISE, pairwise_sign(u, v)) for v in ids if v != u]
    total = expected.copy()
    apply_masks(total, terms, modulus)
    dropped = [
        DroppedClient(v, keys[v].private_bytes_raw(), public[v], tuple((u, public[u]) for u in survivors))
        for v in sorted(gone)
    ]
    return RoundState(modulus, session_id, total, expected, [self_seeds[u] for u in survivors], dropped)


def time_removal(state: RoundState, workers: int, executor: JobExecutor | None) -> tuple[float, float]:
    """(wall, this process's CPU) seconds for one ``remove_masks`` call (the copy of the sum is
    not timed); checks the result."""
    total = state.total.copy()
    start, cpu = time.perf_counter(), time.process_time()
    result = remove_masks(
        total, state.modulus, state.session_id, state.self_mask_seeds, state.dropped, workers, executor
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if not np.array_equal(result, state.expected):
        raise SystemExit("mask removal produced a wrong sum")
    return seconds, cpu


def run(args: argparse.Namespace) -> dict[str, Any]:
    modulus = args.modulus or DEFAULT_MODULUS
    start = time.perf_counter()
    state = build_round(args.clients, args.length, args.dropout, modulus)
    build_seconds = time.perf_counter() - start
    word = np.dtype(word_dtype(modulus)).itemsize
    keystream = state.mask_count * args.length * word
    raw = keystream_bytes_per_second(min(args.length, 1 << 20) * word, repeats=20)
    out: dict[str, Any] = {
        "params": vars(args) | {"modulus": modulus},
        "survivors": len(state.self_mask_seeds),
        "dropped": len(state.dropped),
        "masks": state.mask_count,
        "keystream_bytes": keystream,
        "build_seconds": build_seconds,
        "raw_keystream_bytes_per_s": raw,
        "crypto_floor_seconds": keystream / raw / args.workers,
        "executors": {},
    }
    executors: dict[str, tuple[int, Any]] = {}
    try:
        for name in args.executors:
            if name == "serial":
                executors[name] = (1, None)
            elif name == "pool":
                executors[name] = (args.workers, None)
            elif name == "pool-kept":
                context = multiprocessing.get_context("fork")
                executors[name] = (args.workers, ProcessPoolExecutor(args.workers, mp_context=context))
            else:
                from transport.ray_executor import RayExecutor

                started = time.perf_counter()
                executors[name] = (args.workers, RayExecutor(num_cpus=args.workers))
                out["ray_start_seconds"] = time.perf_counter() - started
        # Interleaved (each repeat runs every executor once), so load from other processes on the
        # machine falls on all of them alike.
        out["load_average_before"] = load_average()
        times: dict[str, list[float]] = {name: [] for name in executors}
        cpu: dict[str, list[float]] = {name: [] for name in executors}
        for _ in range(args.repeat):
            for name, (workers, executor) in executors.items():
                wall, own = time_removal(state, workers, executor)
                times[name].append(wall)
                cpu[name].append(own)
        out["load_average_after"] = load_average()
    finally:
        for _, executor in executors.values():
            if executor is not None:
                executor.shutdown()
    for name, runs in times.items():
        out["executors"][name] = {
            "median_seconds": median(runs),
            "runs": runs,
            "median_cpu_seconds_this_process": median(cpu[name]),
            "exact": True,
        }
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--length", type=int, default=10_000_000)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--modulus", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--executors",
        nargs="+",
        default=["serial", "pool", "pool-kept", "ray"],
        choices=["serial", "pool", "pool-kept", "ray"],
    )
    return p


def main(argv: list[str] | None = None) -> None:
    json.dump(run(parser().parse_args(argv)), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
