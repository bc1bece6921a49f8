"""secagg.unmasking.remove_masks on the executor the caller chooses, against the inputs' sum.

The server's state is built here from first principles: n clients on the complete graph, some
dropped after sharing keys; each survivor's masked input is x_u + PRG(b_u) + sum of
sign(u, v) PRG(s_uv) over all others v, accumulated one whole mask at a time
(``FieldAccumulator``, not the blocked kernel under test). Removing the masks must give the
sum of the survivors' inputs, whichever executor runs the jobs.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from secagg import SecAggConfig, simulate
from secagg.masking import FieldAccumulator, pairwise_sign
from secagg.primitives.key_agreement import KeyPurpose, derive_key, generate_private_key, public_bytes
from secagg.primitives.prg import MaskDomain, MaskGenerator
from secagg.unmasking import DroppedClient, UnmaskJob, remove_masks, run_job


@dataclass
class ServerState:
    modulus: int
    session_id: bytes
    total: np.ndarray
    expected: np.ndarray
    seeds: list[bytes]
    dropped: list[DroppedClient]


def _state(modulus: int, n: int = 6, gone: frozenset[int] = frozenset({2, 5}), m: int = 301) -> ServerState:
    rng = np.random.default_rng(modulus % 997)
    session_id = rng.bytes(32)
    keys = {u: generate_private_key(rng.bytes(32)) for u in range(1, n + 1)}
    public = {u: public_bytes(k) for u, k in keys.items()}
    b = {u: rng.bytes(32) for u in keys}
    survivors = [u for u in keys if u not in gone]
    generator = MaskGenerator(m, modulus)
    total = FieldAccumulator(m, modulus)
    expected = FieldAccumulator(m, modulus)
    for u in survivors:
        x = rng.integers(0, modulus, m, dtype=np.uint64)
        expected.add(x)
        total.add(x)
        total.add(generator.expand_words(b[u], MaskDomain.SELF))
        for v in keys:
            if v != u:
                seed = derive_key(
                    keys[u],
                    public[v],
                    purpose=KeyPurpose.PAIRWISE_MASK,
                    session_id=session_id,
                    own_id=u,
                    own_public=public[u],
                    peer_id=v,
                )
                total.add_signed(generator.expand_words(seed, MaskDomain.PAIRWISE), pairwise_sign(u, v))
    dropped = [
        DroppedClient(v, keys[v].private_bytes_raw(), public[v], tuple((u, public[u]) for u in survivors))
        for v in sorted(gone)
    ]
    return ServerState(
        modulus, session_id, total.value(), expected.value(), [b[u] for u in survivors], dropped
    )


class RecordingExecutor:
    """Runs jobs in this process and remembers them (a JobExecutor that is not a futures one)."""

    def __init__(self) -> None:
        self.jobs: list[UnmaskJob] = []

    def map(
        self, fn: Callable[[UnmaskJob], np.ndarray], jobs: Iterable[UnmaskJob], /
    ) -> Iterator[np.ndarray]:
        for job in jobs:
            self.jobs.append(job)
            yield fn(job)


@pytest.mark.parametrize("modulus", [2**26 - 5, 2**32 - 5, 2**61 - 1])
def test_any_executor_gives_the_inputs_sum(modulus: int) -> None:
    state = _state(modulus)
    args = (modulus, state.session_id, state.seeds, state.dropped)
    serial = remove_masks(state.total.copy(), *args, workers=1)
    assert serial.tolist() == state.expected.tolist()
    recorder = RecordingExecutor()
    assert remove_masks(state.total.copy(), *args, workers=3, executor=recorder).tolist() == serial.tolist()
    assert len(recorder.jobs) == 3  # the work was split as asked and every job ran
    assert sum(job.mask_count for job in recorder.jobs) == len(state.seeds) + 2 * len(state.seeds)
    with ThreadPoolExecutor(2) as threads:
        assert (
            remove_masks(state.total.copy(), *args, workers=2, executor=threads).tolist() == serial.tolist()
        )


def test_default_process_pool_and_a_kept_one_give_the_inputs_sum() -> None:
    state = _state(2**32 - 5)
    args = (state.modulus, state.session_id, state.seeds, state.dropped)
    assert remove_masks(state.total.copy(), *args, workers=2).tolist() == state.expected.tolist()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        result = remove_masks(state.total.copy(), *args, workers=4, executor=pool)
    assert result.tolist() == state.expected.tolist()


def test_jobs_return_narrow_words_below_2_to_32() -> None:
    state = _state(2**32 - 5)
    job = UnmaskJob(301, state.modulus, state.session_id, tuple(state.seeds), ())
    part = run_job(job)
    assert part.dtype == np.uint32 and int(part.max()) < state.modulus
    big = _state(2**61 - 1)
    assert run_job(UnmaskJob(301, big.modulus, big.session_id, tuple(big.seeds), ())).dtype == np.uint64


class WrongShapeExecutor:
    def map(
        self, fn: Callable[[UnmaskJob], np.ndarray], jobs: Iterable[UnmaskJob], /
    ) -> Iterator[np.ndarray]:
        return iter([np.zeros(3, dtype=np.uint64) for _ in jobs])


def test_a_job_result_of_the_wrong_shape_is_refused() -> None:
    state = _state(2**32 - 5)
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(301,\)"):
        remove_masks(
            state.total.copy(),
            state.modulus,
            state.session_id,
            state.seeds,
            state.dropped,
            2,
            WrongShapeExecutor(),
        )


def test_the_server_and_simulate_run_mask_removal_on_the_callers_executor() -> None:
    """``SecAggServer(executor=...)`` (through ``simulate``) hands every mask-removal job to it."""

    class Recording:
        def __init__(self) -> None:
            self.jobs = 0

        def map(self, fn: Callable[[object], object], jobs: Iterable[object]) -> list[object]:
            todo = list(jobs)
            self.jobs += len(todo)
            return [fn(job) for job in todo]

    config = SecAggConfig(6, 4, 5)
    rng = np.random.default_rng(3)
    inputs = {i: rng.integers(0, config.modulus, 5, dtype=np.uint64) for i in range(1, 7)}
    executor = Recording()
    result = simulate(config, inputs, drop={"masked_input": {2}}, seed=5, executor=executor)
    expected = sum(int(inputs[i][0]) for i in result.survivors) % config.modulus
    assert int(result.total[0]) == expected
    assert executor.jobs >= 1
