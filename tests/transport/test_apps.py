"""Apps (``transport.apps``): a user's own model and data through the real command-line tools.

The app here is what a user writes: a numpy softmax regression on synthetic data, client i's
data drawn from its own seed. The server and client processes import it with
``--app test_apps:app --app-dir <this folder>``; the server exports the final model, which loads
back and evaluates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedavg_core import Dataset, LogisticRegression
from transport.apps import AppContext, AppError, LearnerApp, digits_logreg, export_model, load_app
from transport.checkpoint import Checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
FEATURES, CLASSES = 6, 3
CENTRES = np.random.default_rng(1234).normal(0, 3, (CLASSES, FEATURES))


def synthetic(seed: int, size: int) -> Dataset:
    """Three Gaussian blobs around fixed centres: separable enough for softmax regression."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size)
    return Dataset(CENTRES[y] + rng.normal(0, 1, (size, FEATURES)), y)


LOADED: list[int] = []  # which clients' data this process loaded


def client_data(client_id: int) -> Dataset:
    LOADED.append(client_id)
    return synthetic(client_id, 40 + 20 * client_id)


app = LearnerApp(
    lambda: LogisticRegression(FEATURES, CLASSES), client_data, lambda: synthetic(0, 300), seed=7
)


def not_an_app(context: AppContext) -> int:
    return context.num_clients


# -- loading --------------------------------------------------------------------------------------


def test_load_app_finds_an_app_object_and_calls_a_factory() -> None:
    assert load_app("test_apps:app", AppContext(3), HERE) is app
    made = load_app("transport.apps:digits_logreg", AppContext(4, seed=2, options={"alpha": "0.3"}))
    assert isinstance(made, LearnerApp) and made.export_suffix == ".npz"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("test_apps", "expected module:object"),
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        ("test_apps:missing", "has no attribute 'missing'"),
        ("test_apps:FEATURES", "FEATURES is a int, not an app"),
        ("test_apps:not_an_app", "returned a int, not an app"),
    ],
)
def test_load_app_names_the_spec_and_the_cause(spec: str, message: str) -> None:
    with pytest.raises(AppError) as caught:
        load_app(spec, AppContext(3), HERE)
    assert spec.split(":")[0] in str(caught.value) and message in str(caught.value)


def test_a_bad_app_option_is_named() -> None:
    with pytest.raises(AppError, match="--app-option alpha=much: not a valid alpha"):
        digits_logreg(AppContext(4, options={"alpha": "much"}))


def test_a_client_loads_only_its_own_data_and_the_server_none() -> None:
    LOADED.clear()
    model = app.server_model()
    assert LOADED == [] and model.dimension == FEATURES * CLASSES + CLASSES
    trainer = app.client_trainer(3)
    assert LOADED == [3] and len(trainer.data) == 100


# -- export and checkpoints -----------------------------------------------------------------------


def test_npz_export_and_checkpoint_load_into_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vector = rng.normal(size=app.learner.spec.size)
    export_model(app, vector, tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as saved:
        assert sorted(saved.files) == ["bias", "weight"]
        assert np.array_equal(saved["weight"], vector[: FEATURES * CLASSES].reshape(FEATURES, CLASSES))
    assert np.array_equal(app.load_vector(tmp_path / "model.npz"), vector)
    save_checkpoint(tmp_path / "fed.ckpt", Checkpoint(3, vector, []))
    arrays = app.load_checkpoint(tmp_path / "fed.ckpt")
    assert np.array_equal(arrays["bias"], vector[-CLASSES:])


def test_torch_export_is_a_state_dict_that_loads_into_the_module(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from fedavg_core import TorchLearner, module_to_vector

    def learner() -> TorchLearner:
        torch.manual_seed(0)
        return TorchLearner(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)))

    torch_app = LearnerApp(learner, lambda i: synthetic(i, 10))
    assert torch_app.export_suffix == ".pt"
    vector = np.random.default_rng(1).normal(size=torch_app.learner.spec.size)
    export_model(torch_app, vector, tmp_path / "model.pt")
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert np.allclose(module_to_vector(fresh), vector.astype(np.float32))
    save_checkpoint(tmp_path / "fed.ckpt", Checkpoint(2, vector, []))
    module = torch_app.load_checkpoint(tmp_path / "fed.ckpt")
    assert isinstance(module, torch.nn.Module)
    assert np.allclose(module_to_vector(module), vector.astype(np.float32))


# -- through the real command-line tools ----------------------------------------------------------


def test_own_app_through_the_real_server_and_client_processes(tmp_path: Path) -> None:
    from federation_helpers import REPO, free_port

    port = free_port()
    common = ["--app", "test_apps:app", "--app-dir", str(HERE), "--clients", "3", "--log-level", "WARNING"]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transport.cli",
            "server",
            "--port",
            str(port),
            *common,
            "--rounds",
            "3",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--lr",
            "0.1",
            "--export",
            str(tmp_path / "model.npz"),
            "--json",
            str(tmp_path / "rounds.json"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"ws://127.0.0.1:{port}"
    clients = [
        subprocess.Popen(
            [sys.executable, "-m", "transport.cli", "client", "--url", url, "--id", str(i), *common],
            cwd=tmp_path,  # the app is found through --app-dir, not the working folder
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2, 3)
    ]
    try:
        _, server_err = server.communicate(timeout=120)
        outputs = [c.communicate(timeout=60) for c in clients]
    finally:
        for process in (server, *clients):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert server.returncode == 0, server_err
    assert [c.returncode for c in clients] == [0, 0, 0], outputs
    rounds = json.loads((tmp_path / "rounds.json").read_text())
    assert [r["status"] for r in rounds] == ["completed"] * 3
    assert all(r["survivors"] == [1, 2, 3] for r in rounds)
    # FedAvg weights are the example counts (60, 80, 100), not an unweighted mean.
    assert all(r["total_weight"] == 240 for r in rounds)
    vector = app.load_vector(tmp_path / "model.npz")
    test = synthetic(0, 300)
    initial = app.learner.evaluate(app.learner.initial_vector(), test).accuracy
    final = app.learner.evaluate(vector, test).accuracy
    assert final > 0.9 > initial + 0.3
    assert final == pytest.approx(rounds[-1]["accuracy"])


def test_demo_runs_a_users_app_and_reports_honestly(tmp_path: Path) -> None:
    from federation_helpers import REPO

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "transport.demo",
            "--app",
            "test_apps:app",
            "--app-dir",
            str(HERE),
            "--clients",
            "4",
            "--rounds",
            "2",
            "--dropout",
            "0.25",
            "--in-process",
            "--json",
            str(tmp_path / "out.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deleted at exit (keep them with --workdir DIR)" in result.stdout
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["settings"]["app"] == "test_apps:app"
    assert "same survivors and local randomness" in record["plaintext_reference"]
    for row in record["rounds"]:
        assert row["status"] == "completed" and len(row["survivors"]) == 3
        # Same clients, same minibatches: the curves differ only by quantization.
        assert abs(row["accuracy"] - row["plaintext_accuracy"]) <= 0.02
    # The progress line counts the clients still in the round, also after a killed client is
    # restarted (it waits for the next round).
    for number in (1, 2):
        lines = [line for line in result.stdout.splitlines() if line.startswith(f"round {number}/2 | phase")]
        killed_at = next(i for i, line in enumerate(lines) if "killed" in line)
        assert all("clients in the round 4/4" in line for line in lines[:killed_at])
        assert all("clients in the round 3/4" in line for line in lines[killed_at:])
