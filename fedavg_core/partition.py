"""Split a dataset across clients for experiments: IID, label shards, Dirichlet(alpha).

Each function returns one sorted index array per client; ``Dataset.split`` turns them into
client datasets. Randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def _check_clients(num_clients: int, num_examples: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise ValueError(f"num_clients must be an int, got {num_clients!r}")
    if not 1 <= num_clients <= num_examples:
        raise ValueError(
            f"num_clients must be in [1, {num_examples}] (one example each at least), got {num_clients}"
        )


def _labels(labels: npt.ArrayLike) -> IntArray:
    array = np.asarray(labels)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def iid_partition(num_examples: int, num_clients: int, rng: np.random.Generator) -> list[IntArray]:
    """Shuffle and deal the examples into ``num_clients`` parts whose sizes differ by at most one
    (McMahan et al. 2017, section 3, "IID")."""
    _check_clients(num_clients, num_examples)
    parts = np.array_split(rng.permutation(num_examples), num_clients)
    return [np.sort(part).astype(np.int64) for part in parts]


def shard_partition(
    labels: npt.ArrayLike,
    num_clients: int,
    rng: np.random.Generator,
    shards_per_client: int = 2,
) -> list[IntArray]:
    """McMahan et al. 2017's pathological non-IID split: sort by label, cut into
    ``num_clients * shards_per_client`` equal shards, give each client ``shards_per_client`` of
    them at random (with 2 shards most clients see only two labels)."""
    y = _labels(labels)
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client must be >= 1, got {shards_per_client}")
    _check_clients(num_clients * shards_per_client, y.size)
    shuffled = rng.permutation(y.size)  # random order within each label
    order = shuffled[np.argsort(y[shuffled], kind="stable")]
    shards = np.array_split(order, num_clients * shards_per_client)
    owners = rng.permutation(num_clients * shards_per_client).reshape(num_clients, -1)
    return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in owners]


def dirichlet_partition(
    labels: npt.ArrayLike,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
    max_tries: int = 1000,
) -> list[IntArray]:
    """Label-skewed split: for every class, client shares drawn from Dirichlet(alpha, ..., alpha)
    (Hsu et al. 2019). Small ``alpha`` concentrates each class on few clients; large ``alpha``
    approaches IID. The draw is repeated until every client holds at least ``min_size`` examples.
    """
    y = _labels(labels)
    _check_clients(num_clients, y.size)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if not 1 <= min_size * num_clients <= y.size:
        raise ValueError(
            f"min_size={min_size} for {num_clients} clients needs at least "
            f"{min_size * num_clients} examples, have {y.size}"
        )
    classes = [np.flatnonzero(y == label) for label in np.unique(y)]
    for _ in range(max_tries):
        pieces: list[list[IntArray]] = [[] for _ in range(num_clients)]
        for members in classes:
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * members.size).astype(np.int64)
            for client, piece in enumerate(np.split(rng.permutation(members), cuts)):
                pieces[client].append(piece)
        parts = [np.sort(np.concatenate(p)).astype(np.int64) for p in pieces]
        if min(part.size for part in parts) >= min_size:
            return parts
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave all {num_clients} clients at least "
        f"{min_size} examples in {max_tries} tries; lower min_size or raise alpha"
    )
