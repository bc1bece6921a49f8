"""What the FedAvg loop needs of a model (``Learner``), and a numpy one: softmax regression.

A learner is stateless from FedAvg's point of view: every call receives the model as a flat
float64 vector (``fedavg_core.vectorize``) and training returns the new vector. One learner can
therefore serve every simulated client in turn, and two FedAvg runs can share it.
``LogisticRegression`` lets the core run without torch; ``fedavg_core.torch_models.TorchLearner``
wraps a torch module.

Client drift (Li et al. 2020, "Federated Optimization in Heterogeneous Networks", FedProx):
``train`` takes a proximal coefficient mu and minimises the local objective
``h(w) = f(w) + mu/2 * ||w - w_global||^2``, where ``w_global`` is the vector training starts
from; mu = 0 is plain FedAvg local SGD. Systems heterogeneity: ``should_stop`` (checked after
every minibatch step) ends local training early, e.g. when a client's time budget is spent; the
result is then FedProx's inexact local solution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .data import Dataset, FloatArray, IntArray
from .vectorize import FloatVector, TensorSpec, VectorSpec


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy loss and accuracy of a model on a dataset."""

    loss: float
    accuracy: float


@runtime_checkable
class Learner(Protocol):
    """A model as FedAvg sees it: a flat vector, local training, evaluation."""

    @property
    def spec(self) -> VectorSpec:
        """The layout of the model's vector."""
        ...

    def initial_vector(self) -> FloatVector:
        """The model's starting point (the initial global model w_0)."""
        ...

    def train(
        self,
        vector: FloatVector,
        data: Dataset,
        *,
        epochs: int,
        batch_size: int | None,
        learning_rate: float,
        rng: np.random.Generator,
        proximal_mu: float = 0.0,
        should_stop: Callable[[], bool] | None = None,
    ) -> FloatVector:
        """ClientUpdate of McMahan et al. 2017, Algorithm 1: ``epochs`` passes of minibatch SGD
        with ``batch_size`` (None: the whole local dataset) from ``vector``; the new vector.

        ``proximal_mu``: FedProx's mu; the loss gains ``mu/2 * ||w - vector||^2``.
        ``should_stop``: called after every step; True ends training there (time budget)."""
        ...

    def evaluate(self, vector: FloatVector, data: Dataset) -> Metrics:
        """Loss and accuracy of the model ``vector`` on ``data``."""
        ...


def check_training_args(
    epochs: int, batch_size: int | None, learning_rate: float, proximal_mu: float = 0.0
) -> None:
    """Refuse non-positive E, B or learning rate, or a negative or non-finite mu, with a
    ``ValueError``."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs (E) must be a positive int, got {epochs!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size (B) must be a positive int or None, got {batch_size!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if (
        isinstance(proximal_mu, bool)
        or not isinstance(proximal_mu, (int, float, np.floating))
        or not np.isfinite(proximal_mu)
        or proximal_mu < 0
    ):
        raise ValueError(f"proximal_mu (FedProx mu) must be finite and >= 0, got {proximal_mu!r}")


def minibatches(num_examples: int, batch_size: int | None, rng: np.random.Generator) -> Iterator[IntArray]:
    """One epoch of shuffled minibatch indices; ``batch_size=None`` gives the whole set at once."""
    order = rng.permutation(num_examples)
    size = num_examples if batch_size is None else batch_size
    for start in range(0, num_examples, max(size, 1)):
        yield order[start : start + size]


def _log_softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    out: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return out


@dataclass(frozen=True)
class LogisticRegression:
    """Multinomial logistic (softmax) regression in numpy, trained by minibatch SGD.

    The vector holds ``weight`` (num_features x num_classes) then ``bias`` (num_classes); the
    initial model is zero. ``l2`` adds ``l2/2 * ||weight||^2`` to the loss. The loss is convex and
    each minibatch step is non-expansive when ``learning_rate <= 2 / (max ||x||^2 / 2 + 1/2 + l2)``
    (inputs augmented with the bias), which makes FedAvg runs comparable round by round.
    """

    num_features: int
    num_classes: int
    l2: float = 0.0

    def __post_init__(self) -> None:
        if self.num_features < 1 or self.num_classes < 2:
            raise ValueError(
                f"need num_features >= 1 and num_classes >= 2, got {self.num_features}, {self.num_classes}"
            )
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")

    @property
    def spec(self) -> VectorSpec:
        """``weight`` then ``bias``, float64."""
        d, k = self.num_features, self.num_classes
        return VectorSpec((TensorSpec("weight", (d, k), "float64"), TensorSpec("bias", (k,), "float64")))

    def initial_vector(self) -> FloatVector:
        """The zero model."""
        return np.zeros(self.spec.size, dtype=np.float64)

    def _split(self, vector: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        flat = self.spec.check_vector(vector)
        d, k = self.num_features, self.num_classes
        return flat[: d * k].reshape(d, k), flat[d * k :]

    def _features(self, data: Dataset) -> FloatArray:
        x = data.x.reshape(len(data), -1)
        if x.shape[1] != self.num_features:
            raise ValueError(f"model expects {self.num_features} features, data has {x.shape[1]}")
        if len(data) and int(data.y.max()) >= self.num_classes:
            raise ValueError(f"labels must be < num_classes={self.num_classes}")
        return x

    def objective(
        self,
        vector: FloatVector,
        data: Dataset,
        *,
        anchor: FloatVector | None = None,
        proximal_mu: float = 0.0,
    ) -> float:
        """The local objective ``h(w) = f(w) + mu/2 * ||w - anchor||^2`` that ``train`` descends:
        f is the mean cross-entropy on ``data`` plus ``l2/2 * ||weight||^2``."""
        weight, bias = self._split(vector)
        x = self._features(data)
        logp = _log_softmax(x @ weight + bias)
        value = float(-logp[np.arange(len(data)), data.y].mean()) + self.l2 / 2 * float(np.sum(weight**2))
        if proximal_mu:
            if anchor is None:
                raise ValueError("a proximal term needs the anchor (the global model w_global)")
            flat = self.spec.check_vector(vector)
            value += proximal_mu / 2 * float(np.sum((flat - self.spec.check_vector(anchor)) ** 2))
        return value

    def gradient(
        self,
        vector: FloatVector,
        data: Dataset,
        *,
        anchor: FloatVector | None = None,
        proximal_mu: float = 0.0,
    ) -> FloatVector:
        """The gradient of ``objective`` (the step ``train`` takes on a minibatch)."""
        weight, bias = self._split(vector)
        g_weight, g_bias = self._batch_gradient(weight, bias, self._features(data), data.y)
        out = np.concatenate([g_weight.reshape(-1), g_bias])
        if proximal_mu:
            if anchor is None:
                raise ValueError("a proximal term needs the anchor (the global model w_global)")
            out += proximal_mu * (self.spec.check_vector(vector) - self.spec.check_vector(anchor))
        return out

    def _batch_gradient(
        self, weight: FloatArray, bias: FloatArray, xb: FloatArray, yb: IntArray
    ) -> tuple[FloatArray, FloatArray]:
        probs = np.exp(_log_softmax(xb @ weight + bias))
        probs[np.arange(yb.size), yb] -= 1.0
        probs /= yb.size
        return xb.T @ probs + self.l2 * weight, probs.sum(axis=0)

    def train(
        self,
        vector: FloatVector,
        data: Dataset,
        *,
        epochs: int,
        batch_size: int | None,
        learning_rate: float,
        rng: np.random.Generator,
        proximal_mu: float = 0.0,
        should_stop: Callable[[], bool] | None = None,
    ) -> FloatVector:
        """Minibatch SGD on ``objective`` (mean cross-entropy, L2 term, FedProx term with the
        starting ``vector`` as anchor)."""
        check_training_args(epochs, batch_size, learning_rate, proximal_mu)
        anchor_weight, anchor_bias = self._split(vector)
        weight, bias = anchor_weight.copy(), anchor_bias.copy()
        x, y = self._features(data), data.y
        for _ in range(epochs):
            for batch in minibatches(len(data), batch_size, rng):
                g_weight, g_bias = self._batch_gradient(weight, bias, x[batch], y[batch])
                if proximal_mu:
                    g_weight += proximal_mu * (weight - anchor_weight)
                    g_bias += proximal_mu * (bias - anchor_bias)
                weight -= learning_rate * g_weight
                bias -= learning_rate * g_bias
                if should_stop is not None and should_stop():
                    return np.concatenate([weight.reshape(-1), bias])
        return np.concatenate([weight.reshape(-1), bias])

    def evaluate(self, vector: FloatVector, data: Dataset) -> Metrics:
        """Mean cross-entropy and accuracy."""
        weight, bias = self._split(vector)
        x = self._features(data)
        logp = _log_softmax(x @ weight + bias)
        loss = float(-logp[np.arange(len(data)), data.y].mean())
        accuracy = float((logp.argmax(axis=1) == data.y).mean())
        return Metrics(loss=loss, accuracy=accuracy)
