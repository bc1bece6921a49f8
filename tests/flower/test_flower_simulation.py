"""The Flower drop-in in Flower's simulation engine (Ray backend, 2 CPUs): one simulation, reused.

Ten nodes, three fit rounds of ``SecureAggregationWorkflow`` with ``secure_aggregation_mod``:
round 1 clean, round 2 with one node failing at each SecAgg stage (including the masked-input
stage, where Flower's own SecAgg+ workflow halts), round 3 with a dishonest workflow that asks one
node for both shares of a neighbour. Every reply a client mod sent is recorded for inspection.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from flower_apps import (
    CLIP,
    MAX_WEIGHT,
    RecordingWorkflow,
    client_app,
    client_delta,
    client_examples,
    client_metric,
    server_app,
)
from flwr.simulation import run_simulation

from secagg import ClientMessage, Round
from secagg.state import rounds_of
from transport.codec import FrameLimits, decode_from_client
from transport.flower.records import FRAME_KEY, RECORD_KEY
from transport.flower.workflow import RoundRecord

NUM_NODES = 10
CLEAN, DROPS, DISHONEST = 1, 2, 3
STAGES = [r.value for r in rounds_of(False)]  # whatever rounds the protocol has
# In round DROPS, the node of partition k fails at the k-th stage.
DROP_PLAN = {DROPS: {k: k for k in range(len(STAGES))}}


@pytest.fixture(scope="module")
def workflow() -> RecordingWorkflow:
    wf = RecordingWorkflow(dishonest_round=DISHONEST, clip=CLIP, max_weight=MAX_WEIGHT, graph="complete")
    run_simulation(
        server_app=server_app(wf, num_rounds=3, num_nodes=NUM_NODES),
        client_app=client_app(DROP_PLAN),
        num_supernodes=NUM_NODES,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
    )
    assert [r.server_round for r in wf.history] == [CLEAN, DROPS, DISHONEST]
    return wf


def _plaintext_mean(nodes: tuple[int, ...]) -> np.ndarray:
    """Plaintext FedAvg of the nodes' clipped updates, weighted by their example counts."""
    weights = np.array([min(client_examples(v), MAX_WEIGHT) for v in nodes], dtype=np.float64)
    updates = np.stack([np.concatenate([d.ravel() for d in client_delta(v)]) for v in nodes])
    return (weights @ np.clip(updates, -CLIP, CLIP)) / weights.sum()


def _check_aggregate(wf: RecordingWorkflow, record: RoundRecord) -> None:
    r = record.server_round
    assert record.completed, record.halted
    assert record.error_bound is not None and record.total_weight is not None
    expected = _plaintext_mean(record.survivors)
    assert np.max(np.abs(wf.means[r] - expected)) <= record.error_bound
    assert record.total_weight == sum(min(client_examples(v), MAX_WEIGHT) for v in record.survivors)
    # The strategy (FedAvg) installed global model + secure mean update.
    before = np.concatenate([a.ravel() for a in wf.before[r]])
    after = np.concatenate([a.ravel() for a in wf.after[r]])
    np.testing.assert_allclose(after, before + wf.means[r], rtol=0, atol=1e-12)


def test_clean_round_equals_plaintext_fedavg_within_the_quantization_bound(
    workflow: RecordingWorkflow,
) -> None:
    record = workflow.history[CLEAN - 1]
    assert record.dropped == {}
    assert record.survivors == record.sampled and len(record.sampled) == NUM_NODES
    _check_aggregate(workflow, record)


def test_a_dropout_at_every_stage_still_completes_with_at_least_t(workflow: RecordingWorkflow) -> None:
    record = workflow.history[DROPS - 1]
    assert record.config is not None
    stage_of = {node: reason.split(":")[0] for node, reason in record.dropped.items()}
    assert sorted(stage_of.values(), key=STAGES.index) == STAGES  # one node lost at each stage
    assert all("injected dropout" in reason for reason in record.dropped.values())
    # Nodes lost up to the masked input (inclusive: the fit ran, the masked input never came)
    # are out of the sum; the one lost at a later stage is in it (its masks are removed).
    masked = STAGES.index(Round.MASKED_INPUT.value)
    excluded = {node for node, stage in stage_of.items() if STAGES.index(stage) <= masked}
    assert set(record.survivors) == set(record.sampled) - excluded
    assert len(record.survivors) >= record.config.threshold
    _check_aggregate(workflow, record)
    everyone = _plaintext_mean(record.sampled)
    assert np.max(np.abs(workflow.means[DROPS] - everyone)) > 10 * record.error_bound  # really excluded


def test_a_client_mod_refuses_to_reveal_both_shares_of_one_node(workflow: RecordingWorkflow) -> None:
    record = workflow.history[DISHONEST - 1]
    victim, asked = workflow.tampered[DISHONEST]
    assert victim != asked
    assert "both survived and dropped" in record.dropped[asked]
    refusals = [
        m
        for stage, m in workflow.replies[DISHONEST]
        if m.metadata.src_node_id == asked and stage == "unmasking"
    ]
    assert len(refusals) == 1 and refusals[0].has_error() and not refusals[0].has_content()
    # The honest rest completed the round without it; every input is still in the sum.
    assert set(record.dropped) == {asked}
    assert record.survivors == record.sampled
    _check_aggregate(workflow, record)


def test_no_example_count_metric_or_parameter_leaves_a_client_mod_in_the_clear(
    workflow: RecordingWorkflow,
) -> None:
    secrets = [struct.pack(f"{e}d", client_metric(v)) for v in workflow.history[0].sampled for e in "<>"]
    for before in workflow.before.values():  # the fit results: global model + each client's delta
        secrets += [
            struct.pack(f"{e}d", float(before[0].ravel()[0] + client_delta(v)[0].ravel()[0]))
            for v in workflow.history[0].sampled
            for e in "<>"
        ]
    seen = 0
    for r, replies in workflow.replies.items():
        record = workflow.history[r - 1]
        assert record.config is not None
        limits = FrameLimits.for_server(record.config)
        for _, reply in replies:
            if reply.has_error():
                continue
            content = reply.content
            assert not content.metric_records and not content.array_records
            assert list(content.config_records) == [RECORD_KEY]
            assert list(content.config_records[RECORD_KEY]) == [FRAME_KEY]
            frame_bytes = content.config_records[RECORD_KEY][FRAME_KEY]
            assert isinstance(frame_bytes, bytes)
            assert isinstance(decode_from_client(frame_bytes, limits).message, ClientMessage)
            assert not any(s in frame_bytes for s in secrets)
            seen += 1
    assert seen >= 2 * NUM_NODES * len(STAGES)
