"""Labelled datasets for experiments, and a ready one: scikit-learn's bundled digits.

``load_digits_dataset`` needs scikit-learn (the ``examples``/``test`` extras); it is imported only
when called, so the rest of ``fedavg_core`` needs numpy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (one row per example, float64) and integer class labels ``y``."""

    x: FloatArray
    y: IntArray

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float64)
        y = np.asarray(self.y)
        if x.ndim < 2:
            raise ValueError(f"x must have one row per example (ndim >= 2), got shape {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must be 1-D with {x.shape[0]} labels, got shape {y.shape}")
        if y.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
        if y.size and int(y.min()) < 0:
            raise ValueError("labels must be non-negative")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y.astype(np.int64))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_features(self) -> int:
        """Features per example (the product of the per-example shape)."""
        return int(np.prod(self.x.shape[1:]))

    def subset(self, indices: npt.ArrayLike) -> Dataset:
        """The examples at ``indices`` (copied)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(self.x[idx], self.y[idx])

    def split(self, parts: Sequence[npt.ArrayLike]) -> list[Dataset]:
        """One dataset per index array, e.g. the output of a ``fedavg_core.partition`` function."""
        return [self.subset(part) for part in parts]


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
    """scikit-learn's bundled 8x8 digits (1797 examples, 10 classes, no download), as
    ``(train, test)``: features scaled to ``[0, 1]``, a stratified split with ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits_dataset needs scikit-learn: pip install 'secagg-fedavg[examples]'"
        ) from error
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in np.unique(y):  # stratify: the same fraction of every class goes to test
        members = rng.permutation(np.flatnonzero(y == label))
        test_parts.append(members[: round(test_fraction * members.size)])
    test_idx = np.sort(np.concatenate(test_parts))
    train_mask = np.ones(y.size, dtype=bool)
    train_mask[test_idx] = False
    train_idx = rng.permutation(np.flatnonzero(train_mask))
    return Dataset(x[train_idx], y[train_idx]), Dataset(x[test_idx], y[test_idx])
