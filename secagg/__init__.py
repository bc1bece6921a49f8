"""Secure aggregation (SecAgg, Bonawitz et al. 2017; SecAgg+, Bell et al. 2020), sans-I/O.

The few names an application needs; the building blocks live in ``secagg.primitives``.
"""

from .client import SecAggClient
from .config import SecAggConfig, SecurityMode
from .errors import AbortedError, LocalProtocolError, RemoteProtocolError, SecAggError
from .messages import ClientMessage, ServerMessage
from .parameters import GraphParameters, find_parameters
from .server import Drop, Rejection, SecAggServer
from .session import RoundSetup
from .simulate import SimulationResult, simulate
from .state import Round

__version__ = "0.1.0"
"""The package version (the same for secagg, fedavg_core and transport; see pyproject.toml)."""

__all__ = [
    "__version__",
    "AbortedError",
    "ClientMessage",
    "GraphParameters",
    "Drop",
    "LocalProtocolError",
    "Rejection",
    "RemoteProtocolError",
    "Round",
    "RoundSetup",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "SecurityMode",
    "ServerMessage",
    "SimulationResult",
    "find_parameters",
    "simulate",
]
