"""The websocket transport: FedAvg with secure aggregation between real processes.

The only asyncio code of the project. ``FederationServer`` and ``FederationClient`` drive the
sans-I/O state machines of ``secagg`` over websockets with msgpack frames (``codec``); the
console scripts ``secagg-server``, ``secagg-client`` and ``secagg-demo`` are in ``cli`` and
``demo``.
"""

from .apps import App, AppContext, LearnerApp, load_app
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .client import ClientSummary, FatalClientError, FederationClient, RegistrationRefused, RoundRefused
from .codec import Frame, FrameLimits, decode_from_client, decode_from_server, encode
from .errors import CloseCode, DecodeError
from .records import DropRecord, RoundReport, ServerEvent
from .server import FederationServer, FederationSettings, RoundOutcome
from .tasks import DigitsTask, LearnerModel, LearnerTrainer, LocalTrainer, ServerModel, TrainingSettings
from .tls import client_context, generate_self_signed, server_context

__version__ = "0.1.0"
"""The package version (the same for secagg, fedavg_core and transport; see pyproject.toml)."""

__all__ = [
    "__version__",
    "App",
    "AppContext",
    "LearnerApp",
    "load_app",
    "Checkpoint",
    "CheckpointError",
    "ClientSummary",
    "CloseCode",
    "DecodeError",
    "DigitsTask",
    "DropRecord",
    "FatalClientError",
    "FederationClient",
    "FederationServer",
    "FederationSettings",
    "Frame",
    "FrameLimits",
    "LearnerModel",
    "LearnerTrainer",
    "LocalTrainer",
    "RegistrationRefused",
    "RoundOutcome",
    "RoundRefused",
    "RoundReport",
    "ServerEvent",
    "ServerModel",
    "TrainingSettings",
    "client_context",
    "decode_from_client",
    "decode_from_server",
    "encode",
    "generate_self_signed",
    "load_checkpoint",
    "save_checkpoint",
    "server_context",
]
