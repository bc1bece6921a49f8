"""One in-memory SecAgg / SecAgg+ round, timed per party and per round; prints one JSON object.

    python -m benchmarks.round --clients 100 --length 100000 --dropout 0.1 --graph harary --degree 20
    python -m benchmarks.round --clients 1000 --length 100000 --dropout 0.1 --graph harary \
        --collusion-fraction 0.05 --dropout-fraction 0.1 --floor     # k and t from the finder

Reports per-client seconds by round (median, max), server seconds by round, total seconds
(median over --repeat runs), bytes each client sends and receives through the wire codec, the
expansion factor ((sent + received) / (2 m): against a 16-bit input), peak RSS, and the raw
AES-CTR keystream rate with the client's masking rate and their ratio, measured in this process.
The round's result is checked against numpy before anything is reported.

``--floor`` adds the round's crypto floor, measured in this process: the AES-CTR keystream of
every mask expanded in the round (clients and server) at the raw keystream rate, plus one X25519
exchange (with its HKDF) for every key agreement; the masks and agreements are counted in a
separate small round (m = 8) with the same clients, graph and dropouts. Each time is reported
as wall clock and as this process's CPU time (``total_cpu_seconds``, ``floor_cpu_seconds``): on a
shared machine the CPU times are the ones to compare; with ``--workers 1`` the process's CPU time
is the whole round's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from secagg import SecAggConfig, simulate
from secagg.primitives import key_agreement
from secagg.primitives.field import DEFAULT_MODULUS, smallest_prime_above
from secagg.primitives.packing import packed_size
from secagg.primitives.prg import MaskReader, word_dtype

from .common import (
    exact_sum,
    keystream_bytes_per_second,
    load_average,
    median,
    peak_rss_mib,
    random_inputs,
    timed,
)
from .masking import masking_vs_keystream


def _wire_sizer(modulus: int) -> Callable[[object], int] | None:
    try:
        from transport.codec import encode
    except ImportError:  # the transport package is optional for this benchmark
        return None
    return lambda message: len(encode(message, modulus=modulus))  # masked inputs bit-packed


def masking_rate(config: SecAggConfig, masks: int, repeats: int) -> dict[str, Any]:
    """The client's round-2 work (``masks`` PRG expansions added into its input) vs raw AES."""
    return masking_vs_keystream(config.vector_length, config.modulus, masks, repeats)


def count_crypto(config: SecAggConfig, drop: dict[str, set[int]], seed: int) -> dict[str, int]:
    """Masks expanded and key agreements made in one round like this one (run at m = 8)."""
    small = dataclasses.replace(config, vector_length=8)
    counts = {"masks": 0, "key_agreements": 0}
    real_open = MaskReader.open
    derive = key_agreement.derive_key

    def counting_open(seed: bytes, domain: Any) -> object:
        counts["masks"] += 1
        return real_open(seed, domain)

    def counting_derive(*args: Any, **kwargs: Any) -> bytes:
        counts["key_agreements"] += 1
        return derive(*args, **kwargs)

    # derive_key is imported by name wherever it is used: patch every secagg module holding it.
    holders = [
        m
        for name, m in sys.modules.items()
        if name.startswith("secagg") and getattr(m, "derive_key", None) is derive
    ]
    MaskReader.open = staticmethod(counting_open)  # type: ignore[method-assign]
    for module in holders:
        module.derive_key = counting_derive  # type: ignore[attr-defined]
    try:
        inputs = random_inputs(small)
        simulate(small, inputs, drop, seed=seed, workers=1)
    finally:
        MaskReader.open = staticmethod(real_open)  # type: ignore[method-assign]
        for module in holders:
            module.derive_key = derive  # type: ignore[attr-defined]
    return counts


def crypto_floor(config: SecAggConfig, drop: dict[str, set[int]], seed: int) -> dict[str, Any]:
    """Seconds of keystream for every mask plus X25519 for every key agreement, in this process."""
    counts = count_crypto(config, drop, seed)
    word = np.dtype(word_dtype(config.modulus)).itemsize
    rate = keystream_bytes_per_second(config.vector_length * word, repeats=30)
    cpu_rate = keystream_bytes_per_second(config.vector_length * word, repeats=30, clock=time.thread_time)
    own = key_agreement.generate_private_key(bytes(range(32)))
    peer = key_agreement.public_bytes(key_agreement.generate_private_key(bytes(range(1, 33))))

    def agree() -> None:
        key_agreement.derive_key(
            own,
            peer,
            purpose=key_agreement.KeyPurpose.PAIRWISE_MASK,
            session_id=bytes(32),
            own_id=1,
            own_public=key_agreement.public_bytes(own),
            peer_id=2,
        )

    agreement = timed(agree, 200)
    cpu_agreement = timed(agree, 200, clock=time.thread_time)
    keystream_seconds = counts["masks"] * config.vector_length * word / rate
    cpu_floor = (
        counts["masks"] * config.vector_length * word / cpu_rate + counts["key_agreements"] * cpu_agreement
    )
    return {
        **counts,
        "raw_keystream_bytes_per_s": rate,
        "seconds_per_key_agreement": agreement,
        "keystream_seconds": keystream_seconds,
        "key_agreement_seconds": counts["key_agreements"] * agreement,
        "floor_seconds": keystream_seconds + counts["key_agreements"] * agreement,
        "floor_cpu_seconds": cpu_floor,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, m = args.clients, args.length
    modulus = args.modulus or DEFAULT_MODULUS
    if args.input_bits:
        # Smallest supported prime with headroom for n unsigned inputs of input_bits bits.
        modulus = smallest_prime_above(n * (2**args.input_bits - 1))
    fractions = {"collusion_fraction": args.collusion_fraction, "dropout_fraction": args.dropout_fraction}
    fractions = {k: v for k, v in fractions.items() if v is not None}
    # Without --threshold (and, for harary, without --degree) the config picks them: the smallest
    # safe threshold, and the finder's k and t for the threat model.
    config = SecAggConfig(
        n,
        args.threshold,
        m,
        modulus=modulus,
        graph=args.graph,
        degree=args.degree,
        mode=args.mode,
        **fractions,
    )
    threshold = config.threshold
    inputs = random_inputs(config)
    if args.input_bits:
        rng = np.random.default_rng(2)
        inputs = {i: rng.integers(0, 2**args.input_bits, m, dtype=np.uint64) for i in inputs}
    dropped = set(
        np.random.default_rng(3).choice(np.arange(1, n + 1), round(args.dropout * n), replace=False).tolist()
    )
    drop = {args.drop_round: dropped} if dropped else {}
    sizer = _wire_sizer(modulus) if args.bytes else None
    sent: dict[int, int] = defaultdict(int)
    received: dict[int, int] = defaultdict(int)

    def observe(message: object) -> None:
        assert sizer is not None
        size = sizer(message)
        if hasattr(message, "sender"):
            sent[message.sender] += size
        else:
            received[message.recipient] += size  # type: ignore[attr-defined]

    totals: list[float] = []
    cpu_totals: list[float] = []  # this process only: with --workers 1, the whole round
    load_before = load_average()
    result = None
    for run_index in range(args.repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = simulate(
            config,
            inputs,
            drop,
            seed=run_index,
            timer=time.perf_counter,
            observer=observe if sizer and run_index == 0 else None,
            workers=args.workers,
        )
        totals.append(time.perf_counter() - start)
        cpu_totals.append(time.process_time() - cpu)
        if not np.array_equal(result.total, exact_sum(inputs, result.survivors, modulus)):
            raise SystemExit("benchmark round produced a wrong sum")
    assert result is not None
    out: dict[str, Any] = {
        "params": {
            "clients": n,
            "length": m,
            "dropout": args.dropout,
            "drop_round": args.drop_round,
            "graph": config.graph,
            "degree": config.degree,
            "threshold": threshold,
            "collusion_fraction": config.collusion_fraction,
            "dropout_fraction": config.dropout_fraction,
            "mode": args.mode,
            "modulus": modulus,
            "modulus_bits": (modulus - 1).bit_length(),
            "workers": args.workers,
            "repeat": args.repeat,
        },
        "exact": True,
        "survivors": len(result.survivors),
        "total_seconds": median(totals),
        "total_seconds_runs": totals,
        "total_cpu_seconds": median(cpu_totals),
        "total_cpu_seconds_runs": cpu_totals,
        "client_seconds": {
            r: {"median": median(t.values()), "max": max(t.values(), default=0.0)}
            for r, t in result.client_seconds.items()
        },
        "client_seconds_total_all_clients": sum(sum(t.values()) for t in result.client_seconds.values()),
        "server_seconds": result.server_seconds,
    }
    if sizer is not None:
        survivors = sorted(result.survivors)
        up = median(sent[i] for i in survivors)
        down = median(received[i] for i in survivors)
        record: dict[str, Any] = {"sent_median": up, "received_median": down, "length_measured": m}
        if args.scale_length and args.scale_length != m:
            # Only the masked vector grows with m: swap its packed size for the target length's.
            grow = packed_size(args.scale_length, modulus) - packed_size(m, modulus)
            up += grow
            record.update({"scaled_to_length": args.scale_length, "sent_median_scaled": up})
        length = args.scale_length or m
        record["expansion_factor"] = (up + down) / (2 * length)
        out["bytes_per_client"] = record
    if args.floor:
        floor = crypto_floor(config, drop, seed=0)
        floor["total_over_floor"] = out["total_seconds"] / floor["floor_seconds"]
        floor["total_cpu_over_floor_cpu"] = out["total_cpu_seconds"] / floor["floor_cpu_seconds"]
        out["crypto_floor"] = floor
    if not args.skip_keystream:
        degree = n - 1 if config.graph == "complete" else config.degree
        assert degree is not None
        out["client_masking"] = masking_rate(config, degree + 1, repeats=args.keystream_repeats)
        out["client_masking"].pop("runs")
    out["peak_rss_mib"] = peak_rss_mib()
    out["load_average"] = {"before": load_before, "after": load_average()}
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--length", type=int, default=100_000)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument(
        "--drop-round",
        default="masked_input",
        choices=["advertise_keys", "share_keys", "masked_input", "consistency_check", "unmasking"],
    )
    p.add_argument("--graph", choices=["complete", "harary"], default="complete")
    p.add_argument("--degree", type=int, default=None)
    p.add_argument("--threshold", type=int, default=None, help="default: the smallest safe threshold")
    p.add_argument("--collusion-fraction", type=float, default=None, help="gamma (default: the config's)")
    p.add_argument("--dropout-fraction", type=float, default=None, help="delta (default: the config's)")
    p.add_argument("--floor", action="store_true", help="also measure the round's crypto floor")
    p.add_argument("--mode", choices=["semi_honest", "active"], default="semi_honest")
    p.add_argument("--modulus", type=int, default=None)
    p.add_argument(
        "--input-bits",
        type=int,
        default=None,
        help="inputs of this many unsigned bits; picks the smallest prime with headroom",
    )
    p.add_argument("--workers", type=int, default=None, help="server mask-removal processes (default auto)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--bytes", action="store_true", help="measure wire bytes through transport.codec")
    p.add_argument("--scale-length", type=int, default=None, help="report bytes for this vector length")
    p.add_argument("--skip-keystream", action="store_true")
    p.add_argument("--keystream-repeats", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    json.dump(run(args), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
