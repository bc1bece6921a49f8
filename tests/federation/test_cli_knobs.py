"""The command-line knobs of heterogeneous clients and of the insecure plaintext debugging mode:
``secagg-client --local-epochs/--time-budget/--allow-insecure-plaintext`` and
``secagg-server --insecure-plaintext`` reach the objects they configure."""

from __future__ import annotations

import pytest

from transport.arguments import app_from_args
from transport.cli import _build_server, client_parser, make_client, server_parser
from transport.tasks import LearnerTrainer, LocalBudget

CLIENT = ["--url", "ws://127.0.0.1:9", "--id", "2", "--task", "digits-logreg", "--clients", "4"]


def test_a_client_declares_its_budget_and_opts_in_to_plaintext() -> None:
    args = client_parser().parse_args(
        [*CLIENT, "--local-epochs", "3", "--time-budget", "2.5", "--allow-insecure-plaintext"]
    )
    client = make_client(args)
    assert isinstance(client.trainer, LearnerTrainer)
    assert client.trainer.budget == LocalBudget(epochs=3, seconds=2.5)
    assert client.allow_insecure_plaintext is True


def test_by_default_a_client_has_no_budget_and_refuses_plaintext() -> None:
    client = make_client(client_parser().parse_args(CLIENT))
    assert isinstance(client.trainer, LearnerTrainer)
    assert client.trainer.budget == LocalBudget()
    assert client.allow_insecure_plaintext is False


def test_bad_budgets_are_usage_errors() -> None:
    with pytest.raises(SystemExit):
        client_parser().parse_args([*CLIENT, "--local-epochs", "0"])
    with pytest.raises(SystemExit):
        client_parser().parse_args([*CLIENT, "--time-budget", "-1"])


@pytest.mark.parametrize("flag", [[], ["--insecure-plaintext"]])
def test_the_server_flag_turns_the_insecure_mode_on(flag: list[str]) -> None:
    args = server_parser().parse_args(["--task", "digits-logreg", "--clients", "4", *flag])
    server, _ = _build_server(args, app_from_args(args), None)
    assert server.settings.insecure_plaintext is bool(flag)
