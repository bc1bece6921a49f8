"""Client masking against the raw AES-CTR keystream, interleaved in one run; prints one JSON object.

    python -m benchmarks.masking --lengths 100000 10000000 --masks 21 --moduli 4294967291 67108859

For each (m, p): ``--masks`` PRG expansions of m elements added into an input with
``secagg.masking.apply_masks`` (the client's round-2 work), against producing the same masks'
keystream with AES-256-CTR alone (a fresh encryptor per mask, one ``update_into`` of the whole
mask into a reused buffer: the "raw keystream" of the targets). The two are timed alternately,
``--repeat`` times each, and the medians compared, so load from other processes falls on both.
Times are this thread's CPU time (``time.thread_time``: on a shared machine a run that is
preempted for a 4 ms time slice would otherwise count it; both are single-threaded), with the
wall-clock medians reported alongside.
Also reported: the keystream produced block by block (``BLOCK_WORDS`` words per call, the
block in cache), which is the real ceiling of a blocked kernel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg import masking
from secagg.masking import MaskTerm, apply_masks
from secagg.primitives.prg import MaskDomain, word_dtype

from .common import load_average, median


def _timed(call: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) of one call."""
    cpu, wall = time.thread_time(), time.perf_counter()
    call()
    return time.thread_time() - cpu, time.perf_counter() - wall


def _raw(seeds: list[bytes], nbytes: int, chunk: int, zeros: bytes, out: bytearray) -> None:
    """Every seed's ``nbytes`` of keystream, ``chunk`` bytes per call (into ``out``, from
    ``zeros``: buffers allocated once, so no page faults are timed)."""
    for seed in seeds:
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(MaskDomain.PAIRWISE.nonce)).encryptor()
        for offset in range(0, nbytes, chunk):
            encryptor.update_into(memoryview(zeros)[: min(chunk, nbytes - offset)], out)


def masking_vs_keystream(length: int, modulus: int, masks: int, repeat: int) -> dict[str, Any]:
    """Medians of ``repeat`` interleaved runs: masking, raw keystream, blocked keystream."""
    rng = np.random.default_rng(1)
    seeds = [rng.bytes(32) for _ in range(masks)]
    terms = [MaskTerm(s, MaskDomain.PAIRWISE, 1 if i % 2 else -1) for i, s in enumerate(seeds)]
    terms[0] = MaskTerm(seeds[0], MaskDomain.SELF, 1)
    vector = rng.integers(0, modulus, length, dtype=np.uint64)
    word = np.dtype(word_dtype(modulus)).itemsize
    nbytes = length * word
    block = nbytes if length <= masking.ONE_BLOCK_MAX else masking.BLOCK_WORDS * word
    zeros, out = bytes(nbytes), bytearray(nbytes + 15)
    calls: dict[str, Callable[[], object]] = {
        "masking": lambda: apply_masks(acc, terms, modulus),
        "raw": lambda: _raw(seeds, nbytes, nbytes, zeros, out),
        "raw_blocked": lambda: _raw(seeds, nbytes, block, zeros, out),
    }
    runs: dict[str, list[float]] = {name: [] for name in calls}
    walls: dict[str, list[float]] = {name: [] for name in calls}
    acc = vector.copy()
    for _ in range(repeat):
        np.copyto(acc, vector)
        for name, call in calls.items():
            cpu, elapsed = _timed(call)
            runs[name].append(cpu)
            walls[name].append(elapsed)
    seconds = {name: median(values) for name, values in runs.items()}
    wall = {name: median(values) for name, values in walls.items()}
    keystream = masks * nbytes
    return {
        "length": length,
        "modulus": modulus,
        "modulus_bits": (modulus - 1).bit_length(),
        "masks": masks,
        "repeat": repeat,
        "masking_seconds": seconds["masking"],
        "us_per_mask": seconds["masking"] / masks * 1e6,
        "raw_keystream_bytes_per_s": keystream / seconds["raw"],
        "blocked_keystream_bytes_per_s": keystream / seconds["raw_blocked"],
        "masking_keystream_bytes_per_s": keystream / seconds["masking"],
        "ratio_to_raw_keystream": seconds["raw"] / seconds["masking"],
        "ratio_to_blocked_keystream": seconds["raw_blocked"] / seconds["masking"],
        "wall_seconds": wall,
        "wall_ratio_to_raw_keystream": wall["raw"] / wall["masking"],
        "runs": runs,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[100_000, 10_000_000])
    p.add_argument("--moduli", type=int, nargs="+", default=[2**32 - 5, 2**26 - 5])
    p.add_argument("--masks", type=int, default=21)
    p.add_argument("--repeat", type=int, default=0, help="default: 31 below m=10^6, else 7")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    results = []
    before = load_average()
    for length in args.lengths:
        repeat = args.repeat or (31 if length < 1_000_000 else 7)
        for modulus in args.moduli:
            results.append(masking_vs_keystream(length, modulus, args.masks, repeat))
    load = {"before": before, "after": load_average()}
    json.dump({"results": results, "load_average": load}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
