"""Secure vs plaintext FedAvg on scikit-learn's digits, side by side.

Both runs start from the same seed, so they sample the same clients and draw the same
minibatches; they differ only in how the server averages: the plaintext reference sees every
update, the secure run sees only the SecAgg sum of the weighted, quantized updates and of the
weights. Each round prints both test accuracies and the largest parameter difference.

    python examples/fedavg_digits.py                       # torch MLP if torch is installed
    python examples/fedavg_digits.py --model logreg --rounds 20 --alpha 0.1
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np

from fedavg_core import (
    FedAvg,
    FedAvgConfig,
    Learner,
    LogisticRegression,
    PlaintextAggregator,
    SecureAggregator,
    dirichlet_partition,
    iid_partition,
    load_digits_dataset,
)


def make_learner(kind: str, seed: int) -> Learner:
    if kind == "logreg":
        return LogisticRegression(num_features=64, num_classes=10)
    import torch

    from fedavg_core import TorchLearner

    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return TorchLearner(mlp)


def main() -> None:
    have_torch = importlib.util.find_spec("torch") is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "logreg"], default="mlp" if have_torch else "logreg")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clients", type=int, default=10, help="K, the number of clients")
    parser.add_argument("--fraction", type=float, default=1.0, help="C, clients sampled per round")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew (0: IID)")
    parser.add_argument("--epochs", type=int, default=5, help="E, local epochs")
    parser.add_argument("--batch-size", type=int, default=16, help="B, local batch size")
    parser.add_argument("--lr", type=float, default=0.1, help="client learning rate")
    parser.add_argument("--clip", type=float, default=1.0, help="clip update elements to [-c, c]")
    parser.add_argument("--max-weight", type=int, default=400, help="cap on a client's weight")
    parser.add_argument("--bits", type=int, default=None, help="quantization bits (default: max)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train, test = load_digits_dataset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    if args.alpha > 0:
        parts = dirichlet_partition(train.y, args.clients, args.alpha, rng)
    else:
        parts = iid_partition(len(train), args.clients, rng)
    clients = train.split(parts)
    learner = make_learner(args.model, args.seed)
    config = FedAvgConfig(
        client_fraction=args.fraction,
        local_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
    )
    secure_agg = SecureAggregator(clip=args.clip, max_weight=args.max_weight, bits=args.bits)
    plain_agg = PlaintextAggregator(clip=args.clip, max_weight=args.max_weight)
    secure = FedAvg(learner, secure_agg, clients, config, seed=args.seed, test_data=test)
    plain = FedAvg(learner, plain_agg, clients, config, seed=args.seed, test_data=test)

    per_round = config.clients_per_round(len(clients))
    quant = secure_agg.quantization(per_round)
    print(
        f"{args.model}: {len(clients)} clients (sizes {[len(c) for c in clients]}), "
        f"{per_round} per round; secure sums over Z_p with p={quant.modulus}, {quant.bits}-bit "
        f"quantization, clip {quant.clip}, max weight {quant.max_weight}"
    )
    print(f"{'round':>5} {'secure acc':>11} {'plain acc':>10} {'max |diff|':>11} {'bound/round':>12}")
    for _ in range(args.rounds):
        s, p = secure.run_round(), plain.run_round()
        assert s.metrics is not None and p.metrics is not None
        diff = float(np.max(np.abs(secure.global_vector - plain.global_vector)))
        note = f"  aborted: {s.aborted}" if s.aborted else ""
        print(
            f"{s.round:>5} {s.metrics.accuracy:>11.4f} {p.metrics.accuracy:>10.4f} "
            f"{diff:>11.2e} {s.error_bound:>12.2e}{note}"
        )


if __name__ == "__main__":
    main()
