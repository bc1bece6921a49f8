"""Mask removal on a Ray cluster: a ``secagg.unmasking.JobExecutor`` backed by Ray tasks.

``secagg`` never imports Ray (``ray`` is the optional ``[ray]`` extra); a server that wants to
spread a large round's unmasking over a cluster passes ``RayExecutor()`` to
``secagg.unmasking.remove_masks``::

    executor = RayExecutor(num_cpus=2)           # starts a local Ray, or joins the one running
    result = remove_masks(total, p, session_id, seeds, dropped, workers=8, executor=executor)

Each job is one Ray task (one CPU); its result comes back through the object store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("RayExecutor needs Ray: pip install 'secagg-fedavg[ray]'") from None
    return ray


class RayExecutor:
    """Runs ``map(fn, jobs)`` as Ray tasks, results in job order.

    ``address``: a running cluster to join (None: the one this process already joined, else a
    new local instance with ``num_cpus`` CPUs). A Ray instance this object started is shut down
    by ``shutdown()`` (or on leaving a ``with`` block); one it joined is left running.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        ray = _ray()
        self._started = False
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            self._started = True
        self._remote: dict[Callable[..., Any], Any] = {}

    @property
    def cpus(self) -> int:
        """CPUs the cluster offers: a good number of jobs to split a round's unmasking into."""
        return int(_ray().cluster_resources().get("CPU", 1))

    def map(self, fn: Callable[[J], R], jobs: Iterable[J], /) -> Iterator[R]:
        """Submit every job at once, then yield the results in order as they are fetched."""
        ray = _ray()
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(job) for job in jobs]
        return (ray.get(ref) for ref in refs)

    def shutdown(self) -> None:
        """Stop the Ray instance if this executor started it."""
        if self._started:
            _ray().shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
