"""Model <-> flat vector: exact round trips for numpy arrays and torch modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.nn.utils import parameters_to_vector

from fedavg_core import (
    flatten_arrays,
    module_spec,
    module_to_vector,
    unflatten,
    vector_to_arrays,
    vector_to_dict,
    vector_to_module,
)

DTYPES = st.sampled_from(["float16", "float32", "float64", "int8", "int32", "uint16", "bool"])


@st.composite
def named_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=0, max_size=5, unique=True))
    return {
        name: draw(hnp.arrays(np.dtype(draw(DTYPES)), hnp.array_shapes(min_dims=0, max_dims=3)))
        for name in names
    }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@settings(max_examples=150, deadline=None)
@given(named_arrays())
def test_numpy_dict_round_trips_exactly(arrays: dict[str, np.ndarray]) -> None:
    vector, spec = flatten_arrays(arrays)
    assert vector.dtype == np.float64 and vector.ndim == 1
    assert vector.size == spec.size == sum(a.size for a in arrays.values())
    restored = unflatten(vector, spec)
    assert isinstance(restored, dict)
    assert list(restored) == list(arrays)
    assert all(_same(restored[k], arrays[k]) for k in arrays)


@settings(max_examples=50, deadline=None)
@given(named_arrays())
def test_numpy_list_round_trips_exactly(arrays: dict[str, np.ndarray]) -> None:
    as_list = list(arrays.values())
    vector, spec = flatten_arrays(as_list)
    restored = unflatten(vector, spec)
    assert isinstance(restored, list)
    assert len(restored) == len(as_list)
    assert all(_same(r, a) for r, a in zip(restored, as_list, strict=True))
    assert spec.names == tuple(str(i) for i in range(len(as_list)))


def test_spec_records_names_shapes_and_dtypes_in_order() -> None:
    vector, spec = flatten_arrays({"w": np.ones((2, 3), np.float32), "b": np.arange(3)})
    assert [(e.name, e.shape, e.dtype) for e in spec.entries] == [
        ("w", (2, 3), "float32"),
        ("b", (3,), "int64"),
    ]
    assert spec.offsets() == (0, 6, 9)
    assert np.array_equal(vector, [1, 1, 1, 1, 1, 1, 0, 1, 2])
    assert vector_to_dict(vector, spec)["b"].dtype == np.int64


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones(2, dtype=np.complex64), "unsupported dtype"),
        (np.array([2**53 + 1], dtype=np.int64), "2\\*\\*53"),
        (np.array(["a"]), "unsupported dtype"),
    ],
)
def test_arrays_that_cannot_round_trip_are_refused(array: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        flatten_arrays({"x": array})


def test_long_double_is_refused_when_it_is_wider_than_float64() -> None:
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is float64 on this platform")
    with pytest.raises(ValueError, match="round-trip"):
        flatten_arrays([np.ones(2, dtype=np.longdouble)])


def test_unflatten_refuses_a_wrong_length_or_non_integers_for_int_arrays() -> None:
    _, spec = flatten_arrays({"n": np.arange(3, dtype=np.int32)})
    with pytest.raises(ValueError, match="length 3"):
        vector_to_arrays(np.zeros(4), spec)
    with pytest.raises(ValueError, match="non-integers"):
        vector_to_arrays(np.array([0.0, 0.5, 1.0]), spec)
    with pytest.raises(ValueError, match="outside the range"):
        vector_to_arrays(np.array([0.0, 1.0, 2.0**40]), spec)


# --- torch --------------------------------------------------------------------------------


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 3)
    )


def _trained_stats(module: torch.nn.Module) -> torch.nn.Module:
    module.train()
    with torch.no_grad():
        module(torch.randn(16, 5))  # move BatchNorm's running statistics off their defaults
    return module


def test_torch_vector_is_parameters_to_vector_then_float_buffers() -> None:
    net = _trained_stats(_net(0))
    vector = module_to_vector(net)
    spec = module_spec(net)
    params = parameters_to_vector(net.parameters()).detach().double().numpy()
    assert np.array_equal(vector[: params.size], params)
    assert [e.name for e in spec.entries if e.buffer] == ["1.running_mean", "1.running_var"]
    assert "1.num_batches_tracked" not in spec.names  # an integer counter stays local
    bn = net.get_submodule("1")
    assert isinstance(bn, torch.nn.BatchNorm1d)
    assert bn.running_mean is not None and bn.running_var is not None
    stats = torch.cat([bn.running_mean, bn.running_var]).double().numpy()
    assert np.array_equal(vector[params.size :], stats)


def test_torch_round_trip_is_exact_including_batchnorm_statistics() -> None:
    source = _trained_stats(_net(0))
    target = _net(1)
    vector_to_module(module_to_vector(source), target)
    src, dst = source.state_dict(), target.state_dict()
    for name in src:
        if name.endswith("num_batches_tracked"):
            assert int(dst[name]) == 0  # local, untouched
        else:
            assert src[name].dtype == dst[name].dtype
            assert torch.equal(src[name], dst[name]), name
    assert np.array_equal(module_to_vector(target), module_to_vector(source))


def test_buffers_none_federates_parameters_only_and_leaves_buffers_local() -> None:
    source = _trained_stats(_net(0))
    target = _net(1)
    before = {k: v.clone() for k, v in target.state_dict().items() if "running" in k}
    vector = module_to_vector(source, buffers="none")
    assert vector.size == sum(p.numel() for p in source.parameters())
    vector_to_module(vector, target, buffers="none")
    for name, value in before.items():
        assert torch.equal(target.state_dict()[name], value)
    assert torch.equal(parameters_to_vector(target.parameters()), parameters_to_vector(source.parameters()))
    with pytest.raises(ValueError, match="buffers"):
        module_spec(source, buffers="all")  # type: ignore[arg-type]


def test_mixed_dtypes_keep_their_dtype_and_values() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3).double(), torch.nn.Linear(3, 2).half())
    copy = torch.nn.Sequential(torch.nn.Linear(3, 3).double(), torch.nn.Linear(3, 2).half())
    vector = module_to_vector(net)
    vector_to_module(vector, copy)
    assert [p.dtype for p in copy.parameters()] == [torch.float64] * 2 + [torch.float16] * 2
    for a, b in zip(net.parameters(), copy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_loaded_parameters_do_not_alias_the_numpy_vector() -> None:
    net = _net(0)
    vector = module_to_vector(net)
    vector_to_module(vector, net)
    before = parameters_to_vector(net.parameters()).detach().clone()
    vector[:] = 123.0
    assert torch.equal(parameters_to_vector(net.parameters()), before)


def test_shared_parameters_appear_once() -> None:
    layer = torch.nn.Linear(4, 4)
    tied = torch.nn.Sequential(layer, torch.nn.Tanh(), layer)
    assert module_spec(tied).size == 4 * 4 + 4
    assert module_to_vector(tied).size == 20


def test_torch_vector_length_is_checked() -> None:
    with pytest.raises(ValueError, match="length"):
        vector_to_module(np.zeros(3), _net(0))


def test_fedavg_core_imports_and_runs_without_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked for this test")
        sys.meta_path.insert(0, BlockTorch())
        import numpy as np
        import fedavg_core as fc
        data = fc.Dataset(np.eye(4), np.array([0, 1, 0, 1]))
        run = fc.FedAvg(fc.LogisticRegression(4, 2), fc.PlaintextAggregator(),
                        [data.subset([0, 1]), data.subset([2, 3])],
                        fc.FedAvgConfig(client_fraction=1.0), seed=0, test_data=data)
        record = run.run_round()
        assert record.total_weight == 4 and "torch" not in sys.modules
        try:
            fc.TorchLearner(None)
        except ImportError as error:
            print("refused:", error)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "secagg-fedavg[torch]" in out.stdout
