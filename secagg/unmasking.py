"""Server-side mask removal (Bonawitz et al. 2017, Fig. 4, round 4), as picklable jobs.

After reconstruction the server knows b_u for every u in U3 and s_v^SK for every v in U2 minus
U3. The sum of the masked inputs still contains PRG(b_u) for u in U3 and, for each dropped v,
sign(u, v) * PRG(s_uv) for its neighbours u in U3. ``UnmaskJob`` lists such terms and ``run_job``
returns the vector that cancels them. Jobs are independent, so ``remove_masks`` can spread them
over an executor the caller chooses: anything with ``map(fn, jobs)`` (``JobExecutor``: a
``concurrent.futures.ProcessPoolExecutor``, or a cluster adapter such as
``transport.ray_executor.RayExecutor``). By default it starts a local process pool for large
rounds: the PRG holds the GIL, so threads would not help, processes do.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .masking import MaskTerm, apply_masks, pairwise_sign, reduce_into
from .primitives.field import FieldVector
from .primitives.key_agreement import KeyPurpose, derive_key, generate_private_key
from .primitives.prg import MaskDomain, word_dtype

# Below this many mask elements to regenerate (about 0.2 s in one process), forking workers and
# sending their results back costs more than it saves: at 2.5e7 and 1e8 elements (n=100,
# m=25,000 and 100,000) the 2-process pool was slower than one process (benchmarks.unmasking).
PARALLEL_MIN_ELEMENTS = 200_000_000


@dataclass(frozen=True)
class DroppedClient:
    """A client in U2 but not U3, with its reconstructed masking key and its U3 neighbours."""

    client_id: int
    secret_key: bytes  # s_v^SK, reconstructed from shares
    public_key: bytes  # s_v^PK, as advertised in round 0
    partners: tuple[tuple[int, bytes], ...]  # (u, s_u^PK) for u in U3 among v's neighbours


@dataclass(frozen=True)
class UnmaskJob:
    """A share of the mask-removal work: some self-mask seeds and some dropped clients."""

    length: int
    modulus: int
    session_id: bytes
    self_mask_seeds: tuple[bytes, ...]
    dropped: tuple[DroppedClient, ...]

    @property
    def mask_count(self) -> int:
        """How many masks of length m this job regenerates."""
        return len(self.self_mask_seeds) + sum(len(d.partners) for d in self.dropped)


def correction_terms(job: UnmaskJob) -> list[MaskTerm]:
    """The masks to take out of the sum, as terms with the sign that cancels them."""
    terms = [MaskTerm(seed, MaskDomain.SELF, -1) for seed in job.self_mask_seeds]
    for dropped in job.dropped:
        key = generate_private_key(dropped.secret_key)
        for u, u_public in dropped.partners:
            seed = derive_key(
                key,
                u_public,
                purpose=KeyPurpose.PAIRWISE_MASK,
                session_id=job.session_id,
                own_id=dropped.client_id,
                own_public=dropped.public_key,
                peer_id=u,
            )
            # u added pairwise_sign(u, v) * PRG(s_uv); the correction has the opposite sign.
            terms.append(MaskTerm(seed, MaskDomain.PAIRWISE, -pairwise_sign(u, dropped.client_id)))
    return terms


Correction = npt.NDArray[np.unsignedinteger]
"""What a job returns: a vector of elements < p, uint32 when p < 2**32, else uint64."""


class JobExecutor(Protocol):
    """Where ``remove_masks`` runs its jobs: ``concurrent.futures.Executor`` has this ``map``."""

    def map(
        self, fn: Callable[[UnmaskJob], Correction], jobs: Iterable[UnmaskJob], /
    ) -> Iterator[Correction]:
        """``fn(job)`` for each job, results in job order."""
        ...


def run_job(job: UnmaskJob) -> Correction:
    """The vector that, added to the sum mod p, removes this job's masks (elements < p).

    Returned in the narrowest word type that holds p (uint32 below 2**32), which halves what a
    worker process sends back at the default modulus.
    """
    acc = np.zeros(job.length, dtype=np.uint64)
    apply_masks(acc, correction_terms(job), job.modulus)
    return acc.astype(word_dtype(job.modulus), copy=False)


def split_jobs(
    length: int,
    modulus: int,
    session_id: bytes,
    self_mask_seeds: Sequence[bytes],
    dropped: Sequence[DroppedClient],
    parts: int,
) -> list[UnmaskJob]:
    """Deal the work into at most ``parts`` jobs of about equal mask counts (greedy, largest first)."""
    parts = max(1, parts)
    buckets: list[tuple[list[bytes], list[DroppedClient]]] = [([], []) for _ in range(parts)]
    loads = [0] * parts
    for d in sorted(dropped, key=lambda d: -len(d.partners)):
        i = loads.index(min(loads))
        buckets[i][1].append(d)
        loads[i] += len(d.partners)
    for seed in self_mask_seeds:
        i = loads.index(min(loads))
        buckets[i][0].append(seed)
        loads[i] += 1
    return [
        UnmaskJob(length, modulus, session_id, tuple(seeds), tuple(ds))
        for seeds, ds in buckets
        if seeds or ds
    ]


def default_workers(mask_elements: int) -> int:
    """Worker processes to use: all cores for big jobs on a multi-core machine, else none (1)."""
    cores = os.cpu_count() or 1
    return cores if cores >= 2 and mask_elements >= PARALLEL_MIN_ELEMENTS else 1


def remove_masks(
    total: FieldVector,
    modulus: int,
    session_id: bytes,
    self_mask_seeds: Sequence[bytes],
    dropped: Sequence[DroppedClient],
    workers: int | None = None,
    executor: JobExecutor | None = None,
) -> FieldVector:
    """total minus every remaining mask, mod p, computed in place in ``total`` (and returned).

    ``executor``: where to run the jobs (any ``JobExecutor``; the caller owns it and shuts it
    down). ``workers``: how many jobs to split the work into; without an executor, also how many
    local processes to start (None: ``default_workers``; 1: all in this process). With an
    executor and no ``workers``, one job per local core.
    """
    length = total.shape[0]
    count = len(self_mask_seeds) + sum(len(d.partners) for d in dropped)
    if workers is None:
        workers = (os.cpu_count() or 1) if executor is not None else default_workers(count * length)
    jobs = split_jobs(length, modulus, session_id, self_mask_seeds, dropped, workers)
    result = total  # the caller hands over the sum; it is reduced in place
    if executor is not None:
        _add_parts(result, executor.map(run_job, jobs), modulus)
        return result
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            apply_masks(result, correction_terms(job), modulus)
        return result
    if "fork" in multiprocessing.get_all_start_methods():
        _fork_pool(result, jobs, modulus, min(workers, len(jobs)) - 1)
        return result
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        _add_parts(result, pool.map(run_job, jobs), modulus)
    return result


def _add_parts(result: FieldVector, parts: Iterable[Correction], modulus: int) -> None:
    """result <- (result + every part) mod p (all operands < p): one reduction at the end.

    (A conditional subtract per part, ``where=result >= p``, took 120-166 ms at m = 10^7.)
    """
    count = 0
    for part in parts:
        if part.shape != result.shape:
            raise ValueError(f"an unmasking job returned shape {part.shape}, expected {result.shape}")
        np.add(result, part, out=result, casting="unsafe")  # below (count + 2) * p < 2**64
        count += 1
        if (count + 2) * (modulus - 1) >= 2**64:
            reduce_into(result, modulus, np.empty_like(result))
            count = 0
    if count:
        reduce_into(result, modulus, np.empty_like(result))


# Result slots shared with forked workers, by token: anonymous shared memory mapped before the
# pool forks, so a worker writes its correction where this process reads it (pickling 40 MB
# back through the pool's pipe cost 0.1-0.2 s at m = 10^7, as much as the job itself).
_SLOTS: dict[int, mmap.mmap] = {}


def _run_job_into_slot(task: tuple[UnmaskJob, int, int]) -> None:
    job, token, slot = task
    acc = np.zeros(job.length, dtype=np.uint64)
    apply_masks(acc, correction_terms(job), job.modulus)
    dtype = word_dtype(job.modulus)
    view = np.frombuffer(
        _SLOTS[token], dtype=dtype, count=job.length, offset=slot * acc.shape[0] * dtype().itemsize
    )
    np.copyto(view, acc, casting="unsafe")  # elements < p fit the word type


def _fork_pool(result: FieldVector, jobs: list[UnmaskJob], modulus: int, processes: int) -> None:
    """Jobs 1.. in ``processes`` forked workers, job 0 in this process, in place in ``result``."""
    itemsize = np.dtype(word_dtype(modulus)).itemsize
    size = result.shape[0] * itemsize
    slots = mmap.mmap(-1, size * (len(jobs) - 1))
    token = id(slots)
    _SLOTS[token] = slots
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
            done = pool.map(_run_job_into_slot, [(job, token, i) for i, job in enumerate(jobs[1:])])
            apply_masks(result, correction_terms(jobs[0]), modulus)
            for _ in done:  # re-raises a worker's exception
                pass
        parts = (
            np.frombuffer(slots, dtype=word_dtype(modulus), count=result.shape[0], offset=i * size)
            for i in range(len(jobs) - 1)
        )
        _add_parts(result, parts, modulus)
    finally:
        del _SLOTS[token]
        slots.close()
