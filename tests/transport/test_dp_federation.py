"""Distributed DP in the websocket federation (issue 12): real websockets on 127.0.0.1.

The server plans each round's noise for the cohort's threshold t and sends the DP terms and the
rotation seed in the round start; clients clip, rotate, round and add noise before masking; the
server decodes and every report carries the epsilon spent so far, by the clients actually summed.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
from federation_helpers import FixedTrainer, ZeroModel, run_federation

from fedavg_core import DistributedDP, QuantizationConfig
from fedavg_core.coordinator import Coordinator, CoordinatorSettings
from fedavg_core.dp_federation import KEYS, DPTerms, error_bound, reference_mean, split_settings
from fedavg_core.privacy_accounting import PrivacyLedger
from fedavg_core.records import RoundReport
from secagg import RoundSetup, SecAggConfig
from transport.cli import client_main, server_main
from transport.client import FederationClient, RoundRefused
from transport.codec import Frame, FrameLimits, decode_from_server, encode
from transport.demo import NON_PRIVATE_REFERENCE
from transport.demo import main as demo_main
from transport.server import FederationSettings
from transport.tasks import TrainingSettings
from transport.wire import LOCAL_ID, RoundStart

DIMENSION = 256
CLIP = 2.0
MAX_WEIGHT = 100


def positive_trainers(count: int, seed: int) -> dict[int, FixedTrainer]:
    """Updates with entries in [0.5, 1.5] (norm about 16, so the L2 clip at 2 acts) and example
    counts in [20, 200] (weight fractions min(w, 100) / 100 from 0.2 to 1)."""
    rng = np.random.default_rng(seed)
    return {
        i: FixedTrainer(rng.uniform(0.5, 1.5, DIMENSION), int(rng.integers(20, 201)))
        for i in range(1, count + 1)
    }


def test_dp_federation_mean_matches_the_noise_free_mean_and_reports_the_ledger_epsilon() -> None:
    # n = 5, t = 3 (a majority); client 5 wants epsilon <= 10 and refuses every round, so each
    # round sums m = 4 clients: more than t, so each round spends less than planned.
    dp = DistributedDP(epsilon=100.0, delta=1e-5, rounds=2, clip=CLIP)
    settings = FederationSettings(
        num_clients=5, rounds=2, max_weight=MAX_WEIGHT, dp=dp, phase_timeout=30, train_timeout=60
    )
    trainers = positive_trainers(5, seed=3)

    def options(i: int) -> dict[str, object]:
        extra: dict[str, object] = {"rng": np.random.default_rng([12, i]), "require_dp": True}
        if i == 5:
            extra["max_dp_epsilon"] = 10.0
        return extra

    run = asyncio.run(run_federation(ZeroModel(DIMENSION), settings, trainers, client_options=options))  # type: ignore[arg-type]

    assert [r.status for r in run.reports] == ["completed", "completed"]
    refuser = run.summaries[4]
    assert not isinstance(refuser, BaseException)
    assert set(refuser.refused) == {1, 2}
    assert all("epsilon=100 exceeds this client's maximum 10" in why for why in refuser.refused.values())

    plan = dp.plan(5, 3, DIMENSION)
    ledger = PrivacyLedger()
    for report in run.reports:
        assert report.threshold == 3 and report.survivors == [1, 2, 3, 4]
        # Noise and privacy by the m = 4 clients actually summed.
        assert report.noise_stddev == pytest.approx(plan.noise_stddev(4), rel=1e-12)
        ledger.record(plan.curves(4))
        assert report.epsilon == pytest.approx(ledger.epsilon(dp.delta), rel=1e-9)
        sigma = report.noise_stddev
        assert report.error_bound is not None and report.error_bound < sigma / 10

        updates = [run.updates[(report.round, i)] for i in report.survivors]
        expected = reference_mean(updates, CLIP, MAX_WEIGHT)  # sum f_i clip(x_i) / m, no noise
        secure = run.outcomes[report.round].mean_update
        assert secure is not None
        err = secure - expected
        # Each element is within the rounding bound plus z sigma (union bound: fails w.p. <= 1e-9).
        assert np.max(np.abs(err)) <= error_bound(sigma, report.error_bound, DIMENSION, failure=1e-9)
        # The noise is there, with the planned spread: over 256 elements the sample standard
        # deviation is within 30% of sigma (chi-square with 256 dof: outside w.p. < 1e-8), and the
        # mean error is within 6 standard errors of 0. A decoding that lost the signal (zero) or
        # the noise would fail: the expected mean is about 18 standard errors from 0.
        assert 0.7 * sigma <= float(np.std(err)) <= 1.3 * sigma
        assert abs(float(np.mean(err))) <= 6 * sigma / math.sqrt(DIMENSION)
        assert float(np.mean(expected)) > 12 * sigma / math.sqrt(DIMENSION)

    # Summed over m = 4 > t = 3: less spent than planned, more than if all 5 had been summed.
    everyone = PrivacyLedger()
    everyone.record(plan.curves(5), 2)
    final = run.reports[-1].epsilon
    assert final is not None
    assert everyone.epsilon(dp.delta) < final < plan.planned_epsilon
    assert run.server is not None and run.server.coordinator.privacy is not None
    assert run.server.coordinator.privacy.epsilon == pytest.approx(final, rel=1e-12)


def test_a_client_requiring_dp_refuses_a_round_start_without_it() -> None:
    settings = FederationSettings(num_clients=4, rounds=1, clip=1.0, max_weight=256)
    trainers = {i: FixedTrainer(np.full(8, 0.1 * i), 10) for i in range(1, 5)}
    run = asyncio.run(
        run_federation(
            ZeroModel(8),
            settings,
            trainers,  # type: ignore[arg-type]
            client_options=lambda i: {"require_dp": i == 4},
        )
    )
    report = run.reports[0]
    assert report.status == "completed" and report.survivors == [1, 2, 3]
    assert report.epsilon is None and report.privacy_curves == []
    summary = run.summaries[3]
    assert not isinstance(summary, BaseException)
    assert summary.refused == {1: "the round start has no distributed-DP terms; this client requires DP"}
    assert [d.reason for d in report.dropped] == [
        "client aborted: the round start has no distributed-DP terms; this client requires DP"
    ]


# -- round starts a client checks, without a network ---------------------------------------------

BASE = SecAggConfig(num_clients=5, threshold=3, vector_length=8 + 1)
TERMS = DPTerms(DistributedDP(epsilon=4.0, delta=1e-5, rounds=3, clip=1.0), max_weight=64, seed=99)


def dp_round_start(
    settings: dict[str, object], dimension: int = 5, round_number: int = 1
) -> tuple[Frame, RoundStart]:
    """A round start for a 5-parameter model (padded to 8 with DP), encoded then decoded."""
    start = RoundStart(
        BASE,
        bytes(32),
        None,
        QuantizationConfig(1.0, 16, BASE.modulus, 5, 1),
        np.zeros(dimension),
        {**TrainingSettings().to_wire(), LOCAL_ID: 2, **settings},  # type: ignore[dict-item]
    )
    session = RoundSetup(start.config, start.nonce, start.roster).session_id
    data = encode(start, round=round_number, session=session)
    frame = decode_from_server(data, FrameLimits.for_client(8))
    return frame, frame.message  # type: ignore[return-value]


def client(**options: object) -> FederationClient:
    return FederationClient(2, FixedTrainer(np.zeros(5), 1), "ws://127.0.0.1:1", **options)  # type: ignore[arg-type]


def test_dp_terms_round_trip_through_the_round_start_settings() -> None:
    frame, start = dp_round_start(TERMS.to_settings())
    terms, rest = split_settings(start.settings)
    assert terms == TERMS
    assert set(rest) == {*TrainingSettings().to_wire(), LOCAL_ID}
    assert set(TERMS.to_settings()) == set(KEYS)
    client(require_dp=True).check_round_start(frame, start)  # accepted: the vector is 8 + 1


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"dp_seed": None}, "missing dp_seed"),
        ({"dp_epsilon": "8"}, "dp_epsilon must be a number"),
        ({"dp_rounds": 2.5}, "dp_rounds must be an int"),
        ({"dp_delta": 1.5}, "delta must be in"),
        ({"dp_mechanism": "laplace"}, "mechanism must be"),
        ({"dp_seed": -1}, "rotation seed"),
        ({"dp_noise": 0}, "unknown dp_noise"),
    ],
)
@pytest.mark.parametrize("require_dp", [True, False])
def test_clients_refuse_malformed_dp_settings(
    change: dict[str, object], problem: str, require_dp: bool
) -> None:
    settings = {**TERMS.to_settings(), **change}
    settings = {k: v for k, v in settings.items() if v is not None}
    frame, start = dp_round_start(settings)
    with pytest.raises(RoundRefused, match=f"malformed DP settings: .*{problem}"):
        client(require_dp=require_dp).check_round_start(frame, start)


def test_clients_refuse_a_weaker_budget_or_a_round_past_it() -> None:
    frame, start = dp_round_start(TERMS.to_settings())
    with pytest.raises(RoundRefused, match="epsilon=4 exceeds this client's maximum 2"):
        client(max_dp_epsilon=2.0).check_round_start(frame, start)
    with pytest.raises(RoundRefused, match="delta=1e-05 exceeds this client's maximum 1e-06"):
        client(max_dp_delta=1e-6).check_round_start(frame, start)
    frame, start = dp_round_start(TERMS.to_settings(), round_number=4)
    with pytest.raises(RoundRefused, match="round 4 is past the DP budget of 3 rounds"):
        client().check_round_start(frame, start)


def test_a_resumed_coordinator_rebuilds_the_privacy_ledger_and_old_records_load() -> None:
    dp = DistributedDP(epsilon=8.0, delta=1e-5, rounds=4, clip=1.0)
    plan = dp.plan(4, 3, 16)
    ledger = PrivacyLedger()
    reports = []
    for number, summed in ((1, 4), (2, 3)):
        ledger.record(plan.curves(summed))
        curves = [[float(c.rho), float(c.xi)] for c in plan.curves(summed)]  # type: ignore[attr-defined]
        report = RoundReport(number, "completed", epsilon=ledger.epsilon(1e-5), privacy_curves=curves)
        reports.append(RoundReport.from_json(report.to_json()))
    old = report.to_json()
    for name in ("epsilon", "noise_stddev", "privacy_curves"):
        del old[name]  # a record written before DP existed
    assert RoundReport.from_json(old).epsilon is None
    settings = FederationSettings(num_clients=4, rounds=4, dp=dp)
    coordinator = Coordinator(
        settings.coordinator_settings(),
        np.zeros(16),
        next_round=3,
        reports=[*reports, RoundReport.from_json(old)],
    )
    assert coordinator.privacy is not None
    assert coordinator.privacy.epsilon == pytest.approx(ledger.epsilon(1e-5), rel=1e-12)


def test_settings_refuse_a_budget_shorter_than_the_run_and_dp_without_secure_aggregation() -> None:
    dp = DistributedDP(epsilon=8.0, delta=1e-5, rounds=2, clip=1.0)
    with pytest.raises(ValueError, match="DP budget covers 2 rounds"):
        FederationSettings(num_clients=4, rounds=3, dp=dp)
    with pytest.raises(ValueError, match="needs secure aggregation"):
        FederationSettings(num_clients=4, rounds=2, dp=dp, insecure_plaintext=True)
    with pytest.raises(ValueError, match="needs secure aggregation"):
        CoordinatorSettings(
            2, FederationSettings(num_clients=4, rounds=2, dp=dp).aggregator(), insecure_plaintext=True
        )


# -- command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dp-epsilon", "0"], "argument --dp-epsilon: must be a positive number, got 0"),
        (["--dp-epsilon", "-1"], "argument --dp-epsilon: must be a positive number, got -1"),
        (["--dp-epsilon", "inf"], "argument --dp-epsilon: must be a positive number, got inf"),
        (["--dp-epsilon", "nan"], "argument --dp-epsilon: must be a positive number, got nan"),
        (["--dp-epsilon", "eight"], "argument --dp-epsilon: 'eight' is not a valid float"),
        (["--dp-epsilon", "8", "--dp-delta", "1"], "argument --dp-delta: must be in (0, 1), got 1"),
        (["--dp-epsilon", "8", "--dp-clip", "0"], "argument --dp-clip: must be a positive number, got 0"),
    ],
)
def test_bad_dp_options_exit_2_with_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        server_main(["--task", "digits-logreg", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"secagg-server: error: {message} (see --help)\n"


def test_bad_client_dp_requirement_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        client_main(["--id", "1", "--max-dp-epsilon", "0"])
    assert exit_info.value.code == 2
    assert "argument --max-dp-epsilon: must be a positive number, got 0" in capsys.readouterr().err


def test_a_dp_budget_that_cannot_be_planned_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    # 8 clients, t = 5 (a majority): 5 colluders leave no honest noise share.
    status = server_main(
        [
            "--task",
            "digits-logreg",
            "--clients",
            "8",
            "--dp-epsilon",
            "8",
            "--dp-colluders",
            "5",
            "--port",
            "0",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("secagg-server: ") and "colluders=5 leaves no honest noise share" in err


def test_demo_with_dp_reports_the_epsilon_spent_against_the_non_private_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dp.json"
    argv = ["--dp-epsilon", "8", "--task", "digits-logreg", "--clients", "4", "--rounds", "2"]
    argv += [
        "--in-process",
        "--dropout",
        "0",
        "--quiet",
        "--json",
        str(out),
        "--plot",
        str(tmp_path / "dp.png"),
    ]
    assert demo_main(argv) == 0
    record = json.loads(out.read_text())
    assert record["settings"]["dp"]["epsilon"] == 8.0 and record["settings"]["dp"]["rounds"] == 2
    assert record["plaintext_reference"] == NON_PRIVATE_REFERENCE
    epsilons = [r["epsilon"] for r in record["rounds"]]
    assert 0 < epsilons[0] < epsilons[1] <= 8.0
    assert record["summary"]["epsilon_spent"] == epsilons[-1]
    for r in record["rounds"]:
        assert r["status"] == "completed" and r["within_bound"] is True
        assert r["audit_bound"] > r["error_bound"] and r["noise_stddev"] > 0
    assert (tmp_path / "dp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = capsys.readouterr().out
    assert f"epsilon spent {epsilons[-1]:.3g} of 8 (delta 1e-05)" in stdout
    assert "matches non-private FedAvg within the rounding plus noise bound" in stdout


def test_demo_refuses_a_bad_dp_epsilon(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--dp-epsilon", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "secagg-demo: error: argument --dp-epsilon: must be a positive number, got 0 (see --help)\n"
    )


def test_the_weight_cap_defaults_to_1_with_dp_so_updates_are_not_drowned_in_the_noise() -> None:
    from transport.arguments import federation_settings
    from transport.cli import server_parser

    private = federation_settings(server_parser().parse_args(["--dp-epsilon", "8", "--rounds", "3"]))
    assert private.max_weight == 1 and private.dp is not None
    assert (private.dp.epsilon, private.dp.delta, private.dp.rounds, private.dp.clip) == (8.0, 1e-5, 3, 1.0)
    assert federation_settings(server_parser().parse_args([])).max_weight == 1024
    capped = federation_settings(server_parser().parse_args(["--dp-epsilon", "8", "--max-weight", "32"]))
    assert capped.max_weight == 32


def test_demo_refuses_a_budget_it_cannot_plan(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--dp-epsilon",
        "8",
        "--dp-colluders",
        "5",
        "--task",
        "digits-logreg",
        "--clients",
        "8",
        "--in-process",
    ]
    assert demo_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("secagg-demo: ") and "colluders=5 leaves no honest noise share" in err
