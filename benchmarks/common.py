"""Shared pieces of the benchmarks: the keystream reference, medians, peak RSS, inputs."""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg import SecAggConfig


def median(values: Iterable[float]) -> float:
    """The median, 0.0 for no values."""
    data = list(values)
    return statistics.median(data) if data else 0.0


def load_average() -> float:
    """The 1-minute load average (other processes competing for the cores), 0.0 if unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def keystream_bytes_per_second(
    nbytes: int, repeats: int = 50, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Raw AES-256-CTR keystream rate into a reused buffer (``update_into``), median of runs
    (``clock``: wall time by default; ``time.thread_time`` for CPU time)."""
    zeros = bytes(nbytes)
    out = bytearray(nbytes + 15)
    key = os.urandom(32)
    times = []
    for _ in range(repeats):
        start = clock()
        Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, out)
        times.append(clock() - start)
    return nbytes / median(times)


def timed(call: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``repeats`` calls (by ``clock``: wall time unless told)."""
    times = []
    for _ in range(repeats):
        start = clock()
        call()
        times.append(clock() - start)
    return median(times)


def random_inputs(config: SecAggConfig, seed: int = 0) -> dict[int, np.ndarray]:
    """One uniformly random field vector per client id 1..n."""
    rng = np.random.default_rng(seed)
    return {
        i: rng.integers(0, config.modulus, config.vector_length, dtype=np.uint64)
        for i in range(1, config.num_clients + 1)
    }


def exact_sum(inputs: dict[int, np.ndarray], ids: Iterable[int], modulus: int) -> np.ndarray:
    """Reference sum mod p (object-free: partial sums stay below 2**64 for p < 2**62 by reducing)."""
    ids = sorted(ids)
    total = np.zeros_like(inputs[ids[0]])
    p = np.uint64(modulus)
    for i in ids:
        total += inputs[i]
        np.remainder(total, p, out=total)
    return total
