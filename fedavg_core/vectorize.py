"""Named arrays <-> one flat float64 vector, with a spec that makes the round trip exact.

Every value is stored as float64, which holds every float16/float32/float64 value and every
integer of magnitude at most ``2**53`` exactly; ``flatten_arrays`` refuses anything else (complex,
object, long double arrays, larger integers), so ``unflatten`` always restores the same names,
shapes, dtypes and values. Torch modules use the same spec (``fedavg_core.torch_models``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatVector = npt.NDArray[np.float64]
"""A flat float64 vector: a model's state, or an update to it."""

MAX_EXACT_INT = 2**53
"""Integers of magnitude up to this survive a float64 round trip."""

_EXACT_FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})


@dataclass(frozen=True)
class TensorSpec:
    """One named array inside a flat vector.

    Attributes:
        name: the dict key, the list position as a string, or the torch state_dict name.
        shape: the array's shape.
        dtype: the dtype's name (``numpy.dtype(...).name``, or the torch dtype without ``torch.``).
        buffer: True for a torch buffer (e.g. BatchNorm running statistics), False otherwise.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: bool = False

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class VectorSpec:
    """The layout of a flat vector: its arrays in order, and whether they came as a dict.

    Attributes:
        entries: one ``TensorSpec`` per array, in vector order.
        keyed: True when the arrays came as a mapping (restored as a dict), False for a sequence.
    """

    entries: tuple[TensorSpec, ...]
    keyed: bool = True

    def __post_init__(self) -> None:
        names = [entry.name for entry in self.entries]
        if len(set(names)) != len(names):
            raise ValueError(f"array names must be unique, got {names}")

    @property
    def size(self) -> int:
        """Length of the flat vector."""
        return sum(entry.size for entry in self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        """The array names in vector order."""
        return tuple(entry.name for entry in self.entries)

    def offsets(self) -> tuple[int, ...]:
        """Start of each array in the vector, followed by the vector's length."""
        out = [0]
        for entry in self.entries:
            out.append(out[-1] + entry.size)
        return tuple(out)

    def check_vector(self, vector: npt.ArrayLike) -> FloatVector:
        """``vector`` as a 1-D float64 array of this spec's length, else ``ValueError``."""
        array = np.asarray(vector)
        if array.ndim != 1 or array.shape[0] != self.size:
            raise ValueError(f"vector must be 1-D of length {self.size}, got shape {array.shape}")
        if array.dtype.kind not in "fiub":
            raise ValueError(f"vector must be real-valued, got dtype {array.dtype}")
        return array.astype(np.float64, copy=False)


def _check_exact(name: str, array: npt.NDArray[np.generic]) -> None:
    dtype = array.dtype
    if dtype.kind == "f":
        if dtype.name not in _EXACT_FLOAT_DTYPES:
            raise ValueError(f"array {name!r}: dtype {dtype} does not round-trip through float64")
    elif dtype.kind in "iu":
        if array.size and max(abs(int(array.min())), abs(int(array.max()))) > MAX_EXACT_INT:
            raise ValueError(f"array {name!r}: integers beyond 2**53 do not round-trip through float64")
    elif dtype.kind != "b":
        raise ValueError(f"array {name!r}: unsupported dtype {dtype} (need float, int or bool)")


def array_spec(arrays: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike]) -> VectorSpec:
    """The spec of a dict (names = keys, in order) or a list (names = "0", "1", ...) of arrays."""
    if isinstance(arrays, Mapping):
        items = [(str(key), np.asarray(value)) for key, value in arrays.items()]
        keyed = True
    elif isinstance(arrays, Sequence) and not isinstance(arrays, (str, bytes)):
        items = [(str(i), np.asarray(value)) for i, value in enumerate(arrays)]
        keyed = False
    else:
        raise ValueError(f"expected a mapping or a sequence of arrays, got {type(arrays).__name__}")
    for name, array in items:
        _check_exact(name, array)
    return VectorSpec(tuple(TensorSpec(name, tuple(a.shape), a.dtype.name) for name, a in items), keyed)


def flatten_arrays(
    arrays: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike],
) -> tuple[FloatVector, VectorSpec]:
    """Concatenate the arrays (C order) into one float64 vector; return it with its spec."""
    spec = array_spec(arrays)
    values = arrays.values() if isinstance(arrays, Mapping) else arrays
    parts = [np.asarray(a, dtype=np.float64).reshape(-1) for a in values]
    vector = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return vector, spec


def _restore(values: FloatVector, entry: TensorSpec) -> npt.NDArray[np.generic]:
    dtype = np.dtype(entry.dtype)
    if dtype.kind in "iub":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise ValueError(f"array {entry.name!r} has dtype {dtype} but the vector holds non-integers")
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        low, high = (0, 1) if info is None else (info.min, info.max)
        if values.size and (values.min() < low or values.max() > high):
            raise ValueError(f"array {entry.name!r}: values outside the range of {dtype}")
    return values.reshape(entry.shape).astype(dtype)


def vector_to_arrays(vector: npt.ArrayLike, spec: VectorSpec) -> list[npt.NDArray[np.generic]]:
    """Split a flat vector back into fresh arrays with the spec's shapes and dtypes, in order."""
    flat = spec.check_vector(vector)
    offsets = spec.offsets()
    return [_restore(flat[offsets[i] : offsets[i + 1]], entry) for i, entry in enumerate(spec.entries)]


def vector_to_dict(vector: npt.ArrayLike, spec: VectorSpec) -> dict[str, npt.NDArray[np.generic]]:
    """Split a flat vector into ``{name: array}``."""
    return dict(zip(spec.names, vector_to_arrays(vector, spec), strict=True))


def unflatten(
    vector: npt.ArrayLike, spec: VectorSpec
) -> dict[str, npt.NDArray[np.generic]] | list[npt.NDArray[np.generic]]:
    """Inverse of ``flatten_arrays``: a dict if the arrays came as a mapping, else a list."""
    return vector_to_dict(vector, spec) if spec.keyed else vector_to_arrays(vector, spec)
