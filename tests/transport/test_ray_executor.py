"""transport.ray_executor: mask removal as Ray tasks gives the same sum (local Ray, 2 CPUs).

Slow (a local Ray takes 5-10 s to start); ``python -m benchmarks.unmasking`` runs the same path.
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg.masking import MaskTerm, apply_masks
from secagg.primitives.prg import MaskDomain
from secagg.unmasking import remove_masks

pytest.importorskip("ray")

from transport.ray_executor import RayExecutor


@pytest.mark.slow
def test_ray_executor_removes_self_masks_exactly() -> None:
    p, m = 2**32 - 5, 1001
    rng = np.random.default_rng(3)
    inputs = [rng.integers(0, p, m, dtype=np.uint64) for _ in range(5)]
    seeds = [rng.bytes(32) for _ in inputs]
    total = np.zeros(m, dtype=np.uint64)
    for x, seed in zip(inputs, seeds, strict=True):
        y = x.copy()
        apply_masks(y, [MaskTerm(seed, MaskDomain.SELF, 1)], p)
        total = (total + y) % p
    expected = sum(x.astype(object) for x in inputs) % p
    with RayExecutor(num_cpus=2) as executor:
        assert executor.cpus == 2
        result = remove_masks(total, p, bytes(32), seeds, [], workers=3, executor=executor)
    assert result.tolist() == expected.tolist()
