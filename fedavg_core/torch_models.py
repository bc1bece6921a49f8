"""Torch modules <-> flat float64 vectors, and a torch ``Learner`` for the FedAvg loop.

torch is optional: it is imported inside the functions here, never at module import, so
``import fedavg_core`` works without it.

Parameters are flattened with ``torch.nn.utils.parameters_to_vector`` and restored with
``vector_to_parameters``, in ``named_parameters()`` order (shared parameters appear once).
Buffers are handled deliberately, by the ``buffers`` policy:

- ``"float"`` (default): floating-point persistent buffers, such as BatchNorm's ``running_mean``
  and ``running_var``, follow the parameters in the vector, so they are averaged by FedAvg like
  weights (what averaging a whole ``state_dict`` does). Integer buffers, such as BatchNorm's
  ``num_batches_tracked``, are counters: averaging them means nothing, so they stay local and
  out of the vector.
- ``"none"``: no buffer is in the vector; every buffer stays local to the module (FedBN-style
  local statistics). In an in-process simulation one module serves all clients, so its
  buffers are then whatever the last local training left.

Non-persistent buffers (not in ``state_dict``) are never in the vector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np

from .data import Dataset
from .models import Metrics, check_training_args, minibatches
from .vectorize import FloatVector, TensorSpec, VectorSpec

if TYPE_CHECKING:
    import torch

BufferPolicy = Literal["float", "none"]


def _import_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this part of fedavg_core needs torch: pip install 'secagg-fedavg[torch]'"
        ) from error


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _federated_buffers(module: torch.nn.Module, buffers: BufferPolicy) -> list[tuple[str, torch.Tensor]]:
    if buffers not in ("float", "none"):
        raise ValueError(f"buffers must be 'float' or 'none', got {buffers!r}")
    if buffers == "none":
        return []
    persistent = set(module.state_dict(keep_vars=True))
    return [
        (name, buf) for name, buf in module.named_buffers() if name in persistent and buf.is_floating_point()
    ]


def module_spec(module: torch.nn.Module, buffers: BufferPolicy = "float") -> VectorSpec:
    """The layout of ``module_to_vector(module, buffers)``: parameters, then federated buffers."""
    _import_torch()
    entries = [
        TensorSpec(name, tuple(p.shape), _dtype_name(p.dtype)) for name, p in module.named_parameters()
    ]
    entries += [
        TensorSpec(name, tuple(b.shape), _dtype_name(b.dtype), buffer=True)
        for name, b in _federated_buffers(module, buffers)
    ]
    for entry in entries:
        if entry.dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise ValueError(
                f"{entry.name!r} has dtype {entry.dtype}; only float16, bfloat16, float32 and "
                "float64 round-trip exactly through a float64 vector"
            )
    return VectorSpec(tuple(entries), keyed=True)


def module_to_vector(module: torch.nn.Module, buffers: BufferPolicy = "float") -> FloatVector:
    """The module's parameters (via ``parameters_to_vector``) and federated buffers, as float64.

    Exact: every float16/bfloat16/float32/float64 value is a float64 value.
    """
    _import_torch()
    import torch
    from torch.nn.utils import parameters_to_vector

    parts: list[torch.Tensor] = []
    params = list(module.parameters())
    with torch.no_grad():
        if params:
            parts.append(parameters_to_vector(params).to(torch.float64))
        parts += [b.reshape(-1).to(torch.float64) for _, b in _federated_buffers(module, buffers)]
        if not parts:
            return np.zeros(0, dtype=np.float64)
        out: FloatVector = torch.cat([p.cpu() for p in parts]).numpy().copy()
    return out


def vector_to_module(vector: FloatVector, module: torch.nn.Module, buffers: BufferPolicy = "float") -> None:
    """Load a vector made by ``module_to_vector`` into ``module`` (in place), exactly.

    Parameters are restored with ``vector_to_parameters``, one call per run of parameters that
    share a dtype and device (that function re-types parameters to the vector's dtype, so each
    run gets a vector of its own dtype); buffers are copied in place.
    """
    _import_torch()
    import torch
    from torch.nn.utils import vector_to_parameters

    spec = module_spec(module, buffers)
    flat = spec.check_vector(vector)
    params = list(module.parameters())
    start = 0
    with torch.no_grad():
        i = 0
        while i < len(params):
            j = i
            while (
                j < len(params)
                and params[j].dtype == params[i].dtype
                and params[j].device == params[i].device
            ):
                j += 1
            count = sum(p.numel() for p in params[i:j])
            chunk = torch.tensor(flat[start : start + count], dtype=params[i].dtype, device=params[i].device)
            vector_to_parameters(chunk, params[i:j])
            start += count
            i = j
        for _, buf in _federated_buffers(module, buffers):
            count = buf.numel()
            values = torch.from_numpy(flat[start : start + count].copy()).reshape(buf.shape)
            buf.copy_(values.to(dtype=buf.dtype, device=buf.device))
            start += count


LossFunction = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


class TorchLearner:
    """A torch classifier as a FedAvg ``Learner``: local SGD on cross-entropy (by default).

    Every call first loads the given vector into ``module``, so one learner serves all simulated
    clients. Minibatch order comes from the injected numpy generator; torch's own randomness
    (e.g. dropout) is seeded from it inside ``torch.random.fork_rng``, so training is
    reproducible and torch's global generator is left as it was.

    Args:
        module: the model; it maps a float batch shaped like ``Dataset.x`` to class logits.
        loss: ``loss(logits, labels)``, mean over the batch; default cross-entropy.
        buffers: which buffers travel in the vector (see the module docstring).
        momentum, weight_decay: passed to ``torch.optim.SGD`` (a fresh optimizer per call,
            as in McMahan et al. 2017: clients keep no optimizer state between rounds).
        device: where to train; the module is moved there.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        loss: LossFunction | None = None,
        buffers: BufferPolicy = "float",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        device: str = "cpu",
    ) -> None:
        _import_torch()
        import torch

        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.loss = loss if loss is not None else torch.nn.functional.cross_entropy
        self.buffers: BufferPolicy = buffers
        self.momentum = momentum
        self.weight_decay = weight_decay
        self._spec = module_spec(self.module, buffers)
        dtypes = {p.dtype for p in self.module.parameters()}
        self._input_dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32

    @property
    def spec(self) -> VectorSpec:
        """The layout of the module's vector."""
        return self._spec

    def initial_vector(self) -> FloatVector:
        """The module's current state."""
        return module_to_vector(self.module, self.buffers)

    def _tensors(self, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        x = torch.as_tensor(data.x, dtype=self._input_dtype, device=self.device)
        y = torch.as_tensor(data.y, dtype=torch.long, device=self.device)
        return x, y

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
        """``epochs`` passes of minibatch SGD from ``vector``; the new vector.

        With ``proximal_mu`` > 0 each step's loss gains FedProx's ``mu/2 * ||w - w_global||^2``
        over the parameters (``w_global``: their values in ``vector``; federated buffers are
        statistics, not optimised, and have no proximal term). ``should_stop`` is called after
        every step; True ends training there."""
        import torch

        check_training_args(epochs, batch_size, learning_rate, proximal_mu)
        vector_to_module(vector, self.module, self.buffers)
        x, y = self._tensors(data)
        params = list(self.module.parameters())
        anchors = [p.detach().clone() for p in params] if proximal_mu else []
        optimizer = torch.optim.SGD(
            params,
            lr=learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        devices = [] if self.device.type == "cpu" else [self.device.index or 0]
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(int(rng.integers(2**63)))
            self.module.train()
            for _ in range(epochs):
                for batch in minibatches(len(data), batch_size, rng):
                    index = torch.from_numpy(batch).to(self.device)
                    optimizer.zero_grad(set_to_none=True)
                    loss = self.loss(self.module(x[index]), y[index])
                    if anchors:
                        drift = sum(torch.sum((p - a) ** 2) for p, a in zip(params, anchors, strict=True))
                        loss = loss + proximal_mu / 2 * drift
                    torch.autograd.backward(loss)
                    optimizer.step()
                    if should_stop is not None and should_stop():
                        return module_to_vector(self.module, self.buffers)
        return module_to_vector(self.module, self.buffers)

    def evaluate(self, vector: FloatVector, data: Dataset) -> Metrics:
        """Mean loss and accuracy, in eval mode without gradients."""
        import torch

        vector_to_module(vector, self.module, self.buffers)
        x, y = self._tensors(data)
        self.module.eval()
        with torch.no_grad():
            logits = self.module(x)
            loss = float(self.loss(logits, y))
            accuracy = float((logits.argmax(dim=1) == y).double().mean())
        return Metrics(loss=loss, accuracy=accuracy)
