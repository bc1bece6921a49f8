"""The client mod, records, stored state and threat-model parameters, in process (no Ray)."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest

pytest.importorskip("flwr")

import flwr.compat.common.recorddict_compat as compat
from flwr.app import ConfigRecord, Context, Message, MessageType, Metadata, RecordDict
from flwr.common import FitIns, ndarrays_to_parameters

from fedavg_core.quantize import QuantizationConfig
from secagg import RoundSetup, SecAggConfig
from secagg.messages import AdvertiseKeys, KeyList
from transport.codec import FrameLimits, decode_from_client, encode
from transport.flower.client_state import StateError, load_session
from transport.flower.mod import STATE_KEY, SecAggMod
from transport.flower.params import ThreatModel, flatten, unflatten
from transport.flower.records import RECORD_KEY, RecordError, frame_content, read_frame
from transport.wire import RoundStart


def _message(content: RecordDict, message_type: str = MessageType.TRAIN) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=os.urandom(8).hex(),
        src_node_id=0,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(content=content, metadata=metadata)


def _context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


class _NoTraining:
    calls = 0

    def __call__(self, msg: Message, ctxt: Context) -> Message:
        self.calls += 1
        raise AssertionError("the wrapped ClientApp must not run")


def _setup_frame(config: SecAggConfig, fedavg_round: int = 1) -> tuple[bytes, RoundSetup]:
    setup = RoundSetup(config, os.urandom(32))
    quant = QuantizationConfig.for_clients(config.num_clients, 1.0, max_weight=10, bits=16)
    start = RoundStart(config, setup.nonce, None, quant, np.zeros(0), {})
    return encode(start, round=fedavg_round), setup


def _config(n: int = 4) -> SecAggConfig:
    quant = QuantizationConfig.for_clients(n, 1.0, max_weight=10, bits=16)
    return SecAggConfig(num_clients=n, vector_length=6, modulus=quant.modulus)


def test_a_plain_fit_request_is_refused_without_training() -> None:
    fitins = FitIns(ndarrays_to_parameters([np.ones(5)]), {})
    train = _NoTraining()
    reply = SecAggMod()(_message(compat.fitins_to_recorddict(fitins, True)), _context(), train)
    assert reply.has_error() and "without secure aggregation" in (reply.error.reason or "")
    assert train.calls == 0


def test_evaluate_messages_pass_through() -> None:
    sentinel = _message(RecordDict())

    def inner(msg: Message, ctxt: Context) -> Message:
        return sentinel

    assert SecAggMod()(_message(RecordDict(), MessageType.EVALUATE), _context(), inner) is sentinel


def test_setup_frame_starts_a_round_and_replies_with_round_0() -> None:
    config = _config()
    frame, setup = _setup_frame(config)
    ctxt = _context()
    reply = SecAggMod()(_message(frame_content(frame, client_id=3)), ctxt, _NoTraining())
    assert not reply.has_error(), reply.error
    decoded = decode_from_client(read_frame(reply.content).frame, FrameLimits.for_server(config))
    assert isinstance(decoded.message, AdvertiseKeys) and decoded.message.sender == 3
    assert decoded.session == setup.session_id and decoded.round == 1
    assert STATE_KEY in ctxt.state.config_records


def test_a_frame_of_another_session_is_refused_and_the_round_forgotten() -> None:
    config = _config()
    frame, _ = _setup_frame(config)
    ctxt = _context()
    mod = SecAggMod()
    assert not mod(_message(frame_content(frame, client_id=1)), ctxt, _NoTraining()).has_error()
    stale = encode(KeyList(1, {}), round=1, session=os.urandom(32))
    reply = mod(_message(frame_content(stale)), ctxt, _NoTraining())
    assert reply.has_error() and "another session" in (reply.error.reason or "")
    assert STATE_KEY not in ctxt.state.config_records
    # With nothing in progress, any non-setup frame is refused too.
    reply = mod(_message(frame_content(stale)), ctxt, _NoTraining())
    assert reply.has_error() and "no round in progress" in (reply.error.reason or "")


def test_a_setup_frame_with_parameters_or_a_mismatched_quantization_is_refused() -> None:
    config = _config()
    setup = RoundSetup(config, os.urandom(32))
    quant = QuantizationConfig.for_clients(4, 1.0, max_weight=10, bits=16)
    with_params = encode(RoundStart(config, setup.nonce, None, quant, np.ones(3), {}), round=1)
    other_p = QuantizationConfig.for_clients(4, 1.0, max_weight=10, bits=24)
    wrong_p = encode(RoundStart(config, setup.nonce, None, other_p, np.zeros(0), {}), round=1)
    for frame, why in ((with_params, "must not carry parameters"), (wrong_p, "does not match")):
        reply = SecAggMod()(_message(frame_content(frame, client_id=1)), _context(), _NoTraining())
        assert reply.has_error() and why in (reply.error.reason or "")


@pytest.mark.parametrize(
    "claimed, why",
    [
        ({"collusion_fraction": 0.1}, "collusion fraction of 0.1, this client requires at least 0.3333"),
        (  # SecAgg+ sized as if nobody dropped: k=30 for 200 nodes, where 10% dropping needs 66
            {"graph": "harary", "dropout_fraction": 0.0},
            "sized for a dropout fraction of 0; this client assumes at least 0.1",
        ),
    ],
)
def test_a_round_below_the_nodes_threat_model_is_refused_before_round_0(
    claimed: dict[str, object], why: str
) -> None:
    n = 200
    quant = QuantizationConfig.for_clients(n, 1.0, max_weight=10, bits=16)
    config = SecAggConfig(num_clients=n, vector_length=6, modulus=quant.modulus, **claimed)  # type: ignore[arg-type]
    frame, _ = _setup_frame(config)
    ctxt = _context()
    reply = SecAggMod()(_message(frame_content(frame, client_id=3)), ctxt, _NoTraining())
    assert reply.has_error() and why in (reply.error.reason or "")
    assert STATE_KEY not in ctxt.state.config_records  # no round started, no key sent
    # A node that assumes the server's own threat model joins the same round.
    lenient = SecAggMod(min_collusion_fraction=0.1, min_dropout_fraction=0.0)
    assert not lenient(_message(frame_content(frame, client_id=3)), _context(), _NoTraining()).has_error()


def test_mod_limits_outside_their_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"min_dropout_fraction must be in \[0, 1\)"):
        SecAggMod(min_dropout_fraction=1.0)
    with pytest.raises(ValueError, match=r"min_collusion_fraction must be in \[0, 1\)"):
        SecAggMod(min_collusion_fraction=-0.1)


def test_records_refuse_malformed_content() -> None:
    content = RecordDict()
    content.config_records[RECORD_KEY] = ConfigRecord({"frame": "not bytes"})
    with pytest.raises(RecordError, match="must be bytes"):
        read_frame(content)
    content.config_records[RECORD_KEY] = ConfigRecord({"frame": b"x", "num_examples": 5})
    with pytest.raises(RecordError, match="must hold"):
        read_frame(content)
    with pytest.raises(RecordError, match="no 'secagg_fedavg'"):
        read_frame(RecordDict())


def test_stored_state_refuses_a_foreign_pickle() -> None:
    with pytest.raises(StateError, match="not allowed"):
        load_session(pickle.dumps(os.system))
    with pytest.raises(StateError, match="unreadable"):
        load_session(b"\x80\x05garbage")


def test_threat_model_parameters() -> None:
    model = ThreatModel(graph="complete", collusion_fraction=1 / 3)
    assert model.secagg_config(10, 11, model.quantization(10).modulus).threshold == 5  # floor(10/3)+2
    with pytest.raises(ValueError, match="semi_honest mode only"):
        ThreatModel(mode="active")
    with pytest.raises(ValueError, match="leaves no room for dropout_fraction"):
        ThreatModel(collusion_fraction=0.5, dropout_fraction=0.5).secagg_config(10, 11, 2**31 - 1)
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2)]
    back = unflatten(flatten(arrays), arrays)
    assert [a.dtype for a in back] == [np.float32, np.float64]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back, strict=True))
