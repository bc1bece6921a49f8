"""Flower drop-in: this project's secure aggregation inside Flower apps (needs the ``flower`` extra).

Two names replace Flower's SecAgg+::

    DefaultWorkflow(fit_workflow=SecureAggregationWorkflow(...))   # was SecAggPlusWorkflow(...)
    ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod])  # was secaggplus_mod

The workflow drives ``secagg.SecAggServer`` over Flower's Grid/Message API; the mod runs
``secagg.SecAggClient`` on the client's fit result. Messages are frames of ``transport.codec``
inside Flower records. Works in the simulation engine (Ray) and the deployment engine
(SuperLink/SuperNode) alike; ``tests/flower/test_flower_simulation.py`` and
``tests/flower/test_flower_deployment.py`` run both.
"""

from .mod import SecAggMod, secure_aggregation_mod
from .params import ThreatModel
from .workflow import RoundRecord, SecureAggregationWorkflow

__all__ = ["RoundRecord", "SecAggMod", "SecureAggregationWorkflow", "ThreatModel", "secure_aggregation_mod"]
