"""Server-side mask removal (Bonawitz et al. 2017, Fig. 4, round 4), as picklable jobs.

After reconstruction the server knows b_u for every u in U3 and s_v^SK for every v in U2 minus
U3. The sum of the masked inputs still contains PRG(b_u) for u in U3 and, for each dropped v,
sign(u, v) * PRG(s_uv) for its neighbours u in U3. ``UnmaskJob`` lists such terms and ``run_job``
returns the vector that cancels them. Jobs are independent, so ``remove_masks`` can spread them
over worker processes: the PRG holds the GIL, so threads would not help, processes do.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from .masking import MaskTerm, apply_masks, pairwise_sign
from .primitives.field import FieldVector
from .primitives.key_agreement import KeyPurpose, derive_key, generate_private_key
from .primitives.prg import MaskDomain

# Below this many mask elements to regenerate, starting worker processes costs more than it saves.
PARALLEL_MIN_ELEMENTS = 20_000_000


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


def run_job(job: UnmaskJob) -> FieldVector:
    """The vector that, added to the sum mod p, removes this job's masks."""
    acc = np.zeros(job.length, dtype=np.uint64)
    apply_masks(acc, correction_terms(job), job.modulus)
    return acc


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
) -> FieldVector:
    """total minus every remaining mask, mod p, computed in place in ``total`` (and returned).

    ``workers``: processes to use (None: automatic)."""
    length = total.shape[0]
    count = len(self_mask_seeds) + sum(len(d.partners) for d in dropped)
    if workers is None:
        workers = default_workers(count * length)
    jobs = split_jobs(length, modulus, session_id, self_mask_seeds, dropped, workers)
    result = total  # the caller hands over the sum; it is reduced in place
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            apply_masks(result, correction_terms(job), modulus)
        return result
    # fork keeps start-up cheap and needs no importable __main__; workers only run numpy/AES.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        for part in pool.map(run_job, jobs):
            np.add(result, part, out=result)
            np.subtract(result, np.uint64(modulus), out=result, where=result >= modulus)
    return result
