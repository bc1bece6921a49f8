"""Data partitions for experiments, and the bundled digits dataset."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedavg_core import (
    Dataset,
    dirichlet_partition,
    iid_partition,
    load_digits_dataset,
    shard_partition,
)


def _is_partition(parts: list[np.ndarray], size: int) -> bool:
    return np.array_equal(np.sort(np.concatenate(parts)), np.arange(size))


def _label_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over clients of the entropy (nats) of the client's label distribution."""
    entropies = []
    for part in parts:
        p = np.bincount(labels[part]) / part.size
        p = p[p > 0]
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


LABELS = np.repeat(np.arange(10), 20)  # 10 classes x 20 examples


def test_iid_parts_cover_everything_once_with_sizes_within_one() -> None:
    parts = iid_partition(103, 10, np.random.default_rng(0))
    assert _is_partition(parts, 103)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_label_shards_give_each_client_at_most_its_number_of_shards_of_labels() -> None:
    """McMahan et al. 2017: sort by label, 2 shards per client. With shards that do not straddle
    labels (20 shards of 10 over 10 classes of 20), every client sees at most 2 labels."""
    shuffled = np.random.default_rng(1).permutation(LABELS)
    parts = shard_partition(shuffled, 10, np.random.default_rng(2), shards_per_client=2)
    assert _is_partition(parts, LABELS.size)
    assert all(p.size == 20 for p in parts)
    assert all(np.unique(shuffled[p]).size <= 2 for p in parts)
    assert _label_entropy(shuffled, parts) < 0.7  # far from IID (log 10 = 2.3)


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    y = np.repeat(np.arange(10), 100)
    skewed = dirichlet_partition(y, 10, 0.1, np.random.default_rng(3))
    near_iid = dirichlet_partition(y, 10, 100.0, np.random.default_rng(3))
    assert _is_partition(skewed, y.size) and _is_partition(near_iid, y.size)
    assert _label_entropy(y, skewed) < 1.2 < 2.0 < _label_entropy(y, near_iid)


def test_dirichlet_respects_min_size_and_is_reproducible() -> None:
    parts = dirichlet_partition(LABELS, 10, 0.3, np.random.default_rng(4), min_size=8)
    assert min(p.size for p in parts) >= 8
    again = dirichlet_partition(LABELS, 10, 0.3, np.random.default_rng(4), min_size=8)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_partitions_refuse_impossible_requests() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="num_clients"):
        iid_partition(5, 6, rng)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(LABELS, 4, 0.0, rng)
    with pytest.raises(ValueError, match="min_size=30"):
        dirichlet_partition(LABELS, 10, 1.0, rng, min_size=30)
    with pytest.raises(ValueError, match="no Dirichlet"):
        dirichlet_partition(LABELS, 10, 0.01, rng, min_size=19, max_tries=5)
    with pytest.raises(ValueError, match="labels"):
        shard_partition(np.ones(10) * 0.5, 2, rng)


def test_digits_dataset_is_stratified_scaled_and_complete() -> None:
    train, test = load_digits_dataset(test_fraction=0.25, seed=0)
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (64,) and train.num_features == 64
    assert train.x.min() >= 0.0 and train.x.max() <= 1.0
    fractions = np.bincount(test.y, minlength=10) / (
        np.bincount(test.y, minlength=10) + np.bincount(train.y, minlength=10)
    )
    assert np.all(np.abs(fractions - 0.25) < 0.01)
    # Together, train and test are exactly the bundled dataset (every example once).
    full = load_digits()
    ours = np.column_stack([np.concatenate([train.x, test.x]) * 16, np.concatenate([train.y, test.y])])
    theirs = np.column_stack([full.data, full.target])
    assert np.array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])
    other, _ = load_digits_dataset(seed=1)
    assert not np.array_equal(other.y, train.y)  # the seed changes the split


def test_dataset_validates_and_splits() -> None:
    data = Dataset(np.arange(12.0).reshape(6, 2), np.array([0, 1, 2, 0, 1, 2]))
    first, second = data.split([np.array([0, 2]), np.array([5])])
    assert len(first) == 2 and np.array_equal(second.x, [[10.0, 11.0]])
    with pytest.raises(ValueError, match="labels"):
        Dataset(np.zeros((2, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integers"):
        Dataset(np.zeros((2, 2)), np.array([0.5, 1.0]))
