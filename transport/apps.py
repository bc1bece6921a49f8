"""Apps: your own model and data in ``secagg-server --app`` and ``secagg-client --app``.

An *app* is what a federation trains. It is any object with two methods:

- ``server_model()``: the server's side, a ``transport.tasks.ServerModel`` (the initial global
  vector and, optionally, an accuracy on held-out data);
- ``client_trainer(client_id)``: one client's side, a ``transport.tasks.LocalTrainer`` that
  trains on that client's own data. The server never calls it; a client calls it only with its
  own id, so a client loads only its own data.

``LearnerApp`` builds one from any ``fedavg_core.Learner`` (``TorchLearner`` around a torch
module, ``LogisticRegression``, or your own) and two data loaders::

    # my_project.py
    import torch
    from fedavg_core import Dataset, TorchLearner
    from transport.apps import LearnerApp

    def learner():
        torch.manual_seed(0)  # every process must build the same initial model
        return TorchLearner(torch.nn.Sequential(torch.nn.Linear(20, 2)))

    def client_data(client_id: int) -> Dataset:
        ...  # read this client's own files

    app = LearnerApp(learner, client_data, test_data=None)

and then ``secagg-server --app my_project:app --clients 8 --export model.pt`` and, on client
``i``, ``secagg-client --app my_project:app --clients 8 --id i``. The object named after the
colon may also be a function of an ``AppContext`` (``--clients``, ``--seed`` and the
``--app-option KEY=VALUE`` pairs) that returns the app; the built-in digits tasks are two such
functions, ``transport.apps:digits_mlp`` (torch) and ``transport.apps:digits_logreg`` (numpy).

The trained model comes out in two ways:

- ``secagg-server --export PATH`` writes the final global model: a torch ``state_dict``
  (``torch.save``, suffix ``.pt``) for an app over a ``TorchLearner``, otherwise an ``.npz`` of
  named arrays (the learner's ``VectorSpec`` names);
- ``app.load_checkpoint(PATH)`` loads a server checkpoint (or an export) into a model: the torch
  module with the global weights for torch apps, the dict of named arrays otherwise.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from fedavg_core import Dataset, Learner
from fedavg_core.vectorize import FloatVector, vector_to_dict

from .checkpoint import load_checkpoint
from .tasks import DigitsTask, LearnerModel, LearnerTrainer, LocalTrainer, ServerModel

T = TypeVar("T")

EXTRAS = {"torch": "torch", "sklearn": "examples", "matplotlib": "examples"}
"""Optional imports -> the ``secagg-fedavg`` extra that installs them."""


class AppError(ValueError):
    """An ``--app`` that cannot be loaded or used; the message names the spec and the cause."""


def missing_extra_message(exc: ImportError) -> str:
    """One line for an optional dependency that is not installed, with the pip command."""
    name = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    hint = f": pip install 'secagg-fedavg[{extra}]'" if extra else ""
    return f"{name or exc} is not installed{hint}"


@runtime_checkable
class App(Protocol):
    """What a federation trains: the server's model and each client's local training."""

    def server_model(self) -> ServerModel:
        """The server's side: initial vector and optional evaluation."""
        ...

    def client_trainer(self, client_id: int) -> LocalTrainer:
        """Client ``client_id``'s local training on its own data."""
        ...


@dataclass(frozen=True)
class AppContext:
    """What an app factory is told about the federation (the same in every process).

    Attributes:
        num_clients: N (``--clients``); client ids are 1..N.
        seed: ``--seed``.
        options: the ``--app-option KEY=VALUE`` pairs.
    """

    num_clients: int
    seed: int = 0
    options: Mapping[str, str] = field(default_factory=dict)

    def option(self, name: str, default: T, convert: Callable[[str], T]) -> T:
        """Option ``name`` converted by ``convert``, or ``default``; ``AppError`` naming a bad value."""
        if name not in self.options:
            return default
        try:
            return convert(self.options[name])
        except ValueError:
            raise AppError(f"--app-option {name}={self.options[name]}: not a valid {name}") from None


class LearnerApp:
    """An ``App`` over a ``fedavg_core.Learner``.

    Args:
        learner: builds the model. Every process calls it, so it must give the same initial
            weights everywhere (seed torch before building a module).
        client_data: client id -> that client's own ``Dataset`` (called by that client only).
        test_data: the server's held-out data for the accuracy per round (None: no evaluation).
        seed: the local minibatch order of client i in round r comes from
            ``numpy.random.default_rng([seed * 100_003 + i, r])``.
    """

    def __init__(
        self,
        learner: Callable[[], Learner],
        client_data: Callable[[int], Dataset],
        test_data: Callable[[], Dataset | None] | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self._make_learner = learner
        self._client_data = client_data
        self._test_data = test_data
        self.seed = seed
        self._learner: Learner | None = None

    @property
    def learner(self) -> Learner:
        """The app's model (built on first use)."""
        if self._learner is None:
            self._learner = self._make_learner()
        return self._learner

    def server_model(self) -> LearnerModel:
        """Initial vector of ``learner``, accuracy on ``test_data``."""
        learner = self.learner  # first: a missing torch shows before any data is loaded
        test = self._test_data() if self._test_data is not None else None
        return LearnerModel(learner, test)

    def client_trainer(self, client_id: int) -> LearnerTrainer:
        """Local SGD on ``client_data(client_id)``, with a learner of its own (so trainers of
        several clients in one process may train at the same time)."""
        learner = self._make_learner()
        data = self._client_data(client_id)
        return LearnerTrainer(learner, data, seed=self.seed * 100_003 + client_id)

    @property
    def is_torch(self) -> bool:
        """True when the learner is a ``fedavg_core.TorchLearner``."""
        from fedavg_core.torch_models import TorchLearner

        return isinstance(self.learner, TorchLearner)

    @property
    def export_suffix(self) -> str:
        """``.pt`` (torch ``state_dict``) for torch apps, ``.npz`` (named arrays) otherwise."""
        return ".pt" if self.is_torch else ".npz"

    def to_model(self, vector: FloatVector) -> Any:
        """The model holding ``vector``: the torch module for torch apps (the learner's own
        module, loaded in place), else ``{name: array}`` in the learner's layout."""
        checked = self.learner.spec.check_vector(vector)
        if self.is_torch:
            from fedavg_core import vector_to_module

            module = self.learner.module  # type: ignore[attr-defined]
            vector_to_module(checked, module, self.learner.buffers)  # type: ignore[attr-defined]
            return module
        return vector_to_dict(checked, self.learner.spec)

    def export(self, vector: FloatVector, path: str | os.PathLike[str]) -> None:
        """Write the model ``vector`` to ``path``: ``torch.save(state_dict)`` or ``numpy.savez``."""
        model = self.to_model(vector)
        target = Path(path)
        if self.is_torch:
            import torch

            torch.save(model.state_dict(), target)
        else:
            with open(target, "wb") as handle:
                np.savez(handle, **model)

    def load_vector(self, path: str | os.PathLike[str]) -> FloatVector:
        """The model vector in a server checkpoint or in a file written by ``export``."""
        target = Path(path)
        if target.suffix == ".pt" and self.is_torch:
            import torch

            from fedavg_core import module_to_vector

            module = self.learner.module  # type: ignore[attr-defined]
            module.load_state_dict(torch.load(target, weights_only=True))
            return module_to_vector(module, self.learner.buffers)  # type: ignore[attr-defined]
        if target.suffix == ".npz":
            with np.load(target) as data:
                missing = [n for n in self.learner.spec.names if n not in data.files]
                if missing:
                    raise AppError(f"{target}: no arrays {missing} of this app's model")
                parts = [np.asarray(data[n], dtype=np.float64).reshape(-1) for n in self.learner.spec.names]
            return self.learner.spec.check_vector(np.concatenate(parts))
        saved = load_checkpoint(target, self.learner.spec.size)
        if saved is None:
            raise AppError(f"{target}: no such file")
        return saved.vector

    def load_checkpoint(self, path: str | os.PathLike[str]) -> Any:
        """A server checkpoint (or an export) loaded into a model (see ``to_model``)."""
        return self.to_model(self.load_vector(path))


def export_suffix(app: App) -> str | None:
    """The file suffix ``export_model`` writes for ``app`` (None: the app cannot export)."""
    suffix = getattr(app, "export_suffix", None)
    return suffix if isinstance(suffix, str) else None


def export_model(app: App, vector: FloatVector, path: str | os.PathLike[str]) -> None:
    """Write the global model ``vector`` with the app's ``export``; ``AppError`` if it has none."""
    export = getattr(app, "export", None)
    if export is None:
        raise AppError(f"the app {type(app).__name__} has no export method")
    export(vector, path)


# -- loading --------------------------------------------------------------------------------------


def load_app(spec: str, context: AppContext, app_dir: str | os.PathLike[str] = ".") -> App:
    """The app named by ``spec`` (``module:attribute``), imported with ``app_dir`` on ``sys.path``.

    ``attribute`` may be dotted (``module:holder.app``). An object with ``server_model`` and
    ``client_trainer`` is the app; a callable is called with ``context`` and must return one.
    Raises ``AppError`` naming the spec and what is wrong; an ``ImportError`` for an optional
    dependency the module needs (torch, scikit-learn) propagates for the caller to report.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute or ":" in attribute:
        raise AppError(f"--app {spec}: expected module:object, e.g. my_project:app")
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise AppError(
                f"--app {spec}: no module named {missing!r} "
                f"(looked in {directory} and the installed packages)"
            ) from None
        raise
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AppError(f"--app {spec}: module {module_name} has no attribute {attribute!r}")
        target = getattr(target, part)
    if isinstance(target, App):
        return target
    if callable(target):
        made = target(context)
        if isinstance(made, App):
            return made
        raise AppError(
            f"--app {spec}: {attribute}(context) returned a {type(made).__name__}, "
            "not an app (an object with server_model() and client_trainer(client_id))"
        )
    raise AppError(
        f"--app {spec}: {attribute} is a {type(target).__name__}, not an app "
        "(an object with server_model() and client_trainer(client_id)) or a function returning one"
    )


# -- the built-in digits apps ---------------------------------------------------------------------


def _digits(name: str, context: AppContext) -> LearnerApp:
    alpha = context.option("alpha", 0.5, float)
    if not alpha > 0:
        raise AppError(f"--alpha must be positive, got {alpha:g}")
    task = DigitsTask(name, context.num_clients, alpha, context.seed)

    def client_data(client_id: int) -> Dataset:
        if not 1 <= client_id <= task.num_clients:
            raise AppError(f"--id {client_id}: client ids are 1..{task.num_clients} (--clients)")
        return task.client_data[client_id - 1]

    return LearnerApp(task.learner, client_data, lambda: task.test_data, seed=context.seed)


def digits_mlp(context: AppContext) -> LearnerApp:
    """Scikit-learn's digits, split non-IID (Dirichlet ``alpha`` option, default 0.5) over the
    clients from ``--seed``; a torch MLP 64-32-10. A simulation: each client derives the shared
    split and keeps its own part."""
    return _digits("digits-mlp", context)


def digits_logreg(context: AppContext) -> LearnerApp:
    """As ``digits_mlp``, with numpy softmax regression (no torch needed)."""
    return _digits("digits-logreg", context)


BUILTIN_APPS = {"digits-mlp": "transport.apps:digits_mlp", "digits-logreg": "transport.apps:digits_logreg"}
"""``--task`` names -> their ``--app`` specs."""

__all__ = [
    "BUILTIN_APPS",
    "App",
    "AppContext",
    "AppError",
    "LearnerApp",
    "digits_logreg",
    "digits_mlp",
    "export_model",
    "export_suffix",
    "load_app",
    "missing_extra_message",
]
