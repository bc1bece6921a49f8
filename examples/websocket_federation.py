"""Embed the websocket federation in your own program: your model, your clients' data.

One server and four clients on 127.0.0.1, here in one event loop for brevity (in real use every
client is its own process or machine and runs ``FederationClient(...).run()``). The model is
``fedavg_core.LogisticRegression`` on synthetic data; any ``fedavg_core.Learner`` works, e.g.
``fedavg_core.TorchLearner`` around a torch module.

Run: python examples/websocket_federation.py
"""

from __future__ import annotations

import asyncio

import numpy as np

from fedavg_core import Dataset, LogisticRegression
from transport import (
    FederationClient,
    FederationServer,
    FederationSettings,
    LearnerModel,
    LearnerTrainer,
    TrainingSettings,
)


def synthetic_client_data(num_clients: int, seed: int = 0) -> tuple[list[Dataset], Dataset]:
    """Two Gaussian blobs per class in 5 dimensions, split unevenly across the clients."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(3, 5))
    labels = rng.integers(0, 3, size=1200)
    x = centres[labels] + rng.normal(size=(1200, 5))
    test = Dataset(x[:300], labels[:300])
    cuts = np.sort(rng.choice(np.arange(301, 1200), size=num_clients - 1, replace=False))
    parts = np.split(np.arange(300, 1200), cuts - 300)
    return [Dataset(x[p], labels[p]) for p in parts], test


async def main() -> None:
    clients_data, test = synthetic_client_data(4)
    learner = LogisticRegression(num_features=5, num_classes=3)
    settings = FederationSettings(
        num_clients=4,
        rounds=5,
        clip=1.0,  # every update element is clipped to [-1, 1] before quantization
        max_weight=1000,  # a client's weight is its example count, capped here
        training=TrainingSettings(epochs=1, batch_size=32, learning_rate=0.1),
    )
    server = FederationServer(LearnerModel(learner, test), settings, checkpoint_path=None)
    await server.start("127.0.0.1", 0)  # port 0: any free port; pass ssl_context= for wss://
    url = f"ws://127.0.0.1:{server.port}"
    clients = [
        FederationClient(i + 1, LearnerTrainer(learner, data, seed=i), url)
        for i, data in enumerate(clients_data)
    ]
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        reports = await server.run()
    finally:
        await server.stop()
    await asyncio.gather(*tasks)
    print(f"initial accuracy {server.initial_accuracy:.3f}")
    for r in reports:
        print(
            f"round {r.round}: {r.status}, {len(r.survivors)} clients in the sum, accuracy {r.accuracy:.3f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
