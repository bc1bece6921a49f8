"""``secagg-demo`` end to end, as a user runs it: exit status, JSON records, PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from federation_helpers import REPO

SCRIPT = Path(sys.executable).with_name("secagg-demo")


def run_demo(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    assert SCRIPT.exists(), "install the package (pip install -e .) to get the secagg-demo script"
    out = tmp_path / "out.json"
    result = subprocess.run(
        [str(SCRIPT), *args, "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text())


@pytest.mark.slow
def test_demo_with_client_processes_and_dropout(tmp_path: Path) -> None:
    result, record = run_demo(
        tmp_path, "--clients", "5", "--rounds", "3", "--dropout", "0.2", "--task", "digits-logreg"
    )
    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert record["settings"]["processes"] is True
    # One client is SIGKILLed in every round; each drop is recorded with a reason.
    for r in rounds:
        assert len(r["killed"]) == 1
        assert [d["client"] for d in r["dropped"]] == [r["killed"][0]["client"]]
        assert all(d["reason"] and d["phase"] == r["killed"][0]["phase"] for d in r["dropped"])
        assert r["status"] == "completed"
        assert 0 <= r["max_abs_diff"] <= r["error_bound"] and r["within_bound"] is True
        assert (
            r["bytes_up"] > 0 and r["bytes_down"] > 0 and set(r["seconds"]) >= {"advertise_keys", "unmasking"}
        )
    accuracies = [record["initial_accuracy"]] + [r["accuracy"] for r in rounds]
    assert accuracies == sorted(accuracies) and accuracies[-1] > accuracies[0] + 0.2
    assert len(record["plaintext_accuracy"]) == 3
    assert record["summary"]["all_within_bound"] is True
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "matches plaintext FedAvg within the quantization bound" in result.stdout


@pytest.mark.slow
def test_demo_in_process_with_the_torch_mlp_over_wss(tmp_path: Path) -> None:
    _, record = run_demo(
        tmp_path, "--clients", "3", "--rounds", "2", "--dropout", "0", "--in-process", "--tls"
    )
    assert record["settings"]["task"] == "digits-mlp" and record["settings"]["tls"] is True
    assert [r["status"] for r in record["rounds"]] == ["completed", "completed"]
    assert all(r["survivors"] == [1, 2, 3] and r["within_bound"] for r in record["rounds"])
    assert (tmp_path / "out.png").exists()


def test_demo_refuses_a_dropout_fraction_of_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "transport.demo", "--dropout", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--dropout must be in [0, 1)" in result.stderr


@pytest.mark.slow
def test_demo_with_a_population_and_cohorts_shows_them(tmp_path: Path) -> None:
    """Issue 9: a population of 10 client processes, cohorts of 4 with over-selection."""
    result, record = run_demo(
        tmp_path,
        "--clients", "10", "--cohort", "4", "--over-selection", "1.5", "--rounds", "2",
        "--dropout", "0", "--task", "digits-logreg",
    )  # fmt: skip
    for r in record["rounds"]:
        assert r["status"] == "completed" and r["within_bound"]
        assert len(r["participants"]) == 6 and r["target"] == 4
        assert len(r["survivors"]) >= 4 and set(r["survivors"]) <= set(r["participants"])
        assert set(r["stragglers"]) <= set(r["participants"]) - set(r["survivors"])
    assert "population 10/10 | cohort 4 (selected 6," in result.stdout
