"""Federated averaging whose only aggregate is the securely summed weighted update.

Models become flat float64 vectors (``vectorize``, ``torch_models``), updates become field
vectors (``quantize``, ``weighting``), and FedAvg (McMahan et al. 2017) runs over either a
plaintext or a secure aggregator (``aggregators``, ``fedavg``). torch is optional.
"""

from .aggregators import (
    AggregateResult,
    Aggregator,
    ClientUpdate,
    PlaintextAggregator,
    SecureAggregator,
)
from .data import Dataset, load_digits_dataset
from .distributed_dp import DistributedDP, DPPlan, RoundPrivacy
from .fedavg import FedAvg, FedAvgConfig, RoundRecord
from .models import Learner, LogisticRegression, Metrics
from .partition import dirichlet_partition, iid_partition, shard_partition
from .quantize import (
    QuantizationConfig,
    check_headroom,
    dequantize,
    from_field,
    max_clients,
    quantize,
    safe_parameters,
    stochastic_round,
    to_field,
)
from .torch_models import TorchLearner, module_spec, module_to_vector, vector_to_module
from .vectorize import (
    TensorSpec,
    VectorSpec,
    flatten_arrays,
    unflatten,
    vector_to_arrays,
    vector_to_dict,
)
from .weighting import WeightedMean, capped_weight, decode_weighted_sum, encode_weighted_update

__version__ = "0.1.0"
"""The package version (the same for secagg, fedavg_core and transport; see pyproject.toml)."""

__all__ = [
    "__version__",
    "AggregateResult",
    "Aggregator",
    "ClientUpdate",
    "DPPlan",
    "Dataset",
    "DistributedDP",
    "FedAvg",
    "FedAvgConfig",
    "Learner",
    "LogisticRegression",
    "Metrics",
    "PlaintextAggregator",
    "QuantizationConfig",
    "RoundPrivacy",
    "RoundRecord",
    "SecureAggregator",
    "TensorSpec",
    "TorchLearner",
    "VectorSpec",
    "WeightedMean",
    "capped_weight",
    "check_headroom",
    "decode_weighted_sum",
    "dequantize",
    "dirichlet_partition",
    "encode_weighted_update",
    "flatten_arrays",
    "from_field",
    "iid_partition",
    "load_digits_dataset",
    "max_clients",
    "module_spec",
    "module_to_vector",
    "quantize",
    "safe_parameters",
    "shard_partition",
    "stochastic_round",
    "to_field",
    "unflatten",
    "vector_to_arrays",
    "vector_to_dict",
    "vector_to_module",
]
