"""Secure FedAvg with distributed DP on non-IID digits: accuracy against epsilon.

Every run is secure FedAvg through the real SecAgg round (``secagg.simulate``): 50 clients with
Dirichlet(0.5) label skew, all of them in each of 10 rounds, softmax regression. With distributed
DP each client clips its update to L2 norm 1, rotates, rounds and adds discrete noise sized so that
the SecAgg threshold t = 26 of the fewest survivors already gives the budget; ``dp-accounting``
composes the rounds. The reference is the same secure FedAvg without DP.

    python examples/dp_digits.py                                  # the BENCHMARKS.md sweep
    python examples/dp_digits.py --epsilons 8 --seeds 0 --bits-sweep ""   # one quick run
    python examples/dp_digits.py --plot docs/dp_accuracy.png --json dp.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import numpy as np

from fedavg_core import (
    Aggregator,
    DistributedDP,
    FedAvg,
    FedAvgConfig,
    LogisticRegression,
    SecureAggregator,
    dirichlet_partition,
    load_digits_dataset,
)


def run(args: argparse.Namespace, seed: int, dp: DistributedDP | None) -> dict[str, Any]:
    train, test = load_digits_dataset(seed=0)
    parts = dirichlet_partition(train.y, args.clients, args.alpha, np.random.default_rng(seed))
    clients = train.split(parts)
    aggregator: Aggregator = SecureAggregator(clip=args.clip, max_weight=1, dp=dp)
    config = FedAvgConfig(
        client_fraction=1.0, local_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr
    )
    fedavg = FedAvg(LogisticRegression(64, 10), aggregator, clients, config, seed=seed, test_data=test)
    records = fedavg.run(args.rounds)
    final = records[-1]
    assert final.metrics is not None
    out: dict[str, Any] = {"seed": seed, "accuracy": final.metrics.accuracy, "epsilon_spent": final.epsilon}
    if dp is not None:
        n = args.clients
        secure = SecureAggregator(clip=args.clip, max_weight=1, dp=dp)
        plan = dp.plan(n, secure.secagg_config(n, 2).threshold, LogisticRegression(64, 10).spec.size)
        out.update(
            threshold=plan.threshold,
            field_bits=plan.field_bits,
            modulus=plan.quantization.modulus,
            scale=plan.scale,
            l2_sensitivity=plan.l2_sensitivity,
            local_stddev=plan.local_variance**0.5,
            noise_stddev_at_t=plan.noise_stddev(plan.threshold),
            noise_stddev_all=plan.noise_stddev(n),
            planned_epsilon=plan.planned_epsilon,
            wrap_bound=plan.wrap_bound,
            wrap_probability_per_coordinate=dp.wrap_probability,
            wrap_probability_per_vector=dp.wrap_probability * plan.padded,
        )
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [r["accuracy"] for r in runs]
    summary = {k: v for k, v in runs[0].items() if k not in ("seed", "accuracy", "epsilon_spent")}
    summary.update(
        accuracy_median=statistics.median(accuracies),
        accuracy_min=min(accuracies),
        accuracy_max=max(accuracies),
        epsilon_spent_median=statistics.median(r["epsilon_spent"] for r in runs)
        if runs[0]["epsilon_spent"] is not None
        else None,
        seeds=[r["seed"] for r in runs],
    )
    return summary


def plot(path: str, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mechanism, rows in results["by_epsilon"].items():
        eps = [r["epsilon"] for r in rows]
        med = [r["accuracy_median"] for r in rows]
        low = [r["accuracy_median"] - r["accuracy_min"] for r in rows]
        high = [r["accuracy_max"] - r["accuracy_median"] for r in rows]
        ax.errorbar(eps, med, yerr=[low, high], marker="o", capsize=3, label=f"distributed DP ({mechanism})")
    ax.axhline(results["no_dp"]["accuracy_median"], color="gray", ls="--", label="secure FedAvg, no DP")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(
        f"target epsilon over {results['rounds']} rounds at t survivors (delta = {results['delta']:g})"
    )
    ax.set_ylabel("test accuracy (median, min-max over seeds)")
    ax.set_title("Secure FedAvg on non-IID digits (50 clients, t = 26)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--clip", type=float, default=1.0, help="L2 clip norm c")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--bits", type=int, default=8, help="per-client bit width (sets the modulus)")
    parser.add_argument("--epsilons", default="1,2,4,8,16")
    parser.add_argument("--mechanisms", default="ddgauss,skellam")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--bits-sweep", default="8,11,13,15", help="per-client bit widths tried at epsilon 8")
    parser.add_argument("--plot", default=None, help="write the accuracy-vs-epsilon PNG here")
    parser.add_argument("--json", default=None, help="write all results here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    def budget(epsilon: float, mechanism: str, bits: int) -> DistributedDP:
        return DistributedDP(
            epsilon,
            args.delta,
            args.rounds,
            args.clip,
            mechanism=mechanism,
            bits=bits,  # type: ignore[arg-type]
        )

    results: dict[str, Any] = {"rounds": args.rounds, "delta": args.delta, "clients": args.clients}
    results["no_dp"] = summarize([run(args, s, None) for s in seeds])
    print(f"no DP: accuracy {results['no_dp']['accuracy_median']:.3f}", flush=True)
    results["by_epsilon"] = {}
    for mechanism in args.mechanisms.split(","):
        rows = []
        for epsilon in (float(e) for e in args.epsilons.split(",")):
            row = summarize([run(args, s, budget(epsilon, mechanism, args.bits)) for s in seeds])
            row["epsilon"] = epsilon
            rows.append(row)
            print(
                f"{mechanism} eps={epsilon:g}: accuracy {row['accuracy_median']:.3f} "
                f"[{row['accuracy_min']:.3f}, {row['accuracy_max']:.3f}], "
                f"spent {row['epsilon_spent_median']:.2f}, "
                f"{row['field_bits']} field bits",
                flush=True,
            )
        results["by_epsilon"][mechanism] = rows
    results["by_bits"] = []
    for bits in (int(b) for b in args.bits_sweep.split(",") if b):
        try:
            row = summarize([run(args, s, budget(8.0, "ddgauss", bits)) for s in seeds])
        except ValueError as error:
            print(f"bits={bits}: {error}")
            continue
        row["bits"] = bits
        results["by_bits"].append(row)
        print(
            f"ddgauss eps=8 bits={bits}: {row['field_bits']} field bits, scale {row['scale']:.1f}, "
            f"Delta_2 {row['l2_sensitivity']:.1f}, accuracy {row['accuracy_median']:.3f}",
            flush=True,
        )
    if args.plot:
        plot(args.plot, results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
