"""The checkpoint: exact round trip, atomic replacement, corruption refused, resume in process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import ZeroModel, fixed_trainers, run_federation

from transport.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from transport.server import FederationServer, FederationSettings


def test_a_checkpoint_round_trips_the_model_bit_for_bit(tmp_path: Path) -> None:
    vector = np.random.default_rng(1).normal(size=1000)
    records = [{"round": 1, "status": "completed", "survivors": [1, 2]}]
    save_checkpoint(tmp_path / "ck", Checkpoint(2, vector, records))
    loaded = load_checkpoint(tmp_path / "ck", 1000)
    assert loaded is not None
    assert loaded.vector.tobytes() == vector.tobytes()
    assert (loaded.next_round, loaded.records) == (2, records)
    assert load_checkpoint(tmp_path / "missing", 1000) is None


def test_a_crash_while_writing_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ck"
    save_checkpoint(path, Checkpoint(2, np.ones(10), []))

    def crash(src: object, dst: object) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk vanished"):
        save_checkpoint(path, Checkpoint(3, np.zeros(10), []))
    monkeypatch.undo()
    loaded = load_checkpoint(path, 10)
    assert loaded is not None and loaded.next_round == 2 and np.array_equal(loaded.vector, np.ones(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary file left behind


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda data: data[:-3], "not a readable checkpoint"),
        (lambda data: data.replace(np.float64(7.5).tobytes(), np.float64(7.25).tobytes()), "checksum"),
        (lambda data: b"garbage", "not a"),
    ],
)
def test_a_damaged_checkpoint_is_refused_with_a_clear_error(
    tmp_path: Path, damage: object, problem: str
) -> None:
    path = tmp_path / "ck"
    save_checkpoint(path, Checkpoint(2, np.full(10, 7.5), []))
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(CheckpointError, match=problem):
        load_checkpoint(path, 10)
    with pytest.raises(CheckpointError):
        FederationServer(ZeroModel(10), FederationSettings(num_clients=3, rounds=3), checkpoint_path=path)


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", Checkpoint(2, np.zeros(10), []))
    with pytest.raises(CheckpointError, match="10 parameters, this task has 11"):
        load_checkpoint(tmp_path / "ck", 11)


def test_a_new_server_resumes_from_the_checkpoint_of_the_last_one(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    trainers = fixed_trainers(3, 6)
    first = asyncio.run(
        run_federation(
            ZeroModel(6),
            FederationSettings(num_clients=3, rounds=2, clip=1.0, max_weight=256),
            trainers,  # type: ignore[arg-type]
            server_options={"checkpoint_path": path},
        )
    )
    saved = load_checkpoint(path, 6)
    assert saved is not None and saved.next_round == 3
    assert first.server is not None and saved.vector.tobytes() == first.server.vector.tobytes()

    second = asyncio.run(
        run_federation(
            ZeroModel(6),
            FederationSettings(num_clients=3, rounds=4, clip=1.0, max_weight=256),
            trainers,  # type: ignore[arg-type]
            server_options={"checkpoint_path": path},
        )
    )
    assert [r.round for r in second.reports] == [1, 2, 3, 4]
    assert [r.to_json() for r in second.reports[:2]] == [r.to_json() for r in first.reports]
    assert any(e.kind == "resumed" for e in second.events)
    round_three = [v for t in trainers.values() for r, v in t.seen if r == 3]
    assert len(round_three) == 3 and all(v.tobytes() == saved.vector.tobytes() for v in round_three)
