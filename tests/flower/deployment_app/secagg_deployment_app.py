"""A Flower App for the deployment engine test: the drop-in on a SuperLink and SuperNodes.

``server`` runs FedAvg with ``SecureAggregationWorkflow`` (complete graph) over ``num-nodes``
SuperNodes and writes what every round did to the JSON file ``result-path`` (run config), so the
test can check the secure aggregate against plaintext FedAvg of the survivors' updates.
``client`` is the deterministic client of ``flower_apps`` behind ``secure_aggregation_mod``, with
``flower_apps.HangMod`` outermost: in round ``hang-round`` (0: never) the node whose
``--node-config`` has ``partition-id=hang-partition`` announces itself at its ``hang-stage``-th
fit message of the round and stops answering, so the test can kill it while the round runs.

The app reuses ``tests/flower/flower_apps.py``: the test copies it next to this module, so the
Flower App Bundle that ``flwr run`` builds holds both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from flower_apps import CLIP, MAX_WEIGHT, HangMod, RecordingWorkflow, client_fn, run_rounds
from flwr.app import Context
from flwr.client import ClientApp
from flwr.server import Grid, ServerApp

from transport.flower import secure_aggregation_mod

server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    workflow = RecordingWorkflow(
        clip=CLIP, max_weight=MAX_WEIGHT, graph="complete", timeout=float(cfg["timeout"])
    )
    run_rounds(grid, context, workflow, int(cfg["num-rounds"]), int(cfg["num-nodes"]))
    rounds = []
    for record in workflow.history:
        r = record.server_round
        rounds.append(
            {
                "server_round": r,
                "completed": record.completed,
                "halted": record.halted,
                "threshold": record.config.threshold if record.config is not None else None,
                "sampled": list(record.sampled),
                "survivors": list(record.survivors),
                "dropped": {str(node): reason for node, reason in record.dropped.items()},
                "total_weight": record.total_weight,
                "error_bound": record.error_bound,
                "mean": _flat(workflow.means.get(r)),
                "before": _flat(workflow.before.get(r)),
                "after": _flat(workflow.after.get(r)),
            }
        )
    _write_json(Path(str(cfg["result-path"])), {"rounds": rounds})


client = ClientApp(client_fn=client_fn, mods=[HangMod(), secure_aggregation_mod])


def _flat(arrays: Any) -> list[float] | None:
    if arrays is None:
        return None
    if isinstance(arrays, np.ndarray):
        return [float(x) for x in arrays.ravel()]
    return [float(x) for a in arrays for x in np.asarray(a).ravel()]


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
