"""One in-memory SecAgg round: 100 clients, 100,000-element vectors, 10% dropout at various rounds.

Run: python examples/round_demo.py  (or: python3 dev.py demo, before the websocket demo exists)
"""

from __future__ import annotations

import time

import numpy as np

from secagg import SecAggConfig, simulate


def main() -> None:
    cfg = SecAggConfig(num_clients=100, threshold=51, vector_length=100_000)
    rng = np.random.default_rng(0)
    inputs = {i: rng.integers(0, cfg.modulus, cfg.vector_length, dtype=np.uint64) for i in range(1, 101)}
    drop = {"share_keys": {3, 7}, "masked_input": {9}, "unmasking": {12}}
    start = time.perf_counter()
    res = simulate(cfg, inputs, drop=drop)
    seconds = time.perf_counter() - start
    expected = np.zeros(cfg.vector_length, dtype=np.uint64)
    for i in sorted(res.survivors):
        expected = (expected + inputs[i]) % np.uint64(cfg.modulus)
    exact = bool(np.array_equal(res.total, expected))
    print(f"clients: {cfg.num_clients}, threshold: {cfg.threshold}, vector length: {cfg.vector_length}")
    print(f"dropped: {sorted(set().union(*drop.values()))}")
    print(f"survivors (U3): {len(res.survivors)} clients; inputs of the others are not in the sum")
    print(f"sum equals numpy's sum of the U3 inputs mod p: {exact}")
    print(f"round time (all clients and the server in one process): {seconds:.2f} s")
    if not exact:
        raise SystemExit("the secure sum does not match")


if __name__ == "__main__":
    main()
